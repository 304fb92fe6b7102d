//! MQTT 5.0 properties: identifiers, parsing one property with its value
//! checks, and the helpers packet decoders use to place properties, reject
//! ones not allowed in a packet and reject duplicates.

use crate::error::DecodeError;
use crate::packet::{PublishProperties, QoS, UserProperties};
use crate::read::{Ctx, Reader};

type Result<T> = std::result::Result<T, DecodeError>;

pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(crate) const CONTENT_TYPE: u8 = 0x03;
pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
pub(crate) const CORRELATION_DATA: u8 = 0x09;
pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
pub(crate) const REASON_STRING: u8 = 0x1F;
pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(crate) const TOPIC_ALIAS: u8 = 0x23;
pub(crate) const MAXIMUM_QOS: u8 = 0x24;
pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
pub(crate) const USER_PROPERTY: u8 = 0x26;
pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Largest Subscription Identifier (the largest Variable Byte Integer).
pub(crate) const MAX_SUBSCRIPTION_IDENTIFIER: u32 = 268_435_455;

/// One parsed property, borrowing strings and binary data from the frame.
pub(crate) enum Prop<'a> {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(bool),
    WillDelayInterval(u32),
    RequestResponseInformation(bool),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQos(QoS),
    RetainAvailable(bool),
    UserProperty(&'a str, &'a str),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(bool),
    SubscriptionIdentifierAvailable(bool),
    SharedSubscriptionAvailable(bool),
}

/// Reads a Property Length and hands every property in the block to `f`.
pub(crate) fn read_props<'a>(
    r: &mut Reader<'a>,
    mut f: impl FnMut(Prop<'a>) -> Result<()>,
) -> Result<()> {
    let len = r.varint()? as usize;
    if len > r.len() {
        return Err(DecodeError::MalformedPacket(
            "property length exceeds packet",
        ));
    }
    let mut block = Reader::new(r.take(len)?);
    while !block.is_empty() {
        f(next_prop(&mut block)?)?;
    }
    Ok(())
}

fn next_prop<'a>(r: &mut Reader<'a>) -> Result<Prop<'a>> {
    let id = r.varint()?;
    let Ok(id) = u8::try_from(id) else {
        return Err(unknown());
    };
    Ok(match id {
        PAYLOAD_FORMAT_INDICATOR => {
            Prop::PayloadFormatIndicator(u8::from(flag(r, "payload format indicator not 0 or 1")?))
        }
        MESSAGE_EXPIRY_INTERVAL => Prop::MessageExpiryInterval(r.u32()?),
        CONTENT_TYPE => Prop::ContentType(r.str()?),
        RESPONSE_TOPIC => {
            let topic = r.str()?;
            if has_wildcard(topic) {
                return Err(DecodeError::ProtocolError(
                    "response topic contains a wildcard",
                ));
            }
            Prop::ResponseTopic(topic)
        }
        CORRELATION_DATA => Prop::CorrelationData(r.binary()?),
        SUBSCRIPTION_IDENTIFIER => match r.varint()? {
            0 => return Err(DecodeError::ProtocolError("subscription identifier 0")),
            v => Prop::SubscriptionIdentifier(v),
        },
        SESSION_EXPIRY_INTERVAL => Prop::SessionExpiryInterval(r.u32()?),
        ASSIGNED_CLIENT_IDENTIFIER => Prop::AssignedClientIdentifier(r.str()?),
        SERVER_KEEP_ALIVE => Prop::ServerKeepAlive(r.u16()?),
        AUTHENTICATION_METHOD => Prop::AuthenticationMethod(r.str()?),
        AUTHENTICATION_DATA => Prop::AuthenticationData(r.binary()?),
        REQUEST_PROBLEM_INFORMATION => {
            Prop::RequestProblemInformation(flag(r, "request problem information not 0 or 1")?)
        }
        WILL_DELAY_INTERVAL => Prop::WillDelayInterval(r.u32()?),
        REQUEST_RESPONSE_INFORMATION => {
            Prop::RequestResponseInformation(flag(r, "request response information not 0 or 1")?)
        }
        RESPONSE_INFORMATION => Prop::ResponseInformation(r.str()?),
        SERVER_REFERENCE => Prop::ServerReference(r.str()?),
        REASON_STRING => Prop::ReasonString(r.str()?),
        RECEIVE_MAXIMUM => match r.u16()? {
            0 => return Err(DecodeError::ProtocolError("receive maximum 0")),
            v => Prop::ReceiveMaximum(v),
        },
        TOPIC_ALIAS_MAXIMUM => Prop::TopicAliasMaximum(r.u16()?),
        TOPIC_ALIAS => match r.u16()? {
            0 => return Err(DecodeError::ProtocolError("topic alias 0")),
            v => Prop::TopicAlias(v),
        },
        MAXIMUM_QOS => Prop::MaximumQos(if flag(r, "maximum qos not 0 or 1")? {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        }),
        RETAIN_AVAILABLE => Prop::RetainAvailable(flag(r, "retain available not 0 or 1")?),
        USER_PROPERTY => Prop::UserProperty(r.str()?, r.str()?),
        MAXIMUM_PACKET_SIZE => match r.u32()? {
            0 => return Err(DecodeError::ProtocolError("maximum packet size 0")),
            v => Prop::MaximumPacketSize(v),
        },
        WILDCARD_SUBSCRIPTION_AVAILABLE => Prop::WildcardSubscriptionAvailable(flag(
            r,
            "wildcard subscription available not 0 or 1",
        )?),
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => Prop::SubscriptionIdentifierAvailable(flag(
            r,
            "subscription identifier available not 0 or 1",
        )?),
        SHARED_SUBSCRIPTION_AVAILABLE => {
            Prop::SharedSubscriptionAvailable(flag(r, "shared subscription available not 0 or 1")?)
        }
        _ => return Err(unknown()),
    })
}

fn unknown() -> DecodeError {
    DecodeError::MalformedPacket("unknown property identifier")
}

/// A Byte property whose only legal values are 0 and 1.
fn flag(r: &mut Reader<'_>, err: &'static str) -> Result<bool> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::ProtocolError(err)),
    }
}

/// The error for a known property in a packet that may not carry it.
pub(crate) fn not_allowed() -> DecodeError {
    DecodeError::MalformedPacket("property not allowed in this packet")
}

/// Stores a property that may appear at most once.
pub(crate) fn once<T>(slot: &mut Option<T>, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(DecodeError::ProtocolError("duplicate property"));
    }
    *slot = Some(value);
    Ok(())
}

pub(crate) fn push_user(users: &mut UserProperties, key: &str, value: &str) {
    users.push((key.to_owned(), value.to_owned()));
}

pub(crate) fn has_wildcard(topic: &str) -> bool {
    topic.bytes().any(|b| b == b'+' || b == b'#')
}

/// Places a property shared by PUBLISH and the will message (payload format,
/// expiry, content type, response topic, correlation data, user property).
/// Returns the property back when it is not one of those.
pub(crate) fn publish_common<'a>(
    props: &mut PublishProperties,
    prop: Prop<'a>,
    ctx: Ctx<'_>,
) -> Result<Option<Prop<'a>>> {
    match prop {
        Prop::PayloadFormatIndicator(v) => once(&mut props.payload_format_indicator, v)?,
        Prop::MessageExpiryInterval(v) => once(&mut props.message_expiry_interval, v)?,
        Prop::ContentType(v) => once(&mut props.content_type, v.to_owned())?,
        Prop::ResponseTopic(v) => once(&mut props.response_topic, v.to_owned())?,
        Prop::CorrelationData(v) => once(&mut props.correlation_data, ctx.bytes(v))?,
        Prop::UserProperty(k, v) => push_user(&mut props.user_properties, k, v),
        other => return Ok(Some(other)),
    }
    Ok(None)
}

/// Places Reason String and User Property, the only properties of the
/// acknowledgement packets; anything else is not allowed.
pub(crate) fn reason_props(
    prop: Prop<'_>,
    reason_string: &mut Option<String>,
    users: &mut UserProperties,
) -> Result<()> {
    match prop {
        Prop::ReasonString(v) => once(reason_string, v.to_owned()),
        Prop::UserProperty(k, v) => {
            push_user(users, k, v);
            Ok(())
        }
        _ => Err(not_allowed()),
    }
}
