//! The audit's report: each scenario's [`Verdict`] and [`ScenarioResult`],
//! the whole [`Report`] (its JSON is a stable interface), and its text
//! table.

use std::fmt;

use serde::Serialize;

/// Widest the text table's columns get: scenario, expected, observed,
/// outcome, verdict (129 characters in all, with the separators).
const WIDTHS: [usize; 5] = [18, 40, 40, 16, 7];
/// Narrowest: an outcome (`nothing-at-stake`) and a verdict are never cut.
const MIN_WIDTHS: [usize; 5] = [10, 12, 12, 16, 7];
/// `" | "` between five columns.
const SEPARATORS: usize = 3 * 4;
/// The table's width when stdout is not a terminal.
pub const DEFAULT_WIDTH: usize = 100;

/// Column widths for a table at most `total` characters wide. The two
/// text columns keep 16 (a word such as `(AUTHORIZATION)` whole) while the
/// scenario's column gives way, then share what is left up to 40 each;
/// below the minimum the table is as narrow as it can be.
fn widths(total: usize) -> [usize; 5] {
    let mut w = WIDTHS;
    let avail = total.saturating_sub(w[3] + w[4] + SEPARATORS);
    w[0] = if avail >= WIDTHS[0] + 2 * 16 { WIDTHS[0] } else { avail.saturating_sub(2 * 16).max(MIN_WIDTHS[0]) };
    let text = avail.saturating_sub(w[0]);
    w[1] = (text / 2).clamp(MIN_WIDTHS[1], WIDTHS[1]);
    w[2] = (text - text / 2).clamp(MIN_WIDTHS[2], WIDTHS[2]);
    w
}

/// A scenario's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The server behaved as RFC 1939 requires.
    Pass,
    /// It did not: messages were lost, or kept after QUIT +OK.
    Fail,
    /// RFC 1939 allows either outcome (in doubt); what happened is recorded.
    Info,
    /// Not run, or the cut did not happen as planned: why is in `observed`.
    Skip,
}

impl Verdict {
    /// `PASS`, `FAIL`, `INFO` or `SKIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "INFO",
            Verdict::Skip => "SKIP",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scenario's result. The JSON field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Stable identifier (`cut-after-dele`).
    pub name: String,
    /// For humans (`after DELE before QUIT`).
    pub title: String,
    /// The RFC 1939 section(s) (`§6`).
    pub rfc: String,
    /// What RFC 1939 requires here.
    pub expected: String,
    /// What a fresh session straight to the server saw afterwards: message
    /// count and UIDs before vs after.
    pub observed: String,
    /// The proxy's outcome for the cut session (`rolled-back`, `in-doubt`…).
    pub proxy_outcome: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// What the audit's client saw in the cut session.
    pub client_saw: String,
    /// UIDs of the messages marked (DELE) in the cut session (`#N`, the
    /// message number, when the server has no UIDL).
    pub marked: Vec<String>,
    /// UIDs gone from the maildrop after the scenario.
    pub removed: Vec<String>,
    /// Only for a lost QUIT answer with a message marked: whether the server
    /// deleted it anyway.
    pub server_committed: Option<bool>,
    /// Messages before the scenario.
    pub messages_before: Option<u32>,
    /// Messages after it.
    pub messages_after: Option<u32>,
}

/// The whole audit. Serialized by [`Report::to_json`]; the field names are
/// a stable interface (docs/REAL-SERVERS.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server, as given.
    pub server: String,
    /// Its greeting line (control characters replaced).
    pub greeting: String,
    /// Whether the deleting scenarios ran.
    pub destructive: bool,
    /// The internal proxy's seed.
    pub seed: u64,
    /// Messages in the mailbox at the start.
    pub messages: u32,
    /// Whether the server answers UIDL (else counts are compared).
    pub uidl: bool,
    /// Every scenario, in the order run.
    pub scenarios: Vec<ScenarioResult>,
    /// Scenarios that passed.
    pub passed: usize,
    /// Scenarios that failed.
    pub failed: usize,
    /// Scenarios in doubt (recorded, not judged).
    pub info: usize,
    /// Scenarios not run or not conclusive.
    pub skipped: usize,
}

impl Report {
    /// 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.failed > 0 { 1 } else { 0 }
    }

    /// The scenario called `name`, if it is in the report.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report as a text table, for humans, at its widest.
    pub fn to_table(&self) -> String {
        self.to_table_width(usize::MAX)
    }

    /// The report as a text table that fits `width` characters: cells wrap
    /// in narrower columns.
    pub fn to_table_width(&self, width: usize) -> String {
        let widths = widths(width);
        let mut out = String::new();
        let mode = if self.destructive { "destructive" } else { "non-destructive" };
        out.push_str(&format!("popfault audit of {} ({mode}, seed {})\n", self.server, self.seed));
        out.push_str(&format!("  greeting: {}\n", self.greeting));
        let uidl = if self.uidl { "UIDL supported" } else { "no UIDL: counts compared" };
        out.push_str(&format!("  mailbox:  {} message(s) at the start; {uidl}\n\n", self.messages));
        let header = ["scenario", "expected (RFC 1939)", "observed (fresh session)", "outcome", "verdict"];
        push_row(&mut out, &header.map(String::from), &widths);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("-+-"));
        out.push('\n');
        for s in &self.scenarios {
            let cells = [
                s.title.clone(),
                format!("{}: {}", s.rfc, s.expected),
                s.observed.clone(),
                s.proxy_outcome.clone().unwrap_or_else(|| "-".into()),
                s.verdict.to_string(),
            ];
            push_row(&mut out, &cells, &widths);
            out.push_str(&rule.join("-+-"));
            out.push('\n');
        }
        out.push_str(&format!(
            "\n{} passed, {} failed, {} info (in doubt: the RFC allows either), {} skipped\n",
            self.passed, self.failed, self.info, self.skipped
        ));
        out.push_str("\nwhat the audit's client saw in each cut session:\n");
        for s in &self.scenarios {
            let name = format!("{}:", s.name);
            // Under the name when the line is narrow, beside it otherwise.
            let (indent, first) =
                if width >= 60 { (27, format!("  {name:<24} ")) } else { (4, format!("  {name}\n    ")) };
            let lines = wrap(&s.client_saw, width.saturating_sub(indent).max(20));
            out.push_str(&first);
            out.push_str(&lines.join(&format!("\n{}", " ".repeat(indent))));
            out.push('\n');
        }
        if !self.destructive {
            let note = "not checked: the QUIT commit itself, and a lost QUIT answer with a message marked \
                        (they delete mail: --destructive)";
            out.push('\n');
            out.push_str(&wrap(note, width.max(20)).join("\n"));
            out.push('\n');
        }
        out
    }
}

/// Writes one row, each cell wrapped to its column width.
fn push_row(out: &mut String, cells: &[String; 5], widths: &[usize; 5]) {
    let wrapped: Vec<Vec<String>> = cells.iter().zip(widths).map(|(c, w)| wrap(c, *w)).collect();
    let lines = wrapped.iter().map(Vec::len).max().unwrap_or(1);
    for i in 0..lines {
        let parts: Vec<String> = wrapped
            .iter()
            .zip(widths)
            .map(|(cell, &w)| format!("{:<w$}", cell.get(i).map(String::as_str).unwrap_or("")))
            .collect();
        out.push_str(parts.join(" | ").trim_end());
        out.push('\n');
    }
}

/// Splits `text` into lines of at most `width` characters at spaces
/// (longer words are cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let len = line.chars().count();
            let need = if len == 0 { word.len() } else { len + 1 + word.len() };
            if need <= width {
                if len > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than the column on its own line: cut it.
            let rest = word.split_off(width.min(word.len()));
            lines.push(word.iter().collect());
            word = rest;
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Peer text made safe to print: control characters escaped
/// ([`crate::text::escape`]), at most 120 characters.
pub(super) fn clean(text: &str) -> String {
    let shown = crate::text::escape(text);
    let mut s: String = shown.chars().take(120).collect();
    if shown.chars().count() > 120 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_fits_words_and_cuts_long_ones() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("x abcdefghij", 4), vec!["x", "abcd", "efgh", "ij"]);
        for line in wrap("§6: marked messages survive a session that ends without QUIT", 12) {
            assert!(line.chars().count() <= 12, "{line:?}");
        }
    }

    #[test]
    fn clean_strips_control_characters() {
        assert_eq!(clean("ok\r\n\x1b[2J\u{9b}"), "ok\\x0d\\x0a\\x1b[2J\\u{9b}");
        assert!(clean(&"x".repeat(500)).chars().count() <= 121);
    }
}
