//! Authentication and authorization of MQTT clients from Mosquitto-compatible files.
//!
//! - [`PasswordFile`] reads `mosquitto_passwd` output (`username:hash` lines with
//!   `$7$` PBKDF2-HMAC-SHA512 or legacy `$6$` SHA-512 hashes) and verifies
//!   passwords in constant time. Plaintext passwords are rejected at load time.
//! - [`hash_password`] produces a `$7$` hash that Mosquitto also accepts.
//! - [`AclFile`] reads a Mosquitto `acl_file` and answers publish, subscribe and
//!   delivery questions for a [`ClientInfo`].
//!
//! Everything here is synchronous and does no I/O after `load`.

mod acl;
mod error;
mod hash;
mod password;
mod topic;

pub use acl::{Access, AclFile, ClientInfo};
pub use error::{AuthError, ParseErrorKind};
pub use hash::hash_password;
pub use password::PasswordFile;
