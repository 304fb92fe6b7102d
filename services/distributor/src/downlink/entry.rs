//! Stream entries as the hub sees them: a target and a cluster message.

use throng_downlink::Delivery;
use throng_proto::v1::{Message, UserProperty};

use super::CLIENT_TOPIC_PREFIX;
use crate::hub::{Target, unix_ms};

/// The topic a client-targeted message is published on: [`CLIENT_TOPIC_PREFIX`]
/// and the client id, with `+`, `#` and NUL (not allowed in a topic name)
/// replaced by `_`.
pub fn client_topic(client_id: &str) -> String {
    let mut topic = String::with_capacity(CLIENT_TOPIC_PREFIX.len() + client_id.len());
    topic.push_str(CLIENT_TOPIC_PREFIX);
    topic.extend(client_id.chars().map(|c| {
        if matches!(c, '+' | '#' | '\0') {
            '_'
        } else {
            c
        }
    }));
    topic
}

/// The hub's view of a stream entry. The message id is the entry's `id` (the
/// entry id by default); it entered the cluster at the entry id's millisecond
/// part (when Redis took the XADD), or now if the id has another form.
///
/// Fails, with the reason to dead-letter it under, for what the hub must not
/// get: `retain` on a client target (as the ingest API), or a topic that is not
/// a valid MQTT topic name (e.g. too long).
pub fn to_message(d: &Delivery) -> Result<(Target, Message), String> {
    let m = &d.message;
    let (target, topic) = match &m.target {
        throng_downlink::Target::Client(client_id) => {
            if m.retain {
                return Err("retain is only allowed for a topic target".into());
            }
            (Target::Client(client_id.clone()), client_topic(client_id))
        }
        throng_downlink::Target::Topic(topic) => (Target::Topic, topic.clone()),
    };
    throng_topic::validate_topic_name(&topic).map_err(|err| format!("invalid topic: {err}"))?;
    let message = Message {
        topic,
        payload: m.payload.clone(),
        qos: m.qos as u32,
        retain: m.retain,
        expiry_seconds: m.expiry,
        user_properties: m
            .user_properties
            .iter()
            .map(|(key, value)| UserProperty {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        content_type: m.content_type.clone(),
        response_topic: m.response_topic.clone(),
        correlation_data: m.correlation.clone(),
        payload_format_indicator: None,
        message_id: m.id.clone(),
        origin_client_id: String::new(),
        published_at_unix_ms: entry_ms(&d.entry_id).unwrap_or_else(unix_ms),
    };
    Ok((target, message))
}

/// The millisecond part of a stream entry id `<ms>-<seq>`.
fn entry_ms(entry_id: &str) -> Option<i64> {
    let (ms, seq) = entry_id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use throng_downlink::{DownlinkMessage, Qos};

    fn delivery(entry_id: &str, target: throng_downlink::Target) -> Delivery {
        Delivery {
            entry_id: entry_id.into(),
            attempts: 1,
            message: DownlinkMessage {
                target,
                payload: "p".into(),
                qos: Qos::ExactlyOnce,
                retain: false,
                expiry: Some(60),
                user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
                content_type: Some("text/plain".into()),
                response_topic: Some("reply/x".into()),
                correlation: Some("c".into()),
                id: "msg-1".into(),
            },
        }
    }

    #[test]
    fn client_entry_maps_every_field() {
        let d = delivery(
            "1700000000123-4",
            throng_downlink::Target::Client("dev-1".into()),
        );
        let (target, m) = to_message(&d).unwrap();
        assert_eq!(target, Target::Client("dev-1".into()));
        assert_eq!(m.topic, "$throng/downlink/dev-1");
        assert_eq!(&m.payload[..], b"p");
        assert_eq!(m.qos, 2);
        assert!(!m.retain);
        assert_eq!(m.expiry_seconds, Some(60));
        let props: Vec<(&str, &str)> = m
            .user_properties
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(props, [("a", "1"), ("b", "2")]);
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.response_topic.as_deref(), Some("reply/x"));
        assert_eq!(m.correlation_data.as_deref(), Some(&b"c"[..]));
        assert_eq!(m.message_id, "msg-1");
        assert!(m.origin_client_id.is_empty());
        assert_eq!(m.published_at_unix_ms, 1_700_000_000_123);
    }

    #[test]
    fn topic_entry_keeps_its_topic_and_retain() {
        let mut d = delivery("5-0", throng_downlink::Target::Topic("down/a".into()));
        d.message.retain = true;
        let (target, m) = to_message(&d).unwrap();
        assert_eq!(target, Target::Topic);
        assert_eq!(m.topic, "down/a");
        assert!(m.retain);
        assert_eq!(m.published_at_unix_ms, 5);
    }

    #[test]
    fn odd_entry_id_falls_back_to_now() {
        let before = unix_ms();
        let d = delivery("not-an-id", throng_downlink::Target::Topic("t".into()));
        assert!(to_message(&d).unwrap().1.published_at_unix_ms >= before);
    }

    #[test]
    fn client_topic_is_always_a_topic_name() {
        assert_eq!(client_topic("a+b#c\0d/e"), "$throng/downlink/a_b_c_d/e");
        throng_topic::validate_topic_name(&client_topic("+#\0")).unwrap();
    }

    #[test]
    fn refused_entries_give_a_reason() {
        let mut d = delivery("1-0", throng_downlink::Target::Client("c".into()));
        d.message.retain = true;
        assert_eq!(
            to_message(&d).unwrap_err(),
            "retain is only allowed for a topic target"
        );
        let long = "t".repeat(throng_topic::MAX_TOPIC_LEN + 1);
        let d = delivery("1-0", throng_downlink::Target::Topic(long));
        assert!(to_message(&d).unwrap_err().starts_with("invalid topic"));
    }
}
