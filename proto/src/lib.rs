//! Every gRPC contract of throng, package `throng.v1`: the handler attach
//! stream to the distributor (`handler.proto`), the ingest API
//! (`ingest.proto`) and the message they share (`message.proto`).
//!
//! The `.proto` files under `proto/throng/v1` are the source of truth. The
//! generated types live in [`v1`] and stay at the edge: services convert
//! them to their own domain types where they serve or call an API. Bytes
//! fields are [`bytes::Bytes`](prost::bytes::Bytes), so payloads are not copied.

/// Generated prost messages and tonic clients/servers for `throng.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("throng.v1");
}

/// Encoded `FileDescriptorSet` of every `throng.v1` file (imports included),
/// for a gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("throng_descriptor");
