//! The phases of a `downlink` run as the parent sees them: waiting for the
//! devices (or sink streams), running the producers, following the arrivals
//! until all are in or the run gives up, and merging the workers' reports.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::msg::{ConnectedReport, Counts, FinalReport, WorkerMsg};
use super::produce::{Plan, PushReport};
use super::report::Delivery;
use super::{DownlinkArgs, Via, ingest, redis};
use crate::hist::Latency;
use crate::report::count;
use crate::workers::{Event, WorkerSet};

pub(super) fn progress(args: &DownlinkArgs, line: String) {
    if !args.output.quiet {
        eprintln!("{line}");
    }
}

pub(super) fn wait_connected(
    args: &DownlinkArgs,
    set: &WorkerSet<WorkerMsg>,
    workers: usize,
) -> anyhow::Result<Vec<ConnectedReport>> {
    let mut done: Vec<Option<ConnectedReport>> = vec![None; workers];
    let mut progress_by = vec![(0u64, 0u64); workers];
    let mut last_print = Instant::now();
    while done.iter().any(Option::is_none) {
        let Some((w, event)) = set.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        match event {
            Event::Msg(WorkerMsg::Connecting { ok, failed }) => {
                progress_by[w] = (ok, failed);
                if last_print.elapsed() >= Duration::from_millis(900) {
                    last_print = Instant::now();
                    let (ok, failed) = progress_by
                        .iter()
                        .fold((0, 0), |(a, b), &(o, f)| (a + o, b + f));
                    progress(
                        args,
                        format!("  … {} connected, {} failed", count(ok), count(failed)),
                    );
                }
            }
            Event::Msg(WorkerMsg::Connected(r)) => done[w] = Some(*r),
            Event::Msg(WorkerMsg::Progress(_)) => {}
            Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
            Event::Msg(other) => bail!("worker {w}: unexpected {other:?} while connecting"),
            Event::Garbage(line) => eprintln!("worker {w}: {line}"),
            Event::Closed => bail!("worker {w} exited before reporting"),
        }
    }
    Ok(done.into_iter().flatten().collect())
}

/// Runs the producers on their own runtime in a thread; the result arrives on
/// the returned channel.
pub(super) fn spawn_producer(
    args: &DownlinkArgs,
    plan: Plan,
) -> anyhow::Result<std_mpsc::Receiver<anyhow::Result<PushReport>>> {
    let (tx, rx) = std_mpsc::channel();
    let via = args.via;
    let (redis_url, stream, grpc) = (
        args.redis_url.clone(),
        args.stream.clone(),
        args.grpc.clone(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.producer_threads.max(1))
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("producers".into())
        .spawn(move || {
            let result = rt.block_on(async move {
                match via {
                    Via::Redis => {
                        let url = redis::RedisUrl::parse(&redis_url.unwrap_or_default())?;
                        redis::produce(url, stream, plan).await
                    }
                    Via::Ingest => ingest::produce(grpc.unwrap_or_default(), plan).await,
                }
            });
            let _ = tx.send(result);
        })?;
    Ok(rx)
}

/// What [`watch`] saw: the last totals, and the producers' result if they finished.
pub(super) struct Watched {
    pub counts: Counts,
    pub push: Option<anyhow::Result<PushReport>>,
}

/// Follows the workers' progress until every message arrived, or the push is
/// over and nothing new arrived for --drain-timeout, or --timeout passed.
pub(super) fn watch(
    args: &DownlinkArgs,
    set: &WorkerSet<WorkerMsg>,
    workers: usize,
    producer: &std_mpsc::Receiver<anyhow::Result<PushReport>>,
    started: Instant,
) -> anyhow::Result<Watched> {
    let mut by_worker = vec![Counts::default(); workers];
    let mut total = Counts::default();
    let deadline = started + Duration::from_secs_f64(args.timeout);
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let mut last_growth = Instant::now();
    let mut push: Option<anyhow::Result<PushReport>> = None;
    let (mut last_print, mut printed_unique) = (Instant::now(), 0u64);
    loop {
        if let Some((w, event)) = set.recv_timeout(Duration::from_millis(20)) {
            match event {
                Event::Msg(WorkerMsg::Progress(c)) => by_worker[w] = c,
                Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
                Event::Msg(_) => {}
                Event::Garbage(line) => eprintln!("worker {w}: {line}"),
                Event::Closed => bail!("worker {w} exited during the run"),
            }
        }
        let mut now_total = Counts::default();
        for c in &by_worker {
            now_total.add(c);
        }
        if now_total.unique > total.unique {
            last_growth = Instant::now();
        }
        total = now_total;
        if total.unique >= args.messages {
            break;
        }
        if push.is_none()
            && let Ok(result) = producer.try_recv()
        {
            if let Err(err) = &result {
                progress(args, format!("  producers failed: {err:#}"));
                return Ok(Watched {
                    counts: total,
                    push: Some(result),
                });
            }
            push = Some(result);
            last_growth = last_growth.max(Instant::now());
        }
        if push.is_some() && last_growth.elapsed() >= drain {
            progress(
                args,
                format!(
                    "  nothing new for {:.0} s after the push: giving up",
                    drain.as_secs_f64()
                ),
            );
            break;
        }
        if Instant::now() >= deadline {
            progress(args, format!("  --timeout {} s reached", args.timeout));
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let secs = last_print.elapsed().as_secs_f64();
            progress(
                args,
                format!(
                    "  … {} of {} received ({} msg/s){}",
                    count(total.unique),
                    count(args.messages),
                    count(((total.unique - printed_unique) as f64 / secs) as u64),
                    if push.is_some() { ", push done" } else { "" }
                ),
            );
            last_print = Instant::now();
            printed_unique = total.unique;
        }
    }
    Ok(Watched {
        counts: total,
        push,
    })
}

/// Every worker's final report, once `finish` was sent.
pub(super) fn collect_finals(set: &mut WorkerSet<WorkerMsg>) -> anyhow::Result<Vec<FinalReport>> {
    set.collect(
        Duration::from_secs(60),
        |w, msg| match msg {
            WorkerMsg::Final(report) => Ok(Some(*report)),
            WorkerMsg::Error { message } => bail!("worker {w}: {message}"),
            _ => Ok(None),
        },
        |w, line| eprintln!("worker {w}: {line}"),
    )
}

/// Merges the workers' final reports.
pub(super) fn delivery(
    finals: &[FinalReport],
    expected: u64,
    push: Option<&PushReport>,
) -> Delivery {
    let mut d = Delivery {
        expected,
        ..Delivery::default()
    };
    let mut latency = Latency::new();
    let mut arrivals: BTreeMap<u64, u64> = BTreeMap::new();
    let mut first = u64::MAX;
    for f in finals {
        d.counts.add(&f.counts);
        latency.merge_wire(&f.latency);
        for &(bucket, n) in &f.arrivals {
            *arrivals.entry(bucket).or_default() += n;
        }
        if f.first_arrival_us > 0 {
            first = first.min(f.first_arrival_us);
        }
        d.last_arrival_unix_us = d.last_arrival_unix_us.max(f.last_arrival_us);
        for (k, v) in &f.lost {
            *d.connections_lost.entry(k.clone()).or_default() += v;
        }
    }
    d.first_arrival_unix_us = if first == u64::MAX { 0 } else { first };
    d.lost = expected.saturating_sub(d.counts.unique);
    d.latency_us = latency.summary();
    let start_us = push.map_or(d.first_arrival_unix_us, |p| p.first_send_unix_us);
    d.seconds = d.last_arrival_unix_us.saturating_sub(start_us) as f64 / 1e6;
    if d.seconds > 0.0 {
        d.messages_per_s = d.counts.unique as f64 / d.seconds;
    }
    // From the first 100 ms bucket that starts after the push ended.
    if let Some(p) = push {
        let from = p.done_unix_us.div_ceil(100_000);
        d.after_push = arrivals.range(from..).map(|(_, n)| n).sum();
        let seconds = d.last_arrival_unix_us.saturating_sub(from * 100_000) as f64 / 1e6;
        if d.after_push > 0 && seconds >= 0.5 {
            d.after_push_per_s = Some(d.after_push as f64 / seconds);
        }
    }
    // 100 ms buckets to seconds counted from the first send.
    let start_bucket = start_us / 100_000;
    for (bucket, n) in arrivals {
        let second = (bucket.saturating_sub(start_bucket) / 10) as usize;
        if d.timeline_per_s.len() <= second {
            d.timeline_per_s.resize(second + 1, 0);
        }
        d.timeline_per_s[second] += n;
    }
    d
}
