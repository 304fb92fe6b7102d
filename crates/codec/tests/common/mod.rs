//! Proptest strategies producing packets that are legal for a given protocol
//! version (fields a version lacks stay at their defaults).

#![allow(dead_code)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use throng_codec::*;

pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

pub const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
pub const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
pub const PUBREL: &[u8] = &[0x00, 0x92];
pub const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
pub const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
pub const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn string() -> impl Strategy<Value = String> {
    "\\PC{0,8}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_ $é€-]{1,12}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    "[a-z0-9/+#]{1,12}"
}

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((string(), string()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn code(set: &'static [u8]) -> impl Strategy<Value = u8> {
    select(set)
}

prop_compose! {
    fn publish_props()(
        payload_format_indicator in option::of(0u8..=1),
        message_expiry_interval in option::of(any::<u32>()),
        topic_alias in option::of(1u16..),
        response_topic in option::of(topic_name()),
        correlation_data in option::of(bytes()),
        user_properties in users(),
        subscription_identifiers in vec(1u32..=268_435_455, 0..3),
        content_type in option::of(string()),
    ) -> PublishProperties {
        PublishProperties {
            payload_format_indicator,
            message_expiry_interval,
            topic_alias,
            response_topic,
            correlation_data,
            user_properties,
            subscription_identifiers,
            content_type,
        }
    }
}

prop_compose! {
    fn connect_props()(
        session_expiry_interval in option::of(any::<u32>()),
        receive_maximum in option::of(1u16..),
        maximum_packet_size in option::of(1u32..),
        topic_alias_maximum in option::of(any::<u16>()),
        request_response_information in option::of(any::<bool>()),
        request_problem_information in option::of(any::<bool>()),
        user_properties in users(),
        authentication_method in option::of(string()),
        data in option::of(bytes()),
    ) -> ConnectProperties {
        ConnectProperties {
            session_expiry_interval,
            receive_maximum,
            maximum_packet_size,
            topic_alias_maximum,
            request_response_information,
            request_problem_information,
            user_properties,
            authentication_data: authentication_method.as_ref().and(data),
            authentication_method,
        }
    }
}

prop_compose! {
    fn will(v5: bool)(
        topic in topic_name(),
        payload in bytes(),
        qos in qos(),
        retain in any::<bool>(),
        delay_interval in option::of(any::<u32>()),
        mut properties in publish_props(),
    ) -> Will {
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        if v5 {
            Will { topic, payload, qos, retain, delay_interval, properties }
        } else {
            Will { topic, payload, qos, retain, ..Will::default() }
        }
    }
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = version.is_v5();
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will(v5)),
        option::of(string()),
        option::of(bytes()),
        connect_props(),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, props)| {
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: Some(version),
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v5 {
                        props
                    } else {
                        ConnectProperties::default()
                    },
                }))
            },
        )
}

fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(1u16..),
            option::of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
            option::of(any::<bool>()),
            option::of(1u32..),
            option::of(string()),
            option::of(any::<u16>()),
            option::of(string()),
        ),
        (
            users(),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<u16>()),
            option::of(string()),
            option::of(string()),
            option::of(string()),
            option::of(bytes()),
        ),
    )
        .prop_map(|((a, b, c, d, e, f, g, h), (i, j, k, l, m, n, o, p, q))| {
            ConnAckProperties {
                session_expiry_interval: a,
                receive_maximum: b,
                maximum_qos: c,
                retain_available: d,
                maximum_packet_size: e,
                assigned_client_identifier: f,
                topic_alias_maximum: g,
                reason_string: h,
                user_properties: i,
                wildcard_subscription_available: j,
                subscription_identifiers_available: k,
                shared_subscription_available: l,
                server_keep_alive: m,
                response_information: n,
                server_reference: o,
                authentication_method: p,
                authentication_data: q,
            }
        })
}

fn connack(v5: bool) -> impl Strategy<Value = Packet> {
    let codes: &'static [u8] = if v5 { CONNACK_V5 } else { &[0, 1, 2, 3, 4, 5] };
    (any::<bool>(), code(codes), connack_props()).prop_map(move |(sp, code, props)| {
        Packet::ConnAck(ConnAck {
            session_present: sp && code == 0,
            code,
            properties: if v5 {
                props
            } else {
                ConnAckProperties::default()
            },
        })
    })
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        1u16..,
        bytes(),
        publish_props(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, empty_topic, id, payload, props)| {
                let properties = if v5 {
                    props
                } else {
                    PublishProperties::default()
                };
                let empty = v5 && empty_topic && properties.topic_alias.is_some();
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic: if empty { String::new() } else { topic },
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    payload,
                    properties,
                })
            },
        )
}

fn pub_resp(v5: bool, codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    (1u16.., code(codes), option::of(string()), users()).prop_map(move |(id, reason, rs, up)| {
        if v5 {
            PubResp {
                packet_id: id,
                reason,
                reason_string: rs,
                user_properties: up,
            }
        } else {
            PubResp {
                packet_id: id,
                ..PubResp::default()
            }
        }
    })
}

fn options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(move |(qos, nl, rap, rh)| {
        if v5 {
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            }
        }
    })
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    (
        1u16..,
        option::of(1u32..=268_435_455),
        users(),
        vec((topic_filter(), options(v5)), 1..4),
    )
        .prop_map(move |(packet_id, sid, up, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                subscription_identifier: sid.filter(|_| v5),
                user_properties: if v5 { up } else { Vec::new() },
                filters,
            })
        })
}

fn suback(v5: bool) -> impl Strategy<Value = Packet> {
    let codes: &'static [u8] = if v5 { SUBACK_V5 } else { &[0, 1, 2, 0x80] };
    (
        1u16..,
        option::of(string()),
        users(),
        vec(code(codes), 1..4),
    )
        .prop_map(move |(packet_id, rs, up, codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_string: rs.filter(|_| v5),
                user_properties: if v5 { up } else { Vec::new() },
                codes,
            })
        })
}

fn unsubscribe(v5: bool) -> impl Strategy<Value = Packet> {
    (1u16.., users(), vec(topic_filter(), 1..4)).prop_map(move |(packet_id, up, filters)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id,
            user_properties: if v5 { up } else { Vec::new() },
            filters,
        })
    })
}

fn unsuback(v5: bool) -> impl Strategy<Value = Packet> {
    (
        1u16..,
        option::of(string()),
        users(),
        vec(code(UNSUBACK), 1..4),
    )
        .prop_map(move |(packet_id, rs, up, codes)| {
            if v5 {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reason_string: rs,
                    user_properties: up,
                    codes,
                })
            } else {
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    ..UnsubAck::default()
                })
            }
        })
}

fn disconnect(v5: bool) -> impl Strategy<Value = Packet> {
    (
        code(DISCONNECT),
        option::of(any::<u32>()),
        option::of(string()),
        users(),
        option::of(string()),
    )
        .prop_map(move |(reason, se, rs, up, sr)| {
            Packet::Disconnect(if v5 {
                Disconnect {
                    reason,
                    session_expiry_interval: se,
                    reason_string: rs,
                    user_properties: up,
                    server_reference: sr,
                }
            } else {
                Disconnect::default()
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        code(&[0x00, 0x18, 0x19]),
        option::of(string()),
        option::of(bytes()),
        option::of(string()),
        users(),
    )
        .prop_map(|(reason, am, ad, rs, up)| {
            Packet::Auth(Auth {
                reason,
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: up,
            })
        })
}

/// Any packet legal for `version`.
pub fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let mut arms = vec![
        connect(version).boxed(),
        connack(v5).boxed(),
        publish(v5).boxed(),
        pub_resp(v5, PUBACK).prop_map(Packet::PubAck).boxed(),
        pub_resp(v5, PUBACK).prop_map(Packet::PubRec).boxed(),
        pub_resp(v5, PUBREL).prop_map(Packet::PubRel).boxed(),
        pub_resp(v5, PUBREL).prop_map(Packet::PubComp).boxed(),
        subscribe(v5).boxed(),
        suback(v5).boxed(),
        unsubscribe(v5).boxed(),
        unsuback(v5).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v5).boxed(),
    ];
    if v5 {
        arms.push(auth().boxed());
    }
    Union::new(arms).boxed()
}

/// A version and a packet legal for it.
pub fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    select(VERSIONS.to_vec()).prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}
