//! Following one RETR body as it is delivered, to fingerprint the message
//! without holding it: the Message-ID header if there is one, else a hash.

use sha2::{Digest, Sha256};

use super::fingerprint::{Fingerprint, MessageKey, digest16};

/// Longest header line scanned for a Message-ID (RFC 5322 §2.1.1: 998).
const MAX_HEADER_LINE: usize = 1000;

/// Follows one RETR body to fingerprint it without holding it.
#[derive(Debug, Clone)]
pub(super) struct Retrieval {
    pub(super) number: u32,
    in_header: bool,
    line: Vec<u8>,
    line_overflow: bool,
    message_id: Option<MessageKey>,
    hash: Sha256,
}

impl Retrieval {
    pub(super) fn new(number: u32) -> Retrieval {
        Retrieval {
            number,
            in_header: true,
            line: Vec::new(),
            line_overflow: false,
            message_id: None,
            hash: Sha256::new(),
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.in_header {
            for chunk in bytes.split_inclusive(|&b| b == b'\n') {
                // Once a line overflows, nothing more of it is kept, so the
                // result does not depend on how the bytes were chunked.
                if !self.line_overflow && self.line.len() + chunk.len() <= MAX_HEADER_LINE {
                    self.line.extend_from_slice(chunk);
                } else {
                    self.line_overflow = true;
                }
                if chunk.ends_with(b"\n") {
                    self.header_line();
                    if !self.in_header {
                        break;
                    }
                }
            }
        }
        // Hash only while no Message-ID is known: a message that has one is
        // identified by it, and big bodies then cost no hashing.
        if self.message_id.is_none() {
            self.hash.update(bytes);
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

    pub(super) fn finish(self, uid: Option<Box<str>>) -> Fingerprint {
        let key = match self.message_id {
            Some(key) => key,
            None => MessageKey::Hash(digest16(self.hash.finalize())),
        };
        Fingerprint { number: self.number, uid, key }
    }
}
