//! Client commands (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH).
//!
//! Parsing never fails: anything not recognised becomes [`Command::Unknown`],
//! because a proxy must relay what it does not understand.

use std::fmt;

/// One parsed client command line (without its CRLF).
///
/// Arguments that carry secrets (PASS, the APOP digest, an AUTH initial
/// response) are not kept at all, so they cannot leak through `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(String),
    /// `PASS secret` (secret dropped)
    Pass,
    /// `APOP name digest` (digest dropped)
    Apop(String),
    /// `AUTH [mechanism [initial-response]]` (initial response dropped)
    Auth {
        /// The SASL mechanism, upper-cased; `None` for a bare `AUTH`.
        mechanism: Option<String>,
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
    /// Anything else, including known keywords with malformed arguments.
    /// Holds the keyword only (upper-cased, at most 16 bytes), never the
    /// arguments, which might be secrets.
    Unknown(String),
}

/// Longest keyword kept for an unknown command.
const MAX_KEYWORD: usize = 16;
/// Longest user name kept (RFC 1939 does not limit it; we must).
const MAX_NAME: usize = 64;

impl Command {
    /// Parses one command line; `line` may include its CRLF or LF.
    pub fn parse(line: &[u8]) -> Command {
        let line = trim_eol(line);
        let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &line[line.len()..]),
        };
        let kw = upper(keyword, MAX_KEYWORD);
        let args: Vec<&[u8]> = rest.split(|&b| b == b' ').filter(|a| !a.is_empty()).collect();
        let num = |i: usize| args.get(i).and_then(|a| parse_num(a));
        let unknown = || Command::Unknown(kw.clone());
        match kw.as_str() {
            "USER" if !args.is_empty() => Command::User(lossy(rest, MAX_NAME)),
            "PASS" => Command::Pass,
            "APOP" if !args.is_empty() => Command::Apop(lossy(args[0], MAX_NAME)),
            "AUTH" => Command::Auth {
                mechanism: args.first().map(|m| upper(m, MAX_KEYWORD)),
                initial_response: args.len() > 1,
            },
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

    /// The command keyword, upper-cased (`"RETR"`, or the unknown keyword).
    pub fn name(&self) -> &str {
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

/// Displays the command as it could be logged: secrets shown as `***`.
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

fn upper(b: &[u8], max: usize) -> String {
    let b = &b[..b.len().min(max)];
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn lossy(b: &[u8], max: usize) -> String {
    let b = &b[..b.len().min(max)];
    String::from_utf8_lossy(b).chars().filter(|c| !c.is_control()).collect()
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
            Command::Auth { mechanism: Some("PLAIN".into()), initial_response: true }
        );
        assert_eq!(Command::parse(b"AUTH\r\n"), Command::Auth { mechanism: None, initial_response: false });
    }

    #[test]
    fn malformed_and_unknown_are_unknown_never_errors() {
        assert_eq!(Command::parse(b"RETR x\r\n"), Command::Unknown("RETR".into()));
        assert_eq!(Command::parse(b"RETR 99999999999\r\n"), Command::Unknown("RETR".into()));
        assert_eq!(Command::parse(b"XTND XMIT\r\n"), Command::Unknown("XTND".into()));
        assert_eq!(Command::parse(b"\r\n"), Command::Unknown(String::new()));
        assert!(Command::parse(b"\xff\xfe\r\n").name().len() <= 3 * MAX_KEYWORD);
    }

    #[test]
    fn display_redacts_secrets() {
        for line in [&b"PASS hunter2\r\n"[..], b"APOP bob deadbeefdigest\r\n", b"AUTH PLAIN c2VjcmV0\r\n"] {
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
        assert!(!Command::Unknown("XTND".into()).multiline_on_ok());
    }
}
