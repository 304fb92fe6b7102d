//! A byte relay for proxied device connections, built on `mio` directly.
//!
//! The agent hands each (device socket, handler socket) pair to [`Relay::add`]
//! once the hand-off header is written; from then on a few relay threads copy
//! bytes both ways until both directions end. There is no task and no buffer
//! per pair: an idle pair is two file descriptors and one slab entry. Bytes are
//! buffered per direction only while the destination is full, and at most one
//! scratch read's worth (`RelayConfig::scratch_size`), because the source is
//! not read again until that buffer has drained (backpressure reaches the
//! sender through TCP flow control).
//!
//! This file owns the public API: [`Relay`] (a cheap, cloneable handle),
//! [`RelayConfig`], [`PairId`], [`CloseReason`] and [`RelayError`]. The event
//! loop lives in `thread.rs`, the per-pair state machine in `pair.rs`, buffers
//! in `buffer.rs` and counters in `stats.rs`.

mod buffer;
mod pair;
mod stats;
mod thread;

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use stats::{ClosedStats, RelayStats};

use stats::Counters;
use thread::{Command, NewPair, Worker};

/// Identifies one relayed pair for the lifetime of a [`Relay`]; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairId(u64);

impl PairId {
    /// The id as a number (unique per relay, starting at 1).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PairId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a pair was closed. Both sockets are closed in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions reached end-of-stream and every byte read was delivered.
    Completed,
    /// Reading from, writing to or shutting down the device side failed
    /// (`ConnectionReset` when the device reset the connection).
    ClientError(io::ErrorKind),
    /// Reading from, writing to or shutting down the handler side failed.
    UpstreamError(io::ErrorKind),
    /// Closed by [`Relay::close_all`] or [`Relay::shutdown`].
    Aborted,
}

/// Called on the relay thread after a pair's sockets are closed. Keep it
/// short, non-blocking and panic-free: the thread serves every other pair it
/// owns, and a panic ends the thread (closing its pairs unreported). A
/// callback that holds a [`Relay`] clone keeps the threads alive until
/// [`Relay::shutdown`] is called (dropping the other handles is not enough).
pub type OnClose = Arc<dyn Fn(PairId, CloseReason) + Send + Sync>;

/// Relay settings; [`RelayConfig::default`] suits the agent.
#[derive(Clone)]
pub struct RelayConfig {
    /// Per-thread read buffer, and the most a pair buffers per direction while
    /// its destination is full (default 64 KiB).
    pub scratch_size: usize,
    /// Bytes read per direction per wake-up before the pair yields to others
    /// and is resumed on the next loop turn (default 4 × `scratch_size`).
    pub read_budget: usize,
    /// Bound of each thread's command queue; `add` tries the next thread when
    /// one is full and fails with [`RelayError::Busy`] when all are (default 1024).
    pub queue_capacity: usize,
    /// Readiness events fetched per `poll` call (default 1024).
    pub events_capacity: usize,
    /// Set `TCP_NODELAY` on both sockets in `add` (default true): the relay
    /// forwards MQTT packets as they come and must not add Nagle delays.
    pub nodelay: bool,
    /// Told about every closed pair, on the relay thread.
    pub on_close: Option<OnClose>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            scratch_size: 64 * 1024,
            read_budget: 4 * 64 * 1024,
            queue_capacity: 1024,
            events_capacity: 1024,
            nodelay: true,
            on_close: None,
        }
    }
}

impl fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayConfig")
            .field("scratch_size", &self.scratch_size)
            .field("read_budget", &self.read_budget)
            .field("queue_capacity", &self.queue_capacity)
            .field("events_capacity", &self.events_capacity)
            .field("nodelay", &self.nodelay)
            .field("on_close", &self.on_close.is_some())
            .finish()
    }
}

/// Why [`Relay::add`] refused a pair. The sockets were dropped (closed).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay is shut down")]
    Shutdown,
    #[error("every relay thread's command queue is full")]
    Busy,
    #[error("preparing socket for the relay: {0}")]
    Io(#[from] io::Error),
}

/// Handle to the relay threads. Cloning is cheap; the threads stop (closing
/// their pairs) on [`Relay::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Vec<WorkerHandle>,
    joins: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    next_worker: AtomicUsize,
    shut: AtomicBool,
    nodelay: bool,
}

/// The caller's side of one relay thread.
struct WorkerHandle {
    tx: SyncSender<Command>,
    waker: mio::Waker,
    shared: Arc<Shared>,
}

/// State shared between a relay thread and the handles.
#[derive(Default)]
pub(crate) struct Shared {
    /// Set by a sender that queued a command, cleared by the thread before it
    /// drains the queue; only the sender that sets it wakes the thread.
    pub(crate) notified: AtomicBool,
    /// Set by `shutdown`: close every pair and exit. A flag rather than a
    /// command so stopping never waits on a full queue.
    pub(crate) stop: AtomicBool,
    pub(crate) counters: Counters,
}

impl Relay {
    /// Starts `threads` relay threads, each with its own `mio::Poll`.
    pub fn start(threads: usize, config: RelayConfig) -> io::Result<Relay> {
        validate(threads, &config)?;
        let mut inner = Inner {
            workers: Vec::with_capacity(threads),
            joins: Mutex::new(Vec::with_capacity(threads)),
            next_id: AtomicU64::new(1),
            next_worker: AtomicUsize::new(0),
            shut: AtomicBool::new(false),
            nodelay: config.nodelay,
        };
        // On an error below, dropping `inner` stops the threads already started.
        for index in 0..threads {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), thread::WAKER)?;
            let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
            let shared = Arc::new(Shared::default());
            let worker = Worker::new(poll, rx, Arc::clone(&shared), &config)?;
            let join = std::thread::Builder::new()
                .name(format!("throng-relay-{index}"))
                .spawn(move || worker.run())?;
            inner.workers.push(WorkerHandle { tx, waker, shared });
            lock(&inner.joins).push(join);
        }
        Ok(Relay {
            inner: Arc::new(inner),
        })
    }

    /// Hands a pair to the least-loaded relay thread. `pending_to_upstream` is
    /// written to `upstream` before anything read from `client` (it counts in
    /// `bytes_up` and, until written, in the buffered bytes). Both sockets are
    /// switched to non-blocking mode here.
    pub fn add(
        &self,
        client: TcpStream,
        upstream: TcpStream,
        pending_to_upstream: Vec<u8>,
    ) -> Result<PairId, RelayError> {
        let inner = &*self.inner;
        if inner.shut.load(Ordering::Acquire) {
            return Err(RelayError::Shutdown);
        }
        client.set_nonblocking(true)?;
        upstream.set_nonblocking(true)?;
        if inner.nodelay {
            client.set_nodelay(true)?;
            upstream.set_nodelay(true)?;
        }
        let id = PairId(inner.next_id.fetch_add(1, Ordering::Relaxed));
        let mut command = Command::Add(NewPair {
            id,
            client: mio::net::TcpStream::from_std(client),
            upstream: mio::net::TcpStream::from_std(upstream),
            pending: pending_to_upstream,
        });
        let count = inner.workers.len();
        let first = inner.least_loaded();
        for offset in 0..count {
            let worker = &inner.workers[(first + offset) % count];
            worker.shared.counters.live.fetch_add(1, Ordering::Relaxed);
            match worker.tx.try_send(command) {
                Ok(()) => {
                    worker.notify();
                    return Ok(id);
                }
                Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) => {
                    worker.shared.counters.live.fetch_sub(1, Ordering::Relaxed);
                    command = back;
                }
            }
        }
        if inner.shut.load(Ordering::Acquire) {
            Err(RelayError::Shutdown)
        } else {
            Err(RelayError::Busy)
        }
    }

    /// Live pairs, including those queued to a thread and not yet registered.
    pub fn len(&self) -> usize {
        self.inner
            .workers
            .iter()
            .map(|w| w.shared.counters.live.load(Ordering::Relaxed))
            .sum()
    }

    /// True when no pair is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters summed over all threads.
    pub fn stats(&self) -> RelayStats {
        let mut stats = RelayStats::default();
        for worker in &self.inner.workers {
            worker.shared.counters.add_to(&mut stats);
        }
        stats
    }

    /// Closes every live pair (reason [`CloseReason::Aborted`]) and returns how
    /// many were closed. Blocks until every thread has done it (so it must not
    /// be called from an `on_close` callback); the relay keeps running and
    /// accepts new pairs afterwards.
    pub fn close_all(&self) -> usize {
        let mut acks = Vec::with_capacity(self.inner.workers.len());
        for worker in &self.inner.workers {
            let (ack_tx, ack_rx) = mpsc::channel();
            if worker.tx.send(Command::CloseAll(ack_tx)).is_ok() {
                worker.notify();
                acks.push(ack_rx);
            }
        }
        acks.iter().filter_map(|ack| ack.recv().ok()).sum()
    }

    /// Stops the threads after closing their pairs ([`CloseReason::Aborted`])
    /// and waits for them; later `add` calls fail with [`RelayError::Shutdown`].
    /// Idempotent, never blocks on a full queue, and called from a relay
    /// thread (an `on_close` callback) it does not wait for that thread.
    /// Pairs still queued when a thread stops are closed as aborted too.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn least_loaded(&self) -> usize {
        let count = self.workers.len();
        let start = self.next_worker.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|offset| (start + offset) % count)
            .min_by_key(|&i| self.workers[i].shared.counters.live.load(Ordering::Relaxed))
            .unwrap_or(start)
    }

    fn shutdown(&self) {
        self.shut.store(true, Ordering::Release);
        for worker in &self.workers {
            worker.shared.stop.store(true, Ordering::Release);
            worker.notify();
        }
        let joins = std::mem::take(&mut *lock(&self.joins));
        let me = std::thread::current().id();
        for join in joins {
            if join.thread().id() != me && join.join().is_err() {
                tracing::error!("relay thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl WorkerHandle {
    fn notify(&self) {
        // AcqRel pairs with the thread's swap(false): whichever sees `false`
        // here wakes it, and a thread that reads our `true` sees our command.
        if !self.shared.notified.swap(true, Ordering::AcqRel)
            && let Err(e) = self.waker.wake()
        {
            tracing::error!(error = %e, "waking relay thread failed");
        }
    }
}

fn validate(threads: usize, config: &RelayConfig) -> io::Result<()> {
    let problem = if threads == 0 {
        "threads must be at least 1"
    } else if config.scratch_size == 0 {
        "scratch_size must be at least 1"
    } else if config.read_budget == 0 {
        "read_budget must be at least 1"
    } else if config.queue_capacity == 0 {
        "queue_capacity must be at least 1"
    } else if config.events_capacity == 0 {
        "events_capacity must be at least 1"
    } else {
        return Ok(());
    };
    Err(io::Error::new(io::ErrorKind::InvalidInput, problem))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
