//! Setting up a worker's clients: subscribers first (connected, subscribed,
//! SUBACK in hand), then publishers (connected, their window fixed from the
//! broker's Receive Maximum), at most `in_flight` at a time; each starts its
//! loop at once and waits for the run's phases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::client;
use super::msg::{ReadyReport, WorkerConfig, WorkerMsg};
use super::plan::Plan;
use super::publisher::{self, PubResult};
use super::subscriber::{self, Subscriber};
use super::worker::{Phase, Shared};
use crate::hist::Latency;
use crate::workers::emit;

/// A subscriber's task: its accounting and why its connection ended, once the
/// run finishes (`None` when it could not be set up).
pub(super) type SubHandle = JoinHandle<Option<(Subscriber, Option<String>)>>;

/// Connects (and subscribes) every client of this worker, subscribers first;
/// each starts its loop at once. Returns the report, the subscribers' handles
/// and how many publishers are running.
pub(super) async fn connect_all(
    cfg: &WorkerConfig,
    shared: &Arc<Shared>,
    phase: &watch::Receiver<Phase>,
    done: mpsc::Sender<PubResult>,
) -> (ReadyReport, Vec<SubHandle>, u32) {
    let limit = Arc::new(Semaphore::new(cfg.in_flight.max(1)));
    let total = (cfg.subscribers + cfg.publishers) as usize;
    let (tx, mut rx) = mpsc::channel::<Outcome>(total.max(1));
    let timeout = Duration::from_millis(cfg.setup_timeout_ms);
    let targets = &cfg.targets;
    let source = |k: usize, target: std::net::SocketAddr| {
        (!cfg.source_ips.is_empty())
            .then(|| cfg.source_ips[k % cfg.source_ips.len()])
            .filter(|ip| ip.is_ipv4() == target.is_ipv4())
    };
    let mut subs = Vec::with_capacity(cfg.subscribers as usize);
    for j in cfg.first_subscriber..cfg.first_subscriber + cfg.subscribers {
        let permit = limit.clone().acquire_owned().await.expect("semaphore open");
        let target = targets[Plan::subscriber_target(j, targets.len())];
        let src = source(j as usize, target);
        let (plan, opts) = (&shared.plan, cfg.connect.clone());
        let (id, filter) = (plan.subscriber_id(j), plan.filter(j));
        let (shared, phase, tx) = (shared.clone(), phase.clone(), tx.clone());
        subs.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let attempt = async {
                let mut conn = client::connect(src, target, &opts, &id).await?;
                let granted =
                    client::subscribe(&mut conn, opts.protocol, &filter, shared.plan.sub_qos)
                        .await?;
                Ok::<_, String>((conn, granted))
            };
            let result = tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or_else(|_| Err("timeout".into()));
            drop(permit);
            let took = t0.elapsed().as_micros() as u64;
            match result {
                Ok((conn, granted)) => {
                    let _ = tx.send(Outcome::Subscribed { took, granted }).await;
                    let mut sub = Subscriber::new(&shared.plan, j);
                    let ended = subscriber::run(conn, &mut sub, shared, phase).await;
                    Some((sub, ended))
                }
                Err(cause) => {
                    let _ = tx.send(Outcome::Failed(cause)).await;
                    None
                }
            }
        }));
    }
    for i in cfg.first_publisher..cfg.first_publisher + cfg.publishers {
        let permit = limit.clone().acquire_owned().await.expect("semaphore open");
        let target = targets[Plan::publisher_target(i, targets.len())];
        let src = source(i as usize + cfg.plan.subscribers as usize, target);
        let id = shared.plan.publisher_id(i);
        let opts = cfg.connect.clone();
        let (shared, phase, tx, done) = (shared.clone(), phase.clone(), tx.clone(), done.clone());
        let (ack_timeout, probe_every) = (
            Duration::from_millis(cfg.ack_timeout_ms),
            Duration::from_millis(cfg.probe_every_ms),
        );
        tokio::spawn(async move {
            let t0 = Instant::now();
            let result = tokio::time::timeout(timeout, client::connect(src, target, &opts, &id))
                .await
                .unwrap_or_else(|_| Err("timeout".into()));
            drop(permit);
            let took = t0.elapsed().as_micros() as u64;
            let conn = match result {
                Ok(conn) => conn,
                Err(cause) => {
                    let _ = tx.send(Outcome::Failed(cause)).await;
                    return;
                }
            };
            let props = conn.props;
            if let Some(max) = props.maximum_qos
                && max < shared.plan.qos
            {
                let _ = tx
                    .send(Outcome::Failed(format!("server_maximum_qos_{max}")))
                    .await;
                return;
            }
            let window = shared
                .plan
                .inflight
                .min(props.receive_maximum.unwrap_or(u16::MAX))
                .max(1);
            let _ = tx
                .send(Outcome::Connected {
                    took,
                    receive_maximum: props.receive_maximum,
                })
                .await;
            let setup = publisher::Setup {
                index: i,
                window,
                ack_timeout,
                probe_every,
            };
            publisher::run(conn, setup, shared, phase, done).await;
        });
    }
    drop(tx);
    let mut report = ReadyReport::default();
    let mut latency = Latency::new();
    let (mut failed, mut publishers) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut done_count = 0;
    while done_count < total {
        tokio::select! {
            outcome = rx.recv() => {
                let Some(outcome) = outcome else { break };
                done_count += 1;
                match outcome {
                    Outcome::Subscribed { took, granted } => {
                        report.ok += 1;
                        latency.record_us(took);
                        report.granted[usize::from(granted.min(2))] += 1;
                    }
                    Outcome::Connected { took, receive_maximum } => {
                        report.ok += 1;
                        publishers += 1;
                        latency.record_us(took);
                        if let Some(rm) = receive_maximum {
                            report.receive_maximum =
                                Some(report.receive_maximum.map_or(rm, |m| m.min(rm)));
                        }
                    }
                    Outcome::Failed(cause) => {
                        failed += 1;
                        *report.failures.entry(cause).or_default() += 1;
                    }
                }
            }
            _ = tick.tick() => emit(&WorkerMsg::Connecting { ok: report.ok, failed }),
        }
    }
    report.setup_latency = latency.to_wire();
    (report, subs, publishers)
}

enum Outcome {
    Subscribed {
        took: u64,
        granted: u8,
    },
    Connected {
        took: u64,
        receive_maximum: Option<u16>,
    },
    Failed(String),
}
