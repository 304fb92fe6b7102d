//! The parsed PROXY header, its TLVs, and throng's agent→handler hand-off TLVs.

use std::net::SocketAddr;

use bytes::Bytes;

/// throng TLV (custom range `0xE0..=0xEF`): the agent's connection id, u64 big-endian.
pub const TLV_THRONG_CONN_ID: u8 = 0xE0;
/// throng TLV: the client id the agent assigned, UTF-8.
pub const TLV_THRONG_CLIENT_ID: u8 = 0xE1;

/// What the sender says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The proxy opened the connection itself (e.g. a health check): use the
    /// real socket addresses. Parsed LOCAL headers never carry addresses.
    Local,
    /// The connection is relayed for a client; addresses are `None` when the
    /// sender did not know them (v1 `UNKNOWN`, v2 `AF_UNSPEC`).
    Proxy,
}

/// One v2 type-length-value extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub kind: u8,
    pub value: Bytes,
}

/// A PROXY header (v1 or v2). `source`/`destination` have the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    pub command: Command,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub tlvs: Vec<Tlv>,
}

impl ProxyHeader {
    /// A LOCAL header with no addresses and no TLVs.
    pub fn local() -> Self {
        ProxyHeader {
            command: Command::Local,
            source: None,
            destination: None,
            tlvs: Vec::new(),
        }
    }

    /// A PROXY header for a client at `source` that connected to `destination`.
    pub fn proxied(source: SocketAddr, destination: SocketAddr) -> Self {
        ProxyHeader {
            command: Command::Proxy,
            source: Some(source),
            destination: Some(destination),
            tlvs: Vec::new(),
        }
    }

    /// Appends a TLV.
    pub fn with_tlv(mut self, kind: u8, value: impl Into<Bytes>) -> Self {
        self.tlvs.push(Tlv {
            kind,
            value: value.into(),
        });
        self
    }

    /// Sets [`TLV_THRONG_CONN_ID`], replacing any previous one.
    pub fn with_conn_id(self, conn_id: u64) -> Self {
        self.with_unique_tlv(TLV_THRONG_CONN_ID, conn_id.to_be_bytes().to_vec())
    }

    /// Sets [`TLV_THRONG_CLIENT_ID`], replacing any previous one.
    pub fn with_assigned_client_id(self, client_id: &str) -> Self {
        self.with_unique_tlv(
            TLV_THRONG_CLIENT_ID,
            Bytes::copy_from_slice(client_id.as_bytes()),
        )
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&Bytes> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| &t.value)
    }

    /// The agent's connection id, if present and exactly 8 bytes.
    pub fn conn_id(&self) -> Option<u64> {
        let value = self.tlv(TLV_THRONG_CONN_ID)?;
        Some(u64::from_be_bytes(value.as_ref().try_into().ok()?))
    }

    /// The client id the agent assigned, if present and valid UTF-8.
    pub fn assigned_client_id(&self) -> Option<&str> {
        std::str::from_utf8(self.tlv(TLV_THRONG_CLIENT_ID)?).ok()
    }

    fn with_unique_tlv(mut self, kind: u8, value: impl Into<Bytes>) -> Self {
        self.tlvs.retain(|t| t.kind != kind);
        self.with_tlv(kind, value)
    }
}
