//! The ledger: a small file through which processes sharing a session (or a token file) share
//! its budgets. Per `identity` and bucket it holds the reserved send times (Unix ms) still
//! inside the bucket's window and the time a pause after a 429 ends.
//!
//! Like the token file it is created 0600 in a 0700 folder. Every transaction locks the file
//! itself (std `File::lock`; a plain rewrite keeps the same file, so the lock stays valid),
//! reads, computes, rewrites, unlocks. The ledger is advisory: a torn or corrupt file is reset
//! with a warning, and values from it are clamped so a hostile or stale file cannot block
//! anyone for long.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError as MutexBusy};

use serde::{Deserialize, Serialize};

use crate::private_file::{self, Refusal};

/// The file format's version; another version is reset like a corrupt file.
const VERSION: u32 = 1;

/// A bigger file is not read (bounded memory): it is reset.
const MAX_BYTES: u64 = 4 << 20;

/// No bucket's window is taken as longer than a day when pruning, whatever the file says.
pub(crate) const MAX_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// A pacing ledger shared by processes (and several identities) through one file.
///
/// ```no_run
/// use ibauth::pacing::{PaceLedger, Pacer, PacingRules};
///
/// # fn run() -> Result<(), ibauth::pacing::LedgerError> {
/// let ledger = PaceLedger::beside("/home/me/.local/state/ibauth/tokens.json", "myuser")?;
/// assert!(ledger.path().ends_with("tokens.json.pacing"));
/// let pacer = Pacer::with_ledger(PacingRules::ibkr(), ledger);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PaceLedger {
    path: PathBuf,
    identity: String,
    /// The file kept open between transactions, shared by clones (which then take turns on
    /// this mutex: one open file description's `flock` would not keep them apart).
    held: Arc<Mutex<Option<Held>>>,
}

impl PartialEq for PaceLedger {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.identity == other.identity
    }
}

impl Eq for PaceLedger {}

/// The open ledger file, and what this process last read or wrote there.
#[derive(Debug)]
struct Held {
    file: File,
    /// `(device, inode)`: the path must still name this file, or it is opened afresh (with
    /// every check) — a file replaced or removed by someone else is not written to blindly.
    id: Option<(u64, u64)>,
    /// The bytes last read or written and their document: when the file still holds exactly
    /// these bytes, nobody else wrote since and the parse is skipped.
    last: Option<(Vec<u8>, Doc)>,
}

/// The file's identity on disk, where the platform has one.
fn file_id(meta: &fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The ledger cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot {action} the pacing ledger {}: {source}; check that the folder is yours and writable, or pace in-process only (no ledger)",
    path.display()
)]
pub struct LedgerError {
    /// The ledger file.
    pub path: PathBuf,
    /// What failed ("create the folder of", "open", …).
    pub action: &'static str,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

impl PaceLedger {
    /// Opens (creating if needed: 0600, its folder 0700) the ledger at `path`, for the
    /// session `identity` (such as the username: budgets are per session, and several
    /// identities may share one file without sharing budgets).
    pub fn open(
        path: impl Into<PathBuf>,
        identity: impl Into<String>,
    ) -> Result<Self, LedgerError> {
        let ledger = Self {
            path: path.into(),
            identity: identity.into(),
            held: Arc::default(),
        };
        let file = ledger.open_file()?;
        ledger.keep(file)?;
        Ok(ledger)
    }

    /// The ledger beside a token file: the token file's path plus `.pacing`, so every process
    /// sharing the tokens shares the budget.
    pub fn beside(
        token_file: impl AsRef<Path>,
        identity: impl Into<String>,
    ) -> Result<Self, LedgerError> {
        let mut path = token_file.as_ref().as_os_str().to_owned();
        path.push(".pacing");
        Self::open(PathBuf::from(path), identity)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity whose budgets this handle uses.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn error(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
        move |source| LedgerError {
            path: self.path.clone(),
            action,
            source,
        }
    }

    fn open_file(&self) -> Result<File, LedgerError> {
        let folder = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !folder.is_dir() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(folder)
                .map_err(self.error("create the folder of"))?;
        }
        // The same rules as the token file beside it: a FIFO here would hang every paced
        // request, a symbolic link would have ibauth rewrite whatever it points to, and a
        // folder or file of another user's lets them block or skew everyone's pacing.
        private_file::check_folder(folder).map_err(|refusal| self.refused(refusal))?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = private_file::open(&self.path, &mut options)
            .map_err(|refusal| self.refused(refusal))?;
        // Ours (checked above) but readable by others, as an older file may be: private again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file
                .metadata()
                .map_err(self.error("inspect"))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                file.set_permissions(fs::Permissions::from_mode(0o600))
                    .map_err(self.error("make private"))?;
            }
        }
        Ok(file)
    }

    fn refused(&self, refusal: Refusal) -> LedgerError {
        match refusal {
            Refusal::Io(source) => self.error("open")(source),
            other => {
                let fix = match other {
                    Refusal::FolderWritable { .. } | Refusal::FolderOwner { .. } => {
                        "run `chmod 700` on a folder of your own, or move the file into one"
                    }
                    _ => "remove it (ibauth makes a new one)",
                };
                self.error("use")(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{other}; {fix}"),
                ))
            }
        }
    }

    /// Keeps `file` open for the next transactions.
    fn keep(&self, file: File) -> Result<(), LedgerError> {
        let id = file_id(&file.metadata().map_err(self.error("inspect"))?);
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(Held {
            file,
            id,
            last: None,
        });
        Ok(())
    }

    /// The file, locked; `Ok(None)` while another holder (another process, or another handle
    /// of this one) has it.
    pub(crate) fn try_lock(&self) -> Result<Option<Locked<'_>>, LedgerError> {
        let mut held = match self.held.try_lock() {
            Ok(held) => held,
            Err(MutexBusy::WouldBlock) => return Ok(None),
            Err(MutexBusy::Poisoned(p)) => p.into_inner(),
        };
        // Still the file at the path? `lstat`, so a symbolic link planted there is not it.
        let at_path = fs::symlink_metadata(&self.path)
            .ok()
            .and_then(|m| file_id(&m));
        let same = held
            .as_ref()
            .is_some_and(|h| h.id.is_some() && h.id == at_path);
        if !same {
            let file = self.open_file()?;
            let id = file_id(&file.metadata().map_err(self.error("inspect"))?);
            *held = Some(Held {
                file,
                id,
                last: None,
            });
        }
        let Some(open) = held.as_mut() else {
            return Err(self.error("open")(std::io::Error::other(
                "the ledger is not open",
            )));
        };
        match open.file.try_lock() {
            Ok(()) => Ok(Some(Locked { ledger: self, held })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(self.error("lock")(e)),
        }
    }
}

/// The ledger file under its lock (released when dropped).
pub(crate) struct Locked<'a> {
    ledger: &'a PaceLedger,
    held: MutexGuard<'a, Option<Held>>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(open) = self.held.as_ref() {
            // If unlocking fails the file is broken: open it afresh next time (closing it
            // releases the lock for certain).
            if open.file.unlock().is_err() {
                *self.held = None;
            }
        }
    }
}

impl Locked<'_> {
    /// The document; an unreadable one is reported and replaced by an empty one.
    pub(crate) fn read(&mut self) -> Doc {
        let Some(open) = self.held.as_mut() else {
            return Doc::default();
        };
        // Room for a typical ledger up front: from an empty Vec, read_to_end starts with
        // 32-byte reads and grows, ~7 read calls a transaction (strace, docs/benchmarks.md).
        let capacity = open
            .last
            .as_ref()
            .map_or(16 * 1024, |(b, _)| b.len() + 1024);
        let mut bytes = Vec::with_capacity(capacity);
        let read = open
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| (&open.file).take(MAX_BYTES + 1).read_to_end(&mut bytes));
        // What this process wrote last, untouched since: no parse needed.
        if let (Ok(_), Some((last, doc))) = (&read, &open.last)
            && *last == bytes
        {
            return doc.clone();
        }
        let problem = match read {
            Err(e) => format!("unreadable: {e}"),
            Ok(_) if bytes.is_empty() => return Doc::default(),
            Ok(n) if n as u64 > MAX_BYTES => format!("larger than {MAX_BYTES} bytes"),
            Ok(_) => match serde_json::from_slice::<Doc>(&bytes) {
                Ok(doc) if doc.version == VERSION => return doc,
                Ok(doc) => format!("version {} (this ibauth writes {VERSION})", doc.version),
                Err(e) => format!("not a ledger: {e}"),
            },
        };
        tracing::warn!(
            file = %self.ledger.path.display(),
            "pacing ledger is corrupt ({problem}); starting it afresh (in-flight reservations of other processes are forgotten)"
        );
        Doc::default()
    }

    /// Replaces the file's content in place (the ledger is advisory: a crash mid-write leaves
    /// a torn file that the next reader resets).
    pub(crate) fn write(&mut self, doc: &Doc) {
        let Some(open) = self.held.as_mut() else {
            return;
        };
        open.last = None;
        let written = serde_json::to_vec(doc)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                // Overwrite, then cut to length — not truncate to zero and write: ext4 takes
                // that for a file being replaced and flushes it on close (~2.5 ms a call).
                open.file.seek(SeekFrom::Start(0))?;
                open.file.write_all(&json)?;
                open.file
                    .set_len(u64::try_from(json.len()).unwrap_or(u64::MAX))?;
                Ok(json)
            });
        match written {
            Ok(json) => open.last = Some((json, doc.clone())),
            Err(e) => tracing::warn!(
                file = %self.ledger.path.display(),
                error = %e,
                "cannot write the pacing ledger; other processes do not see this one's requests"
            ),
        }
    }
}

/// The file's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Doc {
    #[serde(rename = "v")]
    version: u32,
    /// identity → bucket name → entry.
    #[serde(default)]
    ids: BTreeMap<String, BTreeMap<String, Entry>>,
}

impl Default for Doc {
    fn default() -> Self {
        Self {
            version: VERSION,
            ids: BTreeMap::new(),
        }
    }
}

/// One bucket of one identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The window (ms) the writer paces this bucket with: how long its times matter.
    #[serde(default)]
    pub(crate) w: u64,
    /// `(Unix ms, count)`.
    #[serde(default)]
    pub(crate) t: Vec<(u64, u32)>,
    /// Paused until (Unix ms; 0: not paused).
    #[serde(default)]
    pub(crate) p: u64,
}

impl Doc {
    /// A document from its bytes (a fleet store's copy), or what is wrong with them.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_BYTES {
            return Err(format!("larger than {MAX_BYTES} bytes"));
        }
        match serde_json::from_slice::<Doc>(bytes) {
            Ok(doc) if doc.version == VERSION => Ok(doc),
            Ok(doc) => Err(format!(
                "version {} (this ibauth writes {VERSION})",
                doc.version
            )),
            Err(e) => Err(format!("not a ledger: {e}")),
        }
    }

    pub(crate) fn entry(&self, identity: &str, bucket: &str) -> Option<&Entry> {
        self.ids.get(identity)?.get(bucket)
    }

    pub(crate) fn set(&mut self, identity: &str, bucket: &str, entry: Entry) {
        self.ids
            .entry(identity.to_owned())
            .or_default()
            .insert(bucket.to_owned(), entry);
    }

    /// Drops what no longer matters to anyone: times out of their window, ended pauses, empty
    /// buckets and identities.
    pub(crate) fn prune(&mut self, now: u64) {
        for buckets in self.ids.values_mut() {
            for entry in buckets.values_mut() {
                let w = entry.w.min(MAX_WINDOW_MS);
                entry.t.retain(|&(t, n)| n > 0 && t.saturating_add(w) > now);
                if entry.p <= now {
                    entry.p = 0;
                }
            }
            buckets.retain(|_, e| !e.t.is_empty() || e.p > 0);
        }
        self.ids.retain(|_, b| !b.is_empty());
    }
}

impl Entry {
    /// The times, made safe to use: sorted, equal times added up, none later than `latest`
    /// (a hostile or stale file cannot push anyone's turn further out than that).
    pub(crate) fn clean_times(&self, latest: u64) -> Vec<(u64, u32)> {
        let mut times: Vec<(u64, u32)> = self
            .t
            .iter()
            .filter(|&&(_, n)| n > 0)
            .map(|&(t, n)| (t.min(latest), n))
            .collect();
        times.sort_unstable_by_key(|&(t, _)| t);
        times.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                kept.1 = kept.1.saturating_add(later.1);
                true
            } else {
                false
            }
        });
        times
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("ibauth-pacing-{name}-{}", std::process::id()))
            .join("state");
        let _ = fs::remove_dir_all(dir.parent().unwrap());
        dir.join("tokens.json.pacing")
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_in_a_private_folder() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("private");
        let ledger = PaceLedger::beside(path.with_extension(""), "me").unwrap();
        assert_eq!(ledger.path(), path);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[cfg(unix)]
    #[test]
    fn the_open_file_is_kept_only_while_the_path_still_names_it() {
        let path = temp("kept");
        let ledger = PaceLedger::open(&path, "me").unwrap();
        let mut doc = Doc::default();
        doc.set(
            "me",
            "global",
            Entry {
                w: 1_000,
                t: vec![(5, 1)],
                p: 0,
            },
        );
        {
            let mut locked = ledger.try_lock().unwrap().unwrap();
            locked.read();
            locked.write(&doc);
        }
        // Another process rewrote it: read afresh, not this process's copy.
        let mut other = doc.clone();
        other.set(
            "me",
            "global",
            Entry {
                w: 1_000,
                t: vec![(5, 1), (6, 1)],
                p: 0,
            },
        );
        fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(ledger.try_lock().unwrap().unwrap().read(), other);
        // Replaced by a link to someone else's file: opened afresh, and refused.
        let elsewhere = path.with_file_name("elsewhere");
        fs::write(&elsewhere, b"keep").unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(ledger.try_lock().is_err(), "not followed");
        assert_eq!(fs::read(&elsewhere).unwrap(), b"keep");
        // A clone takes turns with the original on the one open file.
        fs::remove_file(&path).unwrap();
        let first = ledger.try_lock().unwrap().unwrap();
        assert!(ledger.clone().try_lock().unwrap().is_none(), "held");
        drop(first);
        assert!(ledger.clone().try_lock().unwrap().is_some());
    }

    #[test]
    fn a_document_round_trips_and_prunes() {
        let path = temp("roundtrip");
        let ledger = PaceLedger::open(&path, "me").unwrap();
        let mut locked = ledger.try_lock().unwrap().unwrap();
        assert_eq!(locked.read(), Doc::default(), "a new file reads as empty");
        let mut doc = Doc::default();
        doc.set(
            "me",
            "global",
            Entry {
                w: 100,
                t: vec![(1000, 1), (1050, 2)],
                p: 0,
            },
        );
        doc.set(
            "me",
            "GET /tickle",
            Entry {
                w: 10,
                t: vec![(1000, 1)],
                p: 0,
            },
        );
        doc.set(
            "other",
            "global",
            Entry {
                w: 10,
                t: vec![],
                p: 2000,
            },
        );
        locked.write(&doc);
        drop(locked);
        let mut locked = ledger.try_lock().unwrap().unwrap();
        let mut back = locked.read();
        assert_eq!(back, doc);
        back.prune(1100);
        assert_eq!(back.entry("me", "global").unwrap().t, vec![(1050, 2)]);
        assert!(back.entry("me", "GET /tickle").is_none());
        assert_eq!(back.entry("other", "global").unwrap().p, 2000);
        back.prune(2000);
        assert!(back.entry("other", "global").is_none());
        // A shorter document truncates the longer one.
        locked.write(&Doc::default());
        drop(locked);
        assert_eq!(fs::read_to_string(&path).unwrap(), r#"{"v":1,"ids":{}}"#);
    }

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let path = temp("lock");
        let a = PaceLedger::open(&path, "a").unwrap();
        let b = PaceLedger::open(&path, "b").unwrap();
        let held = a.try_lock().unwrap();
        assert!(held.is_some());
        assert!(b.try_lock().unwrap().is_none(), "held elsewhere");
        drop(held);
        assert!(b.try_lock().unwrap().is_some());
    }

    #[test]
    fn corrupt_foreign_and_oversized_files_read_as_empty() {
        let path = temp("corrupt");
        let ledger = PaceLedger::open(&path, "me").unwrap();
        let big = format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(MAX_BYTES as usize));
        for junk in [
            "{\"v\":1,\"ids\":{\"me\":{\"global\":{\"t\":[[1,",
            "\u{0}\u{1}binary",
            "{\"v\":99,\"ids\":{}}",
            "{\"v\":1,\"ids\":{\"me\":{\"global\":{\"t\":[[-5,1]]}}}}",
            "[]",
            &big,
        ] {
            fs::write(&path, junk).unwrap();
            let mut locked = ledger.try_lock().unwrap().unwrap();
            assert_eq!(
                locked.read(),
                Doc::default(),
                "{}",
                &junk[..junk.len().min(40)]
            );
        }
    }

    #[test]
    fn clean_times_sorts_merges_and_clamps() {
        let entry = Entry {
            w: 5,
            t: vec![
                (50, 1),
                (10, 2),
                (u64::MAX, 3),
                (10, 1),
                (20, 0),
                (99, u32::MAX),
            ],
            p: 0,
        };
        assert_eq!(
            entry.clean_times(60),
            vec![(10, 3), (50, 1), (60, u32::MAX)]
        );
    }

    #[test]
    fn an_unusable_folder_is_an_error_that_says_what_to_do() {
        let path = temp("unusable");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A folder where the file should be.
        fs::create_dir_all(&path).unwrap();
        let err = PaceLedger::open(&path, "me").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cannot use the pacing ledger"), "{text}");
        assert!(text.contains("is a folder, not a regular file"), "{text}");
        assert!(text.contains("pace in-process only"), "{text}");
    }
}
