//! The downlink stream entry format (the contract for backends) and its parser.
//!
//! See the crate documentation for the field table.

use bytes::Bytes;
use std::collections::BTreeMap;

/// Default limit on the `payload` field (256 KiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

/// Where a downlink message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One device, by MQTT client id (routed to the ring owner).
    Client(String),
    /// Every subscription matching this topic name.
    Topic(String),
}

/// MQTT quality of service of a downlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Qos {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

/// A parsed, validated downlink entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownlinkMessage {
    pub target: Target,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    /// Message expiry interval in seconds.
    pub expiry: Option<u32>,
    /// MQTT 5 user properties, ordered by name.
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
    /// Idempotency / message id: the `id` field, or the stream entry id.
    pub id: String,
}

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLimits {
    pub max_payload: usize,
}

impl Default for EntryLimits {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// Why an entry is malformed. The `Display` text is the `reason` written to
/// the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("missing target: one of `client` or `topic` is required")]
    MissingTarget,
    #[error("both `client` and `topic` are set; exactly one is allowed")]
    BothTargets,
    #[error("empty `{0}`")]
    EmptyTarget(&'static str),
    #[error("invalid topic {0:?}: wildcards and NUL are not allowed in a topic name")]
    BadTopic(String),
    #[error("missing `payload`")]
    MissingPayload,
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("bad qos {0:?}: expected 0, 1 or 2")]
    BadQos(String),
    #[error("bad retain {0:?}: expected 0 or 1")]
    BadRetain(String),
    #[error("bad expiry {0:?}: expected whole seconds 0..=4294967295")]
    BadExpiry(String),
    #[error("bad props: {0}")]
    BadProps(String),
    #[error("field `{0}` is not valid UTF-8")]
    NotUtf8(&'static str),
}

/// Parses one stream entry. `fields` are the entry's field/value pairs (for a
/// repeated field name the last one wins); unknown fields are ignored so that
/// backends can add their own metadata.
pub fn parse_entry<'a, I>(
    entry_id: &str,
    fields: I,
    limits: &EntryLimits,
) -> Result<DownlinkMessage, EntryError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut client = None;
    let mut topic = None;
    let mut payload = None;
    let mut qos = None;
    let mut retain = None;
    let mut expiry = None;
    let mut props = None;
    let mut content_type = None;
    let mut response_topic = None;
    let mut correlation = None;
    let mut id = None;
    for (name, value) in fields {
        let slot = match name {
            "client" => &mut client,
            "topic" => &mut topic,
            "payload" => &mut payload,
            "qos" => &mut qos,
            "retain" => &mut retain,
            "expiry" => &mut expiry,
            "props" => &mut props,
            "content_type" => &mut content_type,
            "response_topic" => &mut response_topic,
            "correlation" => &mut correlation,
            "id" => &mut id,
            _ => continue,
        };
        *slot = Some(value);
    }

    let target = match (client, topic) {
        (None, None) => return Err(EntryError::MissingTarget),
        (Some(_), Some(_)) => return Err(EntryError::BothTargets),
        (Some(c), None) => {
            let c = utf8("client", c)?;
            if c.is_empty() {
                return Err(EntryError::EmptyTarget("client"));
            }
            Target::Client(c.to_owned())
        }
        (None, Some(t)) => {
            let t = utf8("topic", t)?;
            if t.is_empty() {
                return Err(EntryError::EmptyTarget("topic"));
            }
            if t.contains(['+', '#', '\0']) {
                return Err(EntryError::BadTopic(t.to_owned()));
            }
            Target::Topic(t.to_owned())
        }
    };
    let payload = payload.ok_or(EntryError::MissingPayload)?;
    if payload.len() > limits.max_payload {
        return Err(EntryError::PayloadTooLarge {
            size: payload.len(),
            max: limits.max_payload,
        });
    }
    let qos = match qos {
        None => Qos::AtLeastOnce,
        Some(b"0") => Qos::AtMostOnce,
        Some(b"1") => Qos::AtLeastOnce,
        Some(b"2") => Qos::ExactlyOnce,
        Some(other) => return Err(EntryError::BadQos(lossy(other))),
    };
    let retain = match retain {
        None | Some(b"0") => false,
        Some(b"1") => true,
        Some(other) => return Err(EntryError::BadRetain(lossy(other))),
    };
    let expiry = match expiry {
        None => None,
        Some(e) => Some(
            std::str::from_utf8(e)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| EntryError::BadExpiry(lossy(e)))?,
        ),
    };
    let user_properties = match props {
        None => Vec::new(),
        Some(p) => serde_json::from_slice::<BTreeMap<String, String>>(p)
            .map_err(|e| EntryError::BadProps(e.to_string()))?
            .into_iter()
            .collect(),
    };
    let opt_string = |name: &'static str, v: Option<&[u8]>| -> Result<Option<String>, EntryError> {
        v.map(|v| utf8(name, v).map(str::to_owned)).transpose()
    };
    Ok(DownlinkMessage {
        target,
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain,
        expiry,
        user_properties,
        content_type: opt_string("content_type", content_type)?,
        response_topic: opt_string("response_topic", response_topic)?,
        correlation: correlation.map(Bytes::copy_from_slice),
        id: opt_string("id", id)?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| entry_id.to_owned()),
    })
}

fn utf8<'a>(name: &'static str, v: &'a [u8]) -> Result<&'a str, EntryError> {
    std::str::from_utf8(v).map_err(|_| EntryError::NotUtf8(name))
}

fn lossy(v: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(v).into_owned();
    if s.len() > 64 {
        let mut cut = 64;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: &[(&str, &[u8])]) -> Result<DownlinkMessage, EntryError> {
        parse_entry(
            "1-0",
            fields.iter().copied(),
            &EntryLimits { max_payload: 8 },
        )
    }

    #[test]
    fn minimal_client_entry_gets_defaults() {
        let m = parse(&[("client", b"dev-1"), ("payload", b"hi")]).unwrap();
        assert_eq!(m.target, Target::Client("dev-1".into()));
        assert_eq!(&m.payload[..], b"hi");
        assert_eq!(m.qos, Qos::AtLeastOnce);
        assert!(!m.retain);
        assert_eq!(m.expiry, None);
        assert!(m.user_properties.is_empty());
        assert_eq!(m.id, "1-0");
    }

    #[test]
    fn full_topic_entry() {
        let m = parse(&[
            ("topic", b"down/a"),
            ("payload", b"\x00\xff"),
            ("qos", b"2"),
            ("retain", b"1"),
            ("expiry", b"60"),
            ("props", br#"{"b":"2","a":"1"}"#),
            ("content_type", b"application/json"),
            ("response_topic", b"reply/x"),
            ("correlation", b"\x01\x02"),
            ("id", b"msg-7"),
            ("x-backend", b"ignored"),
        ])
        .unwrap();
        assert_eq!(m.target, Target::Topic("down/a".into()));
        assert_eq!(&m.payload[..], b"\x00\xff");
        assert_eq!(m.qos, Qos::ExactlyOnce);
        assert!(m.retain);
        assert_eq!(m.expiry, Some(60));
        assert_eq!(
            m.user_properties,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.response_topic.as_deref(), Some("reply/x"));
        assert_eq!(m.correlation.as_deref(), Some(&b"\x01\x02"[..]));
        assert_eq!(m.id, "msg-7");
    }

    #[test]
    fn precise_errors() {
        use EntryError::*;
        type Fields<'a> = &'a [(&'a str, &'a [u8])];
        let cases: Vec<(Fields<'_>, EntryError)> = vec![
            (&[("payload", b"x")], MissingTarget),
            (
                &[("client", b"c"), ("topic", b"t"), ("payload", b"x")],
                BothTargets,
            ),
            (&[("client", b""), ("payload", b"x")], EmptyTarget("client")),
            (
                &[("topic", b"a/+"), ("payload", b"x")],
                BadTopic("a/+".into()),
            ),
            (&[("client", b"c")], MissingPayload),
            (
                &[("client", b"c"), ("payload", b"123456789")],
                PayloadTooLarge { size: 9, max: 8 },
            ),
            (
                &[("client", b"c"), ("payload", b""), ("qos", b"3")],
                BadQos("3".into()),
            ),
            (
                &[("client", b"c"), ("payload", b""), ("retain", b"yes")],
                BadRetain("yes".into()),
            ),
            (
                &[("client", b"c"), ("payload", b""), ("expiry", b"-1")],
                BadExpiry("-1".into()),
            ),
            (
                &[
                    ("client", b"c"),
                    ("payload", b""),
                    ("expiry", b"99999999999"),
                ],
                BadExpiry("99999999999".into()),
            ),
            (&[("client", b"\xff"), ("payload", b"")], NotUtf8("client")),
        ];
        for (fields, want) in cases {
            assert_eq!(parse(fields).unwrap_err(), want, "{fields:?}");
        }
        for bad in [&b"[1]"[..], br#"{"a":1}"#, b"{"] {
            let err = parse(&[("client", b"c"), ("payload", b""), ("props", bad)]).unwrap_err();
            assert!(matches!(err, BadProps(_)), "{err:?}");
        }
    }
}
