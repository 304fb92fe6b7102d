//! Decoding CONNECT (with protocol version detection) and CONNACK.

use super::{Result, check_code, violation};
use crate::codes;
use crate::error::DecodeError;
use crate::packet::{ConnAck, Connect, ProtocolVersion, QoS, Will};
use crate::prop::{Prop, has_wildcard, not_allowed, once, publish_common, push_user, read_props};
use crate::read::{Ctx, Reader};

/// CONNECT. The protocol version comes from the packet itself: "MQIsdp"/3,
/// "MQTT"/4 or "MQTT"/5. A known name with another level is
/// `UnsupportedProtocolVersion`, so the server can answer with a CONNACK.
pub(super) fn connect(r: &mut Reader<'_>, ctx: Ctx<'_>) -> Result<Connect> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (name, level) {
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp" | b"MQTT", level) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => return Err(DecodeError::MalformedPacket("invalid protocol name")),
    };
    let v5 = protocol.is_v5();

    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::MalformedPacket("connect reserved flag set"));
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::MalformedPacket(
            "will qos or retain set without will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::MalformedPacket("will qos 3"))?;
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::MalformedPacket(
            "password flag set without user name flag",
        ));
    }

    let mut c = Connect {
        protocol: Some(protocol),
        clean_start: flags & 0x02 != 0,
        keep_alive: r.u16()?,
        ..Connect::default()
    };
    if v5 {
        let p = &mut c.properties;
        read_props(r, |prop| match prop {
            Prop::SessionExpiryInterval(v) => once(&mut p.session_expiry_interval, v),
            Prop::ReceiveMaximum(v) => once(&mut p.receive_maximum, v),
            Prop::MaximumPacketSize(v) => once(&mut p.maximum_packet_size, v),
            Prop::TopicAliasMaximum(v) => once(&mut p.topic_alias_maximum, v),
            Prop::RequestResponseInformation(v) => once(&mut p.request_response_information, v),
            Prop::RequestProblemInformation(v) => once(&mut p.request_problem_information, v),
            Prop::AuthenticationMethod(v) => once(&mut p.authentication_method, v.to_owned()),
            Prop::AuthenticationData(v) => once(&mut p.authentication_data, ctx.bytes(v)),
            Prop::UserProperty(k, v) => {
                push_user(&mut p.user_properties, k, v);
                Ok(())
            }
            _ => Err(not_allowed()),
        })?;
        if p.authentication_data.is_some() && p.authentication_method.is_none() {
            return Err(DecodeError::ProtocolError(
                "authentication data without authentication method",
            ));
        }
    }

    c.client_id = r.str()?.to_owned();
    if will_flag {
        let mut will = Will {
            qos: will_qos,
            retain: will_retain,
            ..Will::default()
        };
        if v5 {
            let props = &mut will.properties;
            let delay = &mut will.delay_interval;
            read_props(r, |prop| match publish_common(props, prop, ctx)? {
                None => Ok(()),
                Some(Prop::WillDelayInterval(v)) => once(delay, v),
                Some(_) => Err(not_allowed()),
            })?;
        }
        let topic = r.str()?;
        if topic.is_empty() || has_wildcard(topic) {
            return Err(DecodeError::TopicNameInvalid);
        }
        will.topic = topic.to_owned();
        will.payload = ctx.bytes(r.binary()?);
        c.will = Some(will);
    }
    if username_flag {
        c.username = Some(r.str()?.to_owned());
    }
    if password_flag {
        c.password = Some(ctx.bytes(r.binary()?));
    }
    r.finish("trailing bytes after connect payload")?;
    Ok(c)
}

/// CONNACK: acknowledge flags, return/reason code and (5.0) properties.
pub(super) fn connack(
    r: &mut Reader<'_>,
    version: ProtocolVersion,
    ctx: Ctx<'_>,
) -> Result<ConnAck> {
    let v5 = version.is_v5();
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::MalformedPacket("connack reserved flags set"));
    }
    let mut ack = ConnAck {
        session_present: flags & 0x01 != 0,
        code: r.u8()?,
        ..ConnAck::default()
    };
    check_code(
        if v5 {
            codes::CONNACK_V5
        } else {
            codes::CONNACK_V3
        },
        ack.code,
    )?;
    if ack.session_present && ack.code != 0 {
        return Err(violation(version, "session present with a failure code"));
    }
    if v5 {
        let p = &mut ack.properties;
        read_props(r, |prop| match prop {
            Prop::SessionExpiryInterval(v) => once(&mut p.session_expiry_interval, v),
            Prop::ReceiveMaximum(v) => once(&mut p.receive_maximum, v),
            Prop::MaximumQos(v) => once(&mut p.maximum_qos, v),
            Prop::RetainAvailable(v) => once(&mut p.retain_available, v),
            Prop::MaximumPacketSize(v) => once(&mut p.maximum_packet_size, v),
            Prop::AssignedClientIdentifier(v) => {
                once(&mut p.assigned_client_identifier, v.to_owned())
            }
            Prop::TopicAliasMaximum(v) => once(&mut p.topic_alias_maximum, v),
            Prop::ReasonString(v) => once(&mut p.reason_string, v.to_owned()),
            Prop::UserProperty(k, v) => {
                push_user(&mut p.user_properties, k, v);
                Ok(())
            }
            Prop::WildcardSubscriptionAvailable(v) => {
                once(&mut p.wildcard_subscription_available, v)
            }
            Prop::SubscriptionIdentifierAvailable(v) => {
                once(&mut p.subscription_identifiers_available, v)
            }
            Prop::SharedSubscriptionAvailable(v) => once(&mut p.shared_subscription_available, v),
            Prop::ServerKeepAlive(v) => once(&mut p.server_keep_alive, v),
            Prop::ResponseInformation(v) => once(&mut p.response_information, v.to_owned()),
            Prop::ServerReference(v) => once(&mut p.server_reference, v.to_owned()),
            Prop::AuthenticationMethod(v) => once(&mut p.authentication_method, v.to_owned()),
            Prop::AuthenticationData(v) => once(&mut p.authentication_data, ctx.bytes(v)),
            _ => Err(not_allowed()),
        })?;
    }
    r.finish("trailing bytes after connack")?;
    Ok(ack)
}
