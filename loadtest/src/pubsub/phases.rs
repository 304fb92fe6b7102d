//! The phases of a `pubsub` run as the parent sees them: setup, probing,
//! publishing and delivery, finishing; and the collector that keeps the
//! latest of what every worker said.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::PubsubArgs;
use super::msg::{
    CMD_FINISH, CMD_PROBE, CMD_START, CMD_STOP, FinalReport, Progress, PublishedReport,
    ReadyReport, WorkerConfig, WorkerMsg,
};
use super::plan::Plan;
use super::report::{self, End, LoadTool, ProbePhase, Report, SetupPhase};
use super::worker::unix_us;
use crate::hist::Latency;
use crate::report::count;
use crate::tiers::{Snapshot, Tiers};
use crate::workers::{Event, WorkerSet};

fn progress(args: &PubsubArgs, line: String) {
    if !args.output.quiet {
        eprintln!("{line}");
    }
}

/// The workers and the latest of what each said.
struct Collector {
    set: WorkerSet<WorkerMsg>,
    connecting: Vec<(u64, u64)>,
    ready: Vec<Option<ReadyReport>>,
    progress: Vec<Progress>,
    published: Vec<Option<PublishedReport>>,
    finals: Vec<Option<FinalReport>>,
}

impl Collector {
    fn new(set: WorkerSet<WorkerMsg>, workers: usize) -> Collector {
        Collector {
            set,
            connecting: vec![(0, 0); workers],
            ready: vec![None; workers],
            progress: vec![Progress::default(); workers],
            published: vec![None; workers],
            finals: vec![None; workers],
        }
    }

    /// Takes in what arrives within `timeout`.
    fn poll(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let Some((w, event)) = self.set.recv_timeout(timeout) else {
            return Ok(());
        };
        match event {
            Event::Msg(WorkerMsg::Connecting { ok, failed }) => self.connecting[w] = (ok, failed),
            Event::Msg(WorkerMsg::Ready(r)) => self.ready[w] = Some(*r),
            Event::Msg(WorkerMsg::Progress(p)) => self.progress[w] = p,
            Event::Msg(WorkerMsg::Published(p)) => self.published[w] = Some(*p),
            Event::Msg(WorkerMsg::Final(f)) => self.finals[w] = Some(*f),
            Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
            Event::Garbage(line) => eprintln!("worker {w}: {line}"),
            Event::Closed => self.set.closed(w, self.finals[w].is_some())?,
        }
        Ok(())
    }

    fn total(&self) -> Progress {
        let mut t = Progress::default();
        for p in &self.progress {
            t.probes_ready += p.probes_ready;
            t.probes_received += p.probes_received;
            t.warmup_received += p.warmup_received;
            t.received += p.received;
            t.unique += p.unique;
            t.sent += p.sent;
            t.publishers_done += p.publishers_done;
        }
        t
    }

    fn all_published(&self) -> bool {
        self.published.iter().all(Option::is_some)
    }

    /// Measured messages sent by each publisher, by index.
    fn published_counts(&self, publishers: u32) -> Vec<u64> {
        let mut counts = vec![0; publishers as usize];
        for (i, n) in self
            .published
            .iter()
            .flatten()
            .flat_map(|p| &p.per_publisher)
        {
            if let Some(c) = counts.get_mut(*i as usize) {
                *c = *n;
            }
        }
        counts
    }
}

/// Runs a whole `pubsub` run and returns its report (not yet printed).
pub(super) fn execute(
    args: &PubsubArgs,
    plan: &Plan,
    targets: &[std::net::SocketAddr],
    configs: &[WorkerConfig],
    tiers: &Tiers,
) -> anyhow::Result<Report> {
    let workers = configs.len();
    progress(
        args,
        format!(
            "throng-load pubsub: {} publisher(s), {} subscriber(s) at {} over {workers} worker(s)",
            count(u64::from(plan.publishers)),
            count(u64::from(plan.subscribers)),
            args.target
        ),
    );
    let started = Instant::now();
    let mut c = Collector::new(WorkerSet::spawn("pubsub", configs)?, workers);
    let setup = wait_ready(args, &mut c)?;
    let setup = SetupPhase {
        seconds: started.elapsed().as_secs_f64(),
        ..setup
    };
    if setup.failed > 0 {
        bail!(
            "{} client(s) failed to set up: {:?}",
            setup.failed,
            setup.failures
        );
    }
    let mut probe = probe(args, &mut c, plan)?;

    let measure_start_us = unix_us() + (args.warmup * 1e6) as u64;
    c.set
        .broadcast(&format!("{CMD_START} {measure_start_us}"))?;
    let (end, marks) = watch(args, &mut c, plan, tiers, measure_start_us)?;

    if !c.all_published() {
        c.set.broadcast(CMD_STOP)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.all_published() {
            if Instant::now() >= deadline {
                bail!("publishers did not report after stop");
            }
            c.poll(Duration::from_millis(100))?;
        }
    }
    let counts = c.published_counts(plan.publishers);
    c.set
        .broadcast(&format!("{CMD_FINISH} {}", serde_json::to_string(&counts)?))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.finals.iter().any(Option::is_none) {
        if Instant::now() >= deadline {
            bail!("workers did not report after finish");
        }
        c.poll(Duration::from_millis(100))?;
    }
    let warmup_received = c.total().warmup_received;
    let Collector {
        set,
        published,
        finals,
        ..
    } = c;
    set.wait()?;
    let published: Vec<PublishedReport> = published.into_iter().flatten().collect();
    let finals: Vec<FinalReport> = finals.into_iter().flatten().collect();
    probe.probes_sent = published.iter().map(|p| p.probes_sent).sum();

    let mut delivery = report::delivery(&finals, measure_start_us);
    delivery.warmup_received = warmup_received;
    let (broker, host) = match &marks {
        Some((a, b)) => tiers.usage(&a.snapshot, &b.snapshot, b.delivered - a.delivered),
        None => (Vec::new(), None),
    };
    let mut per_subscriber: Vec<_> = finals.iter().flat_map(|f| f.subscribers.clone()).collect();
    per_subscriber.sort_by_key(|r| r.subscriber);
    let mut report = Report {
        scenario: "pubsub",
        targets: targets.iter().map(ToString::to_string).collect(),
        mode: plan.mode,
        protocol: args.protocol,
        qos: plan.qos,
        sub_qos: plan.sub_qos,
        payload_size: plan.payload_size,
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        inflight: plan.inflight,
        rate_limit: plan.rate,
        messages: plan.messages,
        duration_s: plan.duration_s,
        warmup_s: args.warmup,
        setup,
        probe,
        publish: report::publish_phase(&published, measure_start_us, plan.duration_s),
        delivery,
        end,
        broker,
        host,
        load_tool: LoadTool {
            workers,
            cpu_us: finals.iter().map(|f| f.cpu_us).sum(),
            rss_bytes: finals.iter().map(|f| f.rss_bytes).sum(),
        },
        problems: Vec::new(),
        warnings: Vec::new(),
        per_subscriber,
    };
    report.judge(plan, args.fail_on_loss);
    Ok(report)
}

fn wait_ready(args: &PubsubArgs, c: &mut Collector) -> anyhow::Result<SetupPhase> {
    let mut last_print = Instant::now();
    while c.ready.iter().any(Option::is_none) {
        c.poll(Duration::from_millis(200))?;
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let (ok, failed) = c
                .connecting
                .iter()
                .fold((0, 0), |(a, b), &(o, f)| (a + o, b + f));
            progress(
                args,
                format!("  … {} set up, {} failed", count(ok), count(failed)),
            );
        }
    }
    let mut s = SetupPhase::default();
    let mut latency = Latency::new();
    for r in c.ready.iter().flatten() {
        s.ok += r.ok;
        latency.merge_wire(&r.setup_latency);
        for (k, v) in &r.failures {
            s.failed += v;
            *s.failures.entry(k.clone()).or_default() += v;
        }
        for (a, b) in s.granted.iter_mut().zip(r.granted) {
            *a += b;
        }
        if let Some(rm) = r.receive_maximum {
            s.receive_maximum = Some(s.receive_maximum.map_or(rm, |m| m.min(rm)));
        }
    }
    s.latency_us = latency.summary();
    Ok(s)
}

/// Probes until every subscriber saw every publisher it receives from, or --probe-timeout.
fn probe(args: &PubsubArgs, c: &mut Collector, plan: &Plan) -> anyhow::Result<ProbePhase> {
    let subscribers = u64::from(plan.subscribers);
    progress(
        args,
        format!(
            "  probing until {} subscriber(s) heard every publisher",
            count(subscribers)
        ),
    );
    let t0 = Instant::now();
    c.set.broadcast(CMD_PROBE)?;
    let timeout = Duration::from_secs_f64(args.probe_timeout);
    loop {
        c.poll(Duration::from_millis(20))?;
        let t = c.total();
        let complete = t.probes_ready >= subscribers;
        if complete || t0.elapsed() >= timeout {
            if !complete {
                progress(
                    args,
                    format!(
                        "  probing gave up after {:.1} s: {} of {} subscribers ready",
                        timeout.as_secs_f64(),
                        count(t.probes_ready),
                        count(subscribers)
                    ),
                );
            }
            return Ok(ProbePhase {
                seconds: t0.elapsed().as_secs_f64(),
                subscribers_ready: t.probes_ready,
                subscribers,
                complete,
                probes_sent: 0,
                probes_received: t.probes_received,
            });
        }
    }
}

/// Tier snapshot and deliveries of every kind (warmup included) so far.
pub(super) struct Mark {
    pub snapshot: Snapshot,
    pub delivered: u64,
}

/// Follows the run from the start command until every expected delivery
/// arrived, or the publishers are done and nothing new came for
/// --drain-timeout, or --timeout. Returns how it ended and the marks at the
/// start of the measured window and at the last new arrival.
fn watch(
    args: &PubsubArgs,
    c: &mut Collector,
    plan: &Plan,
    tiers: &Tiers,
    measure_start_us: u64,
) -> anyhow::Result<(End, Option<(Mark, Mark)>)> {
    let measure_start =
        Instant::now() + Duration::from_micros(measure_start_us.saturating_sub(unix_us()));
    let deadline = measure_start + Duration::from_secs_f64(args.timeout);
    let drain = Duration::from_secs_f64(args.drain_timeout);
    let (mut start, mut end): (Option<Mark>, Option<Mark>) = (None, None);
    let mut expected: Option<u64> = None;
    let mut last_delivered = 0;
    let mut last_growth = Instant::now();
    let (mut last_print, mut printed) = (Instant::now(), Progress::default());
    let how = loop {
        c.poll(Duration::from_millis(20))?;
        let now = Instant::now();
        let t = c.total();
        let delivered = t.unique + t.warmup_received;
        if start.is_none() && now >= measure_start {
            start = Some(Mark {
                snapshot: tiers.snapshot(),
                delivered,
            });
        }
        if delivered > last_delivered {
            last_delivered = delivered;
            last_growth = now;
            if start.is_some() {
                end = Some(Mark {
                    snapshot: tiers.snapshot(),
                    delivered,
                });
            }
        }
        if expected.is_none() && c.all_published() {
            expected = Some(plan.expected_deliveries(&c.published_counts(plan.publishers)));
            last_growth = now;
        }
        if let Some(e) = expected {
            if t.unique >= e {
                break End::Complete;
            }
            if last_growth.elapsed() >= drain {
                progress(
                    args,
                    format!(
                        "  nothing new for {:.1} s after the publishers finished: {} of {} arrived",
                        drain.as_secs_f64(),
                        count(t.unique),
                        count(e)
                    ),
                );
                break End::Drained;
            }
        }
        if now >= deadline {
            progress(args, format!("  --timeout {} s reached", args.timeout));
            break End::Timeout;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let secs = last_print.elapsed().as_secs_f64();
            let per_s = |a: u64, b: u64| count((a.saturating_sub(b) as f64 / secs) as u64);
            let phase = if now < measure_start {
                "warmup"
            } else if expected.is_some() {
                "draining"
            } else {
                "publishing"
            };
            progress(
                args,
                format!(
                    "  … {phase}: sent {} ({} msg/s), delivered {} ({} msg/s){}",
                    count(t.sent),
                    per_s(t.sent, printed.sent),
                    count(t.unique),
                    per_s(t.unique, printed.unique),
                    expected.map_or(String::new(), |e| format!(" of {}", count(e)))
                ),
            );
            last_print = Instant::now();
            printed = t;
        }
    };
    Ok((how, start.zip(end)))
}
