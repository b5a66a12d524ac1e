//! The POP3 server session as a state machine: one input line in, response
//! bytes out. No I/O and no clock, so every protocol rule is a unit test.

use md5::{Digest, Md5};
use tracing::debug;

use super::base64;
use super::message::{stuff_into, top};
use super::store::{MailboxLock, Maildrop, OpenError, StoredMessage};
use crate::codec::Command;
use crate::codec::command::{UserName, trim_eol};

/// Longest command line, CRLF included (RFC 2449 §4).
pub(crate) const MAX_COMMAND_LINE: usize = 255;
/// Longest SASL continuation line; RFC 5034 exempts these from the 255 limit.
pub(crate) const MAX_SASL_LINE: usize = 1024;

/// The capabilities we announce (RFC 2449, RFC 5034). No STLS: no TLS here.
const CAPABILITIES: &[&str] =
    &["TOP", "USER", "UIDL", "PIPELINING", "SASL PLAIN", "RESP-CODES", "AUTH-RESP-CODE", "IMPLEMENTATION popfault"];

/// Keywords we know; malformed arguments to one of them get a distinct error.
const KEYWORDS: &[&str] = &[
    "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL", "CAPA",
    "STLS",
];

/// What the connection should do after a line has been handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Keep reading.
    Continue,
    /// Write what is pending, then close the connection.
    Close,
}

enum Phase {
    /// Not logged in; `user` is the name from a USER awaiting its PASS.
    Authorization {
        user: Option<String>,
    },
    /// `AUTH PLAIN` sent without initial response; the next line is the response.
    SaslPlain,
    Transaction(Transaction),
    /// After QUIT: nothing more is processed.
    Closed,
}

struct Transaction {
    /// Dropping it (with the session) releases the mailbox, whatever ended the session.
    lock: MailboxLock,
    /// The maildrop as it was at login: message `n` is `messages[n - 1]` for the whole session.
    messages: Vec<StoredMessage>,
    deleted: Vec<bool>,
}

impl Transaction {
    /// Message `n` unless it does not exist or is marked deleted.
    fn live(&self, n: u32) -> Option<&StoredMessage> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        if *self.deleted.get(i)? {
            return None;
        }
        self.messages.get(i)
    }

    fn live_messages(&self) -> impl Iterator<Item = (usize, &StoredMessage)> {
        self.messages.iter().enumerate().filter(|(i, _)| !self.deleted[*i]).map(|(i, m)| (i + 1, m))
    }

    fn stat(&self) -> (usize, usize) {
        self.live_messages().fold((0, 0), |(n, octets), (_, m)| (n + 1, octets + m.size))
    }
}

/// One client's POP3 session against a [`Maildrop`].
pub(crate) struct ServerSession {
    maildrop: Maildrop,
    number: u64,
    /// The APOP timestamp from the greeting, angle brackets included.
    timestamp: String,
    state: Phase,
}

impl ServerSession {
    /// A session numbered `number` whose greeting carries `timestamp`
    /// (`<...@...>`, RFC 1939 §7 APOP).
    pub(crate) fn new(maildrop: Maildrop, number: u64, timestamp: String) -> ServerSession {
        ServerSession { maildrop, number, timestamp, state: Phase::Authorization { user: None } }
    }

    /// Appends the greeting.
    pub(crate) fn greeting(&self, out: &mut Vec<u8>) {
        ok(out, &format!("popfault maildrop ready {}", self.timestamp));
    }

    /// The longest line acceptable in the current state, LF included.
    pub(crate) fn max_line(&self) -> usize {
        match self.state {
            Phase::SaslPlain => MAX_SASL_LINE,
            _ => MAX_COMMAND_LINE,
        }
    }

    /// The user whose mailbox this session holds, once logged in.
    pub(crate) fn user(&self) -> Option<&str> {
        match &self.state {
            Phase::Transaction(tx) => Some(tx.lock.user()),
            _ => None,
        }
    }

    /// Answers a line that exceeded [`ServerSession::max_line`].
    pub(crate) fn line_too_long(&mut self, out: &mut Vec<u8>) -> Next {
        match self.state {
            Phase::Closed => return Next::Close,
            // An unusable SASL response ends the exchange, as a bad one would.
            Phase::SaslPlain => self.state = Phase::Authorization { user: None },
            _ => {}
        }
        err(out, "line too long");
        Next::Continue
    }

    /// Handles one complete input line (with or without its CRLF),
    /// appending the response to `out`.
    pub(crate) fn handle_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Next {
        let line = trim_eol(line);
        match &self.state {
            Phase::Closed => Next::Close,
            Phase::SaslPlain => {
                // The line is a credential: never parse it as a command, never log it.
                debug!(session = self.number, "SASL response");
                self.state = Phase::Authorization { user: None };
                if line == b"*" {
                    err(out, "authentication cancelled");
                    return Next::Continue;
                }
                self.plain(line, out);
                Next::Continue
            }
            Phase::Authorization { .. } => {
                let cmd = Command::parse(line);
                debug!(session = self.number, %cmd, "command");
                self.authorization(cmd, line, out)
            }
            Phase::Transaction(_) => {
                let cmd = Command::parse(line);
                debug!(session = self.number, %cmd, "command");
                self.transaction(cmd, out)
            }
        }
    }

    // === AUTHORIZATION ===

    fn authorization(&mut self, cmd: Command, line: &[u8], out: &mut Vec<u8>) -> Next {
        match cmd {
            Command::Capa => capa(out),
            Command::Quit => {
                self.state = Phase::Closed;
                ok(out, "popfault signing off");
                return Next::Close;
            }
            Command::User(_) => {
                // Same answer for every name, so USER does not reveal which users exist.
                // The name is taken from the line: the parsed command keeps only
                // names it can show, and this server limits none.
                ok(out, "send PASS");
                let name = String::from_utf8_lossy(split_keyword(line).1).into_owned();
                self.state = Phase::Authorization { user: Some(name) };
            }
            Command::Pass => {
                let user = match &mut self.state {
                    Phase::Authorization { user } => user.take(),
                    _ => None,
                };
                match user {
                    Some(user) => {
                        // RFC 1939 lets the password contain spaces: it is everything after the keyword.
                        let password = split_keyword(line).1;
                        let valid = self.maildrop.check_password(password);
                        self.login(&user, valid, out);
                    }
                    None => err(out, "USER first"),
                }
            }
            Command::Apop(_) => self.apop(line, out),
            Command::Auth { mechanism: None, .. } => {
                ok(out, "SASL mechanisms follow");
                out.extend_from_slice(b"PLAIN\r\n.\r\n");
            }
            Command::Auth { mechanism: Some("PLAIN"), initial_response } => {
                if initial_response {
                    let args = tokens(line);
                    match args.as_slice() {
                        // "=" is an empty initial response (RFC 5034 §4), which PLAIN cannot use.
                        [_, _, response] if *response != b"=" => self.plain(response, out),
                        _ => err(out, "malformed SASL response"),
                    }
                } else {
                    out.extend_from_slice(b"+ \r\n");
                    self.state = Phase::SaslPlain;
                }
            }
            Command::Auth { .. } => err(out, "unsupported SASL mechanism"),
            Command::Stls => err(out, "STLS not available"),
            Command::Unknown(keyword) => unknown(keyword, out),
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top(..)
            | Command::Uidl(_) => err(out, "not logged in"),
        }
        Next::Continue
    }

    /// `APOP name digest`: digest is the MD5 of timestamp + password, in hex.
    fn apop(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let args = tokens(line);
        let [_, name, digest] = args.as_slice() else {
            err(out, "invalid arguments");
            return;
        };
        let expected = Md5::new_with_prefix(self.timestamp.as_bytes())
            .chain_update(self.maildrop.password().as_bytes())
            .finalize();
        let valid = digest.len() == 32 && digest.eq_ignore_ascii_case(hex(&expected).as_bytes());
        let name = String::from_utf8_lossy(name).into_owned();
        self.login(&name, valid, out);
    }

    /// A decoded-or-not SASL PLAIN response: `authzid NUL authcid NUL password`.
    fn plain(&mut self, response: &[u8], out: &mut Vec<u8>) {
        let Some(decoded) = base64::decode(response) else {
            err(out, "malformed SASL response");
            return;
        };
        let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            err(out, "malformed SASL response");
            return;
        };
        // We only let a user act as themself.
        let valid = (authzid.is_empty() || authzid == authcid) && self.maildrop.check_password(password);
        let user = String::from_utf8_lossy(authcid).into_owned();
        self.login(&user, valid, out);
    }

    /// Enters TRANSACTION if the credentials were valid and the mailbox is free.
    fn login(&mut self, user: &str, credentials_valid: bool, out: &mut Vec<u8>) {
        self.state = Phase::Authorization { user: None };
        if !credentials_valid {
            // Logged as the proxy shows it: a name from the wire may hold anything.
            let shown = UserName::from(user);
            debug!(session = self.number, user = shown.as_str(), "login refused: bad credentials");
            err(out, "[AUTH] invalid credentials");
            return;
        }
        match self.maildrop.open(user) {
            Ok((lock, messages)) => {
                let tx = Transaction { lock, deleted: vec![false; messages.len()], messages };
                let (n, octets) = tx.stat();
                ok(out, &format!("{user}'s maildrop has {n} messages ({octets} octets)"));
                debug!(session = self.number, user, messages = n, "logged in");
                self.state = Phase::Transaction(tx);
            }
            Err(OpenError::Locked) => {
                debug!(session = self.number, user, "login refused: in use");
                err(out, "[IN-USE] maildrop locked");
            }
            // Same answer as a wrong password, so logins do not reveal which users exist.
            Err(OpenError::NoSuchUser) => err(out, "[AUTH] invalid credentials"),
        }
    }

    // === TRANSACTION ===

    fn transaction(&mut self, cmd: Command, out: &mut Vec<u8>) -> Next {
        let Phase::Transaction(tx) = &mut self.state else {
            return Next::Close;
        };
        match cmd {
            Command::Stat => {
                let (n, octets) = tx.stat();
                ok(out, &format!("{n} {octets}"));
            }
            Command::List(None) => {
                let (n, octets) = tx.stat();
                ok(out, &format!("{n} messages ({octets} octets)"));
                for (i, m) in tx.live_messages() {
                    out.extend_from_slice(format!("{i} {}\r\n", m.size).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
            }
            Command::List(Some(n)) => match tx.live(n) {
                Some(m) => ok(out, &format!("{n} {}", m.size)),
                None => no_such_message(out),
            },
            Command::Uidl(None) => {
                ok(out, "unique-id listing follows");
                for (i, m) in tx.live_messages() {
                    out.extend_from_slice(format!("{i} {}\r\n", m.uid).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
            }
            Command::Uidl(Some(n)) => match tx.live(n) {
                Some(m) => ok(out, &format!("{n} {}", m.uid)),
                None => no_such_message(out),
            },
            Command::Retr(n) => match tx.live(n) {
                Some(m) => {
                    ok(out, &format!("{} octets", m.size));
                    stuff_into(out, &m.content);
                }
                None => no_such_message(out),
            },
            Command::Top(n, lines) => match tx.live(n) {
                Some(m) => {
                    ok(out, "top of message follows");
                    stuff_into(out, top(&m.content, lines));
                }
                None => no_such_message(out),
            },
            Command::Dele(n) => match usize::try_from(n).ok().and_then(|n| n.checked_sub(1)) {
                Some(i) if tx.live(n).is_some() => {
                    tx.deleted[i] = true;
                    ok(out, &format!("message {n} deleted"));
                }
                _ => no_such_message(out),
            },
            Command::Noop => ok(out, ""),
            Command::Rset => {
                tx.deleted.iter_mut().for_each(|d| *d = false);
                let (n, octets) = tx.stat();
                ok(out, &format!("maildrop has {n} messages ({octets} octets)"));
            }
            Command::Quit => return self.update(out),
            Command::Capa => capa(out),
            Command::User(_) | Command::Pass | Command::Apop(_) | Command::Auth { .. } => err(out, "already logged in"),
            Command::Stls => err(out, "STLS not available"),
            Command::Unknown(keyword) => unknown(keyword, out),
        }
        Next::Continue
    }

    /// The UPDATE state (RFC 1939 §6): expunge first, then answer `+OK`, so
    /// a `+OK` on the wire always means the deletions are durable.
    fn update(&mut self, out: &mut Vec<u8>) -> Next {
        // Taking the state drops the Transaction, and its lock, when this returns.
        let Phase::Transaction(tx) = std::mem::replace(&mut self.state, Phase::Closed) else {
            return Next::Close;
        };
        let marked: Vec<&str> =
            tx.messages.iter().zip(&tx.deleted).filter(|(_, d)| **d).map(|(m, _)| m.uid.as_str()).collect();
        let left = tx.lock.expunge(&marked, self.number);
        debug!(session = self.number, user = tx.lock.user(), expunged = marked.len(), left, "update");
        ok(out, &format!("popfault signing off ({left} messages left)"));
        Next::Close
    }
}

// === Responses ===

fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+OK");
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn no_such_message(out: &mut Vec<u8>) {
    err(out, "no such message");
}

fn unknown(keyword: &str, out: &mut Vec<u8>) {
    if KEYWORDS.contains(&keyword) {
        err(out, "invalid arguments");
    } else {
        err(out, "unknown command");
    }
}

fn capa(out: &mut Vec<u8>) {
    ok(out, "capability list follows");
    for c in CAPABILITIES {
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

// === Helpers ===

/// Splits `KEYWORD rest` at the first space; `rest` is empty if there is none.
fn split_keyword(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

/// Space-separated tokens, empty ones dropped.
fn tokens(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty()).collect()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerConfig;

    const TS: &str = "<1.2.3@popfault>";

    fn maildrop() -> Maildrop {
        Maildrop::new(&ServerConfig { users: 2, messages: 3, size: 700, password: "pw".into() })
    }

    /// Feeds lines and returns everything the session answered, as text.
    fn run(session: &mut ServerSession, lines: &[&str]) -> String {
        let mut out = Vec::new();
        for l in lines {
            session.handle_line(format!("{l}\r\n").as_bytes(), &mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn logged_in(m: &Maildrop, number: u64) -> ServerSession {
        let mut s = ServerSession::new(m.clone(), number, TS.into());
        assert!(
            run(&mut s, &["USER user1", "PASS pw"]).ends_with("+OK user1's maildrop has 3 messages (2100 octets)\r\n")
        );
        s
    }

    #[test]
    fn greeting_carries_the_timestamp() {
        let mut out = Vec::new();
        ServerSession::new(maildrop(), 1, TS.into()).greeting(&mut out);
        assert_eq!(out, b"+OK popfault maildrop ready <1.2.3@popfault>\r\n");
    }

    #[test]
    fn user_pass_rules() {
        let m = maildrop();
        let mut s = ServerSession::new(m.clone(), 1, TS.into());
        assert_eq!(run(&mut s, &["PASS pw"]), "-ERR USER first\r\n");
        assert_eq!(run(&mut s, &["USER user1", "PASS nope"]), "+OK send PASS\r\n-ERR [AUTH] invalid credentials\r\n");
        assert_eq!(run(&mut s, &["USER nobody", "PASS pw"]), "+OK send PASS\r\n-ERR [AUTH] invalid credentials\r\n");
        assert_eq!(run(&mut s, &["STAT"]), "-ERR not logged in\r\n");
        assert_eq!(s.user(), None);
        run(&mut s, &["USER user1", "PASS pw"]);
        assert_eq!(s.user(), Some("user1"));
        assert_eq!(run(&mut s, &["USER user2"]), "-ERR already logged in\r\n");
    }

    #[test]
    fn password_may_contain_spaces() {
        let m = maildrop();
        m.set_password("a b ");
        let mut s = ServerSession::new(m, 1, TS.into());
        assert!(
            run(&mut s, &["USER user2", "PASS a b "])
                .ends_with("+OK user2's maildrop has 3 messages (2100 octets)\r\n")
        );
    }

    #[test]
    fn apop_digest() {
        let m = maildrop();
        let good = hex(&Md5::digest(format!("{TS}pw").as_bytes()));
        let mut s = ServerSession::new(m.clone(), 1, TS.into());
        assert_eq!(
            run(&mut s, &["APOP user1 0123456789abcdef0123456789abcdef"]),
            "-ERR [AUTH] invalid credentials\r\n"
        );
        assert_eq!(run(&mut s, &["APOP user1"]), "-ERR invalid arguments\r\n");
        assert!(run(&mut s, &[&format!("APOP user1 {}", good.to_uppercase())]).starts_with("+OK user1's"));
    }

    #[test]
    fn auth_plain_flows() {
        let m = maildrop();
        let mut s = ServerSession::new(m.clone(), 1, TS.into());
        // "\0user1\0pw", "\0user1\0no", "user2\0user1\0pw"
        assert_eq!(run(&mut s, &["AUTH"]), "+OK SASL mechanisms follow\r\nPLAIN\r\n.\r\n");
        assert_eq!(run(&mut s, &["AUTH CRAM-MD5"]), "-ERR unsupported SASL mechanism\r\n");
        assert_eq!(run(&mut s, &["AUTH PLAIN", "*"]), "+ \r\n-ERR authentication cancelled\r\n");
        assert_eq!(run(&mut s, &["AUTH PLAIN", "!!"]), "+ \r\n-ERR malformed SASL response\r\n");
        assert_eq!(run(&mut s, &["AUTH PLAIN AHVzZXIxAG5v"]), "-ERR [AUTH] invalid credentials\r\n");
        assert_eq!(run(&mut s, &["AUTH PLAIN dXNlcjIAdXNlcjEAcHc="]), "-ERR [AUTH] invalid credentials\r\n");
        assert_eq!(run(&mut s, &["AUTH PLAIN ="]), "-ERR malformed SASL response\r\n");
        assert_eq!(s.max_line(), MAX_COMMAND_LINE);
        assert_eq!(run(&mut s, &["AUTH PLAIN"]), "+ \r\n");
        assert_eq!(s.max_line(), MAX_SASL_LINE);
        assert!(run(&mut s, &["AHVzZXIxAHB3"]).starts_with("+OK user1's"));
        let mut s2 = ServerSession::new(m, 2, TS.into());
        assert_eq!(run(&mut s2, &["AUTH PLAIN AHVzZXIxAHB3"]), "-ERR [IN-USE] maildrop locked\r\n");
    }

    #[test]
    fn transaction_listing_and_deletion_marks() {
        let m = maildrop();
        let mut s = logged_in(&m, 1);
        assert_eq!(
            run(&mut s, &["STAT", "LIST 2", "UIDL 3", "LIST 4", "LIST 0"]),
            "+OK 3 2100\r\n+OK 2 700\r\n+OK 3 user1-000003\r\n-ERR no such message\r\n-ERR no such message\r\n"
        );
        assert_eq!(
            run(&mut s, &["DELE 2", "DELE 2", "RETR 2", "LIST 2", "TOP 2 0", "STAT"]),
            "+OK message 2 deleted\r\n-ERR no such message\r\n-ERR no such message\r\n-ERR no such message\r\n-ERR no such message\r\n+OK 2 1400\r\n"
        );
        assert_eq!(
            run(&mut s, &["LIST", "UIDL"]),
            "+OK 2 messages (1400 octets)\r\n1 700\r\n3 700\r\n.\r\n+OK unique-id listing follows\r\n1 user1-000001\r\n3 user1-000003\r\n.\r\n"
        );
        assert_eq!(run(&mut s, &["RSET", "STAT"]), "+OK maildrop has 3 messages (2100 octets)\r\n+OK 3 2100\r\n");
        assert_eq!(
            run(&mut s, &["RETR x", "FROB", "NOOP"]),
            "-ERR invalid arguments\r\n-ERR unknown command\r\n+OK\r\n"
        );
    }

    #[test]
    fn retr_is_dot_stuffed() {
        let m = maildrop();
        let mut s = logged_in(&m, 1);
        let answer = run(&mut s, &["RETR 1"]);
        assert!(answer.starts_with("+OK 700 octets\r\n"));
        assert!(answer.contains("\r\n..This line starts with a dot"));
        assert!(answer.contains("\r\n..\r\n...Two dots"));
        assert!(answer.ends_with("\r\n..\r\n.\r\n"));
        assert_eq!(answer.matches("\r\n.\r\n").count(), 1, "only the terminator is a lone dot");
    }

    #[test]
    fn quit_expunges_then_answers() {
        let m = maildrop();
        let mut s = logged_in(&m, 7);
        let mut out = Vec::new();
        s.handle_line(b"DELE 1\r\n", &mut out);
        s.handle_line(b"DELE 3\r\n", &mut out);
        assert!(m.ledger().is_empty(), "nothing expunged before QUIT");
        assert_eq!(s.handle_line(b"QUIT\r\n", &mut out), Next::Close);
        assert!(String::from_utf8_lossy(&out).ends_with("+OK popfault signing off (1 messages left)\r\n"));
        assert_eq!(
            m.ledger().iter().map(|e| (e.uid.as_str(), e.session)).collect::<Vec<_>>(),
            [("user1-000001", 7), ("user1-000003", 7)]
        );
        assert!(!m.is_locked("user1"), "lock released at UPDATE");
        assert_eq!(s.handle_line(b"NOOP\r\n", &mut out), Next::Close);
    }

    #[test]
    fn dropping_a_session_deletes_nothing_and_unlocks() {
        let m = maildrop();
        let mut s = logged_in(&m, 1);
        run(&mut s, &["DELE 1", "DELE 2"]);
        assert!(m.is_locked("user1"));
        drop(s);
        assert!(!m.is_locked("user1"));
        assert!(m.ledger().is_empty());
        assert_eq!(m.remaining("user1").len(), 3);
    }

    #[test]
    fn numbering_is_fixed_for_the_session() {
        let m = maildrop();
        let mut s = logged_in(&m, 1);
        m.add_message("user1", b"Subject: new\r\n\r\nhi\r\n".to_vec());
        assert_eq!(run(&mut s, &["STAT", "LIST 4"]), "+OK 3 2100\r\n-ERR no such message\r\n");
        run(&mut s, &["DELE 1", "QUIT"]);
        assert_eq!(m.remaining("user1").len(), 3, "new mail survives the expunge");
    }

    #[test]
    fn too_long_lines_and_capa() {
        let m = maildrop();
        let mut s = ServerSession::new(m, 1, TS.into());
        let mut out = Vec::new();
        assert_eq!(s.line_too_long(&mut out), Next::Continue);
        assert_eq!(out, b"-ERR line too long\r\n");
        run(&mut s, &["AUTH PLAIN"]);
        out.clear();
        s.line_too_long(&mut out);
        assert_eq!(s.max_line(), MAX_COMMAND_LINE, "a too-long SASL response ends the exchange");
        let capa = run(&mut s, &["CAPA"]);
        assert_eq!(
            capa,
            "+OK capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nPIPELINING\r\nSASL PLAIN\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nIMPLEMENTATION popfault\r\n.\r\n"
        );
        assert_eq!(run(&mut s, &["QUIT"]), "+OK popfault signing off\r\n");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let m = maildrop();
        let mut s = logged_in(&m, 1);
        let inputs: [&[u8]; 9] = [
            b"",
            b"\r\n",
            b"\0\0\0",
            b"\xff\xfe TOP",
            b"TOP 1 4294967295",
            b"RETR 4294967295",
            b"DELE 0",
            b"LIST 99999999999",
            b"   ",
        ];
        let mut out = Vec::new();
        for i in inputs {
            assert_eq!(s.handle_line(i, &mut out), Next::Continue);
        }
    }
}
