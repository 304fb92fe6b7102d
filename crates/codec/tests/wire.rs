//! Exact wire bytes: known frames decode to the expected packets and encode
//! back to the same bytes.

use bytes::Bytes;
use throng_codec::*;

const V31: ProtocolVersion = ProtocolVersion::V3_1;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Decodes `wire` (checking `check` frames it whole) and encodes the packet
/// back to the same bytes.
fn exact(wire: &[u8], version: ProtocolVersion, expected: Packet) {
    assert_eq!(check(wire, wire.len()), Ok(Some(wire.len())));
    assert_eq!(
        decode(wire, version).as_ref(),
        Ok(&expected),
        "decode {wire:02x?}"
    );
    let version = match &expected {
        Packet::Connect(c) => c.protocol.unwrap(),
        _ => version,
    };
    let mut out = Vec::new();
    encode(&expected, version, &mut out).unwrap();
    assert_eq!(out, wire, "encode {expected:?}");
    assert_eq!(encoded_len(&expected, version), wire.len());
}

#[test]
fn connect_v311_from_mosquitto_pub() {
    // mosquitto_pub -V mqttv311 -i mosq-pub -k 60 -t t -m hi
    let wire = b"\x10\x14\x00\x04MQTT\x04\x02\x00\x3c\x00\x08mosq-pub";
    let expected = Connect {
        protocol: Some(V311),
        clean_start: true,
        keep_alive: 60,
        client_id: "mosq-pub".into(),
        ..Connect::default()
    };
    exact(wire, V5, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_v311_with_will_and_credentials() {
    // Flags 0xCE as in the 3.1.1 spec's example: user name, password, will
    // QoS 1, will flag, clean session; keep alive 10.
    let wire =
        b"\x10\x1f\x00\x04MQTT\x04\xce\x00\x0a\x00\x02c1\x00\x03w/t\x00\x03bye\x00\x01u\x00\x02pw";
    let expected = Connect {
        protocol: Some(V311),
        clean_start: true,
        keep_alive: 10,
        client_id: "c1".into(),
        will: Some(Will {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            ..Will::default()
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"pw")),
        ..Connect::default()
    };
    exact(wire, V311, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_v31() {
    let wire = b"\x10\x10\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02c1";
    let expected = Connect {
        protocol: Some(V31),
        clean_start: true,
        keep_alive: 60,
        client_id: "c1".into(),
        ..Connect::default()
    };
    exact(wire, V311, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_v5_with_properties() {
    // The 5.0 spec's variable header example (flags 0xC2, keep alive 10,
    // Session Expiry Interval 10) followed by client id, user name, password.
    let wire =
        b"\x10\x19\x00\x04MQTT\x05\xc2\x00\x0a\x05\x11\x00\x00\x00\x0a\x00\x01c\x00\x01u\x00\x01p";
    let expected = Connect {
        protocol: Some(V5),
        clean_start: true,
        keep_alive: 10,
        client_id: "c".into(),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties {
            session_expiry_interval: Some(10),
            ..ConnectProperties::default()
        },
        ..Connect::default()
    };
    exact(wire, V311, Packet::Connect(Box::new(expected)));
}

#[test]
fn connect_v5_with_will_properties() {
    // Will flag + QoS 2 + retain (0x34), receive maximum 20, will delay 5,
    // will content type "t".
    let wire = b"\x10\x22\x00\x04MQTT\x05\x34\x00\x00\x03\x21\x00\x14\x00\x01c\x09\x18\x00\x00\x00\x05\x03\x00\x01t\x00\x01w\x00\x02hi";
    let expected = Connect {
        protocol: Some(V5),
        client_id: "c".into(),
        will: Some(Will {
            topic: "w".into(),
            payload: Bytes::from_static(b"hi"),
            qos: QoS::ExactlyOnce,
            retain: true,
            delay_interval: Some(5),
            properties: PublishProperties {
                content_type: Some("t".into()),
                ..PublishProperties::default()
            },
        }),
        properties: ConnectProperties {
            receive_maximum: Some(20),
            ..ConnectProperties::default()
        },
        ..Connect::default()
    };
    exact(wire, V5, Packet::Connect(Box::new(expected)));
}

#[test]
fn connack() {
    let ack = |sp, code| {
        Packet::ConnAck(ConnAck {
            session_present: sp,
            code,
            ..ConnAck::default()
        })
    };
    exact(b"\x20\x02\x01\x00", V311, ack(true, 0));
    exact(b"\x20\x02\x00\x05", V311, ack(false, 5));
    exact(b"\x20\x03\x00\x00\x00", V5, ack(false, 0));
    let props = ConnAckProperties {
        receive_maximum: Some(10),
        maximum_qos: Some(QoS::AtLeastOnce),
        ..ConnAckProperties::default()
    };
    exact(
        b"\x20\x08\x00\x00\x05\x21\x00\x0a\x24\x01",
        V5,
        Packet::ConnAck(ConnAck {
            properties: props,
            ..ConnAck::default()
        }),
    );
}

#[test]
fn publish() {
    let p = Publish {
        topic: "a/b".into(),
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    };
    exact(b"\x30\x07\x00\x03a/bhi", V311, Packet::Publish(p.clone()));
    exact(b"\x30\x08\x00\x03a/b\x00hi", V5, Packet::Publish(p.clone()));

    let retained_qos2 = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        packet_id: Some(7),
        ..p.clone()
    };
    exact(
        b"\x3d\x09\x00\x03a/b\x00\x07hi",
        V31,
        Packet::Publish(retained_qos2),
    );

    let with_props = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: Some(10),
        properties: PublishProperties {
            payload_format_indicator: Some(1),
            topic_alias: Some(5),
            user_properties: vec![("k".into(), "v".into())],
            ..PublishProperties::default()
        },
        ..p
    };
    exact(
        b"\x32\x16\x00\x03a/b\x00\x0a\x0c\x23\x00\x05\x01\x01\x26\x00\x01k\x00\x01vhi",
        V5,
        Packet::Publish(with_props),
    );

    let aliased = Publish {
        topic: String::new(),
        properties: PublishProperties {
            topic_alias: Some(1),
            ..PublishProperties::default()
        },
        ..Publish::default()
    };
    exact(
        b"\x30\x06\x00\x00\x03\x23\x00\x01",
        V5,
        Packet::Publish(aliased),
    );
}

#[test]
fn publish_acknowledgements() {
    let ack = |id, reason| PubResp {
        packet_id: id,
        reason,
        ..PubResp::default()
    };
    exact(b"\x40\x02\x00\x01", V311, Packet::PubAck(ack(1, 0)));
    exact(b"\x50\x02\x00\x01", V311, Packet::PubRec(ack(1, 0)));
    exact(b"\x62\x02\x00\x01", V311, Packet::PubRel(ack(1, 0)));
    exact(b"\x70\x02\x00\x01", V311, Packet::PubComp(ack(1, 0)));
    exact(b"\x40\x02\x00\x01", V5, Packet::PubAck(ack(1, 0)));
    exact(b"\x40\x03\x00\x01\x10", V5, Packet::PubAck(ack(1, 0x10)));
    exact(b"\x70\x03\x00\x01\x92", V5, Packet::PubComp(ack(1, 0x92)));
    let with_reason = PubResp {
        reason_string: Some("no".into()),
        ..ack(2, 0x87)
    };
    exact(
        b"\x50\x09\x00\x02\x87\x05\x1f\x00\x02no",
        V5,
        Packet::PubRec(with_reason),
    );

    // Long forms a peer may send; they decode to the same packets.
    assert_eq!(
        decode(b"\x40\x04\x00\x01\x00\x00", V5),
        Ok(Packet::PubAck(ack(1, 0)))
    );
    assert_eq!(
        decode(b"\x40\x03\x00\x01\x00", V5),
        Ok(Packet::PubAck(ack(1, 0)))
    );
    // 3.1 allowed DUP on a PUBREL retry.
    assert_eq!(
        decode(b"\x6a\x02\x00\x01", V31),
        Ok(Packet::PubRel(ack(1, 0)))
    );
}

#[test]
fn subscriptions() {
    let opts = |qos| SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    };
    let sub = Subscribe {
        packet_id: 10,
        filters: vec![
            ("a/b".into(), opts(QoS::AtLeastOnce)),
            ("c/#".into(), opts(QoS::ExactlyOnce)),
        ],
        ..Subscribe::default()
    };
    exact(
        b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/#\x02",
        V311,
        Packet::Subscribe(sub),
    );

    let v5_sub = Subscribe {
        packet_id: 1,
        subscription_identifier: Some(7),
        filters: vec![(
            "t".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            },
        )],
        ..Subscribe::default()
    };
    exact(
        b"\x82\x09\x00\x01\x02\x0b\x07\x00\x01t\x2d",
        V5,
        Packet::Subscribe(v5_sub),
    );

    let suback = SubAck {
        packet_id: 10,
        codes: vec![1, 0x80],
        ..SubAck::default()
    };
    exact(
        b"\x90\x04\x00\x0a\x01\x80",
        V311,
        Packet::SubAck(suback.clone()),
    );
    exact(b"\x90\x05\x00\x0a\x00\x01\x80", V5, Packet::SubAck(suback));

    let unsub = Unsubscribe {
        packet_id: 2,
        filters: vec!["a/b".into()],
        ..Unsubscribe::default()
    };
    exact(
        b"\xa2\x07\x00\x02\x00\x03a/b",
        V311,
        Packet::Unsubscribe(unsub),
    );

    exact(
        b"\xb0\x02\x00\x02",
        V311,
        Packet::UnsubAck(UnsubAck {
            packet_id: 2,
            ..UnsubAck::default()
        }),
    );
    let unsuback = UnsubAck {
        packet_id: 2,
        codes: vec![0x11],
        ..UnsubAck::default()
    };
    exact(b"\xb0\x04\x00\x02\x00\x11", V5, Packet::UnsubAck(unsuback));
}

#[test]
fn ping_disconnect_auth() {
    for v in [V31, V311, V5] {
        exact(b"\xc0\x00", v, Packet::PingReq);
        exact(b"\xd0\x00", v, Packet::PingResp);
    }
    exact(b"\xe0\x00", V311, Packet::Disconnect(Disconnect::default()));
    exact(b"\xe0\x00", V5, Packet::Disconnect(Disconnect::default()));
    let taken_over = Disconnect {
        reason: 0x8E,
        ..Disconnect::default()
    };
    exact(b"\xe0\x01\x8e", V5, Packet::Disconnect(taken_over));
    let expiry = Disconnect {
        session_expiry_interval: Some(0),
        ..Disconnect::default()
    };
    exact(
        b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00",
        V5,
        Packet::Disconnect(expiry),
    );

    exact(b"\xf0\x00", V5, Packet::Auth(Auth::default()));
    let auth = Auth {
        reason: 0x18,
        authentication_method: Some("SCRAM".into()),
        authentication_data: Some(Bytes::from_static(&[1, 2])),
        ..Auth::default()
    };
    exact(
        b"\xf0\x0f\x18\x0d\x15\x00\x05SCRAM\x16\x00\x02\x01\x02",
        V5,
        Packet::Auth(auth),
    );
}
