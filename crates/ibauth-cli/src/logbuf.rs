//! Log lines on stderr, written in batches by a background thread (the gateway's access log:
//! one line a request would otherwise cost one `write` syscall a request).
//!
//! A line is appended to a buffer; the thread wakes when the buffer stops being empty, waits
//! [`FLUSH_AFTER`] for more lines to gather, and writes them all with one `write`. Lines so
//! reach stderr within a few milliseconds, in order. Nothing is dropped: past [`LIMIT`]
//! pending bytes (stderr slower than the lines come) the caller writes the batch itself,
//! as an unbuffered logger would. [`Guard`]'s drop (the end of `main`) and [`flush`] (before
//! an error line written straight to stderr) write what is pending at once.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// How long the writer waits after the first pending line for others to join it.
pub const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// Pending bytes past which a line's writer flushes the batch itself (backpressure).
pub const LIMIT: usize = 1 << 20;

struct Pending {
    bytes: Vec<u8>,
    /// The writer thread is parked on the condition variable (a line must wake it).
    parked: bool,
    closed: bool,
}

/// The pending lines and the writer thread's wake-up.
pub struct Shared {
    /// Where lines go (stderr), held while writing, taken before `pending`: batches go out
    /// in order.
    out: Mutex<Box<dyn std::io::Write + Send>>,
    pending: Mutex<Pending>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Writes what is pending (and `extra` after it) to stderr now. Write errors are ignored,
    /// as the unbuffered logger ignores them.
    fn flush_with(&self, extra: &[u8]) {
        let mut out = lock(&self.out);
        let batch = std::mem::take(&mut lock(&self.pending).bytes);
        let _ = out.write_all(&batch);
        let _ = out.write_all(extra);
    }

    fn append(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        if pending.closed || pending.bytes.len() + line.len() > LIMIT {
            drop(pending);
            self.flush_with(line);
            return;
        }
        let wake = pending.bytes.is_empty() && pending.parked;
        pending.bytes.extend_from_slice(line);
        drop(pending);
        if wake {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut batch = Vec::new();
        loop {
            let mut pending = lock(&self.pending);
            while pending.bytes.is_empty() && !pending.closed {
                pending.parked = true;
                pending = self
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
                pending.parked = false;
            }
            if pending.closed {
                return;
            }
            drop(pending);
            std::thread::sleep(FLUSH_AFTER);
            let mut out = lock(&self.out);
            std::mem::swap(&mut batch, &mut lock(&self.pending).bytes);
            let _ = out.write_all(&batch);
            batch.clear();
            // A burst's buffer is kept for the next one, but not a huge one.
            if batch.capacity() > 64 * 1024 {
                batch = Vec::new();
            }
        }
    }
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Starts the writer thread; `None` if it cannot be started (then log lines go straight to
/// stderr).
pub fn start() -> Option<Guard> {
    let guard = Guard::new(Box::new(std::io::stderr()))?;
    SHARED.set(Arc::clone(&guard.shared)).ok()?;
    Some(guard)
}

/// Writes the pending lines now (before writing to stderr directly, so lines stay in order).
pub fn flush() {
    if let Some(shared) = SHARED.get() {
        shared.flush_with(&[]);
    }
}

/// Flushes and stops the writer thread when dropped; later lines are written directly.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Guard {
    fn new(out: Box<dyn std::io::Write + Send>) -> Option<Self> {
        let shared = Arc::new(Shared {
            out: Mutex::new(out),
            pending: Mutex::new(Pending {
                bytes: Vec::new(),
                parked: false,
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ibauth-log".into())
            .stack_size(64 * 1024)
            .spawn(move || worker.run())
            .ok()?;
        Some(Self {
            shared,
            thread: Some(thread),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.flush_with(&[]);
    }
}

/// Where tracing's lines go: straight to stderr, or through the batching writer.
#[derive(Clone)]
pub enum Sink {
    Stderr,
    Batched,
}

/// One line's writer ([`Sink`]'s).
pub enum SinkWriter {
    Stderr(std::io::Stderr),
    Batched(&'static Shared),
}

impl std::io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Stderr(e) => e.write(buf),
            Self::Batched(shared) => {
                shared.append(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Stderr(e) => e.flush(),
            Self::Batched(_) => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        match (self, SHARED.get()) {
            (Self::Batched, Some(shared)) => SinkWriter::Batched(shared),
            _ => SinkWriter::Stderr(std::io::stderr()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A writer into a shared Vec that counts its `write` calls.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<(Vec<u8>, usize)>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut c = lock(&self.0);
            c.0.extend_from_slice(buf);
            c.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(n: usize, from: usize) -> Vec<String> {
        (from..from + n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn lines_arrive_promptly_in_order_in_few_writes() {
        let capture = Capture::default();
        let guard = Guard::new(Box::new(capture.clone())).unwrap();
        let sent = lines(1000, 0);
        for line in &sent {
            guard.shared.append(line.as_bytes());
        }
        let started = Instant::now();
        while lock(&capture.0).0.len() < sent.concat().len() {
            assert!(started.elapsed() < Duration::from_secs(2), "lines late");
            std::thread::sleep(Duration::from_millis(1));
        }
        let (bytes, writes) = lock(&capture.0).clone();
        assert_eq!(String::from_utf8(bytes).unwrap(), sent.concat());
        assert!(writes < 100, "{writes} writes for 1000 lines");
        drop(guard);
    }

    #[test]
    fn everything_pending_is_written_at_the_end_and_after_it() {
        let capture = Capture::default();
        let guard = Guard::new(Box::new(capture.clone())).unwrap();
        let shared = Arc::clone(&guard.shared);
        let sent = lines(10, 0);
        for line in &sent {
            shared.append(line.as_bytes());
        }
        drop(guard);
        assert_eq!(lock(&capture.0).0, sent.concat().into_bytes());
        // After the guard: written straight through.
        shared.append(b"late\n");
        assert!(lock(&capture.0).0.ends_with(b"line 9\nlate\n"));
    }

    #[test]
    fn past_the_limit_nothing_is_dropped_and_order_holds() {
        let capture = Capture::default();
        let guard = Guard::new(Box::new(capture.clone())).unwrap();
        let line = vec![b'x'; 4095];
        let mut expected = Vec::new();
        // 3 MiB in well under FLUSH_AFTER: the caller writes batches itself past 1 MiB.
        for i in 0..768 {
            let mut l = format!("{i:06}").into_bytes();
            l.extend_from_slice(&line[6..]);
            l.push(b'\n');
            guard.shared.append(&l);
            expected.extend_from_slice(&l);
        }
        drop(guard);
        assert_eq!(lock(&capture.0).0, expected);
    }
}
