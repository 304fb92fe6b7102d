//! Errors from loading password and ACL files, located by path and line number.

use std::path::{Path, PathBuf};

/// A password or ACL file could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read (missing, unreadable, or not UTF-8).
    #[error("failed to read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is invalid. `path` is `None` for text given to `parse`.
    #[error("{}line {line}: {kind}", location(path.as_deref()))]
    Parse {
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        kind: ParseErrorKind,
    },
}

impl AuthError {
    pub(crate) fn parse(line: usize, kind: ParseErrorKind) -> Self {
        AuthError::Parse {
            path: None,
            line,
            kind,
        }
    }

    /// Attaches the file path to a parse error produced from the file's text.
    pub(crate) fn at_path(self, file: &Path) -> Self {
        match self {
            AuthError::Parse { line, kind, .. } => AuthError::Parse {
                path: Some(file.to_path_buf()),
                line,
                kind,
            },
            other => other,
        }
    }
}

fn location(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// What is wrong with one line. Messages never echo a password or hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    #[error("expected `username:hash`")]
    MissingSeparator,
    #[error("empty username")]
    EmptyUsername,
    #[error("plaintext password; hash the file with `mosquitto_passwd -U`")]
    PlaintextPassword,
    #[error("unknown password hash format (expected `$7$` or `$6$`)")]
    UnknownHashFormat,
    #[error("malformed password hash: {0}")]
    MalformedHash(&'static str),
    #[error("duplicate user {0:?}")]
    DuplicateUser(String),
    #[error("unknown ACL directive {0:?} (expected `topic`, `user` or `pattern`)")]
    UnknownDirective(String),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid topic filter {0:?}: {1}")]
    InvalidTopic(String, &'static str),
}
