//! Errors from parsing or encoding a PROXY protocol header.

/// Why bytes are not a valid PROXY header, or a header cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The bytes start with neither the v1 `PROXY ` prefix nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    #[error("unsupported PROXY v2 version {0}")]
    V2Version(u8),
    #[error("unknown PROXY v2 command {0:#x}")]
    V2Command(u8),
    #[error("unsupported PROXY v2 address family and protocol {0:#04x}")]
    V2Family(u8),
    /// Addresses plus TLVs exceed [`crate::MAX_V2_PAYLOAD`] bytes.
    #[error("PROXY v2 payload of {0} bytes exceeds the limit")]
    V2TooLong(usize),
    #[error("PROXY v2 payload of {len} bytes is shorter than its {needed}-byte address block")]
    V2AddressLength { needed: usize, len: usize },
    #[error("truncated PROXY v2 TLV")]
    V2TlvTruncated,
}
