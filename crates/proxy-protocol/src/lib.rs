//! Sans-IO PROXY protocol (HAProxy spec) v1 and v2.
//!
//! [`parse`] inspects the first bytes of a connection and returns the header
//! and how many bytes it used, `Ok(None)` when more bytes are needed, or an
//! error as soon as the bytes cannot be a valid header ([`ProxyError::NotProxy`]
//! on the first byte that rules out both versions). [`encode_v2`] writes a v2
//! header. throng's agent→handler hand-off TLVs are [`TLV_THRONG_CONN_ID`] and
//! [`TLV_THRONG_CLIENT_ID`], read and set through [`ProxyHeader`] helpers.

mod error;
mod header;
#[cfg(feature = "tokio")]
mod read;
mod v1;
mod v2;

pub use error::ProxyError;
pub use header::{Command, ProxyHeader, TLV_THRONG_CLIENT_ID, TLV_THRONG_CONN_ID, Tlv};
#[cfg(feature = "tokio")]
pub use read::{ReadError, read_header, read_header_after};
pub use v2::{MAX_V2_PAYLOAD, SIGNATURE as V2_SIGNATURE, encode_v2};

/// The longest possible v1 header, CRLF included.
pub const MAX_V1_LEN: usize = 107;

/// Parses a PROXY header at the start of `buf`.
///
/// Returns `Ok(None)` while `buf` is a strict prefix of a possibly valid
/// header, `Ok(Some((header, consumed)))` once a full header is present (bytes
/// after `consumed` belong to the proxied stream), or an error. Never panics.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if is_prefix_of(buf, &v2::SIGNATURE) {
        return if buf.len() < v2::SIGNATURE.len() {
            Ok(None)
        } else {
            v2::parse(buf)
        };
    }
    if is_prefix_of(buf, v1::PREFIX) {
        return if buf.len() < v1::PREFIX.len() {
            Ok(None)
        } else {
            v1::parse(buf)
        };
    }
    Err(ProxyError::NotProxy)
}

/// Whether `buf` starts with `expected`, or is itself a prefix of it.
fn is_prefix_of(buf: &[u8], expected: &[u8]) -> bool {
    let n = buf.len().min(expected.len());
    buf[..n] == expected[..n]
}

/// Fuzzing entry point: parses `data` and checks the parser's invariants
/// (consumed bounds, prefix behaviour, re-encoding round trip). Panics on a bug.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    match parse(data) {
        Ok(Some((header, consumed))) => {
            assert!(consumed > 0 && consumed <= data.len());
            assert_eq!(parse(&data[..consumed - 1]), Ok(None));
            let mut encoded = Vec::new();
            encode_v2(&header, &mut encoded).expect("a parsed header re-encodes");
            assert_eq!(
                parse(&encoded),
                Ok(Some((header, encoded.len()))),
                "re-encoded header parses back the same"
            );
        }
        Ok(None) => assert!(data.len() < v2::HEADER_LEN + MAX_V2_PAYLOAD),
        Err(_) => {}
    }
}
