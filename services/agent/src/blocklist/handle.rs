//! The shared, hot-reloaded blocklist.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::{Blocklist, BlocklistError, FileStamp};

/// How often [`BlocklistHandle::watch`] is usually asked to poll.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The current [`Blocklist`], shared by every accept loop; cheap to clone, read
/// without locks. Loaded from a file, it can re-read that file when it changes.
#[derive(Clone)]
pub struct BlocklistHandle {
    shared: Arc<Shared>,
}

struct Shared {
    list: ArcSwap<Blocklist>,
    source: Option<Source>,
    reloads: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct Source {
    path: PathBuf,
    /// The stamp of the file version last tried, loaded or not, so a bad file is
    /// reported once rather than on every poll.
    last_seen: Mutex<Option<FileStamp>>,
}

impl BlocklistHandle {
    /// A handle to a fixed list, with no file behind it.
    pub fn new(list: Blocklist) -> Self {
        Self::with_source(list, None)
    }

    /// Loads `path`; an unusable file is an error. Call [`Self::check`] or
    /// [`Self::spawn_watch`] to follow later changes.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, BlocklistError> {
        let path = path.into();
        let stamp = FileStamp::of(&path).ok();
        let list = Blocklist::load(&path)?;
        let source = Source {
            path,
            last_seen: Mutex::new(stamp),
        };
        Ok(Self::with_source(list, Some(source)))
    }

    /// Loads `path` and spawns a task that polls it every `interval` (usually
    /// [`DEFAULT_POLL_INTERVAL`]) and swaps in the new list when the file changes.
    /// Must be called within a tokio runtime. The task ends when every other clone
    /// of the handle has been dropped, or when aborted.
    pub fn watch(
        path: impl Into<PathBuf>,
        interval: Duration,
    ) -> Result<(Self, JoinHandle<()>), BlocklistError> {
        let handle = Self::load(path)?;
        let task = handle.spawn_watch(interval);
        Ok((handle, task))
    }

    fn with_source(list: Blocklist, source: Option<Source>) -> Self {
        Self {
            shared: Arc::new(Shared {
                list: ArcSwap::from_pointee(list),
                source,
                reloads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// Whether `ip` is blocked by the current list.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.shared.list.load().contains(ip)
    }

    /// The current list.
    pub fn current(&self) -> Arc<Blocklist> {
        self.shared.list.load_full()
    }

    /// Entries in the current list.
    pub fn len(&self) -> usize {
        self.shared.list.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.list.load().is_empty()
    }

    /// Replaces the current list (for lists not backed by a file).
    pub fn replace(&self, list: Blocklist) {
        self.shared.list.store(Arc::new(list));
    }

    /// The file this handle follows, if any.
    pub fn path(&self) -> Option<&Path> {
        self.shared.source.as_ref().map(|s| s.path.as_path())
    }

    /// Successful reloads since the initial load.
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Relaxed)
    }

    /// Failed reload attempts (unreadable or unparsable new versions).
    pub fn reload_failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// The error of the latest reload attempt, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().clone()
    }

    /// Looks at the file once and reloads it if it changed. `Ok(true)`: a new list
    /// is in force; `Ok(false)`: nothing changed (or no file); `Err`: the new
    /// version is unusable and the previous list stays. Blocking file I/O.
    pub fn check(&self) -> Result<bool, BlocklistError> {
        let Some(source) = &self.shared.source else {
            return Ok(false);
        };
        let result = match FileStamp::of(&source.path) {
            Err(source_err) => {
                let mut last_seen = source.last_seen.lock();
                if last_seen.is_none() {
                    // Already reported as gone; say nothing until it comes back.
                    return Ok(false);
                }
                *last_seen = None;
                Err(BlocklistError::Read {
                    path: source.path.clone(),
                    source: source_err,
                })
            }
            Ok(stamp) => {
                let mut last_seen = source.last_seen.lock();
                if last_seen.as_ref() == Some(&stamp) {
                    return Ok(false);
                }
                *last_seen = Some(stamp);
                drop(last_seen);
                Blocklist::load(&source.path).map(|list| {
                    self.shared.list.store(Arc::new(list));
                })
            }
        };
        match result {
            Ok(()) => {
                self.shared.reloads.fetch_add(1, Ordering::Relaxed);
                *self.shared.last_error.lock() = None;
                Ok(true)
            }
            Err(err) => {
                self.shared.failures.fetch_add(1, Ordering::Relaxed);
                *self.shared.last_error.lock() = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Spawns the polling task described at [`Self::watch`].
    pub fn spawn_watch(&self, interval: Duration) -> JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if Arc::strong_count(&handle.shared) == 1 {
                    return;
                }
                let checker = handle.clone();
                match tokio::task::spawn_blocking(move || checker.check()).await {
                    Ok(Ok(true)) => tracing::info!(
                        path = %handle.path().unwrap_or(Path::new("")).display(),
                        entries = handle.len(),
                        "blocklist reloaded"
                    ),
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => tracing::warn!(
                        %error,
                        entries = handle.len(),
                        "blocklist reload failed, keeping the previous list"
                    ),
                    Err(error) => {
                        tracing::error!(%error, "blocklist check task failed");
                        return;
                    }
                }
            }
        })
    }
}

impl Default for BlocklistHandle {
    fn default() -> Self {
        Self::new(Blocklist::empty())
    }
}

impl fmt::Debug for BlocklistHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlocklistHandle")
            .field("path", &self.path())
            .field("entries", &self.len())
            .field("reloads", &self.reloads())
            .finish_non_exhaustive()
    }
}
