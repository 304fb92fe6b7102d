//! The downlink consumer loop against a real `redis-server`, delivering through a
//! real hub to fake handlers attached in-process.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamPendingCountReply, StreamPendingReply, StreamRangeReply};
use throng_distributor::downlink::{self, DownlinkConfig};
use throng_distributor::{DistributorMetrics, Hub, HubConfig};
use throng_downlink::{Consumer, ConsumerConfig, ConsumerError};
use throng_proto::v1::{Ack, AckOutcome, Message, delivery, distributor_message};
use throng_ring::{Member, Ring};
use throng_testkit::RedisServer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

const STREAM: &str = downlink::DEFAULT_STREAM;
const GROUP: &str = downlink::DEFAULT_GROUP;
const DEAD: &str = "throng:downlink:dead";

/// A hub whose handler ring holds `ring` (empty: the attached handlers).
fn hub(ring: &[&str], config: HubConfig) -> Arc<Hub> {
    let ring = Ring::new(ring.iter().map(|id| Member::new(*id, "")));
    let (_tx, rx) = watch::channel(Arc::new(ring));
    Hub::new(config, DistributorMetrics::default(), rx)
}

/// What a fake handler saw: the target client id (empty for a topic) and the message.
type Seen = mpsc::UnboundedReceiver<(String, Message)>;

/// Attaches handler `id` to `hub`; it reports every delivery it gets and answers
/// UNKNOWN_CLIENT for `unknown` clients, ACCEPTED for the rest, or nothing at
/// all when `silent`. Aborting the task detaches it.
fn fake_handler(
    hub: &Arc<Hub>,
    id: &str,
    unknown: &'static [&'static str],
    silent: bool,
) -> (Seen, JoinHandle<()>) {
    let (attachment, mut rx) = hub.attach(id);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Some(distributor_message::Kind::Delivery(d)) = msg.kind else {
                continue;
            };
            if d.delivery_id == 0 {
                continue;
            }
            let client = match d.target {
                Some(delivery::Target::ClientId(client)) => client,
                _ => String::new(),
            };
            let _ = seen_tx.send((client.clone(), d.message.unwrap_or_default()));
            if silent {
                continue;
            }
            let (outcome, reason) = if unknown.contains(&client.as_str()) {
                (
                    AckOutcome::UnknownClient,
                    format!("no session for {client}"),
                )
            } else {
                (AckOutcome::Accepted, String::new())
            };
            attachment.ack(Ack {
                delivery_id: d.delivery_id,
                outcome: outcome.into(),
                reason,
            });
        }
    });
    (seen, task)
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), ConsumerError>>,
}

impl Running {
    fn start(hub: &Arc<Hub>, config: DownlinkConfig) -> Running {
        let stop = CancellationToken::new();
        let task = tokio::spawn(downlink::run(hub.clone(), config, stop.clone()));
        Running { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns after stop")
            .unwrap()
            .unwrap();
    }
}

/// Fast reads; reclaims only what has been idle for a long time.
fn config(redis: &RedisServer, consumer: &str) -> DownlinkConfig {
    let mut config = DownlinkConfig::new(redis.url(), consumer);
    config.block = Duration::from_millis(100);
    config
}

/// Frequent reclaims of entries idle for 300 ms.
fn eager_config(redis: &RedisServer, consumer: &str) -> DownlinkConfig {
    let mut config = config(redis, consumer);
    config.reclaim_every = Duration::from_millis(100);
    config.reclaim_idle = Duration::from_millis(300);
    config
}

/// Creates the group (at `$`) before anything is added, as a running
/// distributor would have, and returns a consumer to read its counts.
async fn observer(redis: &RedisServer) -> Consumer {
    Consumer::connect(
        redis.client(),
        ConsumerConfig::new(STREAM, GROUP, "observer"),
    )
    .await
    .unwrap()
}

/// XADDs `fields` once per row, in one round trip; returns the entry ids.
async fn xadd_all(conn: &mut MultiplexedConnection, rows: &[Vec<(&str, String)>]) -> Vec<String> {
    let mut p = redis::pipe();
    for fields in rows {
        p.cmd("XADD").arg(STREAM).arg("*");
        for (k, v) in fields {
            p.arg(*k).arg(v);
        }
    }
    p.query_async(conn).await.unwrap()
}

fn client_row(client: &str, payload: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client", client.to_owned()),
        ("payload", payload.to_owned()),
    ]
}

async fn pending(conn: &mut MultiplexedConnection) -> usize {
    let reply: StreamPendingReply = conn.xpending(STREAM, GROUP).await.unwrap();
    reply.count()
}

async fn dead_letters(conn: &mut MultiplexedConnection) -> Vec<HashMap<String, String>> {
    let reply: StreamRangeReply = conn.xrange_all(DEAD).await.unwrap();
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

/// Receives `n` deliveries from a fake handler (fails after 10 s).
async fn receive(seen: &mut Seen, n: usize) -> Vec<(String, Message)> {
    let mut out = Vec::with_capacity(n);
    timeout(Duration::from_secs(10), async {
        while out.len() < n {
            out.push(seen.recv().await.expect("handler running"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} deliveries arrived", out.len()));
    out
}

/// Polls Redis until `check` holds (fails after 10 s).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_entry_reaches_the_handler_and_is_acked() {
    let redis = RedisServer::start().await;
    let observer = observer(&redis).await;
    let hub = hub(&[], HubConfig::default());
    let (mut seen, _handler) = fake_handler(&hub, "h1", &[], false);
    let running = Running::start(&hub, config(&redis, "d1"));

    let mut conn = redis.conn().await;
    let rows: Vec<_> = (0..2000)
        .map(|i| client_row(&format!("dev-{i}"), &format!("m{i}")))
        .collect();
    let ids = xadd_all(&mut conn, &rows).await;

    let got = receive(&mut seen, 2000).await;
    let by_client: HashMap<&str, &Message> = got.iter().map(|(c, m)| (c.as_str(), m)).collect();
    assert_eq!(by_client.len(), 2000, "each client exactly once");
    for (i, id) in ids.iter().enumerate() {
        let m = by_client[format!("dev-{i}").as_str()];
        assert_eq!(m.topic, format!("$throng/downlink/dev-{i}"));
        assert_eq!(m.payload, format!("m{i}").into_bytes());
        assert_eq!(m.qos, 1);
        assert_eq!(&m.message_id, id);
        let ms: i64 = id.split_once('-').unwrap().0.parse().unwrap();
        assert_eq!(m.published_at_unix_ms, ms);
    }
    eventually("every entry acked", || async {
        observer.group_info().await.unwrap() == (Some(0), 0)
    })
    .await;
    running.stop().await;
    assert_eq!(pending(&mut conn).await, 0);
    assert!(dead_letters(&mut conn).await.is_empty());
    assert!(seen.try_recv().is_err(), "no duplicates");
    assert_eq!(hub.metrics().dead_letters.get(), 0);
}

#[tokio::test]
async fn unknown_client_is_dead_lettered_and_later_entries_still_flow() {
    let redis = RedisServer::start().await;
    observer(&redis).await;
    let hub = hub(&[], HubConfig::default());
    let (mut seen, _handler) = fake_handler(&hub, "h1", &["ghost"], false);
    let running = Running::start(&hub, config(&redis, "d1"));
    let mut conn = redis.conn().await;

    let ghost = xadd_all(&mut conn, &[client_row("ghost", "boo")]).await;
    assert_eq!(receive(&mut seen, 1).await[0].0, "ghost");
    eventually("the dead letter", || async {
        dead_letters(&mut redis.conn().await).await.len() == 1
    })
    .await;
    let dead = dead_letters(&mut conn).await;
    assert_eq!(dead[0]["entry"], ghost[0]);
    assert_eq!(dead[0]["client"], "ghost");
    assert_eq!(dead[0]["payload"], "boo");
    assert_eq!(
        dead[0]["reason"],
        "undeliverable: client \"ghost\" has no session on any handler"
    );

    xadd_all(&mut conn, &[client_row("alive", "hi")]).await;
    let got = receive(&mut seen, 1).await;
    assert_eq!(got[0].0, "alive");
    assert_eq!(&got[0].1.payload[..], b"hi");
    eventually("nothing pending", || async {
        pending(&mut redis.conn().await).await == 0
    })
    .await;
    running.stop().await;
    assert_eq!(hub.metrics().dead_letters.get(), 1);
    assert_eq!(dead_letters(&mut conn).await.len(), 1);
}

#[tokio::test]
async fn malformed_entry_is_dead_lettered_without_stopping_the_consumer() {
    let redis = RedisServer::start().await;
    observer(&redis).await;
    let hub = hub(&[], HubConfig::default());
    let (mut seen, _handler) = fake_handler(&hub, "h1", &[], false);
    let running = Running::start(&hub, config(&redis, "d1"));
    let mut conn = redis.conn().await;

    let mut bad = client_row("c", "x");
    bad.push(("qos", "7".into()));
    let ids = xadd_all(&mut conn, &[bad, client_row("c", "after")]).await;
    let got = receive(&mut seen, 1).await;
    assert_eq!(&got[0].1.payload[..], b"after");
    eventually("nothing pending", || async {
        pending(&mut redis.conn().await).await == 0
    })
    .await;
    running.stop().await;

    let dead = dead_letters(&mut conn).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["entry"], ids[0]);
    assert_eq!(dead[0]["qos"], "7");
    assert!(
        dead[0]["reason"].starts_with("malformed: bad qos \"7\""),
        "{}",
        dead[0]["reason"]
    );
    assert_eq!(hub.metrics().dead_letters.get(), 1);
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn entries_wait_for_an_absent_owner_and_are_reclaimed_once_it_attaches() {
    let redis = RedisServer::start().await;
    let observer = observer(&redis).await;
    // The ring says h1 owns every client.
    let hub = hub(&["h1"], HubConfig::default());
    let mut config = eager_config(&redis, "d1");
    config.consumer.max_attempts = 100;
    let running = Running::start(&hub, config);
    let mut conn = redis.conn().await;
    let rows: Vec<_> = (0..20)
        .map(|i| client_row(&format!("dev-{i}"), &format!("m{i}")))
        .collect();
    xadd_all(&mut conn, &rows).await;

    // No handler attached at all: nothing is read.
    sleep(Duration::from_millis(300)).await;
    assert_eq!(observer.group_info().await.unwrap(), (Some(20), 0));

    // A handler that is not the owner: entries are read, Retry leaves them
    // pending, and reclaims deliver them again, still to no avail.
    let (mut bystander, _h0) = fake_handler(&hub, "h0", &[], false);
    eventually("all read and left pending", || async {
        observer.group_info().await.unwrap() == (Some(0), 20)
    })
    .await;
    sleep(Duration::from_millis(700)).await;
    let reply: StreamPendingCountReply = conn
        .xpending_count(STREAM, GROUP, "-", "+", 100)
        .await
        .unwrap();
    assert_eq!(reply.ids.len(), 20);
    for entry in &reply.ids {
        assert!(
            entry.times_delivered >= 2,
            "reclaimed and retried: {entry:?}"
        );
    }
    assert!(dead_letters(&mut conn).await.is_empty());

    // The owner attaches: the next reclaim delivers everything to it.
    let (mut seen, _h1) = fake_handler(&hub, "h1", &[], false);
    let got = receive(&mut seen, 20).await;
    let clients: HashSet<String> = got.into_iter().map(|(c, _)| c).collect();
    assert_eq!(clients.len(), 20);
    eventually("nothing pending", || async {
        pending(&mut redis.conn().await).await == 0
    })
    .await;
    running.stop().await;
    assert!(dead_letters(&mut conn).await.is_empty());
    assert!(bystander.try_recv().is_err(), "only the owner gets them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_distributors_entries_are_reclaimed_by_another() {
    let redis = RedisServer::start().await;
    let observer = observer(&redis).await;
    let mut conn = redis.conn().await;

    // Distributor A reads entries, but its handler never answers.
    let hub_a = hub(&[], HubConfig::default());
    let (mut seen_a, handler_a) = fake_handler(&hub_a, "ha", &[], true);
    let mut config_a = eager_config(&redis, "d-a");
    config_a.shutdown_grace = Duration::from_millis(200);
    let a = Running::start(&hub_a, config_a);
    let first: Vec<_> = (0..100)
        .map(|i| client_row(&format!("dev-{i}"), &format!("{i}")))
        .collect();
    xadd_all(&mut conn, &first).await;
    let held_by_a: HashSet<String> = receive(&mut seen_a, 100)
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(held_by_a.len(), 100);

    // Distributor B joins the group; more entries arrive; then A dies.
    let hub_b = hub(&[], HubConfig::default());
    let (mut seen_b, _handler_b) = fake_handler(&hub_b, "hb", &[], false);
    let b = Running::start(&hub_b, eager_config(&redis, "d-b"));
    let second: Vec<_> = (100..200)
        .map(|i| client_row(&format!("dev-{i}"), &format!("{i}")))
        .collect();
    xadd_all(&mut conn, &second).await;
    a.stop().await;
    handler_a.abort();

    let mut delivered_by_b = HashSet::new();
    timeout(Duration::from_secs(10), async {
        while delivered_by_b.len() < 200 {
            let (client, _) = seen_b.recv().await.unwrap();
            delivered_by_b.insert(client);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("B delivered only {} of 200", delivered_by_b.len()));
    assert!(held_by_a.is_subset(&delivered_by_b));
    eventually("everything acked", || async {
        observer.group_info().await.unwrap() == (Some(0), 0)
    })
    .await;
    b.stop().await;
    assert!(dead_letters(&mut conn).await.is_empty());
}

#[tokio::test]
async fn the_loop_survives_a_redis_restart() {
    let mut redis = RedisServer::start().await;
    observer(&redis).await;
    let hub = hub(&[], HubConfig::default());
    let (mut seen, _handler) = fake_handler(&hub, "h1", &[], false);
    let running = Running::start(&hub, config(&redis, "d1"));
    let mut conn = redis.conn().await;
    xadd_all(&mut conn, &[client_row("c", "before")]).await;
    assert_eq!(&receive(&mut seen, 1).await[0].1.payload[..], b"before");

    redis.stop();
    sleep(Duration::from_millis(300)).await;
    redis.spawn().await;
    // The new server is empty: the loop recreates the group and reads from 0.
    let mut conn = redis.conn().await;
    xadd_all(&mut conn, &[client_row("c", "after")]).await;
    assert_eq!(&receive(&mut seen, 1).await[0].1.payload[..], b"after");
    eventually("nothing pending", || async {
        pending(&mut redis.conn().await).await == 0
    })
    .await;
    assert!(!running.task.is_finished());
    running.stop().await;
}

/// Throughput of one distributor draining a backlog (run with
/// `cargo test --release -p throng-distributor --test downlink -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "throughput measurement, not a check"]
async fn drains_a_backlog_of_200k_entries() {
    const N: usize = 200_000;
    let redis = RedisServer::start().await;
    let observer = observer(&redis).await;
    let mut conn = redis.conn().await;
    for chunk in 0..N / 10_000 {
        let rows: Vec<_> = (0..10_000)
            .map(|i| client_row(&format!("dev-{}", chunk * 10_000 + i), "payload"))
            .collect();
        xadd_all(&mut conn, &rows).await;
    }
    let hub = hub(&[], HubConfig::default());
    let (mut seen, _handler) = fake_handler(&hub, "h1", &[], false);
    let drain = tokio::spawn(async move { while seen.recv().await.is_some() {} });
    let started = std::time::Instant::now();
    let running = Running::start(&hub, config(&redis, "d1"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while observer.group_info().await.unwrap() != (Some(0), 0) {
        assert!(Instant::now() < deadline, "backlog not drained");
        sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "{N} entries delivered and acked in {elapsed:?}: {:.0} msgs/s",
        N as f64 / elapsed.as_secs_f64()
    );
    running.stop().await;
    drain.abort();
}
