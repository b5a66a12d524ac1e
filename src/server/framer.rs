//! Splits the client byte stream into lines, with a hard bound on memory.

/// One framed unit of client input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete line, including its LF (and CR, if sent).
    Line(Vec<u8>),
    /// A line longer than the limit. Reported once, as soon as it is known
    /// to be too long; its bytes are discarded through the next LF.
    TooLong,
}

/// Line framer: push bytes in, take frames out. Holds at most `max` plus
/// one read's worth of bytes, however long a line the peer sends.
#[derive(Debug, Default)]
pub(crate) struct LineFramer {
    buf: Vec<u8>,
    /// Inside an over-long line that was already reported.
    discarding: bool,
}

impl LineFramer {
    /// Appends bytes read from the peer.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next frame, if one is complete. `max` is the longest line
    /// accepted, LF included; it may change between calls (SASL responses
    /// may be longer than commands).
    pub(crate) fn next_frame(&mut self, max: usize) -> Option<Frame> {
        loop {
            let lf = self.buf.iter().position(|&b| b == b'\n');
            if self.discarding {
                match lf {
                    Some(i) => {
                        self.buf.drain(..=i);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.buf.clear();
                        return None;
                    }
                }
            }
            return match lf {
                Some(i) if i < max => Some(Frame::Line(self.buf.drain(..=i).collect())),
                Some(i) => {
                    self.buf.drain(..=i);
                    Some(Frame::TooLong)
                }
                // No LF within `max` bytes: the line can only end up too long.
                None if self.buf.len() >= max => {
                    self.buf.clear();
                    self.discarding = true;
                    Some(Frame::TooLong)
                }
                None => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut f = LineFramer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(frame) = f.next_frame(max) {
                out.push(frame);
            }
        }
        out
    }

    fn stream() -> Vec<u8> {
        let mut s = b"USER a\r\nPASS b\r\n".to_vec();
        s.extend(std::iter::repeat_n(b'x', 40));
        s.extend_from_slice(b"\r\nSTAT\r\n\r\n");
        s.extend(std::iter::repeat_n(b'y', 19));
        s.extend_from_slice(b"\nQUIT\r\nPART");
        s
    }

    #[test]
    fn splits_lines_and_flags_long_ones() {
        let expect = vec![
            Frame::Line(b"USER a\r\n".to_vec()),
            Frame::Line(b"PASS b\r\n".to_vec()),
            Frame::TooLong,
            Frame::Line(b"STAT\r\n".to_vec()),
            Frame::Line(b"\r\n".to_vec()),
            Frame::Line([&[b'y'; 19][..], b"\n"].concat()),
            Frame::Line(b"QUIT\r\n".to_vec()),
        ];
        assert_eq!(frames(&[&stream()], 20), expect);
    }

    #[test]
    fn split_invariant_at_every_offset() {
        let s = stream();
        let whole = frames(&[&s], 20);
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(frames(&[&s[..i], &s[i..j], &s[j..]], 20), whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn limit_counts_the_lf() {
        assert_eq!(frames(&[b"abc\n"], 4), vec![Frame::Line(b"abc\n".to_vec())]);
        assert_eq!(frames(&[b"abcd\n"], 4), vec![Frame::TooLong]);
        assert_eq!(frames(&[b"abcd", b"\n"], 4), vec![Frame::TooLong]);
    }

    #[test]
    fn memory_stays_bounded_while_discarding() {
        let mut f = LineFramer::default();
        f.push(&[b'z'; 1000]);
        assert_eq!(f.next_frame(255), Some(Frame::TooLong));
        for _ in 0..100 {
            f.push(&[b'z'; 1000]);
            assert_eq!(f.next_frame(255), None);
            assert!(f.buf.is_empty());
        }
        f.push(b"zz\nNOOP\r\n");
        assert_eq!(f.next_frame(255), Some(Frame::Line(b"NOOP\r\n".to_vec())));
    }
}
