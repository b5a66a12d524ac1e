//! An async POP3 client (RFC 1939, AUTH PLAIN from RFC 5034) and the two
//! built-in workloads that `demo` and the tests drive through the proxy.
//!
//! The client is "a buffer plus a socket": [`LineBuffer`] frames lines with
//! no I/O (so chunking can be tested exhaustively), [`Pop3Client`] only
//! moves bytes between it and the stream. Every read and write is bounded by
//! a timeout, every line by [`MAX_LINE`] and every multi-line response by a
//! configurable body limit, so a hostile or broken server can neither hang
//! a caller nor exhaust its memory.
//!
//! This module is self-contained on purpose: it is the independent observer
//! the proxy is checked against, so it does not reuse the proxy's codec.

use std::net::SocketAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod workload;

pub use workload::{Mode, ReceivedMessage, SessionReport, UidMemory, WorkloadConfig, extract_message_id, run_session};

/// Default bound on every connect, read and write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest line (without its line ending) the client accepts from a server.
pub const MAX_LINE: usize = 64 * 1024;

/// Default bound on one multi-line response (a RETR of a large message).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;

/// How much spare room to offer each socket read.
const READ_CHUNK: usize = 8 * 1024;

// === errors ===

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A socket error (connection refused, reset, broken pipe, ...).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection cleanly while a response was due.
    #[error("server closed the connection")]
    Disconnected,
    /// Nothing (or not enough) arrived within the configured timeout.
    #[error("timed out")]
    Timeout,
    /// The server answered `-ERR`; the text after `-ERR ` is kept verbatim.
    #[error("server replied -ERR: {0}")]
    Err(String),
    /// The server's reply was malformed or exceeded a limit.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The caller passed an argument that cannot be sent safely (e.g. a
    /// CR/LF that would inject a second command); nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// Whether the connection is still in a known state after this error,
    /// i.e. the server answered and another command (such as QUIT) may be
    /// sent. Transport errors, timeouts and protocol violations leave the
    /// stream position unknown.
    pub fn connection_usable(&self) -> bool {
        matches!(self, ClientError::Err(_) | ClientError::InvalidArgument(_))
    }
}

// === impl LineBuffer ===

/// Pure line framer: bytes go in, complete lines (with their line ending)
/// come out. Lines end at LF; a preceding CR is part of the ending.
#[derive(Debug, Default)]
struct LineBuffer {
    buf: Vec<u8>,
    /// Start of the first unconsumed byte.
    pos: usize,
    /// Everything in `pos..scan` is known to contain no LF, so a server
    /// trickling one byte at a time costs linear, not quadratic, time.
    scan: usize,
}

impl LineBuffer {
    /// Takes the next complete line, `Ok(None)` if more bytes are needed.
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        if let Some(i) = self.buf[self.scan..].iter().position(|&b| b == b'\n') {
            let end = self.scan + i + 1;
            let line = self.buf[self.pos..end].to_vec();
            self.pos = end;
            self.scan = end;
            if trim_eol(&line).len() > MAX_LINE {
                return Err(line_too_long());
            }
            return Ok(Some(line));
        }
        self.scan = self.buf.len();
        // Content may still lose one trailing CR; anything beyond that is
        // already over the limit, so fail now rather than keep buffering.
        if self.buf.len() - self.pos > MAX_LINE + 1 {
            return Err(line_too_long());
        }
        Ok(None)
    }

    /// Drops consumed bytes and returns the vector to read more into.
    fn spare(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.scan -= self.pos;
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    #[cfg(test)]
    fn push(&mut self, bytes: &[u8]) {
        self.spare().extend_from_slice(bytes);
    }
}

fn line_too_long() -> ClientError {
    ClientError::Protocol(format!("line longer than {MAX_LINE} bytes"))
}

/// A line without its CRLF or LF ending.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One line of a multi-line response, classified.
#[derive(Debug, PartialEq, Eq)]
enum BodyLine<'a> {
    /// The terminating ".".
    End,
    /// Content with byte-stuffing removed, line ending kept.
    Data(&'a [u8]),
}

/// Classifies a complete line of a multi-line body (RFC 1939 §3).
fn body_line(line: &[u8]) -> BodyLine<'_> {
    if trim_eol(line) == b"." {
        BodyLine::End
    } else if line.starts_with(b"..") {
        BodyLine::Data(&line[1..])
    } else {
        // A lone leading "." not followed by another is a server bug; keep
        // the bytes rather than guess.
        BodyLine::Data(line)
    }
}

/// Parses a status line into the text after `+OK`, or the matching error.
fn parse_status(line: &[u8]) -> Result<String, ClientError> {
    let line = trim_eol(line);
    if let Some(rest) = status_rest(line, b"+OK") {
        Ok(rest)
    } else if let Some(rest) = status_rest(line, b"-ERR") {
        Err(ClientError::Err(rest))
    } else {
        Err(ClientError::Protocol(format!("expected +OK or -ERR, got {:?}", preview(line))))
    }
}

/// The text after an indicator that is followed by a space or nothing.
fn status_rest(line: &[u8], indicator: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(indicator)?;
    match rest.first() {
        None => Some(String::new()),
        Some(b' ') | Some(b'\t') => Some(String::from_utf8_lossy(&rest[1..]).into_owned()),
        Some(_) => None,
    }
}

/// A short, printable excerpt of peer bytes for error messages.
fn preview(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(80)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Rejects arguments that would break command framing.
fn check_arg(what: &str, value: &str) -> Result<(), ClientError> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(ClientError::InvalidArgument(format!("{what} contains CR or LF")));
    }
    Ok(())
}

// === impl Pop3Client ===

/// An async POP3 client over TCP.
///
/// Methods send one command and read its whole response. For hand-made
/// pipelining, use [`send_raw`](Self::send_raw) with
/// [`read_status`](Self::read_status), [`read_line`](Self::read_line) and
/// [`read_multiline`](Self::read_multiline).
#[derive(Debug)]
pub struct Pop3Client {
    stream: TcpStream,
    lines: LineBuffer,
    timeout: Duration,
    max_body: usize,
    greeting: String,
}

impl Pop3Client {
    /// Connects with [`DEFAULT_TIMEOUT`] and reads the greeting. Returns the
    /// client and the greeting line (without CRLF). A `-ERR` greeting is
    /// returned as [`ClientError::Err`].
    pub async fn connect(addr: SocketAddr) -> Result<(Pop3Client, String), ClientError> {
        Pop3Client::connect_with_timeout(addr, DEFAULT_TIMEOUT).await
    }

    /// Like [`connect`](Self::connect), with `timeout` bounding the connect
    /// and every later read and write.
    pub async fn connect_with_timeout(
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(Pop3Client, String), ClientError> {
        let stream =
            tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| ClientError::Timeout)??;
        // Commands are tiny and each waits for its answer: don't let Nagle
        // delay them.
        stream.set_nodelay(true)?;
        let mut client = Pop3Client {
            stream,
            lines: LineBuffer::default(),
            timeout,
            max_body: DEFAULT_MAX_BODY,
            greeting: String::new(),
        };
        let line = client.read_line().await?;
        parse_status(line.as_bytes())?;
        client.greeting = line.clone();
        Ok((client, line))
    }

    /// The greeting line received on connect (without CRLF).
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// The bound on each read and write.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the bound on each later read and write.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Changes the largest multi-line response accepted (default
    /// [`DEFAULT_MAX_BODY`]), counted after unstuffing.
    pub fn set_max_body(&mut self, max_body: usize) {
        self.max_body = max_body;
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.stream.local_addr()?)
    }

    // --- authorization ---

    /// `USER name`.
    pub async fn user(&mut self, name: &str) -> Result<String, ClientError> {
        check_arg("user name", name)?;
        self.command(&format!("USER {name}"), "USER").await
    }

    /// `PASS password` (the password is never logged).
    pub async fn pass(&mut self, password: &str) -> Result<String, ClientError> {
        check_arg("password", password)?;
        self.command(&format!("PASS {password}"), "PASS ***").await
    }

    /// `USER` then `PASS`; returns the text of the PASS reply.
    pub async fn login(&mut self, name: &str, password: &str) -> Result<String, ClientError> {
        // Validate both before sending anything, so a bad password can't
        // leave a half-done login behind.
        check_arg("user name", name)?;
        check_arg("password", password)?;
        self.user(name).await?;
        self.pass(password).await
    }

    /// `APOP name digest`, the digest being the MD5 of the greeting's
    /// `<timestamp>` followed by the password, in lowercase hex.
    pub async fn apop(&mut self, name: &str, password: &str) -> Result<String, ClientError> {
        check_arg("user name", name)?;
        let timestamp = apop_timestamp(&self.greeting)
            .ok_or_else(|| ClientError::Protocol("greeting carries no APOP <timestamp>".to_string()))?;
        let digest = apop_digest(timestamp, password);
        self.command(&format!("APOP {name} {digest}"), "APOP ***").await
    }

    /// `AUTH PLAIN` (RFC 5034, RFC 4616) with authorization identity empty.
    /// With `initial_response` the credentials go on the command line;
    /// otherwise they are sent after the server's `+ ` continuation.
    pub async fn auth_plain(
        &mut self,
        name: &str,
        password: &str,
        initial_response: bool,
    ) -> Result<String, ClientError> {
        if name.contains('\0') || password.contains('\0') {
            return Err(ClientError::InvalidArgument("AUTH PLAIN credentials contain NUL".to_string()));
        }
        let mut plain = Vec::with_capacity(name.len() + password.len() + 2);
        plain.push(0);
        plain.extend_from_slice(name.as_bytes());
        plain.push(0);
        plain.extend_from_slice(password.as_bytes());
        let encoded = base64_encode(&plain);
        if initial_response {
            return self.command(&format!("AUTH PLAIN {encoded}"), "AUTH PLAIN ***").await;
        }
        self.send_line("AUTH PLAIN", "AUTH PLAIN").await?;
        let line = self.read_line().await?;
        if line.starts_with('+') && status_rest(line.as_bytes(), b"+OK").is_none() {
            self.command(&encoded, "(AUTH PLAIN response ***)").await
        } else {
            // -ERR surfaces as Err; a premature +OK is a protocol error.
            parse_status(line.as_bytes())?;
            Err(ClientError::Protocol(format!("expected a \"+ \" continuation, got {:?}", preview(line.as_bytes()))))
        }
    }

    // --- transaction ---

    /// `CAPA`: the capability lines.
    pub async fn capa(&mut self) -> Result<Vec<String>, ClientError> {
        let body = self.multiline_command("CAPA").await?;
        Ok(body_lines(&body).map(|l| String::from_utf8_lossy(l).into_owned()).collect())
    }

    /// `STAT`: message count and total size in octets.
    pub async fn stat(&mut self) -> Result<(u32, u64), ClientError> {
        let text = self.command("STAT", "STAT").await?;
        parse_pair(text.as_bytes())
            .ok_or_else(|| ClientError::Protocol(format!("bad STAT reply {:?}", preview(text.as_bytes()))))
    }

    /// `LIST`: (message number, size) for every message.
    pub async fn list(&mut self) -> Result<Vec<(u32, u64)>, ClientError> {
        let body = self.multiline_command("LIST").await?;
        body_lines(&body)
            .map(|l| parse_pair(l).ok_or_else(|| ClientError::Protocol(format!("bad LIST line {:?}", preview(l)))))
            .collect()
    }

    /// `UIDL`: (message number, unique id) for every message.
    pub async fn uidl(&mut self) -> Result<Vec<(u32, String)>, ClientError> {
        let body = self.multiline_command("UIDL").await?;
        body_lines(&body)
            .map(|l| parse_uidl_line(l).ok_or_else(|| ClientError::Protocol(format!("bad UIDL line {:?}", preview(l)))))
            .collect()
    }

    /// `RETR n`: the message, unstuffed, without the terminating ".\r\n",
    /// with its line endings as sent.
    pub async fn retr(&mut self, n: u32) -> Result<Vec<u8>, ClientError> {
        self.multiline_command(&format!("RETR {n}")).await
    }

    /// `TOP n lines`: the header and the first `lines` body lines.
    pub async fn top(&mut self, n: u32, lines: u32) -> Result<Vec<u8>, ClientError> {
        self.multiline_command(&format!("TOP {n} {lines}")).await
    }

    /// `DELE n`.
    pub async fn dele(&mut self, n: u32) -> Result<String, ClientError> {
        self.command(&format!("DELE {n}"), "DELE").await
    }

    /// `RSET`.
    pub async fn rset(&mut self) -> Result<String, ClientError> {
        self.command("RSET", "RSET").await
    }

    /// `NOOP`.
    pub async fn noop(&mut self) -> Result<String, ClientError> {
        self.command("NOOP", "NOOP").await
    }

    /// `QUIT`; `Ok` only on `+OK` (in TRANSACTION: the deletions applied).
    pub async fn quit(&mut self) -> Result<String, ClientError> {
        let text = self.command("QUIT", "QUIT").await?;
        // The server closes next; a failed shutdown changes nothing.
        let _ = self.stream.shutdown().await;
        Ok(text)
    }

    // --- raw access ---

    /// Writes bytes as they are (no CRLF added), bounded by the timeout.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await.map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    /// Reads one line and returns it without its line ending (lossy UTF-8).
    pub async fn read_line(&mut self) -> Result<String, ClientError> {
        let line = self.next_line().await?;
        Ok(String::from_utf8_lossy(trim_eol(&line)).into_owned())
    }

    /// Reads a status line: the text after `+OK`, or [`ClientError::Err`].
    pub async fn read_status(&mut self) -> Result<String, ClientError> {
        let line = self.next_line().await?;
        parse_status(&line)
    }

    /// Reads a multi-line body (after its status line) up to the line ".",
    /// unstuffing lines that begin with "..". The terminator is not
    /// included.
    pub async fn read_multiline(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        loop {
            let line = self.next_line().await?;
            match body_line(&line) {
                BodyLine::End => return Ok(body),
                BodyLine::Data(data) => {
                    if body.len() + data.len() > self.max_body {
                        return Err(ClientError::Protocol(format!(
                            "multi-line response longer than {} bytes",
                            self.max_body
                        )));
                    }
                    body.extend_from_slice(data);
                }
            }
        }
    }

    // --- internals ---

    /// Sends `line` + CRLF; `shown` is what may be logged instead.
    async fn send_line(&mut self, line: &str, shown: &str) -> Result<(), ClientError> {
        tracing::trace!(command = shown, "pop3 client send");
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes).await
    }

    /// One command, one status line.
    async fn command(&mut self, line: &str, shown: &str) -> Result<String, ClientError> {
        self.send_line(line, shown).await?;
        self.read_status().await
    }

    /// One command whose `+OK` is followed by a body.
    async fn multiline_command(&mut self, line: &str) -> Result<Vec<u8>, ClientError> {
        self.command(line, line).await?;
        self.read_multiline().await
    }

    /// The next complete line, reading (with timeout) as needed.
    async fn next_line(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(line) = self.lines.next_line()? {
                return Ok(line);
            }
            let spare = self.lines.spare();
            let n = tokio::time::timeout(self.timeout, self.stream.read_buf(spare))
                .await
                .map_err(|_| ClientError::Timeout)??;
            if n == 0 {
                return Err(ClientError::Disconnected);
            }
        }
    }
}

/// The lines of a body without their endings.
fn body_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split_inclusive(|&b| b == b'\n').map(trim_eol)
}

/// "n size" as in STAT replies and LIST lines; extra words are ignored.
fn parse_pair(text: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut words = text.split_ascii_whitespace();
    let n = words.next()?.parse().ok()?;
    let size = words.next()?.parse().ok()?;
    Some((n, size))
}

/// "n uid" as in UIDL lines.
fn parse_uidl_line(line: &[u8]) -> Option<(u32, String)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_ascii_whitespace();
    let n = words.next()?.parse().ok()?;
    let uid = words.next()?.to_string();
    Some((n, uid))
}

// === helpers: APOP, base64 ===

/// The `<...>` timestamp of an APOP-capable greeting, brackets included.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let len = greeting[start..].find('>')?;
    Some(&greeting[start..=start + len])
}

/// The APOP digest: lowercase hex MD5 of `timestamp` then `secret`.
pub fn apop_digest(timestamp: &str, secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret.as_bytes());
    md5.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64_encode(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_encode(input), want);
        }
    }

    #[test]
    fn base64_auth_plain_example() {
        // RFC 4616 §4 example, authzid empty.
        assert_eq!(base64_encode(b"\0tim\0tanstaaftanstaaf"), "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
        // High bytes use the whole alphabet, including '+' and '/'.
        assert_eq!(base64_encode(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn apop_rfc1939_example() {
        // RFC 1939 §7: the shared secret is "tanstaaf"; the published digest
        // does not match "tanstaaftanstaaf" (that string is RFC 4616's).
        let greeting = "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
        let ts = apop_timestamp(greeting);
        assert_eq!(ts, Some("<1896.697170952@dbc.mtview.ca.us>"));
        assert_eq!(apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"), "c4c9334bac560ecc979e58001b3e22fb");
        assert_eq!(apop_timestamp("+OK ready"), None);
        assert_eq!(apop_timestamp("+OK ready <unterminated"), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"+OK 2 320\r\n").ok(), Some("2 320".to_string()));
        assert_eq!(parse_status(b"+OK\r\n").ok(), Some(String::new()));
        assert!(matches!(
            parse_status(b"-ERR [IN-USE] maildrop locked\r\n"),
            Err(ClientError::Err(t)) if t == "[IN-USE] maildrop locked"
        ));
        assert!(matches!(parse_status(b"+OKAY\r\n"), Err(ClientError::Protocol(_))));
        assert!(matches!(parse_status(b"hello\r\n"), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn body_lines_are_unstuffed() {
        assert_eq!(body_line(b".\r\n"), BodyLine::End);
        assert_eq!(body_line(b".\n"), BodyLine::End);
        assert_eq!(body_line(b"..\r\n"), BodyLine::Data(b".\r\n"));
        assert_eq!(body_line(b"...x\r\n"), BodyLine::Data(b"..x\r\n"));
        assert_eq!(body_line(b"x.\r\n"), BodyLine::Data(b"x.\r\n"));
    }

    /// Decodes a status line plus multi-line body fed in the given pieces.
    fn decode_in_pieces(pieces: &[&[u8]]) -> (String, Vec<u8>) {
        let mut lb = LineBuffer::default();
        let mut status = None;
        let mut body = Vec::new();
        for piece in pieces {
            lb.push(piece);
            while let Some(line) = lb.next_line().unwrap() {
                if status.is_none() {
                    status = Some(parse_status(&line).unwrap());
                    continue;
                }
                match body_line(&line) {
                    BodyLine::End => return (status.unwrap(), body),
                    BodyLine::Data(d) => body.extend_from_slice(d),
                }
            }
        }
        panic!("no terminator");
    }

    #[test]
    fn framing_is_split_invariant() {
        let wire: &[u8] = b"+OK 40 octets\r\nSubject: x\r\n\r\n..\r\n..dot\r\nplain\r\n.\r\n";
        let want = decode_in_pieces(&[wire]);
        assert_eq!(want.0, "40 octets");
        assert_eq!(want.1, b"Subject: x\r\n\r\n.\r\n.dot\r\nplain\r\n");
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                let got = decode_in_pieces(&[&wire[..i], &wire[i..j], &wire[j..]]);
                assert_eq!(got, want, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn line_limit_enforced_whatever_the_chunking() {
        let mut long = vec![b'a'; MAX_LINE + 1];
        long.extend_from_slice(b"\r\n");
        // All at once: found at the newline.
        let mut lb = LineBuffer::default();
        lb.push(&long);
        assert!(matches!(lb.next_line(), Err(ClientError::Protocol(_))));
        // Trickled: found before the newline arrives.
        let mut lb = LineBuffer::default();
        let mut failed = false;
        for chunk in long.chunks(1000) {
            lb.push(chunk);
            if lb.next_line().is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
        // Exactly at the limit is fine.
        let mut ok = vec![b'a'; MAX_LINE];
        ok.extend_from_slice(b"\r\n");
        let mut lb = LineBuffer::default();
        lb.push(&ok);
        assert_eq!(lb.next_line().unwrap().map(|l| l.len()), Some(MAX_LINE + 2));
    }
}
