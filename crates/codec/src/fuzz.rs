//! The body shared by the cargo-fuzz target and the corpus test: frame,
//! decode under every protocol version, and re-encode whatever decodes.

use crate::{
    DecodeError, Packet, ProtocolVersion, check, decode, decode_bytes, encode, encoded_len,
};
use bytes::Bytes;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Splits `data` into frames with [`check`] and decodes each one under every
/// protocol version. Must never panic; panics (assertion failures) when a
/// decoded packet does not survive encode → check → decode unchanged, when
/// [`encoded_len`] is wrong, or when copying and sharing decoders disagree.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    let shared = Bytes::copy_from_slice(data);
    for version in VERSIONS {
        let mut offset = 0;
        while let Ok(Some(len)) = check(&data[offset..], usize::MAX) {
            let frame = &data[offset..offset + len];
            assert!(matches!(
                check(frame, len - 1),
                Err(DecodeError::PacketTooLarge { .. })
            ));
            let decoded = decode(frame, version);
            let shared_decoded = decode_bytes(&shared.slice(offset..offset + len), version);
            assert_eq!(decoded, shared_decoded);
            if let Ok(packet) = decoded {
                roundtrip(&packet, version);
            }
            offset += len;
        }
    }
}

fn roundtrip(packet: &Packet, version: ProtocolVersion) {
    let version = match packet {
        Packet::Connect(c) => c.protocol.expect("decoded connect names its protocol"),
        _ => version,
    };
    let mut out = Vec::new();
    encode(packet, version, &mut out).expect("a decoded packet re-encodes");
    assert_eq!(encoded_len(packet, version), out.len());
    assert_eq!(check(&out, out.len()), Ok(Some(out.len())));
    let again = decode(&out, version).expect("a re-encoded packet decodes");
    assert_eq!(&again, packet);
}
