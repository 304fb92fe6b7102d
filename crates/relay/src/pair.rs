//! One relayed pair: two non-blocking sockets, the readiness each last
//! reported (edge-triggered: a flag stays set until an operation returns
//! `WouldBlock`), and per direction the bytes still to write plus how far its
//! end-of-stream has got.
//!
//! Per direction (client→upstream is "up", upstream→client is "down"):
//! 1. flush the pending remainder while the destination is writable; free it
//!    once drained;
//! 2. after the source's EOF, once nothing is pending, shut down writing on
//!    the destination (half-close); the direction is then finished;
//! 3. otherwise, while the source is readable and the destination writable,
//!    read into the scratch and write it on; if the destination takes only
//!    part, keep the rest as the pending remainder and stop reading (so at
//!    most one scratch read is buffered per direction); stop after
//!    `read_budget` bytes and ask to be driven again later.
//!
//! The pair is complete when both directions are finished. Any I/O error
//! closes it at once, attributed to the side it happened on.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Event;
use mio::net::TcpStream;

use crate::buffer::Pending;
use crate::stats::Counters;
use crate::{CloseReason, PairId};

pub(crate) struct Pair {
    pub(crate) id: PairId,
    /// In the thread's queue of pairs that ran out of read budget.
    pub(crate) queued: bool,
    pub(crate) client: Side,
    pub(crate) upstream: Side,
    up: Flow,
    down: Flow,
}

pub(crate) struct Side {
    pub(crate) stream: TcpStream,
    readable: bool,
    writable: bool,
}

#[derive(Default)]
struct Flow {
    pending: Option<Pending>,
    /// The source returned end-of-stream.
    eof: bool,
    /// Writing on the destination was shut down: this direction is finished.
    shut: bool,
}

/// What the thread should do with a pair after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drive {
    /// Wait for the next readiness event.
    Idle,
    /// A source is still readable but its read budget is spent: drive again
    /// on the next loop turn.
    Again,
    /// Close both sockets.
    Close(CloseReason),
}

/// What driving needs from the thread.
pub(crate) struct Io<'a> {
    pub(crate) scratch: &'a mut [u8],
    pub(crate) read_budget: usize,
    pub(crate) counters: &'a Counters,
}

#[derive(Clone, Copy)]
enum Dir {
    Up,
    Down,
}

impl Dir {
    fn source_error(self, e: &io::Error) -> CloseReason {
        match self {
            Dir::Up => CloseReason::ClientError(e.kind()),
            Dir::Down => CloseReason::UpstreamError(e.kind()),
        }
    }

    fn destination_error(self, e: &io::Error) -> CloseReason {
        match self {
            Dir::Up => CloseReason::UpstreamError(e.kind()),
            Dir::Down => CloseReason::ClientError(e.kind()),
        }
    }

    fn count(self, counters: &Counters, bytes: usize) {
        let counter = match self {
            Dir::Up => &counters.bytes_up,
            Dir::Down => &counters.bytes_down,
        };
        counter.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Pair {
    /// Both sides start out assumed ready: the first drive finds out (at the
    /// cost of one `WouldBlock` each) and never misses bytes that arrived
    /// before registration.
    pub(crate) fn new(
        id: PairId,
        client: TcpStream,
        upstream: TcpStream,
        pending_to_upstream: Vec<u8>,
    ) -> Pair {
        Pair {
            id,
            queued: false,
            client: Side::new(client),
            upstream: Side::new(upstream),
            up: Flow {
                pending: Pending::new(pending_to_upstream),
                ..Flow::default()
            },
            down: Flow::default(),
        }
    }

    /// Records what an event says about one side. A socket error (e.g. a
    /// reset) closes the pair right away: once taken, `SO_ERROR` is cleared
    /// and a later read would report a clean EOF instead.
    pub(crate) fn on_event(&mut self, upstream: bool, event: &Event) -> Result<(), CloseReason> {
        let side = if upstream {
            &mut self.upstream
        } else {
            &mut self.client
        };
        if event.is_error() {
            let error = match side.stream.take_error() {
                Ok(error) => error,
                Err(e) => Some(e),
            };
            if let Some(e) = error {
                return Err(if upstream {
                    CloseReason::UpstreamError(e.kind())
                } else {
                    CloseReason::ClientError(e.kind())
                });
            }
        }
        side.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
        side.writable |= event.is_writable() || event.is_write_closed() || event.is_error();
        Ok(())
    }

    /// Moves bytes in both directions as far as readiness allows.
    pub(crate) fn drive(&mut self, io: &mut Io<'_>) -> Drive {
        let up = match pump(
            &mut self.up,
            &mut self.client,
            &mut self.upstream,
            Dir::Up,
            io,
        ) {
            Ok(again) => again,
            Err(reason) => return Drive::Close(reason),
        };
        let down = match pump(
            &mut self.down,
            &mut self.upstream,
            &mut self.client,
            Dir::Down,
            io,
        ) {
            Ok(again) => again,
            Err(reason) => return Drive::Close(reason),
        };
        let buffered = self.buffered();
        if buffered > 0 {
            io.counters.pair_buffered(buffered);
        }
        if self.up.shut && self.down.shut {
            Drive::Close(CloseReason::Completed)
        } else if up || down {
            Drive::Again
        } else {
            Drive::Idle
        }
    }

    /// Bytes held in this pair's buffers (allocated size).
    pub(crate) fn buffered(&self) -> usize {
        let held = |flow: &Flow| flow.pending.as_ref().map_or(0, Pending::allocated);
        held(&self.up) + held(&self.down)
    }
}

impl Side {
    fn new(stream: TcpStream) -> Side {
        Side {
            stream,
            readable: true,
            writable: true,
        }
    }
}

/// Drives one direction. `Ok(true)`: the source is still readable but the
/// read budget is spent.
fn pump(
    flow: &mut Flow,
    src: &mut Side,
    dst: &mut Side,
    dir: Dir,
    io: &mut Io<'_>,
) -> Result<bool, CloseReason> {
    if let Some(pending) = flow.pending.as_mut() {
        if !dst.writable {
            return Ok(false);
        }
        let written =
            write_some(dst, pending.remaining()).map_err(|e| dir.destination_error(&e))?;
        dir.count(io.counters, written);
        pending.advance(written);
        if !pending.is_drained() {
            return Ok(false);
        }
        io.counters.buffer_freed(pending.allocated());
        flow.pending = None;
    }
    if flow.shut {
        return Ok(false);
    }
    if flow.eof {
        return finish(flow, dst, dir);
    }
    let mut budget = io.read_budget;
    while src.readable && dst.writable {
        if budget == 0 {
            return Ok(true);
        }
        match (&src.stream).read(io.scratch) {
            Ok(0) => {
                src.readable = false;
                flow.eof = true;
                return finish(flow, dst, dir);
            }
            Ok(read) => {
                budget = budget.saturating_sub(read);
                let chunk = &io.scratch[..read];
                let written = write_some(dst, chunk).map_err(|e| dir.destination_error(&e))?;
                dir.count(io.counters, written);
                if written < read {
                    let pending = Pending::copy_of(&chunk[written..]);
                    if let Some(pending) = &pending {
                        io.counters.buffer_allocated(pending.allocated());
                    }
                    flow.pending = pending;
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => src.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(dir.source_error(&e)),
        }
    }
    Ok(false)
}

/// Half-closes the destination once its source ended and nothing is pending.
fn finish(flow: &mut Flow, dst: &mut Side, dir: Dir) -> Result<bool, CloseReason> {
    dst.stream
        .shutdown(Shutdown::Write)
        .map_err(|e| dir.destination_error(&e))?;
    flow.shut = true;
    Ok(false)
}

/// Writes as much of `bytes` as the socket takes now. Stopping short means
/// the socket returned `WouldBlock`, and `dst.writable` is cleared.
fn write_some(dst: &mut Side, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match (&dst.stream).write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                dst.writable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_pair_is_small() {
        // Two sockets, two empty flows, an id and flags: the whole user-space
        // cost of an idle pair besides its slab slot. 96 bytes in release
        // builds; debug builds add mio's 8-byte selector check per socket.
        assert!(
            std::mem::size_of::<Pair>() <= 128,
            "{}",
            std::mem::size_of::<Pair>()
        );
    }
}
