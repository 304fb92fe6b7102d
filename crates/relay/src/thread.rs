//! One relay thread's event loop: a `mio::Poll` (edge-triggered), a slab of
//! pairs, the scratch buffer, and the command queue fed by `Relay`.
//!
//! Tokens: pair slot `k` uses `2k` for its client and `2k + 1` for its
//! upstream; [`WAKER`] marks queued commands. Both sockets are registered once
//! for read and write readiness and never re-registered: backpressure is a
//! decision not to read (see `pair.rs`), not a change of interest.
//!
//! A loop turn: poll (without blocking while some pair has read budget left
//! over), handle the events, drive the pairs queued by the previous turn for
//! fairness, then run queued commands. New pairs only take slab slots in that
//! last step, so an event of the same turn can never reach a pair that reused
//! the slot of one closed earlier in the turn.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buffer::Scratch;
use crate::pair::{Drive, Io, Pair};
use crate::{CloseReason, OnClose, PairId, RelayConfig, Shared};

pub(crate) const WAKER: Token = Token(usize::MAX);

pub(crate) enum Command {
    Add(NewPair),
    /// Close every pair; reply with how many.
    CloseAll(Sender<usize>),
}

pub(crate) struct NewPair {
    pub(crate) id: PairId,
    pub(crate) client: mio::net::TcpStream,
    pub(crate) upstream: mio::net::TcpStream,
    pub(crate) pending: Vec<u8>,
}

pub(crate) struct Worker {
    poll: Poll,
    events: Events,
    core: Core,
}

/// Everything but the poll and its events, so events can be handled while
/// iterating them.
struct Core {
    registry: mio::Registry,
    pairs: Slab<Pair>,
    scratch: Scratch,
    read_budget: usize,
    rx: Receiver<Command>,
    shared: Arc<Shared>,
    on_close: Option<OnClose>,
    /// Pairs that stopped reading on their budget, to drive next turn.
    ready: Vec<(usize, PairId)>,
}

enum Turn {
    Continue,
    Exit,
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        rx: Receiver<Command>,
        shared: Arc<Shared>,
        config: &RelayConfig,
    ) -> io::Result<Worker> {
        let registry = poll.registry().try_clone()?;
        Ok(Worker {
            events: Events::with_capacity(config.events_capacity),
            poll,
            core: Core {
                registry,
                pairs: Slab::new(),
                scratch: Scratch::new(config.scratch_size),
                read_budget: config.read_budget,
                rx,
                shared,
                on_close: config.on_close.clone(),
                ready: Vec::new(),
            },
        })
    }

    pub(crate) fn run(self) {
        let Worker {
            mut poll,
            mut events,
            mut core,
        } = self;
        let mut queued = Vec::new();
        loop {
            let timeout = (!core.ready.is_empty()).then_some(Duration::ZERO);
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "relay poll failed; closing this thread's pairs");
                break;
            }
            std::mem::swap(&mut queued, &mut core.ready);
            for event in events.iter() {
                if event.token() != WAKER {
                    core.on_event(event);
                }
            }
            for (key, id) in queued.drain(..) {
                core.drive_queued(key, id);
            }
            if let Turn::Exit = core.run_commands() {
                break;
            }
        }
        core.close_all();
        core.refuse_queued();
    }
}

impl Core {
    fn on_event(&mut self, event: &mio::event::Event) {
        let key = event.token().0 / 2;
        let upstream = event.token().0 % 2 == 1;
        let Some(pair) = self.pairs.get_mut(key) else {
            return;
        };
        match pair.on_event(upstream, event) {
            Ok(()) => self.drive(key),
            Err(reason) => self.close(key, reason),
        }
    }

    fn drive_queued(&mut self, key: usize, id: PairId) {
        if let Some(pair) = self.pairs.get_mut(key)
            && pair.id == id
        {
            pair.queued = false;
            self.drive(key);
        }
    }

    fn drive(&mut self, key: usize) {
        let pair = &mut self.pairs[key];
        let mut io = Io {
            scratch: self.scratch.as_mut(),
            read_budget: self.read_budget,
            counters: &self.shared.counters,
        };
        match pair.drive(&mut io) {
            Drive::Idle => {}
            Drive::Again => {
                if !pair.queued {
                    pair.queued = true;
                    self.ready.push((key, pair.id));
                }
            }
            Drive::Close(reason) => self.close(key, reason),
        }
    }

    fn run_commands(&mut self) -> Turn {
        // Swap before reading `stop`: a `shutdown` whose notify found the flag
        // already set is still seen here, through this swap.
        let notified = self.shared.notified.swap(false, Ordering::AcqRel);
        if self.shared.stop.load(Ordering::Acquire) {
            return Turn::Exit;
        }
        if !notified {
            return Turn::Continue;
        }
        loop {
            match self.rx.try_recv() {
                Ok(Command::Add(new)) => self.add(new),
                Ok(Command::CloseAll(ack)) => {
                    let closed = self.close_all();
                    let _ = ack.send(closed);
                }
                Err(TryRecvError::Disconnected) => return Turn::Exit,
                Err(TryRecvError::Empty) => return Turn::Continue,
            }
        }
    }

    fn add(&mut self, new: NewPair) {
        let counters = &self.shared.counters;
        counters.added.fetch_add(1, Ordering::Relaxed);
        let NewPair {
            id,
            mut client,
            mut upstream,
            pending,
        } = new;
        let entry = self.pairs.vacant_entry();
        let key = entry.key();
        let both = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.registry.register(&mut client, Token(2 * key), both) {
            counters.closed(CloseReason::ClientError(e.kind()));
            self.notify_closed(id, CloseReason::ClientError(e.kind()));
            return;
        }
        if let Err(e) = self
            .registry
            .register(&mut upstream, Token(2 * key + 1), both)
        {
            let _ = self.registry.deregister(&mut client);
            drop(client);
            counters.closed(CloseReason::UpstreamError(e.kind()));
            self.notify_closed(id, CloseReason::UpstreamError(e.kind()));
            return;
        }
        let pair = entry.insert(Pair::new(id, client, upstream, pending));
        let buffered = pair.buffered();
        if buffered > 0 {
            counters.buffer_allocated(buffered);
            counters.pair_buffered(buffered);
        }
        self.drive(key);
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let mut pair = self.pairs.remove(key);
        let _ = self.registry.deregister(&mut pair.client.stream);
        let _ = self.registry.deregister(&mut pair.upstream.stream);
        let counters = &self.shared.counters;
        counters.buffer_freed(pair.buffered());
        counters.closed(reason);
        let id = pair.id;
        drop(pair);
        self.notify_closed(id, reason);
    }

    /// Closes every pair as aborted and returns how many there were.
    fn close_all(&mut self) -> usize {
        let keys: Vec<usize> = self.pairs.iter().map(|(key, _)| key).collect();
        for &key in &keys {
            self.close(key, CloseReason::Aborted);
        }
        self.pairs = Slab::new();
        self.ready = Vec::new();
        keys.len()
    }

    /// After the loop ends: pairs still queued are closed unregistered, so
    /// `live` and the callback stay right.
    fn refuse_queued(&mut self) {
        while let Ok(command) = self.rx.try_recv() {
            if let Command::Add(new) = command {
                self.shared.counters.added.fetch_add(1, Ordering::Relaxed);
                self.shared.counters.closed(CloseReason::Aborted);
                let id = new.id;
                drop(new);
                self.notify_closed(id, CloseReason::Aborted);
            }
        }
    }

    fn notify_closed(&self, id: PairId, reason: CloseReason) {
        tracing::trace!(pair = %id, ?reason, "relay pair closed");
        if let Some(on_close) = &self.on_close {
            on_close(id, reason);
        }
    }
}
