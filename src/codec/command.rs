//! Client commands (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH, RFC 2595 STLS).
//!
//! Parsing never fails: anything not recognised becomes [`Command::Unknown`],
//! because a proxy must relay what it does not understand.
//!
//! Secrets by construction: nothing a client sends is kept as text except a
//! user name that passed [`UserName::parse`]. A keyword is kept only if it
//! is one of [`KEYWORDS`] (as that `&'static str`); any other line is the
//! label [`OTHER`], whatever it holds (a password typed on a line of its
//! own, a base64 SASL answer out of step). A SASL mechanism is one of
//! [`MECHANISMS`] or `OTHER`.

use std::fmt;

/// The client keywords the proxy knows: RFC 1939's twelve, `CAPA`
/// (RFC 2449), `AUTH` (RFC 5034), `STLS` (RFC 2595), `UTF8` and `LANG`
/// (RFC 6856), and two that clients still send: `LAST` (RFC 1460, dropped
/// from later revisions) and `XTND` (Eudora's `XTND XMIT`). Only these are
/// ever stored, counted or shown; every other line is [`OTHER`].
pub const KEYWORDS: [&str; 20] = [
    "USER", "PASS", "APOP", "AUTH", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL", "CAPA",
    "STLS", "UTF8", "LANG", "LAST", "XTND", OTHER,
];

/// The one label of a client line whose keyword is not a known one.
pub const OTHER: &str = "OTHER";

/// SASL mechanisms shown by name (the common ones of the IANA registry);
/// any other is [`OTHER`], as a mechanism name may be a mistyped secret.
pub const MECHANISMS: [&str; 16] = [
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "GSSAPI",
    "GS2-KRB5",
    "EXTERNAL",
    "ANONYMOUS",
    "NTLM",
    "OAUTHBEARER",
    "XOAUTH2",
    OTHER,
];

/// The shown form of a user name that failed validation.
pub const INVALID_USER: &str = "(invalid)";

/// Longest user name kept, in bytes (RFC 1939 does not limit it; we must).
pub const MAX_USER: usize = 64;

/// Whether `label` is one the proxy may store or show for a command:
/// one of [`KEYWORDS`] (`OTHER` included).
pub fn is_label(label: &str) -> bool {
    KEYWORDS.contains(&label)
}

/// `label` if it is a known one, else [`OTHER`]: for folds that take a
/// keyword as text and must not keep anything else.
pub fn label(label: &str) -> &'static str {
    KEYWORDS.iter().find(|k| **k == label).copied().unwrap_or(OTHER)
}

/// The known keyword `word` is (any case), else [`OTHER`].
fn keyword(word: &[u8]) -> &'static str {
    KEYWORDS.iter().find(|k| word.eq_ignore_ascii_case(k.as_bytes())).copied().unwrap_or(OTHER)
}

fn mechanism(word: &[u8]) -> &'static str {
    MECHANISMS.iter().find(|m| word.eq_ignore_ascii_case(m.as_bytes())).copied().unwrap_or(OTHER)
}

/// A byte that ends a keyword or an argument: any ASCII whitespace or
/// control byte, so that `PASS<TAB>secret` is `PASS` and its argument is
/// dropped, not a keyword `PASS<TAB>SECRET`.
fn is_separator(b: u8) -> bool {
    b <= b' ' || b == 0x7f
}

/// A user name as given to `USER` or `APOP`, validated: one token of 1 to
/// [`MAX_USER`] bytes of UTF-8 with no control, whitespace or invisible
/// formatting character. Anything else (`USER alice Zq7Kx9 Wv3Tp`, a name
/// with an escape sequence) is `Invalid` and its text is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserName {
    /// A name that passed validation.
    Valid(String),
    /// Not a valid name; shown as [`INVALID_USER`].
    Invalid,
}

impl UserName {
    /// Validates one argument token (no separator bytes in it).
    pub fn parse(token: &[u8]) -> UserName {
        let Ok(text) = std::str::from_utf8(token) else { return UserName::Invalid };
        let shown = |c: char| !c.is_control() && !c.is_whitespace() && !is_invisible(c);
        if text.is_empty() || text.len() > MAX_USER || !text.chars().all(shown) {
            return UserName::Invalid;
        }
        UserName::Valid(text.to_owned())
    }

    /// The name, or [`INVALID_USER`].
    pub fn as_str(&self) -> &str {
        match self {
            UserName::Valid(name) => name,
            UserName::Invalid => INVALID_USER,
        }
    }

    /// The name if it is valid.
    pub fn valid(&self) -> Option<&str> {
        match self {
            UserName::Valid(name) => Some(name),
            UserName::Invalid => None,
        }
    }
}

/// Validates `name` as one token (tests and callers that have text).
impl From<&str> for UserName {
    fn from(name: &str) -> UserName {
        UserName::parse(name.as_bytes())
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Characters that draw nothing or reorder what follows (zero-width
/// spaces and joiners, bidirectional controls, the BOM): a name holding
/// them would not look like what it is.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// One parsed client command line (without its CRLF).
///
/// Arguments that carry secrets (PASS, the APOP digest, an AUTH initial
/// response) are not kept at all, so they cannot leak through `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(UserName),
    /// `PASS secret` (secret dropped)
    Pass,
    /// `APOP name digest` (digest dropped)
    Apop(UserName),
    /// `AUTH [mechanism [initial-response]]` (initial response dropped)
    Auth {
        /// The SASL mechanism, one of [`MECHANISMS`] (`OTHER` for any
        /// other); `None` for a bare `AUTH`.
        mechanism: Option<&'static str>,
        /// Whether an initial response was given on the command line.
        initial_response: bool,
    },
    /// `STAT`
    Stat,
    /// `LIST [n]`
    List(Option<u32>),
    /// `RETR n`
    Retr(u32),
    /// `DELE n`
    Dele(u32),
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `QUIT`
    Quit,
    /// `TOP n lines`
    Top(u32, u32),
    /// `UIDL [n]`
    Uidl(Option<u32>),
    /// `CAPA`
    Capa,
    /// `STLS`
    Stls,
    /// Anything else: a known keyword the proxy does not follow (`UTF8`,
    /// `LANG`, `LAST`, `XTND`), a known keyword with malformed arguments,
    /// or any other line, as [`OTHER`]. Holds one of [`KEYWORDS`], never
    /// the client's text.
    Unknown(&'static str),
}

impl Command {
    /// Parses one command line; `line` may include its CRLF or LF.
    pub fn parse(line: &[u8]) -> Command {
        let line = trim_eol(line);
        let end = line.iter().position(|&b| is_separator(b)).unwrap_or(line.len());
        let (word, rest) = line.split_at(end);
        let kw = keyword(word);
        let args: Vec<&[u8]> = rest.split(|&b| is_separator(b)).filter(|a| !a.is_empty()).collect();
        let num = |i: usize| args.get(i).and_then(|a| parse_num(a));
        let unknown = || Command::Unknown(kw);
        match kw {
            // One token, or the name is not kept.
            "USER" if args.len() == 1 => Command::User(UserName::parse(args[0])),
            "USER" if !args.is_empty() => Command::User(UserName::Invalid),
            "PASS" => Command::Pass,
            "APOP" if args.len() == 2 => Command::Apop(UserName::parse(args[0])),
            "APOP" if !args.is_empty() => Command::Apop(UserName::Invalid),
            "AUTH" => Command::Auth { mechanism: args.first().map(|m| mechanism(m)), initial_response: args.len() > 1 },
            "STAT" if args.is_empty() => Command::Stat,
            "LIST" if args.is_empty() => Command::List(None),
            "LIST" if args.len() == 1 => num(0).map_or_else(unknown, |n| Command::List(Some(n))),
            "RETR" if args.len() == 1 => num(0).map_or_else(unknown, Command::Retr),
            "DELE" if args.len() == 1 => num(0).map_or_else(unknown, Command::Dele),
            "NOOP" if args.is_empty() => Command::Noop,
            "RSET" if args.is_empty() => Command::Rset,
            "QUIT" if args.is_empty() => Command::Quit,
            "TOP" if args.len() == 2 => match (num(0), num(1)) {
                (Some(n), Some(l)) => Command::Top(n, l),
                _ => unknown(),
            },
            "UIDL" if args.is_empty() => Command::Uidl(None),
            "UIDL" if args.len() == 1 => num(0).map_or_else(unknown, |n| Command::Uidl(Some(n))),
            "CAPA" if args.is_empty() => Command::Capa,
            "STLS" if args.is_empty() => Command::Stls,
            _ => unknown(),
        }
    }

    /// The command's label: its keyword, upper-cased, or [`OTHER`]; always
    /// one of [`KEYWORDS`].
    pub fn name(&self) -> &'static str {
        match self {
            Command::User(_) => "USER",
            Command::Pass => "PASS",
            Command::Apop(_) => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Retr(_) => "RETR",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
            Command::Top(..) => "TOP",
            Command::Uidl(_) => "UIDL",
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::Unknown(k) => k,
        }
    }

    /// The message number the command names (RETR, DELE, TOP, and LIST or
    /// UIDL with an argument), for showing where a fault fired.
    pub fn message(&self) -> Option<u32> {
        match self {
            Command::Retr(n)
            | Command::Dele(n)
            | Command::Top(n, _)
            | Command::List(Some(n))
            | Command::Uidl(Some(n)) => Some(*n),
            _ => None,
        }
    }

    /// Whether a `+OK` answer to this command is followed by a multi-line
    /// body (RFC 1939 §5–§7, RFC 2449 CAPA). A bare `AUTH` lists mechanisms
    /// multi-line on common servers (Dovecot, Cyrus). Unknown commands are
    /// never assumed multi-line: a body assumed where there is none would
    /// take every later answer for body bytes, while the other mistake
    /// mis-frames only that one answer.
    pub fn multiline_on_ok(&self) -> bool {
        matches!(
            self,
            Command::Retr(_)
                | Command::Top(..)
                | Command::List(None)
                | Command::Uidl(None)
                | Command::Capa
                | Command::Auth { mechanism: None, .. }
        )
    }

    /// Whether this command opens a SASL exchange (`+ ` continuations).
    pub fn is_sasl(&self) -> bool {
        matches!(self, Command::Auth { mechanism: Some(_), .. })
    }
}

/// Displays the command as it could be logged: secrets shown as `***`,
/// arguments of an unknown line as `…`.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(u) => write!(f, "USER {u}"),
            Command::Pass => f.write_str("PASS ***"),
            Command::Apop(u) => write!(f, "APOP {u} ***"),
            Command::Auth { mechanism: None, .. } => f.write_str("AUTH"),
            Command::Auth { mechanism: Some(m), initial_response } => {
                write!(f, "AUTH {m}{}", if *initial_response { " ***" } else { "" })
            }
            Command::List(Some(n)) => write!(f, "LIST {n}"),
            Command::Retr(n) => write!(f, "RETR {n}"),
            Command::Dele(n) => write!(f, "DELE {n}"),
            Command::Top(n, l) => write!(f, "TOP {n} {l}"),
            Command::Uidl(Some(n)) => write!(f, "UIDL {n}"),
            Command::Unknown(k) => write!(f, "{k} …"),
            other => f.write_str(other.name()),
        }
    }
}

/// Strips one trailing LF and then one trailing CR.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_rfc1939_command() {
        assert_eq!(Command::parse(b"USER alice\r\n"), Command::User("alice".into()));
        assert_eq!(Command::parse(b"USER alice\r\n"), Command::User(UserName::Valid("alice".into())));
        assert_eq!(Command::parse(b"pass hunter2\r\n"), Command::Pass);
        assert_eq!(Command::parse(b"APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n"), Command::Apop("bob".into()));
        assert_eq!(Command::parse(b"STAT\r\n"), Command::Stat);
        assert_eq!(Command::parse(b"LIST\r\n"), Command::List(None));
        assert_eq!(Command::parse(b"LIST 3\r\n"), Command::List(Some(3)));
        assert_eq!(Command::parse(b"RETR 12\r\n"), Command::Retr(12));
        assert_eq!(Command::parse(b"dele 1\n"), Command::Dele(1));
        assert_eq!(Command::parse(b"NOOP\r\n"), Command::Noop);
        assert_eq!(Command::parse(b"RSET\r\n"), Command::Rset);
        assert_eq!(Command::parse(b"QUIT\r\n"), Command::Quit);
        assert_eq!(Command::parse(b"TOP 1 10\r\n"), Command::Top(1, 10));
        assert_eq!(Command::parse(b"UIDL\r\n"), Command::Uidl(None));
        assert_eq!(Command::parse(b"UIDL 2\r\n"), Command::Uidl(Some(2)));
        assert_eq!(Command::parse(b"CAPA\r\n"), Command::Capa);
        assert_eq!(Command::parse(b"STLS\r\n"), Command::Stls);
        assert_eq!(
            Command::parse(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
            Command::Auth { mechanism: Some("PLAIN"), initial_response: true }
        );
        assert_eq!(Command::parse(b"AUTH\r\n"), Command::Auth { mechanism: None, initial_response: false });
    }

    #[test]
    fn malformed_and_unknown_are_unknown_never_errors() {
        assert_eq!(Command::parse(b"RETR x\r\n"), Command::Unknown("RETR"));
        assert_eq!(Command::parse(b"RETR 99999999999\r\n"), Command::Unknown("RETR"));
        assert_eq!(Command::parse(b"XTND XMIT\r\n"), Command::Unknown("XTND"));
        assert_eq!(Command::parse(b"utf8\r\n"), Command::Unknown("UTF8"));
        assert_eq!(Command::parse(b"\r\n"), Command::Unknown(OTHER));
        assert_eq!(Command::parse(b"\xff\xfe\r\n"), Command::Unknown(OTHER));
    }

    #[test]
    fn only_known_keywords_are_kept_anything_else_is_other() {
        // A password typed on a line of its own, its base64 (an AUTH LOGIN
        // answer out of step), an unknown keyword, an escape sequence.
        for line in [
            &b"Zq7Kx9Wv3Tp\r\n"[..],
            b"WnE3S3g5V3YzVHA=\r\n",
            b"HUNTER2 and more\r\n",
            b"\x1b[2J\r\n",
            b"PASSsecret\r\n",
            b"RETRIEVE 1\r\n",
        ] {
            let cmd = Command::parse(line);
            assert_eq!(cmd, Command::Unknown(OTHER), "{line:?}");
            assert_eq!((cmd.name(), cmd.to_string().as_str()), (OTHER, "OTHER …"));
        }
        for line in KEYWORDS {
            assert!(is_label(Command::parse(line.as_bytes()).name()));
        }
        assert_eq!((label("RETR"), label("Zq7Kx9"), label("retr")), ("RETR", OTHER, OTHER));
    }

    #[test]
    fn pass_with_any_whitespace_is_pass() {
        for line in [&b"PASS\tsecret\r\n"[..], b"pass\x0bsecret\r\n", b"PASS  secret with spaces\r\n", b"PASS\r\n"] {
            assert_eq!(Command::parse(line), Command::Pass, "{line:?}");
        }
        assert_eq!(Command::parse(b"RETR\t3\r\n"), Command::Retr(3));
    }

    #[test]
    fn user_names_are_validated() {
        let user = |line: &[u8]| match Command::parse(line) {
            Command::User(u) | Command::Apop(u) => u,
            other => panic!("{other:?}"),
        };
        assert_eq!(user(b"USER alice\r\n"), UserName::Valid("alice".into()));
        assert_eq!(user(b"USER  alice \r\n"), UserName::Valid("alice".into()));
        assert_eq!(user("USER jürgen@exämple.org\r\n".as_bytes()), UserName::Valid("jürgen@exämple.org".into()));
        assert_eq!(user(b"APOP bob c4c9334bac560ecc979e58001b3e22fb\r\n"), UserName::Valid("bob".into()));
        for line in [
            &b"USER alice Zq7Kx9 Wv3Tp\r\n"[..],
            b"USER al\x1b[2Jice\r\n",
            b"USER \xff\xfe\r\n",
            "USER al\u{9b}ice\r\n".as_bytes(),
            "USER ali\u{202e}ecila\r\n".as_bytes(),
            "USER a\u{a0}b\r\n".as_bytes(),
            b"APOP bob\r\n",
            b"APOP bob secret digest\r\n",
        ] {
            assert_eq!(user(line), UserName::Invalid, "{line:?}");
        }
        let long = format!("USER {}\r\n", "a".repeat(MAX_USER + 1));
        assert_eq!(user(long.as_bytes()), UserName::Invalid);
        let longest = format!("USER {}\r\n", "a".repeat(MAX_USER));
        assert!(user(longest.as_bytes()).valid().is_some());
        assert_eq!(Command::parse(b"USER a b\r\n").to_string(), "USER (invalid)");
        assert_eq!(Command::parse(b"USER\r\n"), Command::Unknown("USER"));
    }

    #[test]
    fn auth_mechanisms_are_known_names_or_other() {
        let mech = |line: &[u8]| match Command::parse(line) {
            Command::Auth { mechanism, .. } => mechanism,
            other => panic!("{other:?}"),
        };
        assert_eq!(mech(b"AUTH scram-sha-256\r\n"), Some("SCRAM-SHA-256"));
        assert_eq!(mech(b"AUTH Zq7Kx9Wv3Tp\r\n"), Some(OTHER));
        assert_eq!(Command::parse(b"AUTH Zq7Kx9Wv3Tp\r\n").to_string(), "AUTH OTHER");
        assert!(Command::parse(b"AUTH Zq7Kx9Wv3Tp\r\n").is_sasl());
    }

    #[test]
    fn display_redacts_secrets() {
        for line in [
            &b"PASS hunter2\r\n"[..],
            b"PASS\thunter2\r\n",
            b"APOP bob deadbeefdigest\r\n",
            b"AUTH PLAIN c2VjcmV0\r\n",
            b"hunter2\r\n",
            b"USER alice hunter2\r\n",
        ] {
            let shown = format!("{} {:?}", Command::parse(line), Command::parse(line));
            assert!(
                !shown.contains("hunter2") && !shown.contains("deadbeef") && !shown.contains("c2VjcmV0"),
                "{shown}"
            );
        }
    }

    #[test]
    fn multiline_rules() {
        assert!(Command::Retr(1).multiline_on_ok());
        assert!(Command::List(None).multiline_on_ok());
        assert!(!Command::List(Some(1)).multiline_on_ok());
        assert!(!Command::Uidl(Some(1)).multiline_on_ok());
        assert!(!Command::Unknown("XTND").multiline_on_ok());
    }
}
