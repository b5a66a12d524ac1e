//! Message text: generation, CRLF normalisation, header lookup, TOP and
//! dot-stuffing. Pure functions over bytes.

use std::fmt::Write as _;

/// Width of generated filler lines, well under RFC 5322's 78.
const FILLER_WIDTH: usize = 72;

/// Words for the filler text; any printable ASCII would do.
const WORDS: &[&str] = &[
    "mail", "drop", "post", "office", "protocol", "message", "proxy", "fault", "retry", "delete", "update", "session",
    "octet", "line", "server", "client", "queue", "ledger", "quit", "list",
];

/// The stable UID of a user's `n`-th delivered message.
pub(crate) fn uid(user: &str, n: u64) -> String {
    format!("{user}-{n:06}")
}

/// The Message-ID given to a user's `n`-th delivered message when it has none.
pub(crate) fn message_id(user: &str, n: u64) -> String {
    format!("<u{n}.{user}.popfault@localhost>")
}

/// Generates message `n` for `user`: RFC 5322 text with CRLF line endings,
/// of exactly `size` octets when `size` leaves room for the fixed parts
/// (otherwise a little larger). Same inputs, same bytes.
///
/// The body contains lines beginning with `.`, and lines that are exactly
/// `.`, so that every RETR exercises dot-stuffing on both ends.
pub(crate) fn generate(user: &str, n: u64, size: usize) -> Vec<u8> {
    let mut text = String::with_capacity(size + 512);
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        text,
        "From: popfault generator <generator@popfault.invalid>\r\n\
         To: {user} <{user}@localhost>\r\n\
         Subject: popfault test message {n} for {user}\r\n\
         Date: {date}\r\n\
         Message-ID: {mid}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Hello {user}, this is message {n}.\r\n\
         .This line starts with a dot and must be stuffed.\r\n\
         .\r\n\
         ..Two dots, and the line above is a lone dot.\r\n",
        date = date(n),
        mid = message_id(user, n),
    );
    // A lone dot as the very last line puts a stuffed line right before the terminator.
    const TRAILER: &str = ".\r\n";

    let mut rng = XorShift::new(seed(user, n));
    let mut rem = size.saturating_sub(text.len() + TRAILER.len());
    while rem >= 2 {
        // Keep at least 2 octets for a final (possibly empty) line so the total lands on `size`.
        let width = if rem >= FILLER_WIDTH + 4 { FILLER_WIDTH } else { rem - 2 };
        filler_line(&mut text, width, &mut rng);
        rem -= width + 2;
    }
    text.push_str(TRAILER);
    text.into_bytes()
}

/// A fixed, valid RFC 5322 date that advances one minute per message.
fn date(n: u64) -> String {
    let minutes = n % (31 * 24 * 60);
    let (day, hour, minute) = (1 + minutes / (24 * 60), minutes / 60 % 24, minutes % 60);
    format!("{day} Jan 2024 {hour:02}:{minute:02}:00 +0000")
}

fn filler_line(text: &mut String, width: usize, rng: &mut XorShift) {
    let start = text.len();
    while text.len() - start < width {
        if text.len() > start {
            text.push(' ');
        }
        text.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
    }
    // All ASCII, so truncating at any byte is a char boundary.
    text.truncate(start + width);
    text.push_str("\r\n");
}

/// FNV-1a over the user name, mixed with the message number.
fn seed(user: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// Deterministic filler, not randomness: reproducible text per (user, n).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Converts bare LF to CRLF and makes non-empty content end with CRLF, so
/// that stored sizes are the RFC 1939 octet counts.
pub(crate) fn normalize_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32 + 2);
    let mut prev = 0u8;
    for &b in input {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Where the body starts (just past the empty line), if there is a body.
fn body_start(content: &[u8]) -> Option<usize> {
    if content.starts_with(b"\r\n") {
        return Some(2);
    }
    content.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The value of the first header called `name` (case-insensitive), unfolded
/// and trimmed.
pub(crate) fn header_value(content: &[u8], name: &str) -> Option<String> {
    let headers = &content[..body_start(content).unwrap_or(content.len())];
    let mut found: Option<String> = None;
    for line in headers.split(|&b| b == b'\n') {
        let line = crate::codec::command::trim_eol(line);
        match &mut found {
            // A folded continuation line belongs to the header before it.
            Some(value) if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') => {
                value.push(' ');
                value.push_str(String::from_utf8_lossy(line).trim());
            }
            Some(_) => break,
            None => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    continue;
                };
                if line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
                    found = Some(String::from_utf8_lossy(&line[colon + 1..]).trim().to_string());
                }
            }
        }
    }
    found
}

/// The part of `content` that `TOP n lines` sends: the headers, the empty
/// line, and the first `lines` body lines (RFC 1939 §7).
pub(crate) fn top(content: &[u8], lines: u32) -> &[u8] {
    let Some(mut end) = body_start(content) else {
        return content;
    };
    for _ in 0..lines {
        match content[end..].iter().position(|&b| b == b'\n') {
            Some(p) => end += p + 1,
            None => return content,
        }
    }
    &content[..end]
}

/// Appends `body` as a multi-line response body: every line beginning with
/// `.` gets one more, the body ends with CRLF, then the `.` terminator.
pub(crate) fn stuff_into(out: &mut Vec<u8>, body: &[u8]) {
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &[u8]) -> Vec<&[u8]> {
        m.split_inclusive(|&b| b == b'\n').collect()
    }

    #[test]
    fn generated_message_has_dot_lines_and_only_crlf_endings() {
        let m = generate("user1", 7, 2048);
        let all = lines(&m);
        assert!(all.iter().all(|l| l.ends_with(b"\r\n")), "every line ends with CRLF");
        assert_eq!(m.iter().filter(|&&b| b == b'\n').count(), m.windows(2).filter(|w| w == b"\r\n").count());
        assert!(all.iter().any(|l| *l == b".\r\n"), "a line that is exactly a dot");
        assert!(all.iter().any(|l| l.starts_with(b".T")), "a line starting with a dot");
        assert!(all.iter().any(|l| l.starts_with(b"..")), "a line starting with two dots");
        assert_eq!(all.last(), Some(&&b".\r\n"[..]));
        assert!(all.iter().all(|l| l.len() <= 80));
    }

    #[test]
    fn generated_message_is_rfc5322_shaped() {
        let m = generate("user2", 3, 2048);
        assert_eq!(header_value(&m, "message-id").as_deref(), Some("<u3.user2.popfault@localhost>"));
        assert_eq!(header_value(&m, "To").as_deref(), Some("user2 <user2@localhost>"));
        assert_eq!(header_value(&m, "Date").as_deref(), Some("1 Jan 2024 00:03:00 +0000"));
        assert!(header_value(&m, "From").is_some() && header_value(&m, "Subject").is_some());
        assert!(body_start(&m).is_some());
    }

    #[test]
    fn generated_size_is_exact_when_room_and_deterministic() {
        // The fixed parts of message 1 for user1 take 406 octets.
        for size in (408..700).chain([2048, 10_000]) {
            assert_eq!(generate("user1", 1, size).len(), size, "size {size}");
        }
        // One octet over the fixed parts cannot hold a CRLF line: one short.
        assert_eq!(generate("user1", 1, 407).len(), 406);
        // Too small for the fixed parts: still a whole, valid message.
        let tiny = generate("user1", 1, 10);
        assert!(tiny.len() > 10 && tiny.ends_with(b"\r\n.\r\n"));
        assert_eq!(generate("user3", 9, 2048), generate("user3", 9, 2048));
        assert_ne!(generate("user3", 9, 2048), generate("user3", 10, 2048));
        assert_ne!(generate("user3", 9, 2048), generate("user4", 9, 2048));
    }

    #[test]
    fn normalize_makes_crlf() {
        assert_eq!(normalize_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc\r\n");
        assert_eq!(normalize_crlf(b""), b"");
        assert_eq!(normalize_crlf(b"x\r\n"), b"x\r\n");
    }

    #[test]
    fn header_lookup_unfolds_and_stops_at_body() {
        let m = b"Subject: a\r\n b\r\nX: 1\r\n\r\nMessage-ID: <body>\r\n";
        assert_eq!(header_value(m, "subject").as_deref(), Some("a b"));
        assert_eq!(header_value(m, "message-id"), None);
    }

    #[test]
    fn top_takes_headers_and_n_lines() {
        let m = b"A: 1\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(top(m, 0), b"A: 1\r\n\r\n");
        assert_eq!(top(m, 2), b"A: 1\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top(m, 99), &m[..]);
        assert_eq!(top(b"A: 1\r\n", 3), b"A: 1\r\n");
    }

    #[test]
    fn stuffing_doubles_leading_dots_and_terminates() {
        let mut out = Vec::new();
        stuff_into(&mut out, b".a\r\nb.\r\n.\r\n");
        assert_eq!(out, b"..a\r\nb.\r\n..\r\n.\r\n");
        out.clear();
        stuff_into(&mut out, b"");
        assert_eq!(out, b".\r\n");
        out.clear();
        stuff_into(&mut out, b"no eol");
        assert_eq!(out, b"no eol\r\n.\r\n");
    }
}
