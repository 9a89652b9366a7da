//! What the fuzz targets share: a private scratch folder for parsers that read files, a
//! runtime for the async ones, an in-memory socket, and fixed test keys.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A folder of this process's own, mode 0700 (the token file and the ledger insist on one).
pub fn scratch(target: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ibauth-fuzz-{target}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).expect("scratch folder");
        dir
    })
}

/// Replaces `path` with `bytes`, mode 0600 (as ibauth writes its own files).
pub fn write_private(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).expect("scratch file");
    file.write_all(bytes).expect("scratch write");
}

/// One current-thread runtime per process (timers enabled, no I/O driver needed).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// A socket whose peer sends `data` (at most `chunk` bytes per read, then end of stream) and
/// reads everything written to it.
pub struct Peer {
    data: Vec<u8>,
    at: usize,
    chunk: usize,
    /// Bytes the client wrote (pongs, close frames).
    pub written: usize,
}

impl Peer {
    pub fn new(data: &[u8], chunk: usize) -> Self {
        Self {
            data: data.to_vec(),
            at: 0,
            chunk: chunk.max(1),
            written: 0,
        }
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let end = self
            .data
            .len()
            .min(self.at + self.chunk.min(buf.remaining()));
        let at = self.at;
        buf.put_slice(&self.data[at..end]);
        self.at = end;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Peer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written += buf.len();
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A fixed 2048-bit RSA key (generated once per process).
pub fn key() -> &'static ibauth::SigningKey {
    static KEY: OnceLock<ibauth::SigningKey> = OnceLock::new();
    KEY.get_or_init(|| ibauth::SigningKey::generate().expect("key"))
}
