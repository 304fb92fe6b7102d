//! Mosquitto password files: loading `username:hash` lines and verifying passwords.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::Path;

use crate::error::{AuthError, ParseErrorKind};
use crate::hash::{self, PasswordHash};

/// A parsed Mosquitto password file (as written by `mosquitto_passwd`).
///
/// Lines are `username:hash`; `#` starts a comment line; blank lines are
/// ignored. Every hash must be `$7$` or `$6$`: a plaintext password, an unknown
/// format or a repeated username makes the whole file invalid.
#[derive(Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    /// Reads and parses the file at `path`; errors carry the path and line number.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| e.at_path(path))
    }

    /// Parses the text of a password file.
    pub fn parse(text: &str) -> Result<PasswordFile, AuthError> {
        let mut users = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim_end();
            if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let err = |kind| AuthError::parse(line_no, kind);
            let (username, hash) = line
                .split_once(':')
                .ok_or_else(|| err(ParseErrorKind::MissingSeparator))?;
            if username.is_empty() {
                return Err(err(ParseErrorKind::EmptyUsername));
            }
            let hash = PasswordHash::parse(hash).map_err(err)?;
            match users.entry(username.to_owned()) {
                Entry::Occupied(_) => {
                    return Err(err(ParseErrorKind::DuplicateUser(username.to_owned())));
                }
                Entry::Vacant(slot) => {
                    slot.insert(hash);
                }
            }
        }
        Ok(PasswordFile { users })
    }

    /// Whether `password` is correct for `username`. Unknown users cost about
    /// as much time as a wrong password and return `false`.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.verify(password),
            None => {
                hash::dummy_verify(password);
                false
            }
        }
    }

    /// Whether the file has an entry for `username`.
    pub fn contains_user(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// Number of users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish()
    }
}
