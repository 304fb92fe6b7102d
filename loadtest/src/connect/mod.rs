//! Scenarios `connect` (a connection storm) and `hold` (the storm, then every
//! connection kept open and pinged for a while), with broker memory / CPU
//! sampled through /proc per tier and the host's kernel memory alongside.
//!
//! The parent plans the workers ([`args`]), starts them, follows their progress
//! on stderr, samples the broker when all are connected and at the end of the
//! hold, and merges their reports ([`report`]). The workers ([`worker`]) do the
//! handshakes and hold the connections ([`held`]).

mod args;
pub mod broker;
mod held;
mod host;
mod msg;
mod report;
mod table;
pub mod worker;

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;

pub use self::args::{ConnectArgs, HoldArgs, StormArgs};
use self::broker::{BrokerReport, Point};
use self::host::HostReport;
use self::msg::{CMD_FINISH, ConnectedReport, HeldReport, Progress, WorkerMsg};
use self::report::Gathered;
use crate::procfs;
use crate::progress::{self, Rate, Status};
use crate::report::count;
use crate::workers::{Event, WorkerSet};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `throng-load connect`.
pub fn run_connect(args: ConnectArgs) -> anyhow::Result<()> {
    let hold = (args.hold > 0.0).then_some(args.hold);
    run(&args.storm, "connect", hold)
}

/// `throng-load hold`.
pub fn run_hold(args: HoldArgs) -> anyhow::Result<()> {
    if !(args.duration >= 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a number of seconds");
    }
    run(&args.storm, "hold", Some(args.duration))
}

/// The workers' latest counts, summed.
#[derive(Default)]
struct Totals {
    by_worker: Vec<Progress>,
}

impl Totals {
    fn sum(&self) -> Progress {
        self.by_worker
            .iter()
            .fold(Progress::default(), |a, p| Progress {
                ok: a.ok + p.ok,
                failed: a.failed + p.failed,
                up: a.up + p.up,
                closed: a.closed + p.closed,
                pings_sent: a.pings_sent + p.pings_sent,
                pongs: a.pongs + p.pongs,
            })
    }
}

fn run(args: &StormArgs, scenario: &'static str, hold: Option<f64>) -> anyhow::Result<()> {
    let mut broker = BrokerReport::new(&args.output.broker_pid)?;
    let mut plan = args.plan()?;
    let workers = plan.workers;
    // The shared start leaves the workers time to come up.
    let start_at = unix_ms() + 300 + 20 * workers as u64;
    for c in &mut plan.configs {
        c.start_at_unix_ms = start_at;
    }

    let mut bar = progress::Progress::new(args.output.quiet);
    bar.note(&format!(
        "throng-load {scenario}: {} connections to {} over {workers} worker(s), {}{}",
        count(args.connections),
        args.target,
        match (plan.in_flight, args.rate) {
            (Some(k), _) => format!("at most {k} handshakes in flight"),
            (None, Some(r)) => format!("{r} handshakes/s"),
            (None, None) => unreachable!("plan sets one"),
        },
        match hold {
            Some(d) => format!(", then held {d} s"),
            None => String::new(),
        }
    ));
    let mut host = HostReport {
        before: host::sample(),
        ..HostReport::default()
    };
    broker.sample(Point::Before);
    let tcp_before = procfs::tcp_counters();
    let mut set: WorkerSet<WorkerMsg> = WorkerSet::spawn("connect", &plan.configs)?;

    // Phase 1: handshakes.
    let mut totals = Totals {
        by_worker: vec![Progress::default(); workers],
    };
    let mut rate = Rate::new(Duration::from_secs(3));
    let mut connected: Vec<Option<ConnectedReport>> = vec![None; workers];
    let started = Instant::now();
    while connected.iter().any(Option::is_none) {
        if let Some((w, event)) = set.recv_timeout(Duration::from_millis(500)) {
            match event {
                Event::Msg(WorkerMsg::Progress(p)) => totals.by_worker[w] = p,
                Event::Msg(WorkerMsg::Connected(report)) => {
                    let t = &mut totals.by_worker[w];
                    (t.ok, t.failed) = (report.ok, report.failures.values().sum());
                    t.up = report.ok.saturating_sub(t.closed);
                    connected[w] = Some(*report);
                }
                Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
                Event::Msg(other) => bail!("worker {w}: unexpected {other:?} while connecting"),
                Event::Garbage(line) => bar.warn(&format!("worker {w}: {line}")),
                Event::Closed => bail!("worker {w} ended before reporting: {}", set.exit_of(w)),
            }
        }
        let t = totals.sum();
        let status = Status {
            phase: "connect",
            up: t.up,
            target: args.connections,
            rate: rate.observe(Instant::now(), t.ok),
            failures: t.failed,
            extra: closed_text(&t),
            elapsed: started.elapsed(),
            planned: None,
        };
        bar.show(&status, false);
    }
    let connected: Vec<ConnectedReport> = connected.into_iter().flatten().collect();
    broker.sample(Point::Connected);
    host.connected = host::sample();
    let host_tcp = procfs::counter_delta(&tcp_before, &procfs::tcp_counters());
    let ok: u64 = connected.iter().map(|r| r.ok).sum();
    let failed: u64 = connected
        .iter()
        .map(|r| r.failures.values().sum::<u64>())
        .sum();
    let last_done = connected.iter().map(|r| r.last_done_us).max().unwrap_or(0) as f64 / 1e6;
    bar.note(&format!(
        "  connected {} of {} in {last_done:.1} s ({} conn/s), {} failed",
        count(ok),
        count(args.connections),
        count((ok as f64 / last_done.max(1e-6)).round() as u64),
        count(failed)
    ));

    // Phase 2: the hold.
    let held_secs = match hold {
        Some(secs) => Some(hold_for(
            args,
            &plan,
            &mut set,
            &mut totals,
            &mut bar,
            secs,
        )?),
        None => None,
    };
    if held_secs.is_some() {
        broker.sample(Point::Held);
        host.held = host::sample();
    }
    set.broadcast(CMD_FINISH)?;
    let held: Vec<HeldReport> = set.collect(
        Duration::from_secs(60),
        |w, msg| match msg {
            WorkerMsg::Held(report) => Ok(Some(report)),
            WorkerMsg::Error { message } => bail!("worker {w}: {message}"),
            _ => Ok(None),
        },
        |w, line| bar.warn(&format!("worker {w}: {line}")),
    )?;
    let parent_rss = procfs::rss_bytes("self").unwrap_or(0);
    bar.clear();

    let report = report::build(
        scenario,
        args,
        &plan,
        Gathered {
            connected,
            held,
            held_secs,
            broker,
            host,
            host_tcp,
            parent_rss,
        },
    );
    print!("{}", table::table(&report));
    args.output.write_json(&report)?;
    let _ = std::io::stdout().flush();
    // The workers close their connections now (a million take a while): the
    // report does not wait for it, the exit does.
    set.wait()
}

/// "closed 3" once the broker has closed some, else nothing.
fn closed_text(t: &Progress) -> String {
    if t.closed > 0 {
        format!("closed {}", count(t.closed))
    } else {
        String::new()
    }
}

/// Keeps the workers holding for `secs`, showing progress; returns the seconds held.
fn hold_for(
    args: &StormArgs,
    plan: &args::Plan,
    set: &mut WorkerSet<WorkerMsg>,
    totals: &mut Totals,
    bar: &mut progress::Progress,
    secs: f64,
) -> anyhow::Result<f64> {
    let up = totals.sum().up;
    // Benchmark scripts wait for this line ("holding") to sample mid-hold.
    bar.note(&format!(
        "  holding {} connections for {secs} s ({})",
        count(up),
        if plan.ping_every_ms > 0 {
            format!(
                "PINGREQ every {} s each",
                plan.ping_every_ms as f64 / 1000.0
            )
        } else {
            "no PINGREQ".to_owned()
        }
    ));
    let planned = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let until = started + planned;
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        if let Some((w, event)) = set.recv_timeout(left.min(Duration::from_millis(500))) {
            match event {
                Event::Msg(WorkerMsg::Progress(p)) => totals.by_worker[w] = p,
                Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
                Event::Msg(_) => {}
                Event::Garbage(line) => bar.warn(&format!("worker {w}: {line}")),
                Event::Closed => bail!("worker {w} ended during the hold: {}", set.exit_of(w)),
            }
        }
        let t = totals.sum();
        let mut extra = closed_text(&t);
        if plan.ping_every_ms > 0 {
            if !extra.is_empty() {
                extra.push_str("  ");
            }
            extra.push_str(&format!(
                "pings {} / {} answered",
                count(t.pings_sent),
                count(t.pongs)
            ));
        }
        let status = Status {
            phase: "hold",
            up: t.up,
            target: args.connections,
            rate: None,
            failures: t.failed,
            extra,
            elapsed: started.elapsed(),
            planned: Some(planned),
        };
        bar.show(&status, false);
    }
    Ok(started.elapsed().as_secs_f64())
}
