//! The file store: one JSON document (an entry per identity), written atomically (temp file in the same folder, fsync,
//! rename, fsync of the folder), mode 0600 in a 0700 folder; an advisory lock on a sibling
//! `.lock` file; a file others can read is refused; a corrupt one is moved aside, never deleted.
//! On every open the file and its lock must be regular files of this user's, opened without
//! following a symbolic link, in a folder others cannot write to ([`crate::private_file`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use super::{SCHEMA_VERSION, StoreError, StoreLock, StoredTokens, TokenStore};
use crate::private_file::{self, Refusal};

/// Tokens in a file (the default store).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    /// How many locks this process holds through this store (a corrupt file is moved aside
    /// only under the lock, so two processes never move each other's fresh file).
    holding: Arc<AtomicUsize>,
}

/// The default token file: `$XDG_STATE_HOME/ibauth/tokens.json` (else
/// `~/.local/state/ibauth/tokens.json`) on Linux, `~/Library/Caches/ibauth/tokens.json` on
/// macOS, `%LOCALAPPDATA%\ibauth\tokens.json` on Windows. `None` without a home folder.
pub fn default_token_file() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = if cfg!(target_os = "macos") {
        var("HOME").map(|h| h.join("Library/Caches"))
    } else if cfg!(windows) {
        var("LOCALAPPDATA")
    } else {
        var("XDG_STATE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| h.join(".local/state")))
    }?;
    Some(base.join("ibauth").join("tokens.json"))
}

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

impl FileStore {
    /// A store at `path` (nothing is touched until used).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            holding: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_path(&self) -> PathBuf {
        self.sibling(".lock", false)
    }

    fn sibling(&self, suffix: &str, hidden: bool) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tokens.json".into());
        let name = if hidden {
            format!(".{name}{suffix}")
        } else {
            format!("{name}{suffix}")
        };
        self.path.with_file_name(name)
    }

    fn folder(&self) -> PathBuf {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Creates the folder (0700) when missing, then checks it as [`Self::check_folder`] does.
    fn ensure_folder(&self) -> Result<(), StoreError> {
        let folder = self.folder();
        if !folder.is_dir() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(&folder)
                .map_err(io(&folder, "create the folder"))?;
        }
        self.check_folder()
    }

    /// The folder must not let other users replace the file: checked at every use, since
    /// someone may have loosened it after ibauth created it.
    fn check_folder(&self) -> Result<(), StoreError> {
        let folder = self.folder();
        private_file::check_folder(&folder).map_err(|refusal| match refusal {
            Refusal::Io(source) => io(&folder, "inspect the folder")(source),
            other => self.refused(&folder, other),
        })
    }

    /// Opens `path` (the token file or its lock) as [`private_file::open`] allows.
    fn open_private(&self, path: &Path, options: &mut OpenOptions) -> Result<File, StoreError> {
        private_file::open(path, options).map_err(|refusal| self.refused(path, refusal))
    }

    fn refused(&self, path: &Path, refusal: Refusal) -> StoreError {
        let path = path.to_owned();
        match refusal {
            Refusal::Io(source) => StoreError::Io {
                path,
                action: "open",
                source,
            },
            Refusal::NotRegular(kind) => StoreError::NotRegular { path, kind },
            Refusal::Owner { uid, expected } => StoreError::ForeignOwner {
                path,
                uid,
                expected,
            },
            problem @ (Refusal::FolderWritable { .. } | Refusal::FolderOwner { .. }) => {
                StoreError::UnsafeFolder {
                    path,
                    problem: problem.to_string(),
                }
            }
        }
    }

    /// Moves a corrupt file aside (kept for inspection) and says where.
    fn move_aside(&self, why: &str) {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let aside = self.sibling(&format!(".corrupt-{stamp}"), false);
        match fs::rename(&self.path, &aside) {
            Ok(()) => tracing::warn!(
                file = %self.path.display(),
                kept_as = %aside.display(),
                "token file is corrupt ({why}); moved aside, logging in again"
            ),
            Err(e) => tracing::warn!(
                file = %self.path.display(),
                error = %e,
                "token file is corrupt ({why}) and cannot be moved aside"
            ),
        }
    }

    /// Removes temp files left by writers that died mid-save.
    fn sweep_temp_files(&self) {
        let prefix = self
            .sibling(".tmp-", true)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(entries) = fs::read_dir(self.folder()) else {
            return;
        };
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
            if stale && entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(unix)]
fn check_private(path: &Path, file: &File) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file
        .metadata()
        .map_err(io(path, "inspect"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(StoreError::Exposed {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &File) -> Result<(), StoreError> {
    Ok(())
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The file: one entry per identity (schema 2). Schema 1 held a single document at the top.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Entries {
    schema: u32,
    #[serde(default)]
    sessions: std::collections::BTreeMap<String, StoredTokens>,
}

impl FileStore {
    /// Every document in the file, without changing anything: a corrupt file is
    /// [`StoreError::Corrupt`] here (for diagnostics), where loading would move it aside.
    pub fn inspect(&self) -> Result<Vec<StoredTokens>, StoreError> {
        match self.parse_entries()? {
            Ok(entries) => Ok(entries.sessions.into_values().collect()),
            Err(problem) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                problem,
            }),
        }
    }

    /// Every entry in the file; an absent file is empty, a corrupt one is reported (and moved
    /// aside when this process holds the lock) and read as empty.
    fn read_entries(&self) -> Result<Entries, StoreError> {
        let problem = match self.parse_entries()? {
            Ok(entries) => return Ok(entries),
            Err(problem) => problem,
        };
        if self.holding.load(Ordering::SeqCst) > 0 {
            self.move_aside(&problem);
        } else {
            tracing::warn!(
                file = %self.path.display(),
                "token file is corrupt ({problem}); it is replaced at the next login"
            );
        }
        Ok(Entries::default())
    }

    /// [`Self::check_folder`], when the folder exists (reading an absent store is no error).
    fn check_folder_if_present(&self) -> Result<(), StoreError> {
        match self.check_folder() {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(())
            }
            other => other,
        }
    }

    /// The entries, or what makes the file unreadable as a token document.
    fn parse_entries(&self) -> Result<Result<Entries, String>, StoreError> {
        self.check_folder_if_present()?;
        let mut file = match self.open_private(&self.path, OpenOptions::new().read(true)) {
            Ok(f) => f,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Ok(Entries::default()));
            }
            Err(e) => return Err(e),
        };
        check_private(&self.path, &file)?;
        let mut text = String::new();
        let read = std::io::Read::read_to_string(&mut file, &mut text);
        let problem = match read {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => "not UTF-8".to_owned(),
            Err(e) => return Err(io(&self.path, "read")(e)),
            Ok(_) => match serde_json::from_str::<serde_json::Value>(&text) {
                Err(e) => format!("not JSON: {e}"),
                Ok(value) => {
                    let schema = value.get("schema").and_then(serde_json::Value::as_u64);
                    match schema {
                        Some(found) if found > u64::from(SCHEMA_VERSION) => {
                            return Err(StoreError::NewerSchema {
                                path: self.path.clone(),
                                found: u32::try_from(found).unwrap_or(u32::MAX),
                                supported: SCHEMA_VERSION,
                            });
                        }
                        // Schema 1: one document, which becomes the entry of its identity.
                        Some(1) => match serde_json::from_value::<StoredTokens>(value) {
                            Ok(tokens) => {
                                let mut entries = Entries::default();
                                entries.sessions.insert(tokens.identity.clone(), tokens);
                                return Ok(Ok(entries));
                            }
                            Err(e) => format!("not a token document: {e}"),
                        },
                        _ => match serde_json::from_value::<Entries>(value) {
                            Ok(entries) => return Ok(Ok(entries)),
                            Err(e) => format!("not a token document: {e}"),
                        },
                    }
                }
            },
        };
        Ok(Err(problem))
    }

    fn write_entries(&self, mut entries: Entries) -> Result<(), StoreError> {
        if entries.sessions.is_empty() {
            return match fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(&self.path, "remove")(e)),
            };
        }
        entries.schema = SCHEMA_VERSION;
        self.ensure_folder()?;
        let json = serde_json::to_vec_pretty(&entries)
            .map_err(|e| StoreError::Other(format!("cannot encode the token document: {e}")))?;
        let temp = self.sibling(
            &format!(".tmp-{}-{}", std::process::id(), random_suffix()),
            true,
        );
        let write = || -> std::io::Result<()> {
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temp)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)?;
            // The rename itself must reach the disk, or a crash could bring back the old file.
            #[cfg(unix)]
            File::open(self.folder())?.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&temp);
            return Err(io(&self.path, "write")(e));
        }
        self.sweep_temp_files();
        Ok(())
    }
}

impl TokenStore for FileStore {
    fn load(&self, identity: &str) -> Result<Option<StoredTokens>, StoreError> {
        Ok(self.read_entries()?.sessions.remove(identity))
    }

    fn load_all(&self) -> Result<Vec<StoredTokens>, StoreError> {
        Ok(self.read_entries()?.sessions.into_values().collect())
    }

    fn save(&self, tokens: &StoredTokens) -> Result<(), StoreError> {
        let mut entries = self.read_entries()?;
        entries
            .sessions
            .insert(tokens.identity.clone(), tokens.clone());
        self.write_entries(entries)
    }

    fn clear(&self, identity: &str) -> Result<(), StoreError> {
        let mut entries = self.read_entries()?;
        if entries.sessions.remove(identity).is_none() {
            return Ok(());
        }
        self.write_entries(entries)
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        self.ensure_folder()?;
        let lock_path = self.lock_path();
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = self.open_private(&lock_path, &mut options)?;
        // The lock holds no secret, but a lock file others can open is one they can hold
        // (flock needs only read access) and so stop every login: make ours private again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file
                .metadata()
                .map_err(io(&lock_path, "inspect"))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                file.set_permissions(fs::Permissions::from_mode(0o600))
                    .map_err(io(&lock_path, "make private"))?;
            }
        }
        file.lock().map_err(io(&lock_path, "lock"))?;
        self.holding.fetch_add(1, Ordering::SeqCst);
        struct Held {
            _file: File,
            holding: Arc<AtomicUsize>,
        }
        impl Drop for Held {
            fn drop(&mut self) {
                // Closing the file releases the lock.
                self.holding.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(StoreLock::new(Held {
            _file: file,
            holding: self.holding.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoredBearer, StoredTokens};
    use secrecy::SecretString;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("ibauth-store-{name}-{}", std::process::id()))
            .join("state");
        let _ = fs::remove_dir_all(dir.parent().unwrap());
        dir.join("tokens.json")
    }

    fn doc(n: u64) -> StoredTokens {
        let mut t = StoredTokens::new("oauth2", "id".into(), "https://api.ibkr.com/".into(), n);
        t.bearer = Some(StoredBearer {
            token: SecretString::from(format!("bearer-{n}")),
            ip: std::net::Ipv4Addr::LOCALHOST,
            obtained_at: n,
            expires_at: n + 100,
        });
        t
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn saves_privately_and_loads_back() {
        let path = temp("save");
        let store = FileStore::new(&path);
        assert!(store.load("id").unwrap().is_none());
        store.save(&doc(1)).unwrap();
        store.save(&doc(2)).unwrap();
        assert_eq!(store.load("id").unwrap(), Some(doc(2)));
        #[cfg(unix)]
        {
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        store.clear("id").unwrap();
        assert!(store.load("id").unwrap().is_none());
        assert!(!path.exists(), "the last entry gone, the file goes");
        store.clear("id").unwrap();
    }

    #[test]
    fn one_entry_per_identity() {
        let path = temp("entries");
        let store = FileStore::new(&path);
        let mut other = doc(5);
        other.identity = "other".into();
        other.method = "oauth1a".into();
        store.save(&doc(1)).unwrap();
        store.save(&other).unwrap();
        store.save(&doc(2)).unwrap();
        assert_eq!(store.load("id").unwrap(), Some(doc(2)));
        assert_eq!(store.load("other").unwrap(), Some(other.clone()));
        assert_eq!(store.load_all().unwrap().len(), 2);
        store.clear("id").unwrap();
        assert_eq!(store.load("id").unwrap(), None);
        assert_eq!(store.load("other").unwrap(), Some(other));
    }

    #[test]
    fn a_schema_1_file_is_read_as_its_one_entry() {
        let path = temp("schema1");
        let store = FileStore::new(&path);
        store.save(&doc(1)).unwrap();
        let mut old = serde_json::to_value(doc(7)).unwrap();
        old["schema"] = serde_json::json!(1);
        fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(store.load("id").unwrap().map(|d| d.created_at), Some(7));
        store.save(&doc(8)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"schema\": 2"), "{text}");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp("exposed");
        let store = FileStore::new(&path);
        store.save(&doc(1)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.load("id").unwrap_err();
        assert!(matches!(err, StoreError::Exposed { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("bearer-1"));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_under_the_lock_only() {
        let path = temp("corrupt");
        let store = FileStore::new(&path);
        store.save(&doc(1)).unwrap();
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() / 2]).unwrap();
        // Without the lock: reported, left in place.
        assert!(store.load("id").unwrap().is_none());
        assert!(path.exists());
        // Under the lock: moved aside, kept.
        let guard = store.lock().unwrap();
        assert!(store.load("id").unwrap().is_none());
        drop(guard);
        assert!(!path.exists());
        let kept: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(fs::read(kept[0].path()).unwrap(), &full[..full.len() / 2]);
        // And the next save starts afresh.
        store.save(&doc(3)).unwrap();
        assert_eq!(store.load("id").unwrap(), Some(doc(3)));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let path = temp("newer");
        let store = FileStore::new(&path);
        store.save(&doc(1)).unwrap();
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"schema\": 2", "\"schema\": 9");
        fs::write(&path, text).unwrap();
        let err = store.load("id").unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 9, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade ibauth"));
        assert!(path.exists(), "not moved: a newer ibauth still needs it");
    }

    #[test]
    fn the_lock_excludes_other_holders_until_dropped() {
        let path = temp("lock");
        let store = FileStore::new(&path);
        let guard = store.lock().unwrap();
        let other = FileStore::new(&path);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _g = other.lock().unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "a second holder waits"
        );
        drop(guard);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the lock is released on drop");
        waiter.join().unwrap();
    }
}
