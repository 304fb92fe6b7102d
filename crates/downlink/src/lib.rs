//! Downlink queue consumer: the distributor's side of the upstream Redis stream
//! (DESIGN.md, data flow 3, "backend to device"); and the uplink writer, which
//! appends device publishes to a stream for backends.
//!
//! Backends `XADD` entries to the downlink stream (default `throng:downlink`);
//! each distributor replica reads it as a member of one consumer group through a
//! [`Consumer`].
//!
//! # Entry format (the contract for backends)
//!
//! | field | required | value |
//! |---|---|---|
//! | `client` | exactly one of `client` / `topic` | target MQTT client id (sent to the session of that client) |
//! | `topic` | exactly one of `client` / `topic` | topic name, no wildcards (sent to every matching subscription) |
//! | `payload` | yes | raw bytes, at most [`EntryLimits::max_payload`] (default 256 KiB) |
//! | `qos` | no | `0`, `1` or `2`; default `1` |
//! | `retain` | no | `0` or `1`; default `0` |
//! | `expiry` | no | message expiry interval, whole seconds (`u32`) |
//! | `props` | no | JSON object of MQTT 5 user properties, string → string |
//! | `content_type` | no | UTF-8 |
//! | `response_topic` | no | UTF-8 |
//! | `correlation` | no | raw bytes (MQTT 5 correlation data) |
//! | `id` | no | idempotency / message id; default: the stream entry id |
//!
//! Unknown fields are ignored. Example:
//!
//! ```text
//! XADD throng:downlink * client dev-42 payload '{"on":true}' qos 1 props '{"src":"billing"}'
//! ```
//!
//! # Delivery semantics
//!
//! At-least-once. An entry is `XACK`ed only after the caller says a handler
//! accepted it ([`Consumer::ack`]). A malformed entry is copied to the
//! dead-letter stream (`<stream>:dead`) with `reason` ("malformed: …"),
//! `attempts` and `entry` (the original entry id) and acked at once; it never
//! stops the consumer. Entries left pending by a dead consumer are taken over by
//! [`Consumer::reclaim`] (XAUTOCLAIM) after an idle time; an entry delivered
//! more than `max_attempts` times is dead-lettered instead of being returned.
//!
//! Duplicates appear when a consumer dies (or its ack fails) after a handler
//! accepted a message but before the XACK: the reclaiming consumer delivers it
//! again with the same `id`, which a handler uses to drop the repeat. If the
//! consumer group itself disappears (Redis restarted without persistence) it is
//! recreated at `0`, so what is left in the stream is delivered again rather
//! than lost. The group is created at `0` in the first place too: entries
//! added before any distributor ever ran are delivered, not skipped.
//!
//! The stream belongs to the distributors: they trim the entries their group
//! has acknowledged (`XTRIM MINID ~` below the oldest pending entry, about every
//! 10 s), so backends need not trim it; another consumer group reading the same
//! stream would lose entries to that trimming.
//!
//! # Uplink entry format (what backends read)
//!
//! Handlers copy device publishes whose topic matches a configured uplink filter
//! (`--uplink-filter`, e.g. `up/#`) to the uplink stream (default
//! `throng:uplink`, trimmed with `MAXLEN ~`) through an [`UplinkWriter`]:
//!
//! | field | always | value |
//! |---|---|---|
//! | `client` | yes | client id of the publishing device |
//! | `topic` | yes | topic name as published (after topic-alias resolution) |
//! | `payload` | yes | raw bytes |
//! | `qos` | yes | `0`, `1` or `2`, as published |
//! | `retain` | yes | `0` or `1` |
//! | `props` | no | JSON object of MQTT 5 user properties, string → string; a repeated key keeps its last value |
//! | `content_type` | no | UTF-8 |
//! | `response_topic` | no | UTF-8 |
//! | `correlation` | no | raw bytes (MQTT 5 correlation data) |
//! | `ts` | yes | when the handler accepted the publish, unix milliseconds |
//!
//! Optional fields are absent when the publish did not carry them. Read it with
//! `XREAD` or a consumer group of your own. The device's PUBACK/PUBREC does not
//! wait for Redis: entries are buffered (10,000 by default) and retried while
//! Redis is unreachable, and refused once the buffer is full, so delivery into
//! the stream is at-most-once when Redis is down longer than the buffer lasts
//! (and may duplicate an entry when a write fails after Redis applied it).

mod consumer;
mod entry;
mod uplink;

pub use consumer::{Consumer, ConsumerConfig, ConsumerError, Delivery};
pub use entry::{
    DEFAULT_MAX_PAYLOAD, DownlinkMessage, EntryError, EntryLimits, Qos, Target, parse_entry,
};
pub use uplink::{
    DEFAULT_UPLINK_STREAM, UplinkConfig, UplinkEntry, UplinkFull, UplinkWriter, unix_ms,
};
