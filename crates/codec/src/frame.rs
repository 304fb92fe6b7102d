//! Framing: reading the fixed header, deciding whether a buffer holds a whole
//! packet ([`check`]), and the buffer-consuming [`read_packet`] for clients.

use crate::decode::decode;
use crate::error::DecodeError;
use crate::packet::{Packet, ProtocolVersion};
use bytes::{Buf, BytesMut};

/// Largest remaining length a four-byte Variable Byte Integer can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Parses the fixed header at the start of `buf`: `Some((header_len,
/// remaining_len))`, or `None` while the remaining length is incomplete.
pub(crate) fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 == 0 {
        return Err(DecodeError::MalformedPacket("reserved packet type 0"));
    }
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, remaining)));
        }
    }
    Err(DecodeError::MalformedPacket(
        "remaining length longer than 4 bytes",
    ))
}

/// Looks at the fixed header in `buf`.
///
/// Returns `Ok(None)` while more bytes are needed and `Ok(Some(len))` once
/// `buf` starts with a whole frame of `len` bytes. A frame longer than
/// `max_packet_size` (fixed header included, as MQTT 5.0 counts it) is
/// rejected as soon as its header is complete, before its body arrives.
pub fn check(buf: &[u8], max_packet_size: usize) -> Result<Option<usize>, DecodeError> {
    let Some((header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    let total = header_len + remaining;
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Decodes the first packet in `buf` and removes its bytes.
///
/// `Ok(None)` leaves `buf` untouched until more bytes arrive. When the frame
/// is complete but invalid its bytes are still consumed before the error is
/// returned (oversized frames are not: their bytes never all arrive).
pub fn read_packet(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(len) = check(buf, max_packet_size)? else {
        return Ok(None);
    };
    let packet = decode(&buf[..len], version);
    buf.advance(len);
    packet.map(Some)
}

/// Protocol level of a CONNECT frame that may be malformed or incomplete: the byte
/// after the protocol name. Lets a server answer a broken v5 CONNECT in v5 form.
pub fn peek_protocol_level(frame: &[u8]) -> Option<u8> {
    let mut i = 1;
    while *frame.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let start = i + 1;
    let name_len = usize::from(u16::from_be_bytes([
        *frame.get(start)?,
        *frame.get(start + 1)?,
    ]));
    frame.get(start + 2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        assert_eq!(fixed_header(&[0x30, 0x00]), Ok(Some((2, 0))));
        assert_eq!(fixed_header(&[0x30, 0x7F]), Ok(Some((2, 127))));
        assert_eq!(fixed_header(&[0x30, 0x80, 0x01]), Ok(Some((3, 128))));
        assert_eq!(
            fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
            Ok(Some((5, MAX_REMAINING_LENGTH)))
        );
        assert_eq!(fixed_header(&[0x30, 0xFF, 0xFF, 0xFF]), Ok(None));
        assert!(fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    }

    #[test]
    fn oversized_frame_rejected_from_header_alone() {
        assert_eq!(
            check(&[0x30, 0x80, 0x01], 100),
            Err(DecodeError::PacketTooLarge {
                size: 131,
                max: 100
            })
        );
        assert_eq!(check(&[0x30, 0x80, 0x01], 131), Ok(None));
    }

    #[test]
    fn read_packet_consumes_frames() {
        let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0, 0x00, 0xC0][..]);
        let v = ProtocolVersion::V3_1_1;
        assert_eq!(read_packet(&mut buf, v, 10), Ok(Some(Packet::PingReq)));
        assert_eq!(read_packet(&mut buf, v, 10), Ok(Some(Packet::PingResp)));
        assert_eq!(read_packet(&mut buf, v, 10), Ok(None));
        assert_eq!(buf.len(), 1);
        buf.extend_from_slice(&[0x01, 0x00]);
        assert!(read_packet(&mut buf, v, 10).is_err());
        assert!(buf.is_empty());
    }
}
