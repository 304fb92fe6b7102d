//! The downlink consumer against a real `redis-server`.

use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use throng_downlink::{Consumer, ConsumerConfig, Delivery, Target};
use throng_testkit::RedisServer;

const STREAM: &str = "throng:downlink";

fn config(consumer: &str) -> ConsumerConfig {
    ConsumerConfig::new(STREAM, "distributors", consumer)
}

async fn xadd(conn: &mut redis::aio::MultiplexedConnection, fields: &[(&str, &[u8])]) -> String {
    conn.xadd(STREAM, "*", fields).await.unwrap()
}

/// Reads until `n` deliveries arrived (fails after 5 s).
async fn read_n(consumer: &Consumer, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            out.len()
        );
        out.extend(
            consumer
                .next_batch(500, Duration::from_millis(100))
                .await
                .unwrap(),
        );
    }
    assert_eq!(out.len(), n);
    out
}

async fn dead_letters(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Vec<HashMap<String, String>> {
    let reply: StreamRangeReply = conn.xrange_all(format!("{STREAM}:dead")).await.unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value::<String>(v).unwrap()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn round_trip_of_1000_entries() {
    let redis = RedisServer::start().await;
    let consumer = Consumer::connect(redis.client(), config("d-1"))
        .await
        .unwrap();
    let mut conn = redis.conn().await;
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("client")
            .arg(format!("dev-{i}"))
            .arg("payload")
            .arg(format!("m{i}"))
            .ignore();
    }
    let () = p.query_async(&mut conn).await.unwrap();

    let got = read_n(&consumer, 1000).await;
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.message.target, Target::Client(format!("dev-{i}")));
        assert_eq!(d.message.payload, format!("m{i}").into_bytes());
        assert_eq!(d.message.id, d.entry_id);
        assert_eq!(d.attempts, 1);
    }
    assert_eq!(consumer.pending().await.unwrap(), 1000);
    let ids: Vec<&str> = got.iter().map(|d| d.entry_id.as_str()).collect();
    assert_eq!(consumer.ack(&ids).await.unwrap(), 1000);
    assert_eq!(consumer.group_info().await.unwrap(), (Some(0), 0));
    assert!(
        consumer
            .next_batch(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn malformed_entries_are_dead_lettered_and_consumer_continues() {
    let redis = RedisServer::start().await;
    let consumer = Consumer::connect(redis.client(), config("d-1"))
        .await
        .unwrap();
    let mut conn = redis.conn().await;
    xadd(&mut conn, &[("client", b"a"), ("payload", b"1")]).await;
    let bad1 = xadd(&mut conn, &[("payload", b"x"), ("note", b"kept")]).await;
    let bad2 = xadd(
        &mut conn,
        &[("topic", b"t"), ("payload", b"x"), ("qos", b"7")],
    )
    .await;
    xadd(
        &mut conn,
        &[("topic", b"down/b"), ("payload", b"2"), ("id", b"m-2")],
    )
    .await;

    let got = read_n(&consumer, 2).await;
    assert_eq!(got[0].message.target, Target::Client("a".into()));
    assert_eq!(got[1].message.id, "m-2");
    // The malformed ones were acked: only the two good ones are pending.
    assert_eq!(consumer.pending().await.unwrap(), 2);
    assert_eq!(consumer.dead_letters_total(), 2);

    let dead = dead_letters(&mut conn).await;
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["entry"], bad1);
    assert_eq!(dead[0]["note"], "kept");
    assert_eq!(dead[0]["payload"], "x");
    assert_eq!(dead[0]["attempts"], "1");
    assert!(
        dead[0]["reason"].starts_with("malformed: missing target"),
        "{}",
        dead[0]["reason"]
    );
    assert_eq!(dead[1]["entry"], bad2);
    assert!(
        dead[1]["reason"].starts_with("malformed: bad qos \"7\""),
        "{}",
        dead[1]["reason"]
    );

    // Still consuming.
    xadd(&mut conn, &[("client", b"c"), ("payload", b"3")]).await;
    assert_eq!(read_n(&consumer, 1).await[0].message.payload, &b"3"[..]);
}

#[tokio::test]
async fn entries_of_a_silent_consumer_are_reclaimed_by_another() {
    let redis = RedisServer::start().await;
    let dead = Consumer::connect(redis.client(), config("d-dead"))
        .await
        .unwrap();
    let alive = Consumer::connect(redis.client(), config("d-alive"))
        .await
        .unwrap();
    let mut conn = redis.conn().await;
    for i in 0..10u8 {
        xadd(&mut conn, &[("client", b"c"), ("payload", &[i])]).await;
    }
    let taken = read_n(&dead, 10).await; // read, never acked
    let min_idle = Duration::from_millis(300);
    assert!(
        alive.reclaim(min_idle, 100).await.unwrap().is_empty(),
        "not idle yet"
    );

    tokio::time::sleep(min_idle + Duration::from_millis(50)).await;
    let reclaimed = alive.reclaim(min_idle, 100).await.unwrap();
    assert_eq!(reclaimed.len(), 10);
    for (r, t) in reclaimed.iter().zip(&taken) {
        assert_eq!(r.entry_id, t.entry_id);
        assert_eq!(r.message, t.message);
        assert_eq!(r.attempts, 2);
    }
    let ids: Vec<String> = reclaimed.into_iter().map(|d| d.entry_id).collect();
    assert_eq!(alive.ack(&ids).await.unwrap(), 10);
    assert_eq!(alive.pending().await.unwrap(), 0);
}

#[tokio::test]
async fn entry_past_max_attempts_is_dead_lettered() {
    let redis = RedisServer::start().await;
    let mut cfg = config("d-1");
    cfg.max_attempts = 2;
    let a = Consumer::connect(redis.client(), cfg.clone())
        .await
        .unwrap();
    cfg.consumer = "d-2".into();
    let b = Consumer::connect(redis.client(), cfg).await.unwrap();
    let mut conn = redis.conn().await;
    let id = xadd(&mut conn, &[("client", b"c"), ("payload", b"p")]).await;

    assert_eq!(read_n(&a, 1).await[0].attempts, 1);
    let second = b.reclaim(Duration::ZERO, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    // Third delivery would exceed max_attempts = 2.
    assert!(a.reclaim(Duration::ZERO, 10).await.unwrap().is_empty());
    assert_eq!(a.dead_letters_total(), 1);
    assert_eq!(a.pending().await.unwrap(), 0);

    let dead = dead_letters(&mut conn).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["entry"], id);
    assert_eq!(dead[0]["client"], "c");
    assert_eq!(dead[0]["attempts"], "2");
    assert_eq!(dead[0]["reason"], "gave up after 2 delivery attempts");

    // An explicit dead-letter by the caller (e.g. undeliverable).
    let id2 = xadd(&mut conn, &[("client", b"nobody"), ("payload", b"p")]).await;
    let d = read_n(&a, 1).await.remove(0);
    assert!(
        a.dead_letter(&d.entry_id, "undeliverable: unknown client", d.attempts)
            .await
            .unwrap()
    );
    let dead = dead_letters(&mut conn).await;
    assert_eq!(dead[1]["entry"], id2);
    assert_eq!(dead[1]["reason"], "undeliverable: unknown client");
    assert_eq!(a.pending().await.unwrap(), 0);
}

#[tokio::test]
async fn lag_and_pending_counts() {
    let redis = RedisServer::start().await;
    let consumer = Consumer::connect(redis.client(), config("d-1"))
        .await
        .unwrap();
    assert_eq!(consumer.group_info().await.unwrap(), (Some(0), 0));
    let mut conn = redis.conn().await;
    for _ in 0..5 {
        xadd(&mut conn, &[("client", b"c"), ("payload", b"p")]).await;
    }
    assert_eq!(consumer.lag().await.unwrap(), Some(5));
    assert_eq!(consumer.pending().await.unwrap(), 0);
    let got = consumer.next_batch(2, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(consumer.group_info().await.unwrap(), (Some(3), 2));
    consumer.ack(&[&got[0].entry_id]).await.unwrap();
    assert_eq!(consumer.group_info().await.unwrap(), (Some(3), 1));
}

#[tokio::test]
async fn consumer_survives_a_redis_restart() {
    let mut redis = RedisServer::start().await;
    let consumer = Consumer::connect(redis.client(), config("d-1"))
        .await
        .unwrap();
    let mut conn = redis.conn().await;
    xadd(&mut conn, &[("client", b"c"), ("payload", b"before")]).await;
    let d = read_n(&consumer, 1).await;
    consumer.ack(&[&d[0].entry_id]).await.unwrap();

    redis.stop();
    assert!(
        consumer.next_batch(10, Duration::ZERO).await.is_err(),
        "redis is down"
    );
    redis.spawn().await;

    // The restarted server has no data: the stream and group are recreated.
    let mut conn = redis.conn().await;
    xadd(&mut conn, &[("client", b"c"), ("payload", b"after-1")]).await;
    xadd(&mut conn, &[("client", b"c"), ("payload", b"after-2")]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "consumer did not recover");
        match consumer.next_batch(10, Duration::from_millis(100)).await {
            Ok(batch) => got.extend(batch),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(got[0].message.payload, &b"after-1"[..]);
    assert_eq!(got[1].message.payload, &b"after-2"[..]);
    let ids: Vec<&str> = got.iter().map(|d| d.entry_id.as_str()).collect();
    assert_eq!(consumer.ack(&ids).await.unwrap(), 2);
    assert_eq!(consumer.pending().await.unwrap(), 0);
}

#[tokio::test]
async fn acks_are_not_queued_behind_a_blocking_read() {
    let redis = RedisServer::start().await;
    let consumer = std::sync::Arc::new(
        Consumer::connect(redis.client(), config("d-1"))
            .await
            .unwrap(),
    );
    let mut conn = redis.conn().await;
    xadd(&mut conn, &[("client", b"c"), ("payload", b"p")]).await;
    let d = read_n(&consumer, 1).await.remove(0);

    let reader = consumer.clone();
    let blocked = tokio::spawn(async move { reader.next_batch(10, Duration::from_secs(3)).await });
    tokio::task::yield_now().await;
    let started = Instant::now();
    assert_eq!(consumer.ack(&[&d.entry_id]).await.unwrap(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "ack waited for the blocking read"
    );
    xadd(&mut conn, &[("client", b"c"), ("payload", b"wake")]).await;
    let woke = blocked.await.unwrap().unwrap();
    assert_eq!(woke[0].message.payload, &b"wake"[..]);
}

#[tokio::test]
async fn reclaim_walks_the_pending_list_in_pages() {
    let redis = RedisServer::start().await;
    let dead = Consumer::connect(redis.client(), config("d-dead"))
        .await
        .unwrap();
    let alive = Consumer::connect(redis.client(), config("d-alive"))
        .await
        .unwrap();
    let mut conn = redis.conn().await;
    for i in 0..7u8 {
        xadd(&mut conn, &[("client", b"c"), ("payload", &[i])]).await;
    }
    read_n(&dead, 7).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let page = alive.reclaim(Duration::ZERO, 3).await.unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|d| d.message.payload[0]));
        if seen.len() == 7 {
            break;
        }
    }
    assert_eq!(seen, (0..7).collect::<Vec<u8>>());
}

/// A backend may start pushing before any distributor ever ran: the group is
/// created at the start of the stream, so those entries are delivered too.
#[tokio::test]
async fn entries_added_before_the_group_existed_are_delivered() {
    let redis = RedisServer::start().await;
    let mut conn = redis.conn().await;
    xadd(
        &mut conn,
        &[("client", b"early-bird"), ("payload", b"early")],
    )
    .await;
    let consumer = Consumer::connect(redis.client(), config("d-1"))
        .await
        .unwrap();
    xadd(
        &mut conn,
        &[("client", b"early-bird"), ("payload", b"late")],
    )
    .await;
    let got = read_n(&consumer, 2).await;
    let payloads: Vec<&[u8]> = got.iter().map(|d| &d.message.payload[..]).collect();
    assert_eq!(payloads, [&b"early"[..], &b"late"[..]]);
}

/// Acknowledged entries are trimmed; pending ones (and everything after the
/// oldest pending one) stay.
#[tokio::test]
async fn trimming_keeps_what_is_still_pending() {
    let redis = RedisServer::start().await;
    let consumer = Consumer::connect(redis.client(), config("d-1"))
        .await
        .unwrap();
    let mut conn = redis.conn().await;
    // Small nodes, so that the approximate trim removes whole nodes in a test.
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg("10")
        .query_async(&mut conn)
        .await
        .unwrap();
    for i in 0..100 {
        xadd(
            &mut conn,
            &[("client", b"c"), ("payload", format!("{i}").as_bytes())],
        )
        .await;
    }
    let got = read_n(&consumer, 100).await;
    let ids: Vec<&str> = got.iter().map(|d| d.entry_id.as_str()).collect();
    // The first 50 acknowledged, the rest still pending.
    consumer.ack(&ids[..50]).await.unwrap();
    let removed = consumer.trim_acknowledged().await.unwrap();
    assert!((40..=50).contains(&removed), "removed {removed}");
    let left: u64 = conn.xlen(STREAM).await.unwrap();
    assert_eq!(left, 100 - removed);
    // Everything pending is still there.
    let range: StreamRangeReply = conn.xrange(STREAM, ids[50], "+").await.unwrap();
    assert_eq!(range.ids.len(), 50);

    consumer.ack(&ids[50..]).await.unwrap();
    let removed_more = consumer.trim_acknowledged().await.unwrap();
    let left: u64 = conn.xlen(STREAM).await.unwrap();
    assert!(
        left <= 10,
        "{left} left after acking everything ({removed_more} removed)"
    );
}
