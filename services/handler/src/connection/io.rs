//! Socket I/O without per-connection buffers at rest: reads land in a per-thread
//! scratch buffer and only an incomplete frame is kept; writes are encoded into a
//! per-thread scratch buffer and only what the socket would not take is kept.

use std::cell::RefCell;
use std::io;

use tokio::net::TcpStream;

const READ_SCRATCH: usize = 64 * 1024;
/// Scratch write buffers larger than this are not kept for reuse.
const WRITE_SCRATCH_KEEP: usize = 256 * 1024;

thread_local! {
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_SCRATCH].into_boxed_slice());
    static WRITE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Lends the thread's read scratch buffer; nothing may await while it is held.
pub fn with_read_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUF.with_borrow_mut(|buf| f(buf))
}

/// Borrows an output buffer: the connection's own pending bytes when it has some
/// (order must hold), else the thread's scratch buffer.
pub fn take_output(pending: &mut Vec<u8>) -> Vec<u8> {
    if pending.is_empty() {
        WRITE_BUF.take()
    } else {
        std::mem::take(pending)
    }
}

/// Writes what the socket takes now; the rest becomes the connection's pending bytes.
/// The scratch buffer goes back to the thread.
pub fn write_output(stream: &TcpStream, out: Vec<u8>, pending: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    while written < out.len() {
        match stream.try_write(&out[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                give_back(out);
                return Err(e);
            }
        }
    }
    if written < out.len() {
        pending.extend_from_slice(&out[written..]);
    }
    give_back(out);
    Ok(())
}

fn give_back(mut out: Vec<u8>) {
    if out.capacity() <= WRITE_SCRATCH_KEEP {
        out.clear();
        WRITE_BUF.with_borrow_mut(|buf| {
            if buf.capacity() < out.capacity() {
                *buf = out;
            }
        });
    }
}

/// Flushes pending bytes after the socket became writable.
pub fn flush_pending(stream: &TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    let out = std::mem::take(pending);
    write_output(stream, out, pending)?;
    if pending.is_empty() {
        *pending = Vec::new();
    }
    Ok(())
}
