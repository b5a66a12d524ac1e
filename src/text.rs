//! Text made safe for a terminal. Pure.
//!
//! Anything that reaches stdout, stderr or the dashboard and may hold bytes
//! from the wire or a user's file goes through [`escape`] at that boundary:
//! a control character there is an escape sequence the terminal would obey
//! (clear the screen, set the title, move the cursor over a line).

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character written visibly: C0 and DEL as `\xNN`
/// (ESC is `\x1b`), C1 as `\u{NN}` (the 8-bit CSI is `\u{9b}`). Borrowed
/// when there is none, which is almost always.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c as u32 {
            n @ (0..=0x1f | 0x7f) => {
                let _ = write!(out, "\\x{n:02x}");
            }
            n @ 0x80..=0x9f => {
                let _ = write!(out, "\\u{{{n:x}}}");
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_written_visibly_and_nothing_else_changes() {
        assert!(matches!(escape("RETR 1 — ü ok"), Cow::Borrowed("RETR 1 — ü ok")));
        assert_eq!(escape("a\x1b[2Jb\r\n\t\x00\x7f"), "a\\x1b[2Jb\\x0d\\x0a\\x09\\x00\\x7f");
        assert_eq!(escape("x\u{9b}1m\u{85}"), "x\\u{9b}1m\\u{85}");
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            let shown = escape(c.encode_utf8(&mut [0; 4])).into_owned();
            assert!(!shown.chars().any(char::is_control), "{c:?} → {shown:?}");
        }
    }
}
