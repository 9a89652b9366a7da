//! Opening the files ibauth keeps beside its tokens (the token file, its `.lock`, the pacing
//! ledger) so that another local user cannot redirect, block or plant them.
//!
//! What is refused, and why:
//! - anything but a regular file: a FIFO blocks the opening process forever (a reader waits for
//!   a writer), a device or socket is not ours to parse;
//! - a symbolic link at the file's own name (`O_NOFOLLOW`): a link planted where the file will
//!   be created would make ibauth write its tokens (or take its lock) wherever it points;
//! - a file owned by another user: they could have planted it (tokens of their session, a lock
//!   they hold), and they can read or change it whatever its mode says;
//! - a folder other users can write to, or owned by another user (root aside): they could swap
//!   the file for one of theirs between two runs.
//!
//! The checks run on every open, not only at creation: the file and folder may have been
//! changed since. The file's type and owner are checked on the opened descriptor (`fstat`), so a
//! swap between the look and the open cannot slip through; the look before the open (`lstat`)
//! only spares opening a device or FIFO at all.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Why a file or folder is not used.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Opening or inspecting failed.
    Io(std::io::Error),
    /// Not a regular file: what it is ("a FIFO", "a symbolic link", …).
    NotRegular(&'static str),
    /// The file belongs to another user.
    Owner { uid: u32, expected: u32 },
    /// The folder can be written by other users (its permission bits).
    FolderWritable { mode: u32 },
    /// The folder belongs to another user (and not to root).
    FolderOwner { uid: u32, expected: u32 },
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Self {
        Refusal::Io(e)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Io(e) => write!(f, "{e}"),
            Refusal::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            Refusal::Owner { uid, expected } => {
                write!(
                    f,
                    "it belongs to uid {uid}, not to this user (uid {expected})"
                )
            }
            Refusal::FolderWritable { mode } => {
                write!(
                    f,
                    "its folder can be written by other users (mode {mode:o})"
                )
            }
            Refusal::FolderOwner { uid, expected } => write!(
                f,
                "its folder belongs to uid {uid}, not to this user (uid {expected}) or root"
            ),
        }
    }
}

/// The user this process acts as.
#[cfg(unix)]
pub(crate) fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// What a non-regular file is, for the message.
#[cfg(unix)]
fn kind(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_dir() {
        "a folder"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` with `options` (which may create it): never through a symbolic link at `path`,
/// never blocking on a FIFO, and only a regular file owned by this user.
#[cfg(unix)]
pub(crate) fn open(path: &Path, options: &mut OpenOptions) -> Result<File, Refusal> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => {
            return Err(Refusal::NotRegular(kind(meta.file_type())));
        }
        Ok(_) => {}
        // Absent: the open creates it (or reports it absent); anything else, the open reports.
        Err(_) => {}
    }
    // O_NONBLOCK: if a FIFO is swapped in after the look above, the open returns at once
    // instead of waiting for a writer (on a regular file the flag changes nothing).
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = match options.open(path) {
        Ok(file) => file,
        // ELOOP: a symbolic link at the name; ENXIO: a FIFO opened for writing with no reader.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENXIO)) => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(meta) if !meta.file_type().is_file() => {
                    Refusal::NotRegular(kind(meta.file_type()))
                }
                _ => Refusal::Io(e),
            });
        }
        Err(e) => return Err(Refusal::Io(e)),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular(kind(meta.file_type())));
    }
    let expected = current_uid();
    if meta.uid() != expected {
        return Err(Refusal::Owner {
            uid: meta.uid(),
            expected,
        });
    }
    Ok(file)
}

#[cfg(not(unix))]
pub(crate) fn open(path: &Path, options: &mut OpenOptions) -> Result<File, Refusal> {
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Refusal::NotRegular("something other than a file"));
    }
    Ok(file)
}

/// Checks the folder holding the files: not writable by group or others, owned by this user
/// (or root, as system folders are). A folder others can only read is accepted: it shows them
/// the files' names, while the files themselves are 0600 and checked on every open.
#[cfg(unix)]
pub(crate) fn check_folder(folder: &Path) -> Result<(), Refusal> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(folder)?;
    let expected = current_uid();
    if meta.uid() != expected && meta.uid() != 0 {
        return Err(Refusal::FolderOwner {
            uid: meta.uid(),
            expected,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Refusal::FolderWritable { mode });
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_folder(_: &Path) -> Result<(), Refusal> {
    Ok(())
}
