//! File version stamps for change detection by polling.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What identifies one version of a file, for change detection by polling.
///
/// The path is canonicalized first, so a Kubernetes `..data` symlink swap changes
/// it even when the new file has the same size and times; a rename over the file
/// changes the inode; an in-place rewrite changes mtime/ctime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    target: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    unix: (u64, u64, i64, i64),
}

impl FileStamp {
    pub(crate) fn of(path: &Path) -> io::Result<Self> {
        let target = std::fs::canonicalize(path)?;
        let meta = std::fs::metadata(&target)?;
        #[cfg(unix)]
        let unix = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
        };
        Ok(Self {
            target,
            len: meta.len(),
            modified: meta.modified().ok(),
            #[cfg(unix)]
            unix,
        })
    }
}
