//! The session tracker: RFC 1939 state, counters, fingerprints and the
//! session outcome (SPEC §5). Pure: it is told what was delivered, by the
//! relay, after the bytes went out; it never sees a socket or a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::codec::{ClientEvent, Command, ServerEvent, Status};

/// Most messages a session remembers by number (downloaded, marked, UIDs).
/// A maildrop bigger than this is still relayed; counters stay exact, only
/// the per-message detail past the bound is not kept.
pub const MAX_TRACKED_MESSAGES: usize = 100_000;
/// Longest header line scanned for a Message-ID (RFC 5322 §2.1.1: 998).
const MAX_HEADER_LINE: usize = 1000;

/// RFC 1939 session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Before a successful login (RFC 1939 §4).
    Authorization,
    /// Logged in (RFC 1939 §5).
    Transaction,
    /// QUIT sent from TRANSACTION (RFC 1939 §6).
    Update,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Authorization => "AUTHORIZATION",
            State::Transaction => "TRANSACTION",
            State::Update => "UPDATE",
        })
    }
}

/// How a session ended (SPEC §5). Exactly one per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// QUIT answered +OK in TRANSACTION with messages marked: they were deleted.
    Committed,
    /// QUIT answered -ERR in UPDATE: some deletions failed.
    CommitFailed,
    /// Ended in TRANSACTION without QUIT: marked messages stay on the server.
    RolledBack,
    /// QUIT forwarded from TRANSACTION, no answer reached the client.
    InDoubt,
    /// Ended in AUTHORIZATION (including a failed login).
    NoLogin,
    /// Upstream unreachable, refused, -ERR greeting, or no greeting.
    Refused,
    /// QUIT answered in AUTHORIZATION, or with nothing marked.
    CleanQuit,
}

impl Outcome {
    /// Every outcome, in the order reports list them.
    pub const ALL: [Outcome; 7] = [
        Outcome::Committed,
        Outcome::CommitFailed,
        Outcome::RolledBack,
        Outcome::InDoubt,
        Outcome::NoLogin,
        Outcome::Refused,
        Outcome::CleanQuit,
    ];

    /// The outcome's name as in SPEC §5 (`rolled-back`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::CommitFailed => "commit-failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::InDoubt => "in-doubt",
            Outcome::NoLogin => "no-login",
            Outcome::Refused => "refused",
            Outcome::CleanQuit => "clean-quit",
        }
    }

    /// Whether what the session downloaded or marked is at risk of a
    /// second download.
    pub fn puts_at_risk(self) -> bool {
        matches!(self, Outcome::RolledBack | Outcome::InDoubt)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies a downloaded message across sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKey {
    /// The Message-ID header's value.
    MessageId(String),
    /// SHA-256 (first 16 bytes, hex) of the message as relayed, when it has
    /// no Message-ID.
    Hash(String),
}

/// A message whose full content reached the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// Its number in this session.
    pub number: u32,
    /// Its UIDL, if the client asked for the listing in this session.
    pub uid: Option<String>,
    /// Message-ID or content hash.
    pub key: MessageKey,
}

/// Where the QUIT of this session got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quit {
    NotSent,
    /// Forwarded in the given state.
    Sent(State),
    /// Answered (+OK or not) in the given state, and the answer delivered.
    Answered(State, bool),
}

/// Follows one RETR body to fingerprint it without holding it.
#[derive(Debug, Clone)]
struct Retrieval {
    number: u32,
    in_header: bool,
    line: Vec<u8>,
    line_overflow: bool,
    message_id: Option<String>,
    hash: Sha256,
}

impl Retrieval {
    fn new(number: u32) -> Retrieval {
        Retrieval {
            number,
            in_header: true,
            line: Vec::new(),
            line_overflow: false,
            message_id: None,
            hash: Sha256::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        // Hash only while no Message-ID is known: a message that has one is
        // identified by it, and big bodies then cost no hashing.
        if self.message_id.is_none() {
            self.hash.update(bytes);
        }
        if !self.in_header {
            return;
        }
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            if self.line.len() + chunk.len() <= MAX_HEADER_LINE {
                self.line.extend_from_slice(chunk);
            } else {
                self.line_overflow = true;
            }
            if chunk.ends_with(b"\n") {
                self.header_line();
                if !self.in_header {
                    return;
                }
            }
        }
    }

    fn header_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let overflow = std::mem::replace(&mut self.line_overflow, false);
        let text = crate::codec::command::trim_eol(&line);
        if text.is_empty() || text == b"." {
            self.in_header = false;
            return;
        }
        if overflow || self.message_id.is_some() {
            return;
        }
        const NAME: &[u8] = b"message-id:";
        if text.len() > NAME.len() && text[..NAME.len()].eq_ignore_ascii_case(NAME) {
            let value = String::from_utf8_lossy(&text[NAME.len()..]).trim().to_string();
            if !value.is_empty() {
                self.message_id = Some(value);
            }
        }
    }

    fn finish(self, uid: Option<String>) -> Fingerprint {
        let key = match self.message_id {
            Some(id) => MessageKey::MessageId(id),
            None => {
                let digest = self.hash.finalize();
                MessageKey::Hash(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
            }
        };
        Fingerprint { number: self.number, uid, key }
    }
}

/// The pure per-session tracker.
#[derive(Debug, Clone)]
pub struct Tracker {
    state: State,
    user: Option<String>,
    greeting: Option<bool>,
    refused: bool,
    quit: Quit,
    marked: BTreeSet<u32>,
    downloaded: BTreeSet<u32>,
    downloads: u64,
    rsets: u64,
    bytes_up: u64,
    bytes_down: u64,
    commands: u64,
    last_command: Option<String>,
    encrypted: bool,
    violations: u64,
    retrieval: Option<Retrieval>,
    fingerprints: Vec<Fingerprint>,
    uids: BTreeMap<u32, String>,
    uidl_line: Vec<u8>,
    listing_uids: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// A session that has just been accepted.
    pub fn new() -> Tracker {
        Tracker {
            state: State::Authorization,
            user: None,
            greeting: None,
            refused: false,
            quit: Quit::NotSent,
            marked: BTreeSet::new(),
            downloaded: BTreeSet::new(),
            downloads: 0,
            rsets: 0,
            bytes_up: 0,
            bytes_down: 0,
            commands: 0,
            last_command: None,
            encrypted: false,
            violations: 0,
            retrieval: None,
            fingerprints: Vec::new(),
            uids: BTreeMap::new(),
            uidl_line: Vec::new(),
            listing_uids: false,
        }
    }

    /// The upstream could not be reached, refused, or never greeted.
    pub fn set_refused(&mut self) {
        self.refused = true;
    }

    /// A client event whose bytes were forwarded upstream. `forwarded` is
    /// false for a command the proxy kept (answered itself or swallowed).
    pub fn on_client(&mut self, ev: &ClientEvent, bytes: &[u8], forwarded: bool) {
        if forwarded {
            self.bytes_up += bytes.len() as u64;
        }
        match ev {
            ClientEvent::Command { cmd, overlong } => {
                self.commands += 1;
                if *overlong {
                    self.violations += 1;
                }
                self.last_command = Some(cmd.to_string());
                if !forwarded {
                    return;
                }
                match cmd {
                    Command::Quit if self.quit == Quit::NotSent => {
                        self.quit = Quit::Sent(self.state);
                        if self.state == State::Transaction {
                            self.state = State::Update;
                        }
                    }
                    Command::User(name) | Command::Apop(name) if self.state == State::Authorization => {
                        self.user = Some(name.clone());
                    }
                    _ => {}
                }
            }
            ClientEvent::OverlongStart => self.violations += 1,
            ClientEvent::Opaque => self.encrypted = true,
            ClientEvent::OverlongMore | ClientEvent::SaslResponse { .. } => {}
        }
    }

    /// A server event whose bytes were delivered to the client.
    pub fn on_server(&mut self, ev: &ServerEvent, bytes: &[u8]) {
        self.bytes_down += bytes.len() as u64;
        match ev {
            ServerEvent::Greeting(status) => self.greeting = Some(status.ok),
            ServerEvent::Status { cmd, status, multiline, .. } => {
                if let (Command::Uidl(Some(_)), true) = (cmd, status.ok) {
                    self.on_uidl_line(bytes);
                }
                self.on_status(cmd, status, *multiline)
            }
            ServerEvent::Body { end, .. } => self.on_body(bytes, *end),
            ServerEvent::OverlongStart => self.violations += 1,
            ServerEvent::Opaque => self.encrypted = true,
            ServerEvent::Continuation | ServerEvent::Unsolicited | ServerEvent::OverlongMore => {}
        }
    }

    fn on_status(&mut self, cmd: &Command, status: &Status, multiline: bool) {
        match cmd {
            Command::Pass | Command::Apop(_) | Command::Auth { mechanism: Some(_), .. }
                if status.ok && self.state == State::Authorization =>
            {
                self.state = State::Transaction;
            }
            Command::Quit => {
                if let Quit::Sent(state) = self.quit {
                    self.quit = Quit::Answered(state, status.ok);
                }
            }
            Command::Dele(n) if status.ok && self.state == State::Transaction => {
                if self.marked.len() < MAX_TRACKED_MESSAGES {
                    self.marked.insert(*n);
                }
            }
            Command::Rset if status.ok && self.state == State::Transaction => {
                self.rsets += 1;
                self.marked.clear();
            }
            Command::Retr(n) if multiline => self.retrieval = Some(Retrieval::new(*n)),
            Command::Uidl(None) if multiline => {
                self.listing_uids = true;
                self.uidl_line.clear();
            }
            Command::Stls if status.ok => self.encrypted = true,
            _ => {}
        }
    }

    /// Learns a single-line `UIDL n` answer (`+OK n uid`).
    fn on_uidl_line(&mut self, line: &[u8]) {
        let text = crate::codec::command::trim_eol(line);
        let text = text.strip_prefix(b"+OK ").unwrap_or(text);
        self.learn_uid(text);
    }

    fn learn_uid(&mut self, text: &[u8]) {
        let mut parts = text.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let (Some(n), Some(uid)) = (parts.next(), parts.next()) else { return };
        let Some(n) = std::str::from_utf8(n).ok().and_then(|n| n.parse::<u32>().ok()) else { return };
        // RFC 1939 §7: a UID is 1 to 70 printable characters.
        if uid.len() > 70 || !uid.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return;
        }
        let uid = String::from_utf8_lossy(uid).into_owned();
        if self.uids.len() < MAX_TRACKED_MESSAGES || self.uids.contains_key(&n) {
            self.uids.insert(n, uid);
        }
    }

    fn on_body(&mut self, bytes: &[u8], end: bool) {
        if let Some(r) = &mut self.retrieval {
            r.feed(bytes);
        }
        if self.listing_uids {
            for chunk in bytes.split_inclusive(|&b| b == b'\n') {
                if self.uidl_line.len() + chunk.len() <= 128 {
                    self.uidl_line.extend_from_slice(chunk);
                }
                if chunk.ends_with(b"\n") {
                    let line = std::mem::take(&mut self.uidl_line);
                    self.learn_uid(crate::codec::command::trim_eol(&line));
                }
            }
        }
        if end {
            self.listing_uids = false;
            if let Some(r) = self.retrieval.take() {
                let number = r.number;
                self.downloads += 1;
                if self.downloaded.len() < MAX_TRACKED_MESSAGES {
                    self.downloaded.insert(number);
                }
                let uid = self.uids.get(&number).cloned();
                if self.fingerprints.len() < MAX_TRACKED_MESSAGES {
                    self.fingerprints.push(r.finish(uid));
                }
            }
        }
    }

    /// The RFC 1939 state now.
    pub fn state(&self) -> State {
        self.state
    }

    /// The user name given (USER or APOP), never a password.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The last command the client sent, secrets redacted.
    pub fn last_command(&self) -> Option<&str> {
        self.last_command.as_deref()
    }

    /// Complete RETRs delivered to the client.
    pub fn downloads(&self) -> u64 {
        self.downloads
    }

    /// Messages marked for deletion now (after any RSET).
    pub fn marked(&self) -> usize {
        self.marked.len()
    }

    /// RSETs answered +OK.
    pub fn rsets(&self) -> u64 {
        self.rsets
    }

    /// Bytes forwarded client → server.
    pub fn bytes_up(&self) -> u64 {
        self.bytes_up
    }

    /// Bytes delivered server → client.
    pub fn bytes_down(&self) -> u64 {
        self.bytes_down
    }

    /// Commands seen from the client.
    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// STLS succeeded: the rest was relayed encrypted, not inspected.
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// Protocol violations (over-long lines) seen.
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// Messages fully delivered to the client, identified.
    pub fn fingerprints(&self) -> &[Fingerprint] {
        &self.fingerprints
    }

    /// The UIDL listing learnt in this session (number → uid).
    pub fn uids(&self) -> &BTreeMap<u32, String> {
        &self.uids
    }

    /// Messages at risk of a second download if the session ends now
    /// without a commit: downloaded or marked (SPEC §5).
    pub fn at_risk_if_lost(&self) -> usize {
        self.downloaded.union(&self.marked).count()
    }

    /// The outcome, were the session to end now.
    pub fn outcome(&self) -> Outcome {
        if self.refused || self.greeting != Some(true) {
            return Outcome::Refused;
        }
        match self.quit {
            Quit::Answered(State::Transaction, true) if !self.marked.is_empty() => Outcome::Committed,
            Quit::Answered(State::Transaction, true) => Outcome::CleanQuit,
            Quit::Answered(State::Transaction, false) => Outcome::CommitFailed,
            Quit::Answered(State::Authorization, true) => Outcome::CleanQuit,
            Quit::Answered(State::Authorization, false) => Outcome::NoLogin,
            Quit::Sent(State::Transaction) => Outcome::InDoubt,
            _ => match self.state {
                State::Authorization => Outcome::NoLogin,
                State::Transaction | State::Update => Outcome::RolledBack,
            },
        }
    }

    /// Messages at risk of a second download given the outcome now.
    pub fn at_risk(&self) -> usize {
        if self.outcome().puts_at_risk() { self.at_risk_if_lost() } else { 0 }
    }
}
