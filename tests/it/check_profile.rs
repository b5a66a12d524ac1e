//! The profile tooling through the real binary: `popfault check-profile`
//! on broken and valid files (exact file:line:column, field and fix),
//! `popfault profiles [show NAME]`, `--profile` with a bad name, and every
//! TOML example in docs/PROFILES.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use popfault::faults::Profile;
use popfault::faults::builtin::BUILTIN;

use crate::support::BIN;
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs the binary from the crate root (so paths in messages are the
/// relative ones we pass), killing it if it outlives `LIMIT`.
fn popfault(args: &[&str]) -> Output {
    const LIMIT: Duration = Duration::from_secs(30);
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .env_remove("POPFAULT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run popfault");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("popfault {args:?} still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("popfault-check-profile-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// === check-profile on broken files ===

/// What `check-profile` printed for a broken profile, split into parts:
/// `popfault: FILE:LINE:COLUMN: FIELD: MESSAGE\n  fix: FIX`.
#[derive(Debug)]
struct Reported {
    line: usize,
    column: usize,
    field: String,
    message: String,
    fix: String,
}

fn check_broken(file: &str) -> Reported {
    let out = popfault(&["check-profile", file]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{file}: exit code; stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "{file}: nothing on stdout, got {:?}", text(&out.stdout));
    let rest = stderr
        .strip_prefix(&format!("popfault: {file}:"))
        .unwrap_or_else(|| panic!("{file}: stderr does not start with `popfault: {file}:`:\n{stderr}"));
    let parse = || -> Option<Reported> {
        let (line, rest) = rest.split_once(':')?;
        let (column, rest) = rest.split_once(": ")?;
        let (field, rest) = rest.split_once(": ")?;
        let (message, fix) = rest.split_once("\n  fix: ")?;
        Some(Reported {
            line: line.parse().ok()?,
            column: column.parse().ok()?,
            field: field.to_string(),
            message: message.to_string(),
            fix: fix.trim_end().to_string(),
        })
    };
    parse().unwrap_or_else(|| panic!("{file}: not `FILE:LINE:COLUMN: FIELD: MESSAGE\\n  fix: FIX`:\n{stderr}"))
}

/// A broken profile and what `check-profile` must say about it.
struct Broken {
    /// File stem under tests/profiles/broken/.
    file: &'static str,
    line: usize,
    column: usize,
    /// The field part of the message, exactly.
    field: &'static str,
    /// Part of the message.
    message: &'static str,
    /// Part of the fix.
    fix: &'static str,
}

const fn b(
    file: &'static str,
    line: usize,
    column: usize,
    field: &'static str,
    message: &'static str,
    fix: &'static str,
) -> Broken {
    Broken { file, line, column, field, message, fix }
}

/// Each file makes one mistake; the error names where, what and the fix.
const BROKEN: &[Broken] = &[
    // `when = "command` never closes: the string runs to the end of line 5.
    b("toml-syntax", 5, 16, "toml", "invalid basic string", "TOML syntax"),
    b("unknown-top-level", 3, 1, "sumary", "unknown field `sumary`", "`summary`"),
    b("rule-field-typo", 6, 1, "rule[1].comand", "unknown field `comand`", "`command`"),
    b("second-rule-typo", 13, 1, "rule[2].repeet", "unknown field `repeet`", "`repeat`"),
    // Named under its rule since the field path comes from the parser.
    b("missing-when", 4, 1, "rule[1].when", "missing field `when`", "add the field"),
    b("missing-actions", 4, 1, "rule[1].actions", "does nothing", "actions = [{ do = \"disconnect\" }]"),
    b("probability-too-big", 7, 15, "rule[1].probability", "1.5 is not a probability", "0.0 to 1.0"),
    b("offset-not-body", 7, 10, "rule[1].offset", "only applies to when = \"body\"", "set when = \"body\""),
    b("body-no-position", 6, 8, "rule[1].when", "needs a position", "offset = BYTES or fraction"),
    b("fraction-out-of-range", 7, 12, "rule[1].fraction", "outside 0.0..1.0", "e.g. 0.5"),
    b("timer-no-after", 6, 8, "rule[1].when", "needs a time", "after_ms = [1000, 5000]"),
    b("timer-backwards", 6, 12, "rule[1].after_ms", "[5000, 1000] is backwards", "smaller number first"),
    b("reply-on-status", 7, 12, "rule[1].actions[1]", "before it is forwarded", "when = \"command\""),
    b("refuse-not-accept", 8, 3, "rule[1].actions[2]", "only happens at accept", "when = \"accept\""),
    b("throttle-too-slow", 6, 12, "rule[1].actions[1]", "28 bit/s", "28800"),
    b("noise-both", 6, 12, "rule[1].actions[1]", "one side", "\"client\" or \"server\""),
    b("nth-zero", 7, 7, "rule[1].nth", "count from 1", "nth = 1"),
    b("window-backwards", 6, 10, "rule[1].window", "down_ms must be at most every_ms", "window = {"),
    b("action-probability", 8, 3, "rule[1].actions[2]", "-0.5 is not a probability", "0.0 to 1.0"),
    b("command-on-accept", 6, 11, "rule[1].command", "no command to match", "remove `command`"),
    b("sessions-probability", 7, 12, "rule[1].sessions.probability", "not a probability", "0.0 to 1.0"),
    b("stall-jitter", 6, 12, "rule[1].actions[1]", "jitter_ms at most ms", "jitter_ms = 300"),
    b("truncate-not-body", 7, 12, "rule[1].actions[1]", "only happens inside one", "when = \"body\""),
    // Rules that could never fire (docs/PROFILES.md, "The file").
    b("body-without-body", 6, 11, "rule[1].command", "DELE has no body", "RETR, TOP, LIST, UIDL, CAPA, AUTH"),
    b("state-retr-authorization", 7, 9, "rule[1].state", "RETR is only valid in TRANSACTION", "\"TRANSACTION\""),
    b("state-pass-transaction", 7, 9, "rule[1].state", "PASS is only valid in AUTHORIZATION", "\"AUTHORIZATION\""),
    b("command-in-update", 7, 9, "rule[1].state", "no command is sent in UPDATE", "when = \"forwarded\""),
    b("window-never-down", 6, 10, "rule[1].window.down_ms", "never down", "down_ms more than 0"),
    b("probability-zero", 6, 15, "rule[1].probability", "probability 0 never fires", "above 0"),
    b("step-probability-zero", 8, 3, "rule[1].actions[2]", "could never happen", "above 0"),
    b("after-disconnect", 8, 3, "rule[1].actions[2]", "after the `disconnect` of step 1", "before the `disconnect`"),
    // nth counts from 1: the type's "0 or more" would invite nth = 0.
    b("nth-string", 6, 7, "rule[1].nth", "a whole number (1 or more)", "1 or more"),
    b("rule-key-typo", 6, 1, "rule[1].repet", "unknown field `repet`", "did you mean `repeat`?"),
];

/// Mistakes that `src/faults/profile.rs` reports wrongly today: each row is
/// what a good report says. `known_bugs_in_profile_errors` (ignored; run it
/// with `--ignored` after a fix, then move the row to `BROKEN`) pins them;
/// `known_bug_profiles_are_still_rejected_today` checks that they are at
/// least rejected, except where `rejected_today` is false.
struct KnownBug {
    file: &'static str,
    line: usize,
    column: usize,
    /// The field part must end with this (`rule[1].when` or `when`).
    field_ends_with: &'static str,
    rejected_today: bool,
}

const fn k(file: &'static str, line: usize, column: usize, field_ends_with: &'static str) -> KnownBug {
    KnownBug { file, line, column, field_ends_with, rejected_today: true }
}

const KNOWN_BUGS: &[KnownBug] = &[
    // Field reported as the bad value (`download`), not `when`.
    k("unknown-when", 6, 8, "when"),
    // Field reported as `hangup`, not `do`.
    k("unknown-action", 9, 10, "do"),
    // Field reported as `LOGGED_IN`, not `state`.
    k("unknown-state", 6, 9, "state"),
    // Field reported as `toml`, not `nth`.
    k("wrong-type", 7, 7, "nth"),
    // Field `toml`, fix "fix the TOML syntax" though the syntax is fine.
    k("offset-negative", 7, 10, "offset"),
    // "data did not match any variant of untagged enum Millis", field `toml`.
    k("after-ms-string", 6, 12, "after_ms"),
    // Located at the `[` of `actions` (7:11), not at `sid` (7:34).
    k("action-field-typo", 7, 33, "sid"),
    // Located at `actions = [` on line 8, not at `sid` on line 11.
    k("action-field-typo-multiline", 11, 24, "sid"),
    // A two-line -ERR greeting is accepted (reply text is checked, refuse text is not).
    KnownBug {
        file: "refuse-text-multiline",
        line: 6,
        column: 12,
        field_ends_with: "actions[1]",
        rejected_today: true,
    },
];

fn broken_path(stem: &str) -> String {
    format!("tests/profiles/broken/{stem}.toml")
}

#[test]
fn broken_profiles_are_reported_at_the_right_place_with_a_fix() {
    let mut failures = Vec::new();
    for case in BROKEN {
        let file = broken_path(case.file);
        let r = check_broken(&file);
        let ok = r.line == case.line
            && r.column == case.column
            && r.field == case.field
            && r.message.contains(case.message)
            && r.fix.contains(case.fix);
        if !ok {
            failures.push(format!(
                "{file}: expected {}:{} field `{}` message ~{:?} fix ~{:?}\n    got {r:?}",
                case.line, case.column, case.field, case.message, case.fix
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} wrong:\n{}", failures.len(), BROKEN.len(), failures.join("\n"));
}

#[test]
fn known_bug_profiles_are_still_rejected_today() {
    for case in KNOWN_BUGS.iter().filter(|c| c.rejected_today) {
        let file = broken_path(case.file);
        let r = check_broken(&file);
        // The line is right for all but the multi-line action typo.
        if case.file != "action-field-typo-multiline" {
            assert_eq!(r.line, case.line, "{file}: {r:?}");
        }
        assert!(!r.fix.is_empty(), "{file}: a fix");
    }
}

/// Cases that were reported wrongly once (see KNOWN_BUGS); now fixed and
/// kept as regressions.
#[test]
fn formerly_misreported_profiles_are_located_right() {
    let mut failures = Vec::new();
    for case in KNOWN_BUGS {
        let file = broken_path(case.file);
        let out = popfault(&["check-profile", &file]);
        if out.status.code() != Some(2) {
            failures.push(format!("{file}: accepted (exit {:?}), expected exit 2", out.status.code()));
            continue;
        }
        let r = check_broken(&file);
        let where_ok = (r.line, r.column) == (case.line, case.column);
        if !where_ok || !r.field.ends_with(case.field_ends_with) {
            failures.push(format!(
                "{file}: expected {}:{} field `…{}`, got {}:{} field `{}`",
                case.line, case.column, case.field_ends_with, r.line, r.column, r.field
            ));
        }
        if r.fix.contains("TOML syntax") {
            failures.push(format!("{file}: the syntax is fine, yet the fix says {:?}", r.fix));
        }
        if r.fix.contains("one of: one of") {
            failures.push(format!("{file}: stuttering fix {:?}", r.fix));
        }
    }
    // The fix for unknown names repeats itself: "use one of: one of `a`, `b`".
    for case in BROKEN {
        let file = broken_path(case.file);
        let r = check_broken(&file);
        if r.fix.contains("one of: one of") {
            failures.push(format!("{file}: stuttering fix {:?}", r.fix));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_broken_file_is_in_a_table_and_there_are_enough() {
    let dir = Path::new(ROOT).join("tests/profiles/broken");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("tests/profiles/broken")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    let listed: Vec<&str> = BROKEN.iter().map(|c| c.file).chain(KNOWN_BUGS.iter().map(|c| c.file)).collect();
    let listed_set: BTreeSet<String> = listed.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed.len(), listed_set.len(), "a file is listed twice");
    assert_eq!(on_disk, listed_set, "files on disk vs. cases in the tables");
    assert!(BROKEN.len() >= 12);
}

#[test]
fn check_profile_on_a_missing_file_exits_2_and_says_so() {
    let out = popfault(&["check-profile", "tests/profiles/no-such-file.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tests/profiles/no-such-file.toml") && stderr.contains("cannot read"), "{stderr}");
}

// === check-profile on valid files ===

#[test]
fn valid_custom_profiles_pass() {
    let dir = Path::new(ROOT).join("tests/profiles/ok");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/profiles/ok")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    for path in files {
        let rel = path.strip_prefix(ROOT).expect("under the crate").to_str().expect("utf-8");
        let out = popfault(&["check-profile", rel]);
        assert_eq!(out.status.code(), Some(0), "{rel}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("stem");
        assert!(stdout.starts_with(&format!("{rel}: ok: profile '{stem}'")), "{stdout}");
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn an_empty_profile_passes_and_is_called_a_passthrough() {
    let tmp = TempFile::new("empty.toml", "name = \"empty\"\nsummary = \"nothing yet\"\n");
    let out = popfault(&["check-profile", tmp.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok: profile 'empty' with 0 rule(s)"), "{stdout}");
    assert!(stdout.contains("passthrough") && stdout.contains("no faults"), "says what it does: {stdout}");
}

/// The state checks refuse only what cannot happen: a login's answer is
/// delivered in TRANSACTION, QUIT's answer in UPDATE.
#[test]
fn rules_on_reachable_states_pass() {
    let profile = "[[rule]]\nwhen = \"response\"\ncommand = \"PASS\"\nstate = \"TRANSACTION\"\n\
                   actions = [{ do = \"stall\", ms = 10 }]\n\n\
                   [[rule]]\nwhen = \"status\"\ncommand = \"QUIT\"\nstate = \"UPDATE\"\n\
                   actions = [{ do = \"stall\", ms = 10 }, { do = \"disconnect\" }]\n\n\
                   [[rule]]\nwhen = \"body\"\ncommand = \"uidl\"\noffset = 0\n\
                   actions = [{ do = \"disconnect\", probability = 0.5 }, { do = \"stall\", ms = 10 }]\n";
    let tmp = TempFile::new("reachable.toml", profile);
    let out = popfault(&["check-profile", tmp.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("with 3 rule(s)"), "{}", text(&out.stdout));
}

// === profiles / profiles show ===

#[test]
fn every_builtin_shown_passes_check_profile() {
    for (name, source) in BUILTIN {
        let out = popfault(&["profiles", "show", name]);
        assert_eq!(out.status.code(), Some(0), "show {name}: {}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert_eq!(shown, *source, "`profiles show {name}` prints profiles/{name}.toml as is");
        let tmp = TempFile::new(&format!("{name}.toml"), &shown);
        let out = popfault(&["check-profile", tmp.path()]);
        assert_eq!(out.status.code(), Some(0), "check-profile of `show {name}`: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("ok: profile '{name}'")), "{}", text(&out.stdout));
    }
}

#[test]
fn profiles_lists_every_builtin_with_its_summary() {
    let out = popfault(&["profiles"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    for (i, (name, source)) in BUILTIN.iter().enumerate() {
        let p = Profile::from_toml(source, name, name).unwrap_or_else(|e| panic!("{e}"));
        let line = lines.get(i).unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"));
        let (listed, summary) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert_eq!(listed, *name, "in listed order");
        assert_eq!(summary.trim(), p.summary, "{name}");
    }
    assert!(stdout.contains("profiles show NAME"), "says how to print one:\n{stdout}");
}

#[test]
fn profiles_show_unknown_exits_2_with_the_names() {
    let out = popfault(&["profiles", "show", "nope"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("'nope'"), "{stderr}");
    for (name, _) in BUILTIN {
        assert!(stderr.contains(name), "{name} missing from:\n{stderr}");
    }
}

#[test]
fn proxy_with_an_unknown_profile_exits_2_with_a_clear_message() {
    let out = popfault(&[
        "proxy",
        "--upstream",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--headless",
        "--duration",
        "5",
        "--profile",
        "nope",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no built-in profile 'nope'") && stderr.contains("no such file"), "{stderr}");
    assert!(stderr.contains("popfault profiles"), "points at the list: {stderr}");
    for (name, _) in BUILTIN {
        assert!(stderr.contains(name), "{name} missing from:\n{stderr}");
    }
}

#[test]
fn proxy_with_a_broken_profile_file_exits_2_with_the_location() {
    let file = broken_path("nth-zero");
    let out = popfault(&[
        "proxy",
        "--upstream",
        "127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--headless",
        "--duration",
        "5",
        "--profile",
        &file,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{file}:7:7: rule[1].nth")), "{stderr}");
}

// === docs/PROFILES.md ===

/// The fenced blocks of `markdown`: (info string, first line number, body).
fn fenced_blocks(markdown: &str) -> Vec<(String, usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some((info.trim().to_string(), i + 2, String::new()));
                }
            }
            Some((info, start, body)) if trimmed.starts_with("```") => blocks.push((info, start, body)),
            Some((info, start, mut body)) => {
                body.push_str(line);
                body.push('\n');
                open = Some((info, start, body));
            }
        }
    }
    assert!(open.is_none(), "unclosed code fence");
    blocks
}

fn profiles_md() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("docs/PROFILES.md")).expect("docs/PROFILES.md")
}

/// Every ```toml block is a complete profile and must pass validation;
/// ```toml-fragment blocks are pieces of one and are skipped.
#[test]
fn every_toml_example_in_profiles_md_parses() {
    let doc = profiles_md();
    let blocks = fenced_blocks(&doc);
    let mut checked = 0;
    for (info, line, body) in &blocks {
        match info.as_str() {
            "toml" => {
                let origin = format!("docs/PROFILES.md block at line {line}");
                if let Err(e) = Profile::from_toml(body, &origin, "doc-example") {
                    panic!("{e}\n--- block:\n{body}");
                }
                checked += 1;
            }
            "toml-fragment" | "text" | "console" | "sh" | "" => {}
            other => panic!("docs/PROFILES.md line {line}: unexpected fence info {other:?}"),
        }
    }
    assert!(checked >= 15, "only {checked} complete examples");
}

/// The names the parser itself lists in an "expected one of" complaint.
fn expected_names(profile: &str) -> Vec<String> {
    let e = Profile::from_toml(profile, "probe", "probe").expect_err("probe is invalid");
    let list = e.message.split("expected").nth(1).unwrap_or_else(|| panic!("no list in {:?}", e.message));
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn profiles_md_documents_every_field_trigger_action_and_builtin() {
    let doc = profiles_md();
    let mut names: Vec<(String, String)> = Vec::new();
    let mut add = |what: &str, probe: &str| {
        let found = expected_names(probe);
        assert!(!found.is_empty(), "{what}: parser listed nothing");
        names.extend(found.into_iter().map(|n| (what.to_string(), n)));
    };
    add("top-level field", "zzz = 1\n");
    add("rule field", "[[rule]]\nwhen = \"command\"\nzzz = 1\n");
    add("trigger point", "[[rule]]\nwhen = \"zzz\"\n");
    add("action", "[[rule]]\nwhen = \"command\"\nactions = [{ do = \"zzz\" }]\n");
    add("sessions field", "[[rule]]\nwhen = \"command\"\nsessions = { zzz = 1 }\n");
    add("window field", "[[rule]]\nwhen = \"command\"\nwindow = { zzz = 1 }\n");
    add("state", "[[rule]]\nwhen = \"command\"\nstate = \"zzz\"\n");
    for action in
        ["disconnect", "stall", "noise", "corrupt", "throttle", "delay", "reply", "swallow", "refuse", "truncate"]
    {
        add(
            &format!("{action} field"),
            &format!("[[rule]]\nwhen = \"command\"\nactions = [{{ do = \"{action}\", zzz = 1 }}]\n"),
        );
    }
    for value in ["client", "server", "both", "rst", "fin", "silent", "close", "hang", "err"] {
        names.push(("value".into(), value.into()));
    }
    for (name, _) in BUILTIN {
        names.push(("built-in profile".into(), name.to_string()));
    }
    let missing: Vec<String> =
        names.iter().filter(|(_, n)| !doc.contains(&format!("`{n}`"))).map(|(w, n)| format!("{w} `{n}`")).collect();
    assert!(missing.is_empty(), "docs/PROFILES.md does not mention: {}", missing.join(", "));
    for how in ["popfault check-profile", "popfault profiles show"] {
        assert!(doc.contains(how), "docs/PROFILES.md should say how to use `{how}`");
    }
}
