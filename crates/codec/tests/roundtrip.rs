//! Property tests: every legal packet survives encode → check → decode for
//! each protocol version, `encoded_len` is exact, every strict prefix of a
//! frame is incomplete, and no input (random or a mutated valid frame) makes
//! the codec panic.

mod common;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use throng_codec::*;

fn roundtrip(version: ProtocolVersion, packet: &Packet) -> Result<(), TestCaseError> {
    let mut out = vec![0xAA];
    encode(packet, version, &mut out).expect("legal packet encodes");
    let frame = &out[1..];
    prop_assert_eq!(encoded_len(packet, version), frame.len());
    for end in 0..frame.len() {
        prop_assert_eq!(check(&frame[..end], usize::MAX), Ok(None));
    }
    prop_assert_eq!(check(frame, frame.len()), Ok(Some(frame.len())));
    prop_assert_eq!(&decode(frame, version)?, packet);
    prop_assert_eq!(
        &decode_bytes(&Bytes::copy_from_slice(frame), version)?,
        packet
    );

    let mut buf = BytesMut::new();
    buf.extend_from_slice(frame);
    buf.extend_from_slice(frame);
    buf.extend_from_slice(&frame[..frame.len() - 1]);
    for _ in 0..2 {
        let read = read_packet(&mut buf, version, frame.len())?;
        prop_assert_eq!(read.as_ref(), Some(packet));
    }
    prop_assert_eq!(read_packet(&mut buf, version, frame.len())?, None);
    prop_assert_eq!(buf.len(), frame.len() - 1);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn roundtrip_v3_1(p in common::packet(ProtocolVersion::V3_1)) {
        roundtrip(ProtocolVersion::V3_1, &p)?;
    }

    #[test]
    fn roundtrip_v3_1_1(p in common::packet(ProtocolVersion::V3_1_1)) {
        roundtrip(ProtocolVersion::V3_1_1, &p)?;
    }

    #[test]
    fn roundtrip_v5(p in common::packet(ProtocolVersion::V5)) {
        roundtrip(ProtocolVersion::V5, &p)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..96)) {
        fuzz_one(&data);
    }

    #[test]
    fn mutated_frames_never_panic(
        (version, p) in common::versioned_packet(),
        edits in vec((any::<Index>(), any::<u8>()), 1..4),
        cut in any::<Index>(),
    ) {
        let mut out = Vec::new();
        encode(&p, version, &mut out).expect("legal packet encodes");
        for (at, byte) in edits {
            let i = at.index(out.len());
            out[i] = byte;
        }
        fuzz_one(&out);
        fuzz_one(&out[..cut.index(out.len() + 1)]);
    }
}
