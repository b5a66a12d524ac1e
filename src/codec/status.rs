//! Server status lines: `+OK`, `-ERR`, response codes (RFC 2449 §8,
//! RFC 3206) and SASL continuations (RFC 5034).

use super::command::trim_eol;

/// Longest response code kept (`SYS/TEMP`, `LOGIN-DELAY`, …).
const MAX_CODE: usize = 32;

/// A parsed status line. The free text is not kept: it may echo secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `+OK` (true) or anything else (false).
    pub ok: bool,
    /// The line starts with `+` but not `+OK`: a SASL continuation.
    continuation: bool,
    /// The response code in brackets after the status, upper-cased:
    /// `IN-USE`, `LOGIN-DELAY`, `SYS/TEMP`, `SYS/PERM`, `AUTH`.
    pub code: Option<String>,
    /// The line broke RFC 2449's 512-octet limit (framed from its start).
    pub overlong: bool,
}

impl Status {
    /// Parses a status line (CRLF optional). Anything that is not `+OK`
    /// counts as not OK, as RFC 1939 clients must treat it.
    pub fn parse(line: &[u8]) -> Status {
        let line = trim_eol(line);
        let ok = starts_with_ci(line, b"+OK") && (line.len() == 3 || line[3] == b' ');
        let continuation = !ok && line.first() == Some(&b'+');
        let rest = if ok {
            &line[3..]
        } else if starts_with_ci(line, b"-ERR") {
            &line[4..]
        } else {
            &line[line.len()..]
        };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        let code = rest.strip_prefix(b"[").and_then(|r| {
            let end = r.iter().take(MAX_CODE + 1).position(|&b| b == b']')?;
            let code = &r[..end];
            code.iter().all(|b| b.is_ascii_graphic()).then(|| String::from_utf8_lossy(code).to_ascii_uppercase())
        });
        Status { ok, continuation, code, overlong: false }
    }

    /// Whether this is a SASL `+ ` continuation rather than `+OK`/`-ERR`.
    pub fn is_continuation(&self) -> bool {
        self.continuation
    }
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_err_and_codes() {
        let s = Status::parse(b"+OK 2 320\r\n");
        assert!(s.ok && s.code.is_none() && !s.is_continuation());
        let s = Status::parse(b"-ERR [IN-USE] maildrop locked\r\n");
        assert!(!s.ok);
        assert_eq!(s.code.as_deref(), Some("IN-USE"));
        assert_eq!(Status::parse(b"-ERR [sys/temp] later\r\n").code.as_deref(), Some("SYS/TEMP"));
        assert_eq!(Status::parse(b"+OK [LOGIN-DELAY] x\r\n").code.as_deref(), Some("LOGIN-DELAY"));
        assert!(Status::parse(b"+OK\r\n").ok);
        assert!(!Status::parse(b"+OKAY\r\n").ok);
        assert!(Status::parse(b"+ \r\n").is_continuation());
        assert!(Status::parse(b"+ dGVzdA==\r\n").is_continuation());
        assert!(!Status::parse(b"garbage\r\n").ok);
        assert!(Status::parse(b"-ERR [unterminated\r\n").code.is_none());
    }
}

/// The size a `+OK` status line announces (`+OK 1234 octets`): its first
/// word, when that is a number. Used to aim `fraction` body faults.
pub fn announced_size(line: &[u8]) -> Option<u64> {
    let line = trim_eol(line);
    let rest = line.get(3..)?.strip_prefix(b" ")?;
    let word = rest.split(|&b| b == b' ').next()?;
    if word.is_empty() || word.len() > 19 || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

#[cfg(test)]
mod size_tests {
    use super::announced_size;

    #[test]
    fn sizes() {
        assert_eq!(announced_size(b"+OK 120 octets\r\n"), Some(120));
        assert_eq!(announced_size(b"+OK message follows\r\n"), None);
        assert_eq!(announced_size(b"+OK\r\n"), None);
        assert_eq!(announced_size(b"+OK 99999999999999999999999\r\n"), None);
    }
}
