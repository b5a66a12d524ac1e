//! Profile errors: located in the text (line and column from a span), the
//! field at fault as a path (`rule[2].actions[1].ms`), and a fix.

use std::ops::Range;

/// A profile that cannot be used, located in its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {field}: {message}\n  fix: {fix}")]
pub struct ProfileError {
    /// The file (or built-in name).
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The field at fault (`rule[2].offset`), or `toml` for syntax.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What would fix it.
    pub fix: String,
}

impl ProfileError {
    /// An error at byte `span.start` of `text`.
    pub(crate) fn at(text: &str, origin: &str, span: Range<usize>, field: &str, message: String, fix: &str) -> Self {
        let (line, column) = locate(text, span.start);
        ProfileError { origin: origin.into(), line, column, field: field.into(), message, fix: fix.into() }
    }

    /// An error of the TOML parser or of a field's type, with the path
    /// serde was at when it failed.
    pub(crate) fn from_toml(text: &str, origin: &str, e: serde_path_to_error::Error<toml::de::Error>) -> Self {
        let field = field_path(e.path());
        let inner = e.into_inner();
        let span = inner.span().unwrap_or(0..0);
        let message = inner.message().trim().to_string();
        if field == "rule" && message.contains("expected a sequence") {
            // `[rule]` makes one table; rules are an array of tables.
            let message = "`[rule]` is a single table, not a list of rules".to_string();
            return ProfileError::at(
                text,
                origin,
                span,
                "rule",
                message,
                "write [[rule]] (two brackets) above each rule",
            );
        }
        if field.is_empty() {
            // Nothing deserialised yet: the TOML itself is malformed.
            return ProfileError::at(text, origin, span, "toml", message, "fix the TOML syntax at this position");
        }
        // Counts that start at 1: serde only knows the type's range.
        let (message, fix) = if ["nth", "sessions.every", "sessions.first"].iter().any(|f| field.ends_with(f)) {
            (
                plain_words(&message).replace("(0 or more)", "(1 or more)"),
                fix_for(&message).replace("of 0 or more", "of 1 or more"),
            )
        } else {
            (plain_words(&message), fix_for(&message))
        };
        ProfileError::at(text, origin, span, &field, message, &fix)
    }
}

/// `rule[2].offset` for serde's path `rule[1].offset` (rules and steps
/// count from 1 in messages), without toml's span wrappers.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{}]", index + 1)),
            // `Spanned<T>` deserialises T as a field of its own.
            Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// Line and column (1-based, in characters) of byte `pos` in `text`.
fn locate(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Serde's words for types, in a profile author's words.
pub(crate) fn plain_words(message: &str) -> String {
    let mut m = message.to_string();
    if m.contains("untagged enum Millis") {
        return "expected milliseconds (2000) or a range [1000, 5000]".into();
    }
    for (rust, plain) in [
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected f64", "expected a number such as 0.5"),
        ("expected a boolean", "expected true or false"),
    ] {
        m = m.replace(rust, plain);
    }
    m
}

/// A fix for the common toml/serde complaints.
pub(crate) fn fix_for(message: &str) -> String {
    let expected = || {
        message.split("expected ").nth(1).map(|e| {
            let e = e.trim_end_matches('.');
            format!("use {}", if e.starts_with("one of ") { e.to_string() } else { format!("one of {e}") })
        })
    };
    if message.contains("unknown field") {
        if let Some(fix) = unknown_field_fix(message) {
            return fix;
        }
        return expected().unwrap_or_else(|| "remove the field (see docs/PROFILES.md for the fields)".into());
    }
    if message.contains("unknown variant") {
        if let Some(fix) = expected() {
            return fix;
        }
    }
    if message.contains("missing field") {
        return "add the field (see docs/PROFILES.md)".into();
    }
    if message.contains("untagged enum Millis") {
        return "write after_ms = 2000 or after_ms = [1000, 5000]".into();
    }
    if message.contains("invalid type") || message.contains("invalid value") {
        if message.contains("u32") || message.contains("u64") || message.contains("usize") {
            return "write a whole number of 0 or more, without quotes".into();
        }
        if message.contains("f64") {
            return "write a number without quotes, e.g. 0.5".into();
        }
        return "check the value's type: numbers unquoted, names in quotes".into();
    }
    "check the value at this position (see docs/PROFILES.md)".into()
}

/// `did you mean `command`? (fields: one of …)` for serde's "unknown
/// field `comand`, expected one of `name`, `when`, …", as action fields say.
fn unknown_field_fix(message: &str) -> Option<String> {
    let (head, list) = message.split_once(", expected ")?;
    let word = head.split('`').nth(1)?;
    let names: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    let near = did_you_mean(word, &names)?;
    Some(format!("did you mean `{near}`? (fields: {})", one_of(&names)))
}

/// `a`, `b` or `c`, as serde lists names.
pub(crate) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".into(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        more => format!("one of {}", more.join(", ")),
    }
}

/// The name in `names` closest to a misspelt `word`, if one is close.
pub(crate) fn did_you_mean<'a>(word: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(word, n), *n))
        .filter(|(d, n)| *d <= n.len().max(word.len()) / 3 + 1)
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_characters() {
        assert_eq!(locate("ab\ncé d", 7), (2, 4));
        assert_eq!(locate("x", 99), (1, 2));
    }

    #[test]
    fn close_misspellings_are_suggested() {
        assert_eq!(did_you_mean("sid", &["side", "how", "probability"]), Some("side"));
        assert_eq!(did_you_mean("probabilty", &["side", "how", "probability"]), Some("probability"));
        assert_eq!(did_you_mean("zzz", &["side", "how", "probability"]), None);
    }

    #[test]
    fn names_are_listed_as_serde_does() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b"]), "`a` or `b`");
        assert_eq!(one_of(&["a", "b", "c"]), "one of `a`, `b`, `c`");
    }
}
