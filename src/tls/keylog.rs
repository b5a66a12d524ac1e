//! `--keylog FILE`: TLS secrets in the NSS key log format, for Wireshark.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use super::TlsError;

/// Lines waiting for the writer; past this, lines are dropped and counted.
const QUEUE: usize = 4096;

/// An NSS key log (as `SSLKEYLOGFILE`): one `LABEL <client_random hex>
/// <secret hex>` line per secret, appended to a file created 0600. A
/// handshake only queues its lines: a std thread writes them, so a slow
/// disk or a FIFO with no reader never holds a handshake up. Lines that
/// could not be queued or written are counted, never a panic.
pub struct KeyLogFile {
    path: PathBuf,
    tx: SyncSender<String>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    written: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for KeyLogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path only: never a secret.
        f.debug_struct("KeyLogFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl KeyLogFile {
    /// Opens `path` for appending (created with mode 0600; an existing file
    /// is set to 0600) and starts its writer thread.
    pub fn create(path: &Path) -> Result<KeyLogFile, TlsError> {
        let io = |what, source| TlsError::Io { what, path: path.to_path_buf(), source };
        let mut file =
            fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path).map_err(|e| io("open", e))?;
        // An existing file keeps its mode through open: secrets must not be
        // readable by others either way. A FIFO or device is left as it is.
        let meta = file.metadata().map_err(|e| io("open", e))?;
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| io("set the mode of", e))?;
        }
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("popfault-keylog".into())
            .spawn(move || {
                // Ends when the KeyLogFile (the only sender) is dropped.
                for line in rx {
                    match file.write_all(line.as_bytes()) {
                        Ok(()) => c.written.fetch_add(1, Ordering::Relaxed),
                        Err(_) => c.failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
            .map_err(|e| io("start a writer for", e))?;
        Ok(KeyLogFile { path: path.to_path_buf(), tx, counts })
    }

    /// Where the lines go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.counts.written.load(Ordering::Relaxed)
    }

    /// Lines lost so far: dropped on a full queue or failed to write.
    pub fn errors(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line = String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        hex(&mut line, client_random);
        line.push(' ');
        hex(&mut line, secret);
        line.push('\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Appends `bytes` as lower-case hex.
fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}
