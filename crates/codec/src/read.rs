//! Bounds-checked reading of MQTT primitive types from a frame, and the
//! choice between copying binary fields and slicing them from a shared `Bytes`.

use crate::error::DecodeError;
use bytes::Bytes;

type Result<T> = std::result::Result<T, DecodeError>;

const TRUNCATED: DecodeError = DecodeError::MalformedPacket("packet shorter than its content");

/// A cursor over the bytes of one frame (or one property block).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Everything not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails with `err` when unread bytes remain.
    pub(crate) fn finish(&self, err: &'static str) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::MalformedPacket(err))
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(TRUNCATED);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let (&b, tail) = self.buf.split_first().ok_or(TRUNCATED)?;
        self.buf = tail;
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A Variable Byte Integer of at most four bytes. Non-minimal encodings
    /// are accepted.
    pub(crate) fn varint(&mut self) -> Result<u32> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedPacket(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 Encoded String.
    pub(crate) fn str(&mut self) -> Result<&'a str> {
        utf8(self.binary()?)
    }
}

/// Validates an MQTT UTF-8 string: well-formed UTF-8 (which excludes
/// surrogates) with no U+0000.
pub(crate) fn utf8(b: &[u8]) -> Result<&str> {
    let s =
        std::str::from_utf8(b).map_err(|_| DecodeError::MalformedPacket("invalid utf-8 string"))?;
    if b.contains(&0) {
        return Err(DecodeError::MalformedPacket("string contains U+0000"));
    }
    Ok(s)
}

/// Where binary fields of the decoded packet get their storage.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    shared: Option<&'a Bytes>,
}

impl<'a> Ctx<'a> {
    /// Binary fields are copied out of the frame.
    pub(crate) fn copying() -> Self {
        Ctx { shared: None }
    }

    /// Binary fields are slices of `frame`, which must be the decoded buffer.
    pub(crate) fn sharing(frame: &'a Bytes) -> Self {
        Ctx {
            shared: Some(frame),
        }
    }

    pub(crate) fn bytes(self, field: &[u8]) -> Bytes {
        match self.shared {
            Some(frame) if !field.is_empty() => frame.slice_ref(field),
            _ => Bytes::copy_from_slice(field),
        }
    }
}
