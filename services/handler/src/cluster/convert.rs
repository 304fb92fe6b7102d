//! Messages between the handler's form (`crate::message::Message`) and the wire
//! form every throng service shares (`throng_proto::v1::Message`). Expiry travels
//! as seconds left counted from `published_at_unix_ms`.

use std::sync::Arc;
use std::time::Duration;

use throng_codec::{PublishProperties, QoS};
use throng_proto::v1;
use tokio::time::Instant;

use crate::message::Message;

/// The wire form of a message, with the cluster-wide `message_id`.
pub fn to_wire(message: &Message, message_id: String) -> v1::Message {
    let properties = &message.properties;
    v1::Message {
        topic: message.topic.to_string(),
        payload: message.payload.clone(),
        qos: message.qos as u32,
        retain: message.retain,
        expiry_seconds: expiry_from_publication(message),
        user_properties: properties
            .user_properties
            .iter()
            .map(|(key, value)| v1::UserProperty {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        content_type: properties.content_type.clone(),
        response_topic: properties.response_topic.clone(),
        correlation_data: properties.correlation_data.clone(),
        payload_format_indicator: properties.payload_format_indicator.map(u32::from),
        message_id,
        origin_client_id: message
            .origin
            .as_deref()
            .map(str::to_owned)
            .unwrap_or_default(),
        published_at_unix_ms: message.published_at_ms as i64,
    }
}

/// Seconds from the message's publication to its expiry, rounded up: what the
/// wire's `expiry_seconds` counts. (The seconds left now would shorten the
/// expiry of a message sent on later, such as a retained message replayed on
/// attach, by its age.)
fn expiry_from_publication(message: &Message) -> Option<u32> {
    let left = message
        .expires_at?
        .saturating_duration_since(Instant::now());
    let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    let deadline_ms = throng_downlink::unix_ms().saturating_add(left_ms);
    let secs = deadline_ms
        .saturating_sub(message.published_at_ms)
        .div_ceil(1000);
    Some(u32::try_from(secs).unwrap_or(u32::MAX))
}

/// The handler form of a wire message; an error names what is wrong with it.
pub fn from_wire(wire: v1::Message) -> Result<Message, String> {
    throng_topic::validate_topic_name(&wire.topic)
        .map_err(|err| format!("topic {:?}: {err}", wire.topic))?;
    let qos = match wire.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => return Err(format!("qos {other} is not 0, 1 or 2")),
    };
    let payload_format_indicator = match wire.payload_format_indicator {
        None => None,
        Some(pfi @ 0..=1) => Some(pfi as u8),
        Some(other) => return Err(format!("payload format indicator {other} is not 0 or 1")),
    };
    // Expiry counts from when the message entered the cluster, not from now.
    let now_ms = throng_downlink::unix_ms();
    let published_at_ms = u64::try_from(wire.published_at_unix_ms).unwrap_or(now_ms);
    let expires_at = wire.expiry_seconds.map(|secs| {
        let deadline_ms = published_at_ms.saturating_add(u64::from(secs) * 1000);
        Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    });
    let properties = PublishProperties {
        payload_format_indicator,
        message_expiry_interval: wire.expiry_seconds,
        response_topic: wire.response_topic,
        correlation_data: wire.correlation_data,
        user_properties: wire
            .user_properties
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect(),
        content_type: wire.content_type,
        ..PublishProperties::default()
    };
    Ok(Message {
        topic: Arc::from(wire.topic),
        payload: wire.payload,
        qos,
        retain: wire.retain,
        properties,
        expires_at,
        origin: (!wire.origin_client_id.is_empty()).then(|| Arc::from(wire.origin_client_id)),
        published_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn round_trip_keeps_every_field() {
        let message = Message {
            topic: Arc::from("a/b"),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                response_topic: Some("reply/1".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
                content_type: Some("text/plain".into()),
                ..PublishProperties::default()
            },
            expires_at: Some(Instant::now() + Duration::from_secs(60)),
            origin: Some(Arc::from("device-1")),
            published_at_ms: throng_downlink::unix_ms(),
        };
        let wire = to_wire(&message, "m-1".into());
        assert_eq!(wire.message_id, "m-1");
        assert_eq!(wire.origin_client_id, "device-1");
        let back = from_wire(wire).unwrap();
        assert_eq!(&*back.topic, "a/b");
        assert_eq!(back.payload, message.payload);
        assert_eq!(back.qos, QoS::ExactlyOnce);
        assert!(back.retain);
        assert_eq!(
            back.properties.user_properties,
            message.properties.user_properties
        );
        assert_eq!(back.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(back.properties.response_topic.as_deref(), Some("reply/1"));
        assert_eq!(back.properties.payload_format_indicator, Some(1));
        assert_eq!(back.origin.as_deref(), Some("device-1"));
        let left = back.remaining_expiry(Instant::now()).unwrap();
        assert!((59..=60).contains(&left), "{left}");
    }

    #[test]
    fn expiry_is_counted_from_publication_whenever_sent() {
        // Published 5 s ago with a 60 s expiry: still 60 s from publication.
        let message = Message {
            topic: Arc::from("t"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: Some(Instant::now() + Duration::from_secs(55)),
            origin: None,
            published_at_ms: throng_downlink::unix_ms() - 5_000,
        };
        let wire = to_wire(&message, String::new());
        assert!(matches!(wire.expiry_seconds, Some(60 | 61)), "{wire:?}");
        let left = from_wire(wire).unwrap().remaining_expiry(Instant::now());
        assert!(matches!(left, Some(55 | 56)), "{left:?}");
    }

    #[test]
    fn rejects_bad_wire_messages() {
        let ok = || v1::Message {
            topic: "t".into(),
            ..v1::Message::default()
        };
        assert!(from_wire(ok()).is_ok());
        assert!(from_wire(v1::Message { qos: 3, ..ok() }).is_err());
        assert!(
            from_wire(v1::Message {
                topic: "a/+".into(),
                ..ok()
            })
            .is_err()
        );
        assert!(
            from_wire(v1::Message {
                topic: String::new(),
                ..ok()
            })
            .is_err()
        );
        assert!(
            from_wire(v1::Message {
                payload_format_indicator: Some(2),
                ..ok()
            })
            .is_err()
        );
    }

    #[test]
    fn expiry_counts_from_publication() {
        let wire = v1::Message {
            topic: "t".into(),
            expiry_seconds: Some(10),
            published_at_unix_ms: (throng_downlink::unix_ms() - 4_000) as i64,
            ..v1::Message::default()
        };
        let message = from_wire(wire).unwrap();
        let left = message.remaining_expiry(Instant::now()).unwrap();
        assert!((5..=6).contains(&left), "{left}");
    }
}
