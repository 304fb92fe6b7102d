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

use anyhow::Context;
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
        let (tx, rx) = mpsc::channel();
        let mut workers = Vec::with_capacity(configs.len());
        for (index, config) in configs.iter().enumerate() {
            let mut child = Command::new(&exe)
                .args(["worker", scenario])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting worker {index} ({})", exe.display()))?;
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

/// A worker's side: one JSON message per stdout line.
pub fn emit<M: Serialize>(msg: &M) {
    let mut line = serde_json::to_string(msg).expect("worker messages serialize");
    line.push('\n');
    let mut out = std::io::stdout().lock();
    // The parent going away is handled through stdin EOF; ignore write errors here.
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}
