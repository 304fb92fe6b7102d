//! Worker processes: the parent re-executes its own binary as `throng-load worker
//! <scenario>`, hands each worker a JSON config on the first stdin line, sends it
//! further commands as stdin lines, and reads JSON-line reports from its stdout.
//!
//! Every process may hold only so many open files (20,000 on the reference host),
//! so large connection counts are spread over several workers.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Something a worker said, or that it went away.
pub enum Event<M> {
    Msg(M),
    /// A stdout line that was not a valid message.
    Garbage(String),
    /// The worker's stdout closed (it exited or crashed).
    Closed,
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A set of running workers of one scenario.
pub struct WorkerSet<M> {
    workers: Vec<Worker>,
    rx: mpsc::Receiver<(usize, Event<M>)>,
}

impl<M: DeserializeOwned + Send + 'static> WorkerSet<M> {
    /// Starts one worker per config.
    pub fn spawn<C: Serialize>(scenario: &str, configs: &[C]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating own executable")?;
        Self::spawn_with(
            || {
                let mut command = Command::new(&exe);
                command.args(["worker", scenario]);
                command
            },
            configs,
        )
    }

    /// Starts one worker per config, each a process `command` makes.
    fn spawn_with<C: Serialize>(
        command: impl Fn() -> Command,
        configs: &[C],
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let mut workers = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let mut command = command();
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| {
                    format!(
                        "starting worker {index} ({})",
                        command.get_program().to_string_lossy()
                    )
                })?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut line = serde_json::to_string(config)?;
            line.push('\n');
            stdin
                .write_all(line.as_bytes())
                .context("sending worker config")?;
            stdin.flush()?;
            let tx = tx.clone();
            thread::Builder::new()
                .name(format!("worker-{index}-reader"))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let event = match serde_json::from_str::<M>(&line) {
                            Ok(msg) => Event::Msg(msg),
                            Err(_) => Event::Garbage(line),
                        };
                        if tx.send((index, event)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((index, Event::Closed));
                })?;
            workers.push(Worker {
                child,
                stdin: Some(stdin),
            });
        }
        Ok(Self { workers, rx })
    }

    /// Next event from any worker, or `None` after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<(usize, Event<M>)> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// How worker `index` ended ("exit status: 1", "signal: 9 (SIGKILL)"), waiting
    /// up to a second for it; for the message when its stdout closed too early.
    pub fn exit_of(&mut self, index: usize) -> String {
        let Some(worker) = self.workers.get_mut(index) else {
            return "unknown worker".into();
        };
        for _ in 0..100 {
            match worker.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => return format!("unknown ({e})"),
            }
        }
        "still running, stdout closed".into()
    }

    /// What worker `index`'s stdout closing means: its normal exit once it has
    /// made its final report (maybe before the others have), a failure before.
    pub fn closed(&mut self, index: usize, reported: bool) -> anyhow::Result<()> {
        if reported {
            return Ok(());
        }
        bail!(
            "worker {index} exited before its final report: {}",
            self.exit_of(index)
        )
    }

    /// Waits for every worker's final report, in worker order: `take` picks it
    /// out of a message (`Ok(None)` for any other) or fails the run; lines that
    /// are not messages go to `warn`.
    pub fn collect<T>(
        &mut self,
        timeout: Duration,
        mut take: impl FnMut(usize, M) -> anyhow::Result<Option<T>>,
        mut warn: impl FnMut(usize, &str),
    ) -> anyhow::Result<Vec<T>> {
        let mut finals: Vec<Option<T>> = (0..self.workers.len()).map(|_| None).collect();
        while finals.iter().any(Option::is_none) {
            let Some((w, event)) = self.recv_timeout(timeout) else {
                bail!("workers did not report after finish");
            };
            match event {
                Event::Msg(msg) => {
                    if let Some(report) = take(w, msg)? {
                        finals[w] = Some(report);
                    }
                }
                Event::Garbage(line) => warn(w, &line),
                Event::Closed => self.closed(w, finals[w].is_some())?,
            }
        }
        Ok(finals.into_iter().flatten().collect())
    }

    /// Sends a command line to every worker.
    pub fn broadcast(&mut self, command: &str) -> anyhow::Result<()> {
        for (index, worker) in self.workers.iter_mut().enumerate() {
            if let Some(stdin) = worker.stdin.as_mut() {
                writeln!(stdin, "{command}")
                    .and_then(|()| stdin.flush())
                    .with_context(|| format!("sending {command:?} to worker {index}"))?;
            }
        }
        Ok(())
    }

    /// Closes the workers' stdin and waits for them to exit.
    pub fn wait(mut self) -> anyhow::Result<()> {
        for (index, worker) in self.workers.iter_mut().enumerate() {
            drop(worker.stdin.take());
            let status = worker.child.wait()?;
            anyhow::ensure!(status.success(), "worker {index} exited with {status}");
        }
        self.workers.clear();
        Ok(())
    }
}

impl<M> Drop for WorkerSet<M> {
    fn drop(&mut self) {
        // Reached with workers still listed only on an error path: stop them.
        for worker in &mut self.workers {
            drop(worker.stdin.take());
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
    }
}

/// What the shared start-up of a worker needs from its config.
pub trait Config: DeserializeOwned {
    fn worker(&self) -> usize;
    /// Connections the worker opens: one file each.
    fn connections(&self) -> u64;
}

/// A worker's side: reads its config (the first stdin line) and raises the
/// open-file limit for its connections; one that may not hold that many tells
/// the parent through the message `error` makes, and fails.
pub fn start<C: Config, M: Serialize>(error: impl FnOnce(String) -> M) -> anyhow::Result<C> {
    let mut first = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut first)
        .context("reading worker config")?;
    let cfg: C = serde_json::from_str(&first).context("parsing worker config")?;
    let need = cfg.connections() + 64;
    let limit = rlimit::increase_nofile_limit(need).context("raising RLIMIT_NOFILE")?;
    if limit < need {
        let message = format!(
            "worker {} needs {need} open files but may hold only {limit}: use more workers",
            cfg.worker()
        );
        emit(&error(message.clone()));
        bail!(message);
    }
    Ok(cfg)
}

/// A worker's side: hands each later stdin line (trimmed) to `each` on a thread
/// of its own until `each` returns false or stdin ends. `each` is dropped then,
/// closing the channels it holds: the worker takes that as `finish` (the parent
/// said so or went away).
pub fn read_commands(mut each: impl FnMut(&str) -> bool + Send + 'static) -> anyhow::Result<()> {
    thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if !each(line.trim()) {
                break;
            }
        }
    })?;
    Ok(())
}

/// A worker's tokio runtime with `threads` threads (at least one).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
}

/// A worker's side: one JSON message per stdout line.
pub fn emit<M: Serialize>(msg: &M) {
    let mut line = serde_json::to_string(msg).expect("worker messages serialize");
    line.push('\n');
    let mut out = std::io::stdout().lock();
    // The parent going away is handled through stdin EOF; ignore write errors here.
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worker 0 reports and exits at once, worker 1 only later: the first
    /// one's stdout closing in between is no failure.
    #[test]
    fn a_worker_may_exit_once_it_has_reported() {
        let script = r#"read n; [ "$n" = 1 ] && sleep 0.3; echo "{\"final\":$n}""#;
        let mut set: WorkerSet<serde_json::Value> = WorkerSet::spawn_with(
            || {
                let mut command = Command::new("sh");
                command.args(["-c", script]);
                command
            },
            &[0, 1],
        )
        .unwrap();
        let finals = set
            .collect(
                Duration::from_secs(10),
                |_, msg| Ok(msg.get("final").cloned()),
                |w, line| panic!("worker {w}: {line}"),
            )
            .unwrap();
        assert_eq!(finals, [serde_json::json!(0), serde_json::json!(1)]);
        set.wait().unwrap();
    }

    #[test]
    fn a_worker_that_exits_before_reporting_fails_the_run() {
        let mut set: WorkerSet<serde_json::Value> = WorkerSet::spawn_with(
            || {
                let mut command = Command::new("sh");
                command.args(["-c", "read n; exit 3"]);
                command
            },
            &[0],
        )
        .unwrap();
        let err = set
            .collect(
                Duration::from_secs(10),
                |_, msg| Ok(msg.get("final").cloned()),
                |_, _| {},
            )
            .unwrap_err();
        assert!(format!("{err}").contains("exit status: 3"), "{err}");
    }
}
