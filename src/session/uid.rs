//! The UIDs a session learnt from UIDL, by message number.

use std::collections::BTreeMap;

/// UIDs learnt from UIDL, by message number. One text arena and an index:
/// a listing of n lines costs a few allocations, not a `String` and a map
/// entry each (a big maildrop is listed in every session).
#[derive(Debug, Clone, Default)]
pub(super) struct UidTable {
    /// The UIDs, back to back (printable ASCII, RFC 1939 §7).
    arena: String,
    /// Message number → (start, length) in `arena`.
    index: UidIndex,
    /// Arena bytes no entry points at any more (replaced UIDs).
    waste: usize,
}

/// A listing comes in ascending order, so the index is a sorted vector
/// that entries are appended to. The first number out of order turns it
/// into a map, so that no server can make each insert shift the vector.
#[derive(Debug, Clone)]
enum UidIndex {
    Sorted(Vec<(u32, (u32, u8))>),
    Map(BTreeMap<u32, (u32, u8)>),
}

impl Default for UidIndex {
    fn default() -> Self {
        UidIndex::Sorted(Vec::new())
    }
}

impl UidIndex {
    fn len(&self) -> usize {
        match self {
            UidIndex::Sorted(v) => v.len(),
            UidIndex::Map(m) => m.len(),
        }
    }

    fn get(&self, n: u32) -> Option<(u32, u8)> {
        match self {
            UidIndex::Sorted(v) => v.binary_search_by_key(&n, |e| e.0).ok().map(|i| v[i].1),
            UidIndex::Map(m) => m.get(&n).copied(),
        }
    }

    /// Whether `n` is past every number held (a listing's next line).
    fn is_next(&self, n: u32) -> bool {
        matches!(self, UidIndex::Sorted(v) if v.last().is_none_or(|e| e.0 < n))
    }

    fn set(&mut self, n: u32, at: (u32, u8)) {
        match self {
            UidIndex::Sorted(v) => match v.binary_search_by_key(&n, |e| e.0) {
                Ok(i) => v[i].1 = at,
                Err(i) if i == v.len() => v.push((n, at)),
                Err(_) => {
                    let mut m: BTreeMap<u32, (u32, u8)> = v.drain(..).collect();
                    m.insert(n, at);
                    *self = UidIndex::Map(m);
                }
            },
            UidIndex::Map(m) => {
                m.insert(n, at);
            }
        }
    }

    /// Every entry, in number order.
    fn entries(&self) -> Vec<(u32, (u32, u8))> {
        match self {
            UidIndex::Sorted(v) => v.clone(),
            UidIndex::Map(m) => m.iter().map(|(&n, &at)| (n, at)).collect(),
        }
    }

    fn for_each_mut(&mut self, mut f: impl FnMut(&mut (u32, u8))) {
        match self {
            UidIndex::Sorted(v) => v.iter_mut().for_each(|e| f(&mut e.1)),
            UidIndex::Map(m) => m.values_mut().for_each(f),
        }
    }
}

impl UidTable {
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    fn text(&self, start: u32, len: u8) -> &str {
        &self.arena[start as usize..start as usize + len as usize]
    }

    pub(super) fn get(&self, n: u32) -> Option<&str> {
        self.index.get(n).map(|(start, len)| self.text(start, len))
    }

    /// Every UID, by number.
    pub(super) fn to_map(&self) -> BTreeMap<u32, String> {
        self.index.entries().into_iter().map(|(n, (start, len))| (n, self.text(start, len).to_owned())).collect()
    }

    /// `uid` is 1 to 70 printable ASCII bytes (checked by the caller).
    pub(super) fn insert(&mut self, n: u32, uid: &[u8]) {
        let Ok(uid) = std::str::from_utf8(uid) else { return };
        if !self.index.is_next(n) {
            if let Some((start, len)) = self.index.get(n) {
                if self.text(start, len) == uid {
                    return;
                }
                self.waste += len as usize;
            }
        }
        self.index.set(n, (self.arena.len() as u32, uid.len() as u8));
        self.arena.push_str(uid);
        // A server that lists the same numbers again and again must not
        // grow the arena without bound: rebuild it once half is waste.
        if self.waste > 4096 && self.waste * 2 > self.arena.len() {
            let mut arena = String::with_capacity(self.arena.len() - self.waste);
            let old = &self.arena;
            self.index.for_each_mut(|(start, len)| {
                let at = arena.len() as u32;
                arena.push_str(&old[*start as usize..*start as usize + *len as usize]);
                *start = at;
            });
            self.arena = arena;
            self.waste = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_table_keeps_the_latest_uid_in_order_or_not_and_stays_bounded() {
        let mut t = UidTable::default();
        for n in 1..=5u32 {
            t.insert(n, format!("u{n}").as_bytes());
        }
        assert!(matches!(t.index, UidIndex::Sorted(_)));
        t.insert(3, b"again");
        t.insert(3, b"again");
        assert_eq!((t.get(3), t.get(5), t.get(6), t.len()), (Some("again"), Some("u5"), None, 5));
        // A number out of order: the index becomes a map, nothing is lost.
        t.insert(0, b"zero");
        assert!(matches!(t.index, UidIndex::Map(_)));
        let all: Vec<(u32, String)> = (0..=5).map(|n| (n, t.get(n).unwrap().to_owned())).collect();
        assert_eq!(all.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>(), ["zero", "u1", "u2", "again", "u4", "u5"]);
        // The same number listed again and again with new UIDs: the arena
        // is rebuilt, not grown without bound.
        for i in 0..100_000u32 {
            t.insert(1, format!("{i:070}").as_bytes());
        }
        assert!(t.arena.len() < 3 * 4096 + 6 * 70, "arena {} bytes", t.arena.len());
        assert_eq!(t.get(1), Some(format!("{:070}", 99_999).as_str()));
        assert_eq!(t.get(4), Some("u4"));
        // The same while the index is still a sorted vector.
        let mut t = UidTable::default();
        t.insert(1, b"a");
        t.insert(2, b"b");
        for i in 0..100_000u32 {
            t.insert(2, format!("{i:070}").as_bytes());
        }
        assert!(matches!(t.index, UidIndex::Sorted(_)));
        assert!(t.arena.len() < 3 * 4096, "arena {} bytes", t.arena.len());
        assert_eq!((t.get(1), t.len()), (Some("a"), 2));
    }
}
