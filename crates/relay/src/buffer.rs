//! Buffers: the per-thread scratch every read goes through, and the
//! per-direction [`Pending`] remainder that exists only while a destination
//! would block. An idle pair holds neither.

/// Bytes read but not yet written, allocated at the size of the remainder and
/// freed as soon as it drains.
pub(crate) struct Pending {
    buf: Box<[u8]>,
    pos: usize,
}

impl Pending {
    /// Takes ownership of `bytes`; `None` when there is nothing to hold.
    pub(crate) fn new(bytes: Vec<u8>) -> Option<Pending> {
        (!bytes.is_empty()).then(|| Pending {
            buf: bytes.into_boxed_slice(),
            pos: 0,
        })
    }

    /// Copies the unwritten remainder of a scratch read.
    pub(crate) fn copy_of(bytes: &[u8]) -> Option<Pending> {
        Pending::new(bytes.to_vec())
    }

    pub(crate) fn remaining(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn advance(&mut self, written: usize) {
        self.pos = (self.pos + written).min(self.buf.len());
    }

    pub(crate) fn is_drained(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// The allocation's size, which is what the buffered-bytes stats count.
    pub(crate) fn allocated(&self) -> usize {
        self.buf.len()
    }
}

/// A thread's read buffer, shared by every pair it owns.
pub(crate) struct Scratch {
    buf: Box<[u8]>,
}

impl Scratch {
    pub(crate) fn new(size: usize) -> Scratch {
        Scratch {
            buf: vec![0; size].into_boxed_slice(),
        }
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_tracks_what_is_left() {
        assert!(Pending::new(Vec::new()).is_none());
        let mut pending = Pending::copy_of(b"hello").expect("non-empty");
        assert_eq!(pending.allocated(), 5);
        pending.advance(2);
        assert_eq!(pending.remaining(), b"llo");
        assert!(!pending.is_drained());
        pending.advance(3);
        assert!(pending.is_drained());
        assert_eq!(pending.remaining(), b"");
    }
}
