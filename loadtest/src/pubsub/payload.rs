//! The payload every `pubsub` message carries: who sent it, its place in that
//! publisher's sequence, when it was sent, and whether it counts.
//!
//! Layout (little-endian), then zeros up to the payload size:
//! `[0..4)` publisher index, its two top bits the [`Kind`]; `[4..8)` sequence
//! number (per publisher and kind, from 0); `[8..16)` send time, unix µs.

/// Bytes of a payload that carry data.
pub const HEADER: usize = 16;

/// Publisher indexes must stay below this (the two top bits hold the kind).
pub const MAX_PUBLISHERS: u32 = 1 << 30;

/// What a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Counted: losses, duplicates, order, latency.
    Measured,
    /// Sent during --warmup: counted apart, never checked.
    Warmup,
    /// Sent before the run until every subscriber saw one from every publisher.
    Probe,
}

impl Kind {
    fn bits(self) -> u32 {
        match self {
            Kind::Measured => 0,
            Kind::Warmup => 1,
            Kind::Probe => 2,
        }
    }
}

/// A decoded payload header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub kind: Kind,
    pub publisher: u32,
    pub seq: u32,
    pub sent_us: u64,
}

/// Appends a payload of `size` bytes (at least [`HEADER`]).
pub fn encode(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    debug_assert!(stamp.publisher < MAX_PUBLISHERS);
    let head = stamp.publisher | (stamp.kind.bits() << 30);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    out.extend_from_slice(&stamp.sent_us.to_le_bytes());
    out.resize(out.len() + size.saturating_sub(HEADER), 0);
}

/// The header of a payload made by [`encode`]; `None` when too short or of an
/// unknown kind.
pub fn decode(p: &[u8]) -> Option<Stamp> {
    let head = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    let seq = u32::from_le_bytes(p.get(4..8)?.try_into().ok()?);
    let sent_us = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
    let kind = match head >> 30 {
        0 => Kind::Measured,
        1 => Kind::Warmup,
        2 => Kind::Probe,
        _ => return None,
    };
    Some(Stamp {
        kind,
        publisher: head & (MAX_PUBLISHERS - 1),
        seq,
        sent_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_kind() {
        for kind in [Kind::Measured, Kind::Warmup, Kind::Probe] {
            let stamp = Stamp {
                kind,
                publisher: MAX_PUBLISHERS - 1,
                seq: u32::MAX,
                sent_us: 1_700_000_000_123_456,
            };
            let mut p = vec![0xEE];
            encode(&mut p, stamp, 64);
            assert_eq!(p.len(), 65);
            assert!(p[1 + HEADER..].iter().all(|&b| b == 0));
            assert_eq!(decode(&p[1..]), Some(stamp));
        }
    }

    #[test]
    fn minimum_size_and_garbage() {
        let stamp = Stamp {
            kind: Kind::Measured,
            publisher: 3,
            seq: 9,
            sent_us: 5,
        };
        let mut p = Vec::new();
        encode(&mut p, stamp, 0);
        assert_eq!(p.len(), HEADER);
        assert_eq!(p[..8], [3, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(decode(&p[..HEADER - 1]), None);
        // Kind bits 0b11 are not a kind.
        let mut bad = p.clone();
        bad[3] = 0xC0;
        assert_eq!(decode(&bad), None);
    }
}
