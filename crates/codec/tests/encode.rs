//! Encoder errors (nothing is appended on failure), fields dropped for
//! 3.1.x, and zero-copy decoding with `decode_bytes`.

use bytes::Bytes;
use throng_codec::*;

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[test]
fn encode_errors() {
    let long = "x".repeat(65_536);
    let publish = Packet::Publish(Publish {
        topic: long,
        ..Publish::default()
    });
    let mut out = vec![1, 2, 3];
    assert_eq!(
        encode(&publish, V311, &mut out),
        Err(EncodeError::FieldTooLong(65_536))
    );
    assert_eq!(out, [1, 2, 3], "nothing appended on error");
    assert_eq!(encoded_len(&publish, V311), usize::MAX);

    let huge = Packet::Publish(Publish {
        topic: "t".into(),
        payload: Bytes::from(vec![0; MAX_REMAINING_LENGTH]),
        ..Publish::default()
    });
    assert!(matches!(
        encode(&huge, V311, &mut out),
        Err(EncodeError::PacketTooLarge(_))
    ));

    let no_id = Packet::Publish(Publish {
        topic: "t".into(),
        qos: QoS::AtLeastOnce,
        ..Publish::default()
    });
    assert!(matches!(
        encode(&no_id, V311, &mut out),
        Err(EncodeError::Invalid(_))
    ));
    assert!(matches!(
        encode(&Packet::Auth(Auth::default()), V311, &mut out),
        Err(EncodeError::Invalid(_))
    ));
    let empty_sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        ..Subscribe::default()
    });
    assert!(matches!(
        encode(&empty_sub, V5, &mut out),
        Err(EncodeError::Invalid(_))
    ));
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn v3_encoding_drops_v5_fields() {
    let ack = PubResp {
        packet_id: 3,
        reason: 0x10,
        reason_string: Some("r".into()),
        ..PubResp::default()
    };
    let mut out = Vec::new();
    encode(&Packet::PubAck(ack), V311, &mut out).unwrap();
    assert_eq!(out, b"\x40\x02\x00\x03");
    out.clear();
    let unsuback = UnsubAck {
        packet_id: 3,
        codes: vec![0],
        ..UnsubAck::default()
    };
    encode(&Packet::UnsubAck(unsuback), V311, &mut out).unwrap();
    assert_eq!(out, b"\xb0\x02\x00\x03");
}

#[test]
fn decode_bytes_shares_the_payload() {
    let frame = Bytes::from_static(b"\x30\x07\x00\x03a/bhi");
    let Ok(Packet::Publish(p)) = decode_bytes(&frame, V311) else {
        panic!("publish expected");
    };
    assert_eq!(p.payload, &b"hi"[..]);
    assert_eq!(p.payload.as_ptr(), frame[7..].as_ptr());
}
