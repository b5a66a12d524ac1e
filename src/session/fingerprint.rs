//! Fingerprints: what identifies a message a session delivered, as a
//! fixed-size digest, and the capped list a session keeps of them.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Most fingerprints a session keeps (about 48 bytes each, a UID's text
/// aside): a client that RETRs the same message again and again must not
/// grow the proxy. Past it a completed download is counted in
/// [`Fingerprints::dropped`] and not checked for duplicates.
pub const MAX_FINGERPRINTS: usize = 10_000;

/// What identifies a downloaded message across sessions: a fixed-size
/// digest, never the text (a Message-ID can be ~1000 bytes, and a session
/// can download the same message many times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKey {
    /// SHA-256 (first 16 bytes) of the Message-ID header's value, trimmed.
    MessageId([u8; 16]),
    /// SHA-256 (first 16 bytes) of the message as relayed, when it has no
    /// Message-ID.
    Hash([u8; 16]),
}

impl MessageKey {
    /// The key of a message whose Message-ID is `id` (surrounding
    /// whitespace ignored).
    pub fn message_id(id: &[u8]) -> MessageKey {
        MessageKey::MessageId(digest16(Sha256::digest(id.trim_ascii())))
    }
}

pub(super) fn digest16(d: impl AsRef<[u8]>) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.as_ref()[..16]);
    out
}

/// A message whose full content reached the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// Its number in this session.
    pub number: u32,
    /// Its UIDL, if the client asked for the listing in this session (at
    /// most 70 bytes).
    pub uid: Option<Box<str>>,
    /// Message-ID digest or content hash.
    pub key: MessageKey,
}

/// A session's fingerprints, at most [`MAX_FINGERPRINTS`], and how many
/// completed downloads found the list full. In the events file only the
/// count is written (`fingerprints_dropped`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fingerprints {
    #[serde(skip)]
    list: Vec<Fingerprint>,
    /// Completed downloads not fingerprinted because the list was full.
    #[serde(rename = "fingerprints_dropped")]
    pub dropped: u64,
}

impl Fingerprints {
    /// Adds one, or counts it dropped at the cap.
    pub fn push(&mut self, f: Fingerprint) {
        if self.list.len() < MAX_FINGERPRINTS {
            self.list.push(f);
        } else {
            self.dropped += 1;
        }
    }

    /// The fingerprints kept, in download order.
    pub fn iter(&self) -> std::slice::Iter<'_, Fingerprint> {
        self.list.iter()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl From<Vec<Fingerprint>> for Fingerprints {
    fn from(list: Vec<Fingerprint>) -> Fingerprints {
        let mut f = Fingerprints::default();
        list.into_iter().for_each(|x| f.push(x));
        f
    }
}

#[cfg(test)]
impl Fingerprints {
    /// Messages 1, 2, … known by these Message-IDs, for tests.
    pub(crate) fn from_message_ids(ids: &[&str]) -> Fingerprints {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Fingerprint { number: i as u32 + 1, uid: None, key: MessageKey::message_id(id.as_bytes()) })
            .collect::<Vec<_>>()
            .into()
    }
}

impl std::ops::Deref for Fingerprints {
    type Target = [Fingerprint];
    fn deref(&self) -> &[Fingerprint] {
        &self.list
    }
}
