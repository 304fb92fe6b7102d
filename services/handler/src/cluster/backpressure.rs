//! Backpressure on one distributor stream: the count of device publishes queued
//! on it, the limit beyond which QoS 0 forwards are dropped and publishers are
//! paused, and the wakers of the paused publishers.
//!
//! QoS 1/2 forwards are never refused here. Once the queue is over its limit
//! (high water), every connection whose publish meets it stops reading its
//! socket (`Connection::forward_gate_open`) until the stream has drained below
//! half the limit (low water). The queue is thus bounded by the limit plus what
//! the connections already read in one wake (a few scratch buffers each), not by
//! how fast devices publish.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::Waker;

use parking_lot::Mutex;

/// What admitting one forward decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Queue it (false: a QoS 0 forward over the limit, dropped).
    pub queue: bool,
    /// The publisher should stop reading until the queue drains.
    pub pause: bool,
}

pub struct ForwardQueue {
    limit: usize,
    queued: AtomicUsize,
    /// Over the limit and not yet drained below low water. Changed only under
    /// `waiters`' lock, so no waker is registered after the wake-up it waits for.
    paused: AtomicBool,
    /// The stream ended: nothing drains the queue any more, nobody waits on it.
    closed: AtomicBool,
    /// Pause episode, so a connection registers its waker once per episode
    /// (never 0: 0 means "not registered" to a connection).
    episode: AtomicU32,
    waiters: Mutex<Vec<Waker>>,
}

impl ForwardQueue {
    pub fn new(limit: usize) -> ForwardQueue {
        ForwardQueue {
            limit: limit.max(1),
            queued: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            episode: AtomicU32::new(1),
            waiters: Mutex::new(Vec::new()),
        }
    }

    fn low_water(&self) -> usize {
        self.limit / 2
    }

    /// Counts one forward in: QoS 0 (`droppable`) is refused at the limit, QoS 1/2
    /// always goes; either way the publisher is paused while the queue is over it.
    pub fn admit(&self, droppable: bool) -> Admission {
        let before = self.queued.fetch_add(1, Ordering::SeqCst);
        if before < self.limit {
            return Admission {
                queue: true,
                pause: self.paused.load(Ordering::SeqCst),
            };
        }
        if droppable {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        self.pause();
        Admission {
            queue: !droppable,
            pause: self.paused.load(Ordering::SeqCst),
        }
    }

    /// A forward admitted but not queued after all (the stream had ended).
    pub fn cancel(&self) {
        self.taken();
    }

    /// The stream took one forward off the queue.
    pub fn taken(&self) {
        let left = self.queued.fetch_sub(1, Ordering::SeqCst) - 1;
        if left <= self.low_water() && self.paused.load(Ordering::SeqCst) {
            self.resume();
        }
    }

    fn pause(&self) {
        let mut waiters = self.waiters.lock();
        if self.closed.load(Ordering::SeqCst) || self.paused.load(Ordering::SeqCst) {
            return;
        }
        self.paused.store(true, Ordering::SeqCst);
        // The stream may have drained past low water before `paused` was set.
        if self.queued.load(Ordering::SeqCst) <= self.low_water() {
            self.paused.store(false, Ordering::SeqCst);
            wake_all(&self.episode, &mut waiters);
        }
    }

    fn resume(&self) {
        let mut waiters = self.waiters.lock();
        if self.paused.swap(false, Ordering::SeqCst) {
            wake_all(&self.episode, &mut waiters);
        }
    }

    /// The stream ended: every paused publisher goes on, and none is paused again.
    pub fn close(&self) {
        let mut waiters = self.waiters.lock();
        self.closed.store(true, Ordering::SeqCst);
        self.paused.store(false, Ordering::SeqCst);
        wake_all(&self.episode, &mut waiters);
    }

    /// While paused: registers `waker` for the end of this episode unless it was
    /// registered in it already (`registered`, the episode a previous call
    /// returned), and returns the episode. `None` once the queue has drained.
    pub fn wait(&self, waker: &Waker, registered: u32) -> Option<u32> {
        if !self.paused.load(Ordering::SeqCst) {
            return None;
        }
        let mut waiters = self.waiters.lock();
        if !self.paused.load(Ordering::SeqCst) {
            return None;
        }
        let episode = self.episode.load(Ordering::Relaxed);
        if registered != episode {
            waiters.push(waker.clone());
        }
        Some(episode)
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

fn wake_all(episode: &AtomicU32, waiters: &mut Vec<Waker>) {
    let next = episode.load(Ordering::Relaxed).wrapping_add(1).max(1);
    episode.store(next, Ordering::Relaxed);
    for waker in waiters.drain(..) {
        waker.wake();
    }
    waiters.shrink_to(64);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn qos0_is_dropped_at_the_limit_and_qos1_never() {
        let queue = ForwardQueue::new(4);
        for _ in 0..4 {
            assert_eq!(
                queue.admit(false),
                Admission {
                    queue: true,
                    pause: false
                }
            );
        }
        assert_eq!(
            queue.admit(true),
            Admission {
                queue: false,
                pause: true
            }
        );
        for _ in 0..100 {
            assert!(queue.admit(false).queue);
        }
        assert_eq!(queue.queued(), 104);
    }

    #[test]
    fn paused_publishers_are_woken_once_below_low_water() {
        let queue = ForwardQueue::new(4);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        for _ in 0..5 {
            queue.admit(false);
        }
        let episode = queue.wait(&waker, 0).expect("paused over the limit");
        // Registered once per episode however often the connection is polled.
        assert_eq!(queue.wait(&waker, episode), Some(episode));
        queue.taken();
        queue.taken();
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "still above low water");
        assert!(queue.wait(&waker, episode).is_some());
        queue.taken();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(queue.wait(&waker, episode), None);
        // Hysteresis: below the limit again, publishers run.
        assert!(!queue.admit(false).pause);
    }

    #[test]
    fn a_closed_queue_releases_and_never_pauses() {
        let queue = ForwardQueue::new(1);
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        queue.admit(false);
        queue.admit(false);
        assert!(queue.wait(&waker, 0).is_some());
        queue.close();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!queue.admit(false).pause);
        assert_eq!(queue.wait(&waker, 0), None);
    }
}
