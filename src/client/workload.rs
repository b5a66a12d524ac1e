//! The two built-in workloads (`download-and-delete`, `leave-on-server`)
//! that `demo` and the tests drive through the proxy, and what they report.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ClientError, Pop3Client, trim_eol};
use crate::secret::Secret;

/// The value of the first `Message-ID:` header (name matched
/// case-insensitively, folded lines unfolded, value trimmed), looking only
/// at the header section; `None` if absent or empty.
pub fn extract_message_id(content: &[u8]) -> Option<String> {
    let mut value: Option<Vec<u8>> = None;
    for line in content.split_inclusive(|&b| b == b'\n') {
        let line = trim_eol(line);
        if line.is_empty() {
            break; // end of the header section
        }
        let folded = matches!(line.first(), Some(b' ') | Some(b'\t'));
        match (&mut value, folded) {
            // A continuation of the Message-ID header.
            (Some(v), true) => {
                v.push(b' ');
                v.extend_from_slice(line);
            }
            // The header we wanted has ended.
            (Some(_), false) => break,
            (None, false) => {
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    if line[..colon].trim_ascii().eq_ignore_ascii_case(b"message-id") {
                        value = Some(line[colon + 1..].to_vec());
                    }
                }
            }
            (None, true) => {}
        }
    }
    let value = value?;
    let value = String::from_utf8_lossy(value.trim_ascii()).into_owned();
    (!value.is_empty()).then_some(value)
}

/// How a workload treats the maildrop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// RETR n, DELE n for every message, then QUIT; no UIDL. The Exchange
    /// Internet Provider's way (KB Q141343): a session that is rolled back
    /// downloads everything again next time.
    DownloadAndDelete,
    /// UIDL, RETR only unseen UIDs, never DELE, QUIT. The modern way: a
    /// rolled-back session costs nothing.
    LeaveOnServer,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::DownloadAndDelete => "download-and-delete",
            Mode::LeaveOnServer => "leave-on-server",
        })
    }
}

/// Messages a [`Mode::LeaveOnServer`] client leaves on the server; past
/// them it deletes the oldest it has already downloaded.
pub const KEEP_ON_SERVER: usize = 30;

/// Per-user memory of UIDs already downloaded, for [`Mode::LeaveOnServer`].
///
/// Bounded to [`UidMemory::CAPACITY`] entries; beyond that the oldest UID is
/// forgotten (that message would then be downloaded again), which keeps a
/// long run against a hostile server from growing without limit.
#[derive(Default, Clone, Debug)]
pub struct UidMemory {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl UidMemory {
    /// Most UIDs remembered at once.
    pub const CAPACITY: usize = 100_000;

    /// An empty memory.
    pub fn new() -> UidMemory {
        UidMemory::default()
    }

    /// Whether `uid` has been downloaded.
    pub fn contains(&self, uid: &str) -> bool {
        self.seen.contains(uid)
    }

    /// Remembers `uid`; returns false if it was already known.
    pub fn insert(&mut self, uid: String) -> bool {
        if self.seen.contains(&uid) {
            return false;
        }
        if self.order.len() >= Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.seen.insert(uid.clone());
        self.order.push_back(uid);
        true
    }

    /// Number of UIDs remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A message whose full content arrived (its RETR completed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedMessage {
    /// Message number in that session.
    pub number: u32,
    /// Its UID, when the workload asked for UIDs.
    pub uid: Option<String>,
    /// The `Message-ID:` header, if present.
    pub message_id: Option<String>,
    /// SHA-256 of the unstuffed content.
    pub digest: [u8; 32],
    /// Length of the unstuffed content in bytes.
    pub size: usize,
}

impl ReceivedMessage {
    fn new(number: u32, uid: Option<String>, content: &[u8]) -> ReceivedMessage {
        ReceivedMessage {
            number,
            uid,
            message_id: extract_message_id(content),
            digest: Sha256::digest(content).into(),
            size: content.len(),
        }
    }
}

/// What one workload session did, as seen from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    /// The workload mode.
    pub mode: Mode,
    /// The user logged in as.
    pub user: String,
    /// Whether PASS was answered +OK.
    pub logged_in: bool,
    /// Every message whose full content arrived.
    pub received: Vec<ReceivedMessage>,
    /// Message numbers whose DELE was answered +OK.
    pub marked: Vec<u32>,
    /// `None`: QUIT was not sent or not answered (cut, in doubt);
    /// `Some(true)`: +OK; `Some(false)`: -ERR.
    pub quit_ok: Option<bool>,
    /// The first thing that went wrong (Display of the error), if any.
    pub error: Option<String>,
    /// The client's own address (to match the proxy's record of the
    /// session), once connected.
    pub local: Option<SocketAddr>,
}

/// What a workload session does.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// User name for USER.
    pub user: String,
    /// Password for PASS (never logged).
    pub password: Secret,
    /// Which workload.
    pub mode: Mode,
    /// Bound on connect and each read and write.
    pub timeout: Duration,
    /// Most messages to RETR in one session; `None` for all.
    pub max_messages: Option<usize>,
}

/// Runs one workload session against `addr` and reports what happened.
/// Never panics and always returns a report, whatever the server does.
///
/// After a `-ERR` (the connection still answers) the session stops its work
/// and still sends QUIT, as a well-behaved client gives up. After a
/// transport error, timeout or protocol violation it stops at once without
/// QUIT, as a client that lost the line would. `memory` is updated only for
/// messages whose RETR completed.
pub async fn run_session(addr: SocketAddr, cfg: &WorkloadConfig, memory: &mut UidMemory) -> SessionReport {
    let mut report = SessionReport {
        mode: cfg.mode,
        user: cfg.user.clone(),
        logged_in: false,
        received: Vec::new(),
        marked: Vec::new(),
        quit_ok: None,
        error: None,
        local: None,
    };
    let mut client = match Pop3Client::connect_with_timeout(addr, cfg.timeout).await {
        Ok((client, _greeting)) => {
            report.local = client.local_addr().ok();
            client
        }
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    if let Err(e) = work(&mut client, cfg, memory, &mut report).await {
        report.error = Some(e.to_string());
        if !e.connection_usable() {
            tracing::debug!(user = %cfg.user, error = %e, "workload session cut");
            return report;
        }
    }
    match client.quit().await {
        Ok(_) => report.quit_ok = Some(true),
        Err(e) => {
            if matches!(e, ClientError::Err(_)) {
                report.quit_ok = Some(false);
            }
            report.error.get_or_insert_with(|| e.to_string());
        }
    }
    tracing::debug!(
        user = %cfg.user,
        mode = %cfg.mode,
        received = report.received.len(),
        marked = report.marked.len(),
        quit_ok = ?report.quit_ok,
        "workload session ended"
    );
    report
}

/// The body of a session between greeting and QUIT, recording progress in
/// `report` as it goes so that a cut leaves an accurate partial report.
async fn work(
    client: &mut Pop3Client,
    cfg: &WorkloadConfig,
    memory: &mut UidMemory,
    report: &mut SessionReport,
) -> Result<(), ClientError> {
    client.login(&cfg.user, cfg.password.expose()).await?;
    report.logged_in = true;
    let limit = cfg.max_messages.unwrap_or(usize::MAX);
    match cfg.mode {
        Mode::DownloadAndDelete => {
            let (count, _octets) = client.stat().await?;
            for n in (1..=count).take(limit) {
                let content = client.retr(n).await?;
                report.received.push(ReceivedMessage::new(n, None, &content));
                client.dele(n).await?;
                report.marked.push(n);
            }
        }
        Mode::LeaveOnServer => {
            let listing = client.uidl().await?;
            for (n, uid) in &listing {
                if report.received.len() >= limit {
                    break;
                }
                if memory.contains(uid) {
                    continue;
                }
                let content = client.retr(*n).await?;
                report.received.push(ReceivedMessage::new(*n, Some(uid.clone()), &content));
                memory.insert(uid.clone());
            }
            // "Remove from server after a while", as such clients are set
            // up: past KEEP_ON_SERVER messages the oldest already downloaded
            // are deleted, so a mailbox does not grow for ever.
            let excess = listing.len().saturating_sub(KEEP_ON_SERVER);
            for (n, uid) in listing.iter().take(excess) {
                if memory.contains(uid) {
                    client.dele(*n).await?;
                    report.marked.push(*n);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::DEFAULT_TIMEOUT;

    #[test]
    fn message_id_found_case_insensitively_and_trimmed() {
        let msg = b"From: a@b\r\nmessage-id:   <x1@example.org>  \r\nSubject: s\r\n\r\nbody\r\n";
        assert_eq!(extract_message_id(msg).as_deref(), Some("<x1@example.org>"));
        let msg = b"MESSAGE-ID: <y@z>\n\nbody\n";
        assert_eq!(extract_message_id(msg).as_deref(), Some("<y@z>"));
    }

    #[test]
    fn message_id_unfolds_continuation_lines() {
        let msg = b"Message-ID:\r\n <folded@example.org>\r\nSubject: s\r\n\r\n";
        assert_eq!(extract_message_id(msg).as_deref(), Some("<folded@example.org>"));
    }

    #[test]
    fn message_id_absent_empty_or_only_in_body() {
        assert_eq!(extract_message_id(b"Subject: s\r\n\r\nMessage-ID: <no@x>\r\n"), None);
        assert_eq!(extract_message_id(b"Message-ID:   \r\n\r\n"), None);
        assert_eq!(extract_message_id(b""), None);
        assert_eq!(extract_message_id(b"X-Message-ID: <no@x>\r\n\r\n"), None);
    }

    #[test]
    fn uid_memory_is_bounded_fifo() {
        let mut m = UidMemory::new();
        assert!(m.insert("a".into()));
        assert!(!m.insert("a".into()));
        for i in 0..UidMemory::CAPACITY {
            m.insert(format!("u{i}"));
        }
        assert_eq!(m.len(), UidMemory::CAPACITY);
        assert!(!m.contains("a"), "oldest forgotten first");
        assert!(m.contains("u0"));
    }

    #[test]
    fn config_debug_hides_password() {
        let cfg = WorkloadConfig {
            user: "alice".into(),
            password: "hunter2".into(),
            mode: Mode::LeaveOnServer,
            timeout: DEFAULT_TIMEOUT,
            max_messages: None,
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
