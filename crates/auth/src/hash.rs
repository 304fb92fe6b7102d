//! Mosquitto password hash formats: parsing, constant-time verification, creation.
//!
//! - `$7$<iterations>$<salt_b64>$<hash_b64>`: PBKDF2-HMAC-SHA512 with a 64-byte
//!   output (Mosquitto 2.x default, `mosquitto_passwd -H sha512-pbkdf2`).
//! - `$6$<salt_b64>$<hash_b64>`: SHA512(password || salt) (Mosquitto 1.x,
//!   `mosquitto_passwd -H sha512`).
//!
//! Salts and hashes are standard base64; padding is accepted but not required.

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::RngCore as _;
use sha2::{Digest as _, Sha512};
use subtle::ConstantTimeEq as _;

use crate::error::ParseErrorKind;

const HASH_LEN: usize = 64;
/// Mosquitto's `mosquitto_passwd` uses 12-byte salts.
const SALT_LEN: usize = 12;

const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One stored password hash.
#[derive(Clone)]
pub(crate) enum PasswordHash {
    Sha512 {
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
    Pbkdf2Sha512 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("Sha512(..)"),
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "Pbkdf2Sha512(iterations: {iterations}, ..)")
            }
        }
    }
}

impl PasswordHash {
    /// Parses the part of a password-file line after `username:`.
    pub(crate) fn parse(s: &str) -> Result<Self, ParseErrorKind> {
        let Some(rest) = s.strip_prefix('$') else {
            return Err(ParseErrorKind::PlaintextPassword);
        };
        let fields: Vec<&str> = rest.split('$').collect();
        match fields.as_slice() {
            ["6", salt, hash] => Ok(PasswordHash::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            }),
            ["7", iterations, salt, hash] => Ok(PasswordHash::Pbkdf2Sha512 {
                iterations: parse_iterations(iterations)?,
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            }),
            ["6", ..] | ["7", ..] => Err(ParseErrorKind::MalformedHash("wrong number of fields")),
            _ => Err(ParseErrorKind::UnknownHashFormat),
        }
    }

    /// Checks `password` against this hash; the final comparison is constant-time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        let (computed, stored) = match self {
            PasswordHash::Sha512 { salt, hash } => (sha512_salted(password, salt), hash),
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => (pbkdf2_sha512(password, salt, *iterations), hash),
        };
        computed.ct_eq(stored).into()
    }
}

/// Hashes `password` in Mosquitto's `$7$` format (PBKDF2-HMAC-SHA512, random
/// 12-byte salt). Mosquitto's own tool uses 101 iterations; higher is stronger
/// but every CONNECT pays for it.
pub fn hash_password(password: &[u8], iterations: NonZeroU32) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    let hash = pbkdf2_sha512(password, &salt, iterations);
    format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(hash))
}

/// Spends about as long as verifying a default Mosquitto hash, so that an
/// unknown username is not distinguishable by timing from a wrong password.
pub(crate) fn dummy_verify(password: &[u8]) {
    const MOSQUITTO_DEFAULT_ITERATIONS: NonZeroU32 = NonZeroU32::new(101).unwrap();
    std::hint::black_box(pbkdf2_sha512(
        password,
        &[0u8; SALT_LEN],
        MOSQUITTO_DEFAULT_ITERATIONS,
    ));
}

fn sha512_salted(password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut hasher = Sha512::new();
    hasher.update(password);
    hasher.update(salt);
    hasher.finalize().into()
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations.get(), &mut out);
    out
}

fn parse_iterations(s: &str) -> Result<NonZeroU32, ParseErrorKind> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseErrorKind::MalformedHash("iterations is not a number"));
    }
    s.parse::<NonZeroU32>()
        .map_err(|_| ParseErrorKind::MalformedHash("iterations must be 1..=4294967295"))
}

fn decode_salt(s: &str) -> Result<Vec<u8>, ParseErrorKind> {
    let salt = B64
        .decode(s)
        .map_err(|_| ParseErrorKind::MalformedHash("salt is not valid base64"))?;
    if salt.is_empty() {
        return Err(ParseErrorKind::MalformedHash("empty salt"));
    }
    Ok(salt)
}

fn decode_hash(s: &str) -> Result<[u8; HASH_LEN], ParseErrorKind> {
    let bytes = B64
        .decode(s)
        .map_err(|_| ParseErrorKind::MalformedHash("hash is not valid base64"))?;
    bytes
        .try_into()
        .map_err(|_| ParseErrorKind::MalformedHash("hash is not 64 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_password_round_trips_and_uses_mosquitto_shape() {
        let iterations = NonZeroU32::new(5).unwrap();
        let line = hash_password(b"hunter2", iterations);
        let fields: Vec<&str> = line.split('$').collect();
        assert_eq!(fields[..3], ["", "7", "5"]);
        assert_eq!(fields[3].len(), 16, "12-byte salt in base64");
        assert_eq!(fields[4].len(), 88, "64-byte hash in padded base64");
        let parsed = PasswordHash::parse(&line).unwrap();
        assert!(parsed.verify(b"hunter2"));
        assert!(!parsed.verify(b"hunter3"));
        assert_ne!(
            line,
            hash_password(b"hunter2", iterations),
            "salt is random"
        );
    }

    #[test]
    fn debug_hides_salt_and_hash() {
        let parsed = PasswordHash::parse(&hash_password(b"x", NonZeroU32::MIN)).unwrap();
        assert_eq!(format!("{parsed:?}"), "Pbkdf2Sha512(iterations: 1, ..)");
    }
}
