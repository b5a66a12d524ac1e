//! The session tracker: RFC 1939 state, counters, fingerprints and the
//! session outcome (docs/ARCHITECTURE.md, "Outcome mapping"). Pure: it is told what was delivered, by the
//! relay, after the bytes went out; it never sees a socket or a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::codec::command::UserName;
use crate::codec::{ClientEvent, Command, ServerEvent, Status};

/// Most messages a session remembers by number (downloaded, marked, UIDs).
/// A maildrop bigger than this is still relayed; counters stay exact, only
/// the per-message detail past the bound is not kept.
pub const MAX_TRACKED_MESSAGES: usize = 100_000;

mod fingerprint;
mod retrieval;
mod uid;

pub use fingerprint::{Fingerprint, Fingerprints, MAX_FINGERPRINTS, MessageKey};
use retrieval::Retrieval;

mod sasl;
use uid::UidTable;

/// RFC 1939 session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Before a successful login (RFC 1939 §4).
    #[serde(alias = "authorization")]
    Authorization,
    /// Logged in (RFC 1939 §5).
    #[serde(alias = "transaction")]
    Transaction,
    /// QUIT sent from TRANSACTION (RFC 1939 §6).
    #[serde(alias = "update")]
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

/// How a session ended (docs/ARCHITECTURE.md, "Outcome mapping"). Exactly one per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// QUIT answered +OK in TRANSACTION with messages marked: they were deleted.
    Committed,
    /// QUIT answered -ERR in UPDATE: some deletions failed.
    CommitFailed,
    /// Ended in TRANSACTION without QUIT, with something at stake (a
    /// message marked or downloaded): marked messages stay on the server.
    RolledBack,
    /// QUIT forwarded from TRANSACTION with something at stake, and no
    /// answer reached the client.
    InDoubt,
    /// The line dropped in TRANSACTION, or QUIT's answer was lost, with
    /// nothing marked or downloaded: nothing rolled back, nothing in doubt.
    NothingAtStake,
    /// Ended in AUTHORIZATION (including a failed login).
    NoLogin,
    /// Upstream unreachable, refused, -ERR greeting, or no greeting.
    Refused,
    /// QUIT answered in AUTHORIZATION, or with nothing marked.
    CleanQuit,
}

impl Outcome {
    /// Every outcome, in the order reports list them.
    pub const ALL: [Outcome; 8] = [
        Outcome::Committed,
        Outcome::CommitFailed,
        Outcome::RolledBack,
        Outcome::InDoubt,
        Outcome::NothingAtStake,
        Outcome::NoLogin,
        Outcome::Refused,
        Outcome::CleanQuit,
    ];

    /// The outcome's name as in docs/EVENTS.md (`rolled-back`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::CommitFailed => "commit-failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::InDoubt => "in-doubt",
            Outcome::NothingAtStake => "nothing-at-stake",
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

/// The pure per-session tracker.
#[derive(Debug, Clone)]
pub struct Tracker {
    state: State,
    user: Option<UserName>,
    greeting: Option<bool>,
    refused: bool,
    /// QUIT was forwarded (its answer may not have come yet).
    quit_sent: bool,
    /// QUIT's answer reached the client: the state it was answered in
    /// (all earlier responses delivered by then, so pipelining is right)
    /// and whether it was +OK.
    quit_answer: Option<(State, bool)>,
    marked: BTreeSet<u32>,
    downloaded: BTreeSet<u32>,
    downloads: u64,
    rsets: u64,
    bytes_up: u64,
    bytes_down: u64,
    commands: u64,
    /// Kept as parsed, rendered only when asked for (a `String` per
    /// command showed in the sessions benchmark).
    last_command: Option<Command>,
    encrypted: bool,
    violations: u64,
    /// The RETR being delivered; boxed, as most of a session's life has
    /// none and every session's state counts (RSS per idle session).
    retrieval: Option<Box<Retrieval>>,
    fingerprints: Fingerprints,
    uids: UidTable,
    /// A UIDL listing being delivered: its current line. Boxed, made for
    /// the listing and dropped after it (every idle session's state counts).
    listing: Option<Box<Listing>>,
    /// A SASL login in progress, and the start of a client line relayed
    /// before its end came. Boxed, made only while either is open: most
    /// sessions never have one, and every session's state counts.
    lines: Option<Box<Lines>>,
}

/// A UIDL listing's current line.
#[derive(Debug, Clone, Default)]
struct Listing {
    line: Vec<u8>,
    /// The line is longer than any listing line: ignored whole.
    overflow: bool,
}

/// What the tracker keeps of client lines between events.
#[derive(Debug, Clone, Default)]
struct Lines {
    /// The SASL login in progress: which of its lines name the user.
    sasl: Option<sasl::Login>,
    /// The start of the current line (at most a command line's limit), so
    /// that its event sees it whole.
    part: Vec<u8>,
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
            quit_sent: false,
            quit_answer: None,
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
            fingerprints: Fingerprints::default(),
            uids: UidTable::default(),
            listing: None,
            lines: None,
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
        if let ClientEvent::LinePart = ev {
            let part = &mut self.lines.get_or_insert_default().part;
            part.extend_from_slice(
                &bytes[..bytes.len().min(crate::codec::MAX_COMMAND_LINE.saturating_sub(part.len()))],
            );
            return;
        }
        // The whole line: its start (passed on earlier) and these bytes.
        let part = self.lines.as_deref_mut().map(|l| std::mem::take(&mut l.part)).unwrap_or_default();
        let line = |bytes: &[u8]| [part.as_slice(), bytes].concat();
        match ev {
            ClientEvent::Command { cmd, .. } => {
                self.commands += 1;
                self.last_command = Some(cmd.clone());
                if !forwarded {
                    return;
                }
                match cmd {
                    Command::Quit => self.quit_sent = true,
                    Command::User(name) | Command::Apop(name) if self.state == State::Authorization => {
                        self.user = Some(name.clone());
                    }
                    Command::Auth { mechanism: Some(mechanism), initial_response }
                        if self.state == State::Authorization =>
                    {
                        let mut login = sasl::Login::new(mechanism);
                        if *initial_response {
                            // `AUTH mechanism response`: the response is the third token.
                            let line = line(bytes);
                            let text = crate::codec::command::trim_eol(&line);
                            let ir = text.split(|b| b.is_ascii_whitespace()).filter(|t| !t.is_empty()).nth(2);
                            if let Some(name) = ir.and_then(|ir| login.response(ir)) {
                                self.user = Some(name);
                            }
                        }
                        self.lines.get_or_insert_default().sasl = Some(login);
                    }
                    _ => {}
                }
            }
            ClientEvent::SaslResponse { cancel } => {
                if let Some(login) = self.lines.as_deref_mut().and_then(|l| l.sasl.as_mut()) {
                    let line = line(bytes);
                    let name = if *cancel { None } else { login.response(crate::codec::command::trim_eol(&line)) };
                    if let Some(name) = name.filter(|_| self.state == State::Authorization) {
                        self.user = Some(name);
                    }
                }
            }
            ClientEvent::OverlongStart => self.violations += 1,
            ClientEvent::Opaque => self.encrypted = true,
            ClientEvent::OverlongMore | ClientEvent::LinePart => {}
        }
        self.shed_lines();
    }

    /// A server event whose bytes were delivered to the client.
    pub fn on_server(&mut self, ev: &ServerEvent, bytes: &[u8]) {
        self.bytes_down += bytes.len() as u64;
        match ev {
            ServerEvent::Greeting(status) => {
                self.violations += u64::from(status.overlong);
                self.greeting = Some(status.ok);
            }
            ServerEvent::Status { cmd, status, multiline, .. } => {
                self.violations += u64::from(status.overlong);
                if let (Command::Uidl(Some(_)), true) = (cmd, status.ok) {
                    self.on_uidl_line(bytes);
                }
                self.on_status(cmd, status, *multiline)
            }
            ServerEvent::Body { end, .. } => self.on_body(bytes, *end),
            ServerEvent::OverlongStart => self.violations += 1,
            ServerEvent::Opaque => self.encrypted = true,
            ServerEvent::Continuation
            | ServerEvent::Unsolicited
            | ServerEvent::OverlongMore
            | ServerEvent::LinePart
            | ServerEvent::Untracked => {}
        }
    }

    fn on_status(&mut self, cmd: &Command, status: &Status, multiline: bool) {
        if cmd.is_sasl() {
            // The exchange's final answer: no more SASL lines.
            if let Some(lines) = self.lines.as_deref_mut() {
                lines.sasl = None;
            }
            self.shed_lines();
        }
        match cmd {
            Command::Pass | Command::Apop(_) | Command::Auth { mechanism: Some(_), .. }
                if status.ok && self.state == State::Authorization =>
            {
                self.state = State::Transaction;
            }
            Command::Quit if self.quit_answer.is_none() => {
                self.quit_answer = Some((self.state, status.ok));
                if self.state == State::Transaction {
                    self.state = State::Update;
                }
            }
            // Past the bound the count stops growing; see MAX_TRACKED_MESSAGES.
            Command::Dele(n)
                if status.ok && self.state == State::Transaction && self.marked.len() < MAX_TRACKED_MESSAGES =>
            {
                self.marked.insert(*n);
            }
            Command::Rset if status.ok && self.state == State::Transaction => {
                self.rsets += 1;
                self.marked.clear();
            }
            Command::Retr(n) if multiline => self.retrieval = Some(Box::new(Retrieval::new(*n))),
            Command::Top(n, lines) if multiline => self.retrieval = Some(Box::new(Retrieval::top(*n, *lines))),
            Command::Uidl(None) if multiline => {
                self.listing = Some(Box::default());
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
        if self.uids.len() < MAX_TRACKED_MESSAGES || self.uids.get(n).is_some() {
            self.uids.insert(n, uid);
        }
    }

    fn on_body(&mut self, bytes: &[u8], end: bool) {
        if let Some(r) = &mut self.retrieval {
            r.feed(bytes);
        }
        if let Some(mut listing) = self.listing.take() {
            for chunk in bytes.split_inclusive(|&b| b == b'\n') {
                // A listing line is short ("n uid", uid ≤ 70); a longer one
                // is ignored whole, however it was chunked.
                if !listing.overflow && listing.line.len() + chunk.len() <= 128 {
                    listing.line.extend_from_slice(chunk);
                } else {
                    listing.overflow = true;
                }
                if chunk.ends_with(b"\n") {
                    // The line buffer is reused: one allocation for the
                    // whole listing.
                    if !std::mem::replace(&mut listing.overflow, false) {
                        self.learn_uid(crate::codec::command::trim_eol(&listing.line));
                    }
                    listing.line.clear();
                }
            }
            if !end {
                self.listing = Some(listing);
            }
        }
        if end {
            if let Some(r) = self.retrieval.take().filter(|r| r.is_whole()) {
                let number = r.number;
                self.downloads += 1;
                if self.downloaded.len() < MAX_TRACKED_MESSAGES {
                    self.downloaded.insert(number);
                }
                let uid = self.uids.get(number).map(Box::from);
                self.fingerprints.push(r.finish(uid));
            }
        }
    }

    /// Frees the line state once nothing is open in it.
    fn shed_lines(&mut self) {
        if self.lines.as_deref().is_some_and(|l| l.sasl.is_none() && l.part.is_empty()) {
            self.lines = None;
        }
    }

    /// The RFC 1939 state now. A QUIT forwarded from TRANSACTION puts the
    /// server in UPDATE (RFC 1939 §6) even before it answers.
    pub fn state(&self) -> State {
        match self.state {
            State::Transaction if self.quit_sent => State::Update,
            s => s,
        }
    }

    /// Bytes relayed outside any frame (an incomplete line at EOF).
    pub fn on_unframed(&mut self, up: bool, len: usize) {
        if up {
            self.bytes_up += len as u64;
        } else {
            self.bytes_down += len as u64;
        }
    }

    /// The user name given (USER or APOP), never a password: a name that
    /// failed validation is `(invalid)`.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(UserName::as_str)
    }

    /// The last command the client sent, secrets redacted.
    pub fn last_command(&self) -> Option<String> {
        self.last_command.as_ref().map(Command::to_string)
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

    /// Messages fully delivered to the client, identified (at most
    /// [`MAX_FINGERPRINTS`], the rest counted).
    pub fn fingerprints(&self) -> &Fingerprints {
        &self.fingerprints
    }

    /// Takes the fingerprints out (the session has ended).
    pub fn take_fingerprints(&mut self) -> Fingerprints {
        std::mem::take(&mut self.fingerprints)
    }

    /// The UIDL listing learnt in this session (number → uid).
    pub fn uids(&self) -> BTreeMap<u32, String> {
        self.uids.to_map()
    }

    /// The UID learnt for message `n`, if any.
    pub fn uid(&self, n: u32) -> Option<&str> {
        self.uids.get(n)
    }

    /// Messages at risk of a second download if the session ends now
    /// without a commit: downloaded or marked (docs/ARCHITECTURE.md, `at_risk`).
    pub fn at_risk_if_lost(&self) -> usize {
        self.downloaded.union(&self.marked).count()
    }

    /// The outcome, were the session to end now.
    pub fn outcome(&self) -> Outcome {
        // A stream that was TLS from its first byte (POP3S through a plain
        // listener) has no greeting to see; it ends as its state says.
        if self.refused || (self.greeting != Some(true) && !self.encrypted) {
            return Outcome::Refused;
        }
        match (self.quit_answer, self.state) {
            (Some((State::Transaction, true)), _) if !self.marked.is_empty() => Outcome::Committed,
            (Some((State::Transaction, true)), _) => Outcome::CleanQuit,
            (Some((State::Transaction, false)), _) => Outcome::CommitFailed,
            (Some((_, true)), _) => Outcome::CleanQuit,
            (Some((_, false)), _) => Outcome::NoLogin,
            (None, State::Authorization) => Outcome::NoLogin,
            // In TRANSACTION (or UPDATE with no answer): only what was
            // marked or downloaded can be rolled back or be in doubt.
            (None, _) if self.at_risk_if_lost() == 0 => Outcome::NothingAtStake,
            (None, State::Transaction) if self.quit_sent => Outcome::InDoubt,
            (None, _) => Outcome::RolledBack,
        }
    }

    /// Messages at risk of a second download given the outcome now.
    pub fn at_risk(&self) -> usize {
        if self.outcome().puts_at_risk() { self.at_risk_if_lost() } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Pop3Codec;

    /// Plays a transcript through codec + tracker the way the relay does,
    /// delivering everything. `None` in the server role means "the bytes
    /// never reached the client".
    struct Sim {
        codec: Pop3Codec,
        tracker: Tracker,
    }

    impl Sim {
        fn new() -> Sim {
            Sim { codec: Pop3Codec::new(), tracker: Tracker::new() }
        }
        fn c(&mut self, mut bytes: &[u8]) -> &mut Self {
            while !bytes.is_empty() {
                let step = self.codec.decode_client(bytes);
                let ev = step.event.expect("complete lines in tests");
                if let ClientEvent::Command { cmd, .. } = &ev {
                    self.codec.forwarded(cmd);
                }
                self.tracker.on_client(&ev, &bytes[..step.consumed], true);
                bytes = &bytes[step.consumed..];
            }
            self
        }
        fn s(&mut self, mut bytes: &[u8]) -> &mut Self {
            while !bytes.is_empty() {
                let step = self.codec.decode_server(bytes);
                let ev = step.event.expect("complete lines in tests");
                self.tracker.on_server(&ev, &bytes[..step.consumed]);
                bytes = &bytes[step.consumed..];
            }
            self
        }
        fn login(&mut self) -> &mut Self {
            self.s(b"+OK hi\r\n").c(b"USER u\r\n").s(b"+OK\r\n").c(b"PASS p\r\n").s(b"+OK 3 messages\r\n")
        }
        fn retr(&mut self, n: u32) -> &mut Self {
            let id = format!("+OK\r\nSubject: x\r\nMessage-ID: <{n}@test>\r\n\r\n..dot\r\n.\r\n");
            self.c(format!("RETR {n}\r\n").as_bytes()).s(id.as_bytes())
        }
        fn dele(&mut self, n: u32) -> &mut Self {
            self.c(format!("DELE {n}\r\n").as_bytes()).s(b"+OK marked\r\n")
        }
    }

    #[test]
    fn committed() {
        let mut s = Sim::new();
        s.login().retr(1).dele(1).c(b"QUIT\r\n").s(b"+OK bye\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::Committed);
        assert_eq!(s.tracker.at_risk(), 0);
        assert_eq!(s.tracker.user(), Some("u"));
    }

    #[test]
    fn commit_failed() {
        let mut s = Sim::new();
        s.login().dele(1).c(b"QUIT\r\n").s(b"-ERR [SYS/TEMP] some deleted messages not removed\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::CommitFailed);
    }

    #[test]
    fn rolled_back_counts_risk() {
        let mut s = Sim::new();
        s.login().retr(1).dele(1).retr(2).dele(2).retr(3);
        assert_eq!(s.tracker.state(), State::Transaction);
        assert_eq!(s.tracker.outcome(), Outcome::RolledBack);
        assert_eq!((s.tracker.downloads(), s.tracker.marked(), s.tracker.at_risk()), (3, 2, 3));
        let keys: Vec<_> = s.tracker.fingerprints().iter().map(|f| f.key).collect();
        assert_eq!(keys[0], MessageKey::message_id(b"<1@test>"));
    }

    #[test]
    fn in_doubt_when_quit_answer_never_arrives() {
        let mut s = Sim::new();
        s.login().retr(1).dele(1).c(b"QUIT\r\n");
        assert_eq!(s.tracker.state(), State::Update);
        assert_eq!(s.tracker.outcome(), Outcome::InDoubt);
        assert_eq!(s.tracker.at_risk(), 1);
    }

    #[test]
    fn no_login_and_failed_login() {
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(b"USER u\r\n").s(b"+OK\r\n").c(b"PASS bad\r\n").s(b"-ERR [AUTH] no\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::NoLogin);
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::NoLogin);
    }

    #[test]
    fn refused_cases() {
        let mut s = Sim::new();
        s.tracker.set_refused();
        assert_eq!(s.tracker.outcome(), Outcome::Refused);
        let mut s = Sim::new();
        s.s(b"-ERR [SYS/TEMP] go away\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::Refused);
        // Connected, but no greeting ever came.
        assert_eq!(Sim::new().tracker.outcome(), Outcome::Refused);
    }

    #[test]
    fn clean_quit_cases() {
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(b"QUIT\r\n").s(b"+OK\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::CleanQuit);
        let mut s = Sim::new();
        s.login().retr(1).c(b"QUIT\r\n").s(b"+OK\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::CleanQuit);
        // RSET clears the marks: nothing to commit.
        let mut s = Sim::new();
        s.login().dele(1).c(b"RSET\r\n").s(b"+OK\r\n").c(b"QUIT\r\n").s(b"+OK\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::CleanQuit);
        assert_eq!(s.tracker.rsets(), 1);
    }

    #[test]
    fn apop_and_auth_log_in() {
        let mut s = Sim::new();
        s.s(b"+OK <1.2@x>\r\n").c(b"APOP bob 0123456789abcdef0123456789abcdef\r\n").s(b"+OK\r\n");
        assert_eq!((s.tracker.state(), s.tracker.user()), (State::Transaction, Some("bob")));
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(b"AUTH PLAIN\r\n").s(b"+ \r\n").c(b"AHUAcA==\r\n").s(b"+OK\r\n");
        assert_eq!(s.tracker.state(), State::Transaction);
    }

    #[test]
    fn uidl_listing_names_downloads_and_hash_without_message_id() {
        let mut s = Sim::new();
        s.login().c(b"UIDL\r\n").s(b"+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n").c(b"UIDL 3\r\n").s(b"+OK 3 ccc\r\n");
        s.c(b"RETR 2\r\n").s(b"+OK\r\nSubject: none\r\n\r\nbody\r\n.\r\n");
        assert_eq!(s.tracker.uids().len(), 3);
        let f = &s.tracker.fingerprints()[0];
        assert_eq!(f.uid.as_deref(), Some("bbb"));
        assert!(matches!(f.key, MessageKey::Hash(_)));
    }

    #[test]
    fn fingerprints_are_digests_capped_and_counted() {
        let mut s = Sim::new();
        s.login();
        let id = format!("<{}@x>", "m".repeat(975));
        let msg = format!("+OK\r\nMessage-ID:  {id} \r\n\r\nb\r\n.\r\n");
        for _ in 0..MAX_FINGERPRINTS + 5 {
            s.c(b"RETR 1\r\n").s(msg.as_bytes());
        }
        let f = s.tracker.fingerprints();
        assert_eq!(s.tracker.downloads(), MAX_FINGERPRINTS as u64 + 5);
        assert_eq!((f.len(), f.dropped), (MAX_FINGERPRINTS, 5));
        assert!(f.iter().all(|f| f.key == MessageKey::message_id(id.as_bytes())));
        // Fixed size whatever the Message-ID: no text is kept.
        assert!(std::mem::size_of::<Fingerprint>() <= 48, "{}", std::mem::size_of::<Fingerprint>());
        assert_eq!(s.tracker.take_fingerprints().dropped, 5);
    }

    #[test]
    fn user_names_that_fail_validation_are_not_kept() {
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(b"USER alice Zq7Kx9 Wv3Tp\r\n").s(b"+OK\r\n");
        assert_eq!(s.tracker.user(), Some("(invalid)"));
        assert_eq!(s.tracker.last_command().as_deref(), Some("USER (invalid)"));
        s.c(b"Zq7Kx9\r\n").s(b"-ERR\r\n");
        assert_eq!(s.tracker.last_command().as_deref(), Some("OTHER \u{2026}"));
        s.c(b"USER bob\r\n").s(b"+OK\r\n");
        assert_eq!(s.tracker.user(), Some("bob"));
    }

    #[test]
    fn cut_body_is_not_a_download() {
        let mut s = Sim::new();
        s.login().c(b"RETR 1\r\n").s(b"+OK\r\nMessage-ID: <1@t>\r\n\r\npartial");
        assert_eq!(s.tracker.downloads(), 0);
        assert_eq!(s.tracker.at_risk(), 0);
    }

    #[test]
    fn pipelined_quit_is_judged_in_response_order() {
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(b"USER u\r\nPASS p\r\nDELE 1\r\nQUIT\r\n");
        assert_eq!(s.tracker.state(), State::Authorization);
        s.s(b"+OK\r\n+OK\r\n+OK\r\n");
        assert_eq!((s.tracker.state(), s.tracker.outcome()), (State::Update, Outcome::InDoubt));
        s.s(b"+OK bye\r\n");
        assert_eq!(s.tracker.outcome(), Outcome::Committed);
    }

    #[test]
    fn stls_marks_encrypted() {
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(b"STLS\r\n").s(b"+OK go\r\n\x16\x03\x01");
        assert!(s.tracker.encrypted());
    }

    fn b64(text: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn sasl_logins_name_their_user() {
        // AUTH PLAIN with an initial response (curl).
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(format!("AUTH PLAIN {}\r\n", b64(b"\0alice\0s3cret")).as_bytes()).s(b"+OK in\r\n");
        assert_eq!((s.tracker.user(), s.tracker.state()), (Some("alice"), State::Transaction));
        // AUTH LOGIN, user and password pipelined before the continuations.
        let mut s = Sim::new();
        let script = format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64(b"bob"), b64(b"s3cret"));
        s.s(b"+OK hi\r\n").c(script.as_bytes()).s(b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK in\r\n");
        assert_eq!(s.tracker.user(), Some("bob"));
        // CRAM-MD5 after its challenge.
        let mut s = Sim::new();
        s.s(b"+OK hi\r\n").c(b"AUTH CRAM-MD5\r\n").s(b"+ PDEyMzQ1QHRlc3Q+\r\n");
        s.c(format!("{}\r\n", b64(b"carol 0123456789abcdef0123456789abcdef")).as_bytes()).s(b"+OK in\r\n");
        assert_eq!(s.tracker.user(), Some("carol"));
        // The password never becomes the user, nor anything else kept.
        assert!(!format!("{:?}", s.tracker).contains("s3cret"));
    }

    #[test]
    fn a_top_of_the_whole_message_is_a_download_and_a_peek_is_not() {
        let answer = b"+OK\r\nMessage-ID: <1@test>\r\n\r\nline 1\r\nline 2\r\n.\r\n";
        // fetchmail's way: TOP n 99999999 brings the whole message.
        let mut s = Sim::new();
        s.login().c(b"TOP 1 99999999\r\n").s(answer);
        assert_eq!(s.tracker.downloads(), 1);
        assert_eq!(s.tracker.fingerprints().len(), 1);
        // Headers only, or fewer lines than the body has: a peek.
        for lines in [0, 1, 2] {
            let mut s = Sim::new();
            s.login().c(format!("TOP 1 {lines}\r\n").as_bytes()).s(answer);
            assert_eq!(s.tracker.downloads(), 0, "TOP 1 {lines} of a 2-line body");
        }
        // More lines asked for than the body has: the whole message.
        let mut s = Sim::new();
        s.login().c(b"TOP 1 3\r\n").s(answer);
        assert_eq!(s.tracker.downloads(), 1);
        // A cut TOP download puts the message at risk like a RETR.
        let mut s = Sim::new();
        s.login().c(b"TOP 1 99999999\r\n").s(answer).c(b"DELE 1\r\n").s(b"+OK\r\n");
        assert_eq!((s.tracker.outcome(), s.tracker.at_risk()), (Outcome::RolledBack, 1));
    }

    #[test]
    fn a_message_the_server_rewrote_hashes_the_same() {
        // No Message-ID: known by content, less what an mbox server rewrites.
        let key = |status: &str| {
            let mut s = Sim::new();
            let answer = format!("+OK\r\nSubject: x\r\n{status}From: a@b\r\n\r\nbody\r\n.\r\n");
            s.login().c(b"RETR 1\r\n").s(answer.as_bytes());
            s.tracker.fingerprints()[0].key
        };
        let first = key("");
        assert_eq!(key("Status: RO\r\nX-UID: 7\r\n"), first);
        assert_eq!(key("X-Status: A\r\nX-Keywords: \r\n"), first);
        assert_ne!(key("X-Other: 1\r\n"), first, "any other header is part of the message");
    }
}
