//! The mail store and its ledger: what was delivered, what is left, and
//! every expunge with the session that did it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use super::message;
use crate::secret::Secret;

/// How the embedded server's maildrop is populated.
/// Its `Debug` shows everything but the password.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ServerConfig {
    /// Number of mailboxes, named `user1` … `userN`.
    pub users: usize,
    /// Messages generated into each mailbox at start.
    pub messages: usize,
    /// Approximate size of each generated message, in octets.
    pub size: usize,
    /// The password of every user (USER/PASS, APOP and AUTH PLAIN).
    pub password: Secret,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { users: 3, messages: 20, size: 2048, password: "secret".into() }
    }
}

/// One message as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The mailbox it was delivered to.
    pub user: String,
    /// Its UIDL unique-id, stable for the life of the store (`user1-000001`).
    pub uid: String,
    /// Its `Message-ID` header value, angle brackets included.
    pub message_id: String,
    /// Its size in octets with CRLF line endings, as LIST and STAT report it.
    pub size: usize,
    /// The message text, CRLF line endings, not dot-stuffed. Shared, since
    /// every session snapshot holds a reference.
    pub content: Arc<[u8]>,
}

/// One expunged message: the permanent record of a POP3 UPDATE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// Position in the ledger, from 1, strictly increasing.
    pub seq: u64,
    /// The mailbox it was deleted from.
    pub user: String,
    /// Its UIDL unique-id.
    pub uid: String,
    /// Its `Message-ID`.
    pub message_id: String,
    /// The server session number whose QUIT expunged it.
    pub session: u64,
    /// Wall-clock time of the expunge.
    pub at: SystemTime,
}

/// Shared, cloneable handle to the mail store and its ledger.
///
/// All methods take the internal lock briefly and never across an `.await`.
#[derive(Clone)]
pub struct Maildrop {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    size: usize,
    password: String,
    mailboxes: Vec<Mailbox>,
    delivered: Vec<StoredMessage>,
    ledger: Vec<LedgerEntry>,
    sessions: u64,
}

struct Mailbox {
    user: String,
    messages: Vec<StoredMessage>,
    /// Number of the next delivered message, from 1; feeds the UID.
    next: u64,
    /// Held by the one live session in TRANSACTION state, if any.
    locked: bool,
}

impl Inner {
    fn mailbox(&mut self, user: &str) -> Option<&mut Mailbox> {
        self.mailboxes.iter_mut().find(|m| m.user == user)
    }

    fn deliver(&mut self, user: &str, content: impl FnOnce(u64) -> Vec<u8>) -> Option<String> {
        let mailbox = self.mailbox(user)?;
        let n = mailbox.next;
        mailbox.next += 1;
        let content = content(n);
        let uid = message::uid(user, n);
        let (message_id, content) = match message::header_value(&content, "Message-ID") {
            Some(id) if !id.is_empty() => (id, content),
            // Without a Message-ID nobody downstream could tell copies apart, so give it one.
            _ => {
                let id = message::message_id(user, n);
                let mut with_id = format!("Message-ID: {id}\r\n").into_bytes();
                with_id.extend_from_slice(&content);
                (id, with_id)
            }
        };
        let stored = StoredMessage {
            user: user.to_string(),
            uid: uid.clone(),
            message_id,
            size: content.len(),
            content: content.into(),
        };
        mailbox.messages.push(stored.clone());
        self.delivered.push(stored);
        Some(uid)
    }
}

impl Maildrop {
    /// A store with users `user1` … `userN`, each holding `cfg.messages`
    /// generated messages of about `cfg.size` octets.
    pub fn new(cfg: &ServerConfig) -> Maildrop {
        let mailboxes = (1..=cfg.users)
            .map(|i| Mailbox { user: format!("user{i}"), messages: Vec::new(), next: 1, locked: false })
            .collect();
        let maildrop = Maildrop {
            inner: Arc::new(Mutex::new(Inner {
                size: cfg.size,
                password: cfg.password.expose().to_string(),
                mailboxes,
                delivered: Vec::new(),
                ledger: Vec::new(),
                sessions: 0,
            })),
        };
        for user in maildrop.users() {
            for _ in 0..cfg.messages {
                maildrop.generate_message(&user);
            }
        }
        maildrop
    }

    /// Delivers new mail. Bare LFs become CRLF; a message without a
    /// `Message-ID` header gets one prepended. Returns its UID, or `None`
    /// if there is no such user. Sessions already logged in do not see it
    /// (RFC 1939 numbers are fixed for a session).
    pub fn add_message(&self, user: &str, content: Vec<u8>) -> Option<String> {
        let content = message::normalize_crlf(&content);
        self.lock().deliver(user, |_| content)
    }

    /// Delivers a freshly generated message of the configured size and
    /// returns its UID, or `None` if there is no such user.
    pub fn generate_message(&self, user: &str) -> Option<String> {
        let mut inner = self.lock();
        let size = inner.size;
        inner.deliver(user, |n| message::generate(user, n, size))
    }

    /// The messages still in `user`'s mailbox (not expunged), in delivery
    /// order; empty for an unknown user.
    pub fn remaining(&self, user: &str) -> Vec<StoredMessage> {
        self.lock().mailbox(user).map(|m| m.messages.clone()).unwrap_or_default()
    }

    /// Every message ever delivered, all users, in delivery order.
    pub fn delivered(&self) -> Vec<StoredMessage> {
        self.lock().delivered.clone()
    }

    /// Every expunge so far, in order.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.lock().ledger.clone()
    }

    /// The user names, in creation order.
    pub fn users(&self) -> Vec<String> {
        self.lock().mailboxes.iter().map(|m| m.user.clone()).collect()
    }

    /// The password every user logs in with.
    pub fn password(&self) -> String {
        self.lock().password.clone()
    }

    /// Changes the password for logins from now on.
    pub fn set_password(&self, password: impl Into<String>) {
        self.lock().password = password.into();
    }

    /// Whether a live session holds `user`'s mailbox.
    pub fn is_locked(&self, user: &str) -> bool {
        self.lock().mailbox(user).is_some_and(|m| m.locked)
    }

    /// How many server sessions have been numbered so far (the last
    /// session number handed out).
    pub fn sessions_started(&self) -> u64 {
        self.lock().sessions
    }

    /// Hands out the next server session number: 1, 2, 3, … per store, so
    /// ledger entries name sessions unambiguously even across servers.
    pub(crate) fn next_session(&self) -> u64 {
        let mut inner = self.lock();
        inner.sessions += 1;
        inner.sessions
    }

    /// Compares a candidate password without leaking where it differs.
    pub(crate) fn check_password(&self, candidate: &[u8]) -> bool {
        let inner = self.lock();
        let expected = inner.password.as_bytes();
        expected.len() == candidate.len() && expected.iter().zip(candidate).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Locks `user`'s mailbox and snapshots its messages, atomically, so no
    /// expunge can slip between the two.
    pub(crate) fn open(&self, user: &str) -> Result<(MailboxLock, Vec<StoredMessage>), OpenError> {
        let mut inner = self.lock();
        let mailbox = inner.mailbox(user).ok_or(OpenError::NoSuchUser)?;
        if mailbox.locked {
            return Err(OpenError::Locked);
        }
        mailbox.locked = true;
        let snapshot = mailbox.messages.clone();
        Ok((MailboxLock { maildrop: self.clone(), user: user.to_string() }, snapshot))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The store stays consistent across a panic (every mutation is a
        // single push/retain), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Shows the shape of the store, never the password or the mail.
impl fmt::Debug for Maildrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Maildrop")
            .field("users", &inner.mailboxes.len())
            .field("delivered", &inner.delivered.len())
            .field("expunged", &inner.ledger.len())
            .field("sessions", &inner.sessions)
            .finish()
    }
}

/// Why a mailbox could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// No mailbox by that name.
    #[error("no such user")]
    NoSuchUser,
    /// Another live session holds it.
    #[error("maildrop locked")]
    Locked,
}

/// Exclusive hold on one mailbox; released on drop, however the session
/// ends (QUIT, EOF, error, timeout, task abort).
#[derive(Debug)]
pub(crate) struct MailboxLock {
    maildrop: Maildrop,
    user: String,
}

impl MailboxLock {
    /// The user whose mailbox this is.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The UPDATE state: removes the messages with these UIDs and records
    /// each in the ledger under `session`. Returns how many messages remain.
    pub(crate) fn expunge(&self, uids: &[&str], session: u64) -> usize {
        let mut inner = self.maildrop.lock();
        let Inner { mailboxes, ledger, .. } = &mut *inner;
        let Some(mailbox) = mailboxes.iter_mut().find(|m| m.user == self.user) else {
            return 0;
        };
        let at = SystemTime::now();
        mailbox.messages.retain(|m| {
            if !uids.contains(&m.uid.as_str()) {
                return true;
            }
            ledger.push(LedgerEntry {
                seq: ledger.len() as u64 + 1,
                user: m.user.clone(),
                uid: m.uid.clone(),
                message_id: m.message_id.clone(),
                session,
                at,
            });
            false
        });
        mailbox.messages.len()
    }
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        if let Some(mailbox) = self.maildrop.lock().mailbox(&self.user) {
            mailbox.locked = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Maildrop {
        Maildrop::new(&ServerConfig { users: 2, messages: 3, size: 600, password: "pw".into() })
    }

    #[test]
    fn new_populates_users_and_messages() {
        let m = small();
        assert_eq!(m.users(), ["user1", "user2"]);
        let left = m.remaining("user1");
        assert_eq!(
            left.iter().map(|s| s.uid.as_str()).collect::<Vec<_>>(),
            ["user1-000001", "user1-000002", "user1-000003"]
        );
        assert_eq!(left[1].message_id, "<u2.user1.popfault@localhost>");
        assert!(left.iter().all(|s| s.size == s.content.len()));
        assert_eq!(m.delivered().len(), 6);
        assert!(m.remaining("nobody").is_empty());
    }

    #[test]
    fn add_message_normalises_and_ids() {
        let m = small();
        let uid = m.add_message("user2", b"Subject: hi\n\nbody".to_vec());
        assert_eq!(uid.as_deref(), Some("user2-000004"));
        let last = m.remaining("user2").pop().map(|s| (s.message_id, s.content.to_vec()));
        assert_eq!(
            last,
            Some((
                "<u4.user2.popfault@localhost>".to_string(),
                b"Message-ID: <u4.user2.popfault@localhost>\r\nSubject: hi\r\n\r\nbody\r\n".to_vec()
            ))
        );
        let uid = m.add_message("user2", b"Message-ID: <x@y>\r\n\r\nb\r\n".to_vec());
        assert_eq!(uid.as_deref(), Some("user2-000005"));
        assert_eq!(m.remaining("user2")[4].message_id, "<x@y>");
        assert_eq!(m.add_message("user9", Vec::new()), None);
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let m = small();
        let (lock, snapshot) = m.open("user1").unwrap();
        assert_eq!(snapshot.len(), 3);
        assert!(m.is_locked("user1"));
        assert_eq!(m.open("user1").err(), Some(OpenError::Locked));
        assert_eq!(m.open("user3").err(), Some(OpenError::NoSuchUser));
        drop(lock);
        assert!(!m.is_locked("user1"));
        assert!(m.open("user1").is_ok());
    }

    #[test]
    fn expunge_records_ledger() {
        let m = small();
        let (lock, _) = m.open("user1").unwrap();
        assert_eq!(lock.expunge(&["user1-000001", "user1-000003"], 42), 1);
        let ledger = m.ledger();
        assert_eq!(
            ledger.iter().map(|e| (e.seq, e.uid.as_str(), e.session)).collect::<Vec<_>>(),
            [(1, "user1-000001", 42), (2, "user1-000003", 42)]
        );
        assert_eq!(m.remaining("user1").len(), 1);
        assert_eq!(m.delivered().len(), 6, "delivered never shrinks");
    }

    #[test]
    fn password_check_and_debug_redaction() {
        let m = small();
        assert!(m.check_password(b"pw"));
        assert!(!m.check_password(b"pw2") && !m.check_password(b"pW") && !m.check_password(b""));
        m.set_password("new");
        assert!(m.check_password(b"new"));
        assert!(!format!("{m:?}").contains("new"));
        assert!(!format!("{:?}", ServerConfig::default()).contains("secret"));
    }
}
