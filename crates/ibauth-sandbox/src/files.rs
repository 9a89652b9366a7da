//! Writing and reading the credential set's files without following symbolic links: the
//! sandbox runs on users' machines, often in a shared folder, and writes private keys. A
//! file is written to a fresh temporary file in the same folder (created exclusively, so a
//! planted file or link at that name makes the write fail instead of redirecting it), then
//! renamed over the destination, which must not be a symbolic link either.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ibauth::SigningKey;

use crate::SandboxError;

/// How many temporary names are tried before giving up (each is random, so a clash means
/// someone is planting files).
const TEMP_ATTEMPTS: u32 = 8;

fn file_error(what: &'static str, path: &Path) -> impl Fn(std::io::Error) -> SandboxError {
    let path = path.to_owned();
    move |source| SandboxError::File {
        what,
        path: path.clone(),
        source,
    }
}

/// Refuses `path` if it is a symbolic link (a missing file is fine).
fn refuse_symlink(path: &Path, what: &'static str) -> Result<(), SandboxError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            Err(file_error(what, path)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a symbolic link; the sandbox does not write or read through links",
            )))
        }
        _ => Ok(()),
    }
}

/// Creates `dir` (and its parents) if missing; a new folder is private to the user.
pub(crate) fn create_dir(dir: &Path) -> Result<(), SandboxError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(file_error("cannot create", dir))
}

/// Writes `contents` to `path` with `mode`, atomically and without following links.
pub(crate) fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), SandboxError> {
    let err = file_error("cannot write", path);
    refuse_symlink(path, "cannot write")?;
    let (tmp, mut file) = create_temp(path, mode)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            // Checked again just before: rename replaces a link rather than following it,
            // but a link at the destination is still someone else's doing.
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "is a symbolic link; the sandbox does not write through links",
                )),
                _ => std::fs::rename(&tmp, path),
            }
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err)
}

/// A new temporary file beside `path`, created exclusively with `mode`.
fn create_temp(path: &Path, mode: u32) -> Result<(PathBuf, std::fs::File), SandboxError> {
    let err = file_error("cannot write", path);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random)
            .map_err(|_| err(std::io::Error::other("no random temporary file name")))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        // create_new is O_CREAT|O_EXCL: it never opens an existing file and never follows a
        // link at the final component.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(err(e)),
        }
    }
    Err(err(last.unwrap_or_else(|| {
        std::io::Error::other("no free temporary file name")
    })))
}

/// The key at `path`, or a new one written there. A link at `path` is refused: the sandbox
/// would otherwise use (or overwrite) a key someone else chose.
pub(crate) fn load_or_generate(path: &Path) -> Result<SigningKey, SandboxError> {
    refuse_symlink(path, "cannot read")?;
    if path.exists() {
        return Ok(SigningKey::from_pem_file(path)?);
    }
    let key = SigningKey::generate()?;
    write_private(path, key.to_pkcs8_pem().as_bytes(), 0o600)?;
    Ok(key)
}
