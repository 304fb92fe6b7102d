//! Encoding MQTT 5.0 property blocks: a [`PropSet`] per packet's property
//! set, and [`put_props`] which writes the Property Length then the set.

use super::{Count, Result, Sink, put_binary, put_str};
use crate::error::EncodeError;
use crate::frame::MAX_REMAINING_LENGTH;
use crate::packet::{
    Auth, ConnAckProperties, ConnectProperties, Disconnect, PublishProperties, QoS, UserProperties,
    Will,
};
use crate::prop::*;

/// A set of properties that can write itself.
pub(super) trait PropSet {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()>;
}

/// Writes the Property Length followed by the properties.
pub(super) fn put_props<S: Sink, P: PropSet>(s: &mut S, props: &P) -> Result<()> {
    let mut count = Count(0);
    props.write(&mut count)?;
    if count.0 > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(count.0));
    }
    s.put_varint(count.0);
    props.write(s)
}

fn u8_prop<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.put_slice(&[id, v]);
    }
}

fn bool_prop<S: Sink>(s: &mut S, id: u8, v: Option<bool>) {
    u8_prop(s, id, v.map(u8::from));
}

fn u16_prop<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u16(v);
    }
}

fn u32_prop<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.put_u8(id);
        s.put_u32(v);
    }
}

fn str_prop<S: Sink>(s: &mut S, id: u8, v: Option<&str>) -> Result<()> {
    match v {
        Some(v) => bin_prop(s, id, Some(v.as_bytes())),
        None => Ok(()),
    }
}

fn bin_prop<S: Sink>(s: &mut S, id: u8, v: Option<&[u8]>) -> Result<()> {
    if let Some(v) = v {
        s.put_u8(id);
        put_binary(s, v)?;
    }
    Ok(())
}

fn subscription_id<S: Sink>(s: &mut S, id: u32) -> Result<()> {
    if id == 0 || id > MAX_SUBSCRIPTION_IDENTIFIER {
        return Err(EncodeError::Invalid("subscription identifier out of range"));
    }
    s.put_u8(SUBSCRIPTION_IDENTIFIER);
    s.put_varint(id as usize);
    Ok(())
}

fn users<S: Sink>(s: &mut S, users: &UserProperties) -> Result<()> {
    for (k, v) in users {
        s.put_u8(USER_PROPERTY);
        put_str(s, k)?;
        put_str(s, v)?;
    }
    Ok(())
}

/// A zero Receive Maximum or Maximum Packet Size is a Protocol Error.
fn nonzero<T: Default + PartialEq + Copy>(v: Option<T>, what: &'static str) -> Result<Option<T>> {
    match v {
        Some(x) if x == T::default() => Err(EncodeError::Invalid(what)),
        v => Ok(v),
    }
}

impl PropSet for ConnectProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        u32_prop(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        let receive_maximum = nonzero(self.receive_maximum, "receive maximum 0")?;
        u16_prop(s, RECEIVE_MAXIMUM, receive_maximum);
        let max_packet = nonzero(self.maximum_packet_size, "maximum packet size 0")?;
        u32_prop(s, MAXIMUM_PACKET_SIZE, max_packet);
        u16_prop(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        bool_prop(
            s,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        bool_prop(
            s,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        str_prop(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        bin_prop(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())?;
        users(s, &self.user_properties)
    }
}

impl PropSet for ConnAckProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        u32_prop(s, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        let receive_maximum = nonzero(self.receive_maximum, "receive maximum 0")?;
        u16_prop(s, RECEIVE_MAXIMUM, receive_maximum);
        // Absent means QoS 2: the property can only say 0 or 1.
        let max_qos = self.maximum_qos.filter(|q| *q != QoS::ExactlyOnce);
        u8_prop(s, MAXIMUM_QOS, max_qos.map(|q| q as u8));
        bool_prop(s, RETAIN_AVAILABLE, self.retain_available);
        let max_packet = nonzero(self.maximum_packet_size, "maximum packet size 0")?;
        u32_prop(s, MAXIMUM_PACKET_SIZE, max_packet);
        let assigned = self.assigned_client_identifier.as_deref();
        str_prop(s, ASSIGNED_CLIENT_IDENTIFIER, assigned)?;
        u16_prop(s, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        str_prop(s, REASON_STRING, self.reason_string.as_deref())?;
        let wildcard = self.wildcard_subscription_available;
        bool_prop(s, WILDCARD_SUBSCRIPTION_AVAILABLE, wildcard);
        let sub_ids = self.subscription_identifiers_available;
        bool_prop(s, SUBSCRIPTION_IDENTIFIER_AVAILABLE, sub_ids);
        let shared = self.shared_subscription_available;
        bool_prop(s, SHARED_SUBSCRIPTION_AVAILABLE, shared);
        u16_prop(s, SERVER_KEEP_ALIVE, self.server_keep_alive);
        str_prop(
            s,
            RESPONSE_INFORMATION,
            self.response_information.as_deref(),
        )?;
        str_prop(s, SERVER_REFERENCE, self.server_reference.as_deref())?;
        str_prop(
            s,
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref(),
        )?;
        bin_prop(s, AUTHENTICATION_DATA, self.authentication_data.as_deref())?;
        users(s, &self.user_properties)
    }
}

/// The properties PUBLISH shares with the will message.
fn publish_common<S: Sink>(s: &mut S, p: &PublishProperties) -> Result<()> {
    if p.payload_format_indicator.is_some_and(|v| v > 1) {
        return Err(EncodeError::Invalid("payload format indicator not 0 or 1"));
    }
    u8_prop(s, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    u32_prop(s, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    str_prop(s, CONTENT_TYPE, p.content_type.as_deref())?;
    str_prop(s, RESPONSE_TOPIC, p.response_topic.as_deref())?;
    bin_prop(s, CORRELATION_DATA, p.correlation_data.as_deref())?;
    users(s, &p.user_properties)
}

impl PropSet for PublishProperties {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        if self.topic_alias == Some(0) {
            return Err(EncodeError::Invalid("topic alias 0"));
        }
        u16_prop(s, TOPIC_ALIAS, self.topic_alias);
        for &id in &self.subscription_identifiers {
            subscription_id(s, id)?;
        }
        publish_common(s, self)
    }
}

/// Will properties: the delay plus the PUBLISH properties other than topic
/// alias and subscription identifiers (which are never written for a will).
pub(super) struct WillProps<'a>(pub(super) &'a Will);

impl PropSet for WillProps<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        u32_prop(s, WILL_DELAY_INTERVAL, self.0.delay_interval);
        publish_common(s, &self.0.properties)
    }
}

/// Reason String and User Property: the properties of the acknowledgements.
pub(super) struct ReasonProps<'a> {
    pub(super) reason_string: Option<&'a str>,
    pub(super) user_properties: &'a UserProperties,
}

impl ReasonProps<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

impl PropSet for ReasonProps<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        str_prop(s, REASON_STRING, self.reason_string)?;
        users(s, self.user_properties)
    }
}

/// SUBSCRIBE properties.
pub(super) struct SubscribeProps<'a> {
    pub(super) subscription_identifier: Option<u32>,
    pub(super) user_properties: &'a UserProperties,
}

impl PropSet for SubscribeProps<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        if let Some(id) = self.subscription_identifier {
            subscription_id(s, id)?;
        }
        users(s, self.user_properties)
    }
}

pub(super) struct DisconnectProps<'a>(pub(super) &'a Disconnect);

impl DisconnectProps<'_> {
    pub(super) fn is_empty(&self) -> bool {
        let d = self.0;
        d.session_expiry_interval.is_none()
            && d.reason_string.is_none()
            && d.server_reference.is_none()
            && d.user_properties.is_empty()
    }
}

impl PropSet for DisconnectProps<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        let d = self.0;
        u32_prop(s, SESSION_EXPIRY_INTERVAL, d.session_expiry_interval);
        str_prop(s, REASON_STRING, d.reason_string.as_deref())?;
        str_prop(s, SERVER_REFERENCE, d.server_reference.as_deref())?;
        users(s, &d.user_properties)
    }
}

pub(super) struct AuthProps<'a>(pub(super) &'a Auth);

impl AuthProps<'_> {
    pub(super) fn is_empty(&self) -> bool {
        let a = self.0;
        a.authentication_method.is_none()
            && a.authentication_data.is_none()
            && a.reason_string.is_none()
            && a.user_properties.is_empty()
    }
}

impl PropSet for AuthProps<'_> {
    fn write<S: Sink>(&self, s: &mut S) -> Result<()> {
        let a = self.0;
        str_prop(s, AUTHENTICATION_METHOD, a.authentication_method.as_deref())?;
        bin_prop(s, AUTHENTICATION_DATA, a.authentication_data.as_deref())?;
        str_prop(s, REASON_STRING, a.reason_string.as_deref())?;
        users(s, &a.user_properties)
    }
}
