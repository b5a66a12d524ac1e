//! Following one RETR (or TOP) body as it is delivered, to fingerprint the
//! message without holding it: the Message-ID header if there is one, else
//! a hash. For TOP it also counts the body lines, to tell a download (the
//! whole message: fewer body lines than asked for) from a header peek.

use sha2::{Digest, Sha256};

use super::fingerprint::{Fingerprint, MessageKey, digest16};

/// Longest header line scanned for a Message-ID (RFC 5322 §2.1.1: 998).
const MAX_HEADER_LINE: usize = 1000;

/// Follows one RETR body to fingerprint it without holding it.
#[derive(Debug, Clone)]
pub(super) struct Retrieval {
    pub(super) number: u32,
    /// For `TOP n lines`: the lines asked for and what has come of them.
    top: Option<TopLines>,
    in_header: bool,
    line: Vec<u8>,
    line_overflow: bool,
    message_id: Option<MessageKey>,
    hash: Sha256,
}

/// The body lines of a TOP answer so far.
#[derive(Debug, Clone, Copy)]
struct TopLines {
    asked: u32,
    /// Past the empty line that ends the header.
    in_body: bool,
    /// The line so far has a byte other than CR.
    line_has_text: bool,
    /// Lines after the header, the terminator's `.` line included.
    body_lines: u64,
}

impl Retrieval {
    pub(super) fn new(number: u32) -> Retrieval {
        Retrieval {
            number,
            top: None,
            in_header: true,
            line: Vec::new(),
            line_overflow: false,
            message_id: None,
            hash: Sha256::new(),
        }
    }

    /// For `TOP number asked`.
    pub(super) fn top(number: u32, asked: u32) -> Retrieval {
        let top = TopLines { asked, in_body: false, line_has_text: false, body_lines: 0 };
        Retrieval { top: Some(top), ..Retrieval::new(number) }
    }

    /// Whether the body that ended is the whole message: always for RETR;
    /// for TOP when the server ran out of lines before the count asked for
    /// (fetchmail downloads with `TOP n 99999999`). A message with exactly
    /// as many body lines as asked for is not counted: it cannot be told
    /// from one that was cut there.
    pub(super) fn is_whole(&self) -> bool {
        self.top.is_none_or(|t| t.body_lines.saturating_sub(1) < u64::from(t.asked))
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if let Some(t) = &mut self.top {
            for chunk in bytes.split_inclusive(|&b| b == b'\n') {
                let (text, ends) = match chunk.strip_suffix(b"\n") {
                    Some(text) => (text, true),
                    None => (chunk, false),
                };
                t.line_has_text |= text.iter().any(|&b| b != b'\r');
                if ends {
                    if t.in_body {
                        t.body_lines += 1;
                    } else if !t.line_has_text {
                        t.in_body = true;
                    }
                    t.line_has_text = false;
                }
            }
        }
        let mut rest = bytes;
        while self.in_header && !rest.is_empty() {
            let cut = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let (chunk, tail) = rest.split_at(cut);
            rest = tail;
            // Once a line overflows, nothing more of it is kept, so the
            // result does not depend on how the bytes were chunked; what
            // was kept is hashed then, and the rest as it comes.
            if !self.line_overflow && self.line.len() + chunk.len() <= MAX_HEADER_LINE {
                self.line.extend_from_slice(chunk);
            } else {
                if !self.line_overflow {
                    self.line_overflow = true;
                    if self.message_id.is_none() {
                        self.hash.update(&self.line);
                    }
                    self.line.clear();
                }
                if self.message_id.is_none() {
                    self.hash.update(chunk);
                }
            }
            if chunk.ends_with(b"\n") {
                self.header_line();
            }
        }
        // Hash only while no Message-ID is known: a message that has one is
        // identified by it, and big bodies then cost no hashing.
        if self.message_id.is_none() {
            self.hash.update(rest);
        }
    }

    fn header_line(&mut self) {
        let overflow = std::mem::replace(&mut self.line_overflow, false);
        // An over-long line is a (broken) header line, not the end of the
        // header; the buffer is reused, not reallocated, line after line.
        let found = if overflow {
            None
        } else {
            let text = crate::codec::command::trim_eol(&self.line);
            const NAME: &[u8] = b"message-id:";
            // Headers a mailbox server rewrites as it keeps state (an mbox
            // server's Status and X-UID): not part of what the message is,
            // so a message rewritten between sessions hashes the same.
            if self.message_id.is_none() && !is_mailbox_state(text) {
                self.hash.update(&self.line);
            }
            if text.is_empty() || text == b"." {
                self.in_header = false;
                None
            } else if text.len() > NAME.len() && text[..NAME.len()].eq_ignore_ascii_case(NAME) {
                // Only the digest is kept, never the text.
                let value = text[NAME.len()..].trim_ascii();
                (!value.is_empty()).then(|| MessageKey::message_id(value))
            } else {
                None
            }
        };
        self.line.clear();
        if let Some(id) = found {
            self.message_id = Some(id);
            // Nothing more to learn from the header.
            self.in_header = false;
        }
    }

    pub(super) fn finish(mut self, uid: Option<Box<str>>) -> Fingerprint {
        // A header line cut by the end (no LF) was never hashed.
        if self.in_header && !self.line_overflow && self.message_id.is_none() {
            self.hash.update(&self.line);
        }
        let key = match self.message_id {
            Some(key) => key,
            None => MessageKey::Hash(digest16(self.hash.finalize())),
        };
        Fingerprint { number: self.number, uid, key }
    }
}

/// Whether a header line is one a mailbox server adds or changes to keep
/// its own state (read flags, UIDs), not part of the message.
fn is_mailbox_state(line: &[u8]) -> bool {
    const NAMES: [&[u8]; 8] = [
        b"status:",
        b"x-status:",
        b"x-uid:",
        b"x-keywords:",
        b"x-imap:",
        b"x-imapbase:",
        b"x-mozilla-status:",
        b"x-mozilla-status2:",
    ];
    NAMES.iter().any(|n| line.len() >= n.len() && line[..n.len()].eq_ignore_ascii_case(n))
}
