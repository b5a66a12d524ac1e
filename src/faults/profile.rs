//! Fault profiles: TOML documents of rules, deserialised into data the
//! engine interprets (docs/PROFILES.md documents every field).
//!
//! Parsing is strict: unknown fields, wrong types and rules that cannot
//! fire are errors naming the file, line, column, the field and the fix.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::codec::command;
use crate::session::State;

/// A validated fault profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Its name (`lost-carrier`, or the file's stem).
    pub name: String,
    /// One line saying what it does.
    pub summary: String,
    /// The rules, in the order they are evaluated.
    pub rules: Vec<Rule>,
    /// The TOML text it was read from (for `profiles show`).
    pub source: String,
}

/// When a rule is considered (the trigger points of docs/PROFILES.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// A client connected, before the upstream connection is made.
    Accept,
    /// The server greeting arrived, before it is forwarded.
    Greeting,
    /// A complete client command, before it is forwarded.
    Command,
    /// The command was forwarded, before any response byte.
    Forwarded,
    /// A response's status line arrived, before it is forwarded.
    Status,
    /// Inside a multi-line response body, at a byte offset or fraction.
    Body,
    /// A response was fully delivered.
    Response,
    /// At a time since the session began.
    Timer,
}

impl When {
    /// The name used in TOML and in fault events.
    pub fn as_str(self) -> &'static str {
        match self {
            When::Accept => "accept",
            When::Greeting => "greeting",
            When::Command => "command",
            When::Forwarded => "forwarded",
            When::Status => "status",
            When::Body => "body",
            When::Response => "response",
            When::Timer => "timer",
        }
    }

    fn has_command(self) -> bool {
        matches!(self, When::Command | When::Forwarded | When::Status | When::Body | When::Response)
    }
}

/// Which side of the proxy an action concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The client's connection.
    Client,
    /// The server's connection.
    Server,
    /// Both.
    #[default]
    Both,
}

/// How a connection is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// Abortive close: the peer sees a reset.
    #[default]
    Rst,
    /// Orderly close: the peer sees EOF.
    Fin,
    /// Stop relaying, keep the socket open: the peer sees nothing.
    Silent,
}

/// How a down server refuses a client at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RefuseHow {
    /// Reset the connection.
    #[default]
    Rst,
    /// Close it (EOF) without a word.
    Close,
    /// Accept and never greet.
    Hang,
    /// Greet with `-ERR` (the `text`) and close.
    Err,
}

/// What a rule does (one step of its sequence).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "do", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    /// Lost carrier.
    Disconnect {
        /// Who sees `how`; the other side sees an orderly close (`both`: both see `how`).
        #[serde(default)]
        side: Side,
        /// rst | fin | silent.
        #[serde(default)]
        how: How,
        /// Chance this step happens (default 1).
        probability: Option<f64>,
    },
    /// Pause relaying both ways, then resume.
    Stall {
        /// Milliseconds.
        ms: u64,
        /// Up to this many milliseconds more or less, uniformly.
        #[serde(default)]
        jitter_ms: u64,
        /// Chance this step happens.
        probability: Option<f64>,
    },
    /// Inject line-noise bytes toward a side.
    Noise {
        /// How many bytes.
        #[serde(default = "default_noise")]
        bytes: usize,
        /// client | server.
        #[serde(default = "default_toward")]
        toward: Side,
        /// Chance this step happens.
        probability: Option<f64>,
    },
    /// Flip one bit in each of the next `bytes` bytes relayed in the
    /// direction of the trigger.
    Corrupt {
        /// How many bytes.
        bytes: usize,
        /// Chance this step happens.
        probability: Option<f64>,
    },
    /// A line speed, both directions, from now on.
    Throttle {
        /// Bits per second (14400, 28800, 56000…).
        bps: u64,
        /// Chance this step happens.
        probability: Option<f64>,
    },
    /// Latency added before each response from now on.
    Delay {
        /// Milliseconds.
        ms: u64,
        /// Up to this many milliseconds more or less.
        #[serde(default)]
        jitter_ms: u64,
        /// Chance this step happens.
        probability: Option<f64>,
    },
    /// Answer the command without forwarding it.
    Reply {
        /// The answer, e.g. `-ERR [IN-USE] maildrop locked` (CRLF added).
        text: String,
        /// Chance this step happens.
        probability: Option<f64>,
    },
    /// Drop the command: never forwarded, never answered.
    Swallow {
        /// Chance this step happens.
        probability: Option<f64>,
    },
    /// Server down, at accept.
    Refuse {
        /// rst | close | hang | err.
        #[serde(default)]
        how: RefuseHow,
        /// The greeting for `how = "err"`.
        #[serde(default = "default_refuse_text")]
        text: String,
        /// Chance this step happens.
        probability: Option<f64>,
    },
}

fn default_noise() -> usize {
    16
}
fn default_toward() -> Side {
    Side::Client
}
fn default_refuse_text() -> String {
    "-ERR [SYS/TEMP] server unavailable".into()
}

impl Action {
    /// The action's name (`disconnect`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Disconnect { .. } => "disconnect",
            Action::Stall { .. } => "stall",
            Action::Noise { .. } => "noise",
            Action::Corrupt { .. } => "corrupt",
            Action::Throttle { .. } => "throttle",
            Action::Delay { .. } => "delay",
            Action::Reply { .. } => "reply",
            Action::Swallow { .. } => "swallow",
            Action::Refuse { .. } => "refuse",
        }
    }

    /// The step's own probability (default 1).
    pub fn probability(&self) -> f64 {
        let p = match self {
            Action::Disconnect { probability, .. }
            | Action::Stall { probability, .. }
            | Action::Noise { probability, .. }
            | Action::Corrupt { probability, .. }
            | Action::Throttle { probability, .. }
            | Action::Delay { probability, .. }
            | Action::Reply { probability, .. }
            | Action::Swallow { probability }
            | Action::Refuse { probability, .. } => probability,
        };
        p.unwrap_or(1.0)
    }
}

/// Which sessions a rule applies to (rolled once per session).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Sessions {
    /// Only every n-th session (n, 2n, 3n…).
    pub every: Option<u64>,
    /// Only the first k sessions.
    pub first: Option<u64>,
    /// Only this fraction of sessions, drawn per session.
    pub probability: Option<f64>,
}

/// A schedule of down time: down for `down_ms` at the start of every
/// `every_ms` period since the proxy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Period in milliseconds.
    pub every_ms: u64,
    /// Down time at the start of each period, in milliseconds.
    pub down_ms: u64,
}

/// A time: fixed milliseconds, or `[low, high]` drawn per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Millis {
    /// Exactly this many.
    Fixed(u64),
    /// Uniformly in this range (inclusive).
    Range([u64; 2]),
}

/// One rule: when + filters + what.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name, shown in events and the dashboard.
    pub name: String,
    /// The trigger point.
    pub when: When,
    /// Only for this command (upper-cased), where the point has one.
    pub command: Option<String>,
    /// Only on the n-th match in the session (1-based).
    pub nth: Option<u32>,
    /// Only in this session state.
    pub state: Option<State>,
    /// Only once at least this many messages were retrieved in the session.
    pub min_retrieved: u64,
    /// Only once at least this many messages are marked deleted.
    pub min_deleted: u64,
    /// Which sessions.
    pub sessions: Sessions,
    /// Chance each match fires.
    pub probability: f64,
    /// Fire on every match (default: at most once per session).
    pub repeat: bool,
    /// Body: byte offset into the body (as on the wire).
    pub offset: Option<u64>,
    /// Body: fraction of the message size announced in the status line.
    pub fraction: Option<f64>,
    /// Timer: when.
    pub after_ms: Option<Millis>,
    /// Only inside these down windows.
    pub window: Option<Window>,
    /// The steps, in order, each with its own probability.
    pub actions: Vec<Action>,
}

// === parsing ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Option<Spanned<String>>,
    summary: Option<String>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    when: Spanned<When>,
    command: Option<Spanned<String>>,
    nth: Option<Spanned<u32>>,
    state: Option<State>,
    #[serde(default)]
    min_retrieved: u64,
    #[serde(default)]
    min_deleted: u64,
    sessions: Option<Spanned<Sessions>>,
    probability: Option<Spanned<f64>>,
    #[serde(default)]
    repeat: bool,
    offset: Option<Spanned<u64>>,
    fraction: Option<Spanned<f64>>,
    after_ms: Option<Spanned<Millis>>,
    window: Option<Spanned<Window>>,
    // Values, not Actions: an internally tagged enum loses the spans of
    // its fields, and errors must point at the action at fault.
    actions: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

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

/// Line and column (1-based) of byte `pos` in `text`.
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

impl Profile {
    /// The profile that injects nothing.
    pub fn passthrough() -> Profile {
        Profile {
            name: "passthrough".into(),
            summary: "relay everything untouched".into(),
            rules: Vec::new(),
            source: String::new(),
        }
    }

    /// Parses and validates a profile. `origin` names it in errors (a path
    /// or built-in name); `default_name` is used when it has no `name`.
    pub fn from_toml(text: &str, origin: &str, default_name: &str) -> Result<Profile, ProfileError> {
        let err = |span: Range<usize>, field: &str, message: String, fix: &str| {
            let (line, column) = locate(text, span.start);
            ProfileError {
                origin: origin.to_string(),
                line,
                column,
                field: field.to_string(),
                message,
                fix: fix.to_string(),
            }
        };
        let raw: RawProfile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            let fix = fix_for(&message);
            let prefix = rule_prefix(text, span.start);
            let field = match named_in(&message) {
                Some(name) => format!("{prefix}{name}"),
                // A bad value: name the key it was given for.
                None if ["invalid type", "invalid value", "unknown variant", "untagged"]
                    .iter()
                    .any(|k| message.contains(k)) =>
                {
                    match key_before(text, span.start) {
                        Some(key) => format!("{prefix}{key}"),
                        None => "toml".into(),
                    }
                }
                // Syntax: no field to name.
                None => "toml".into(),
            };
            err(span, &field, plain_words(&message), &fix)
        })?;
        if let Some(name) = raw.name.as_ref().filter(|n| has_control(n.get_ref())) {
            return Err(err(name.span(), "name", CONTROL.into(), CONTROL_FIX));
        }
        let mut rules = Vec::new();
        for (i, spanned) in raw.rule.into_iter().enumerate() {
            let span = spanned.span();
            let r = spanned.into_inner();
            let rule = validate(text, r, i, span, &err)?;
            rules.push(rule);
        }
        Ok(Profile {
            // A file's stem can hold anything a file name can.
            name: raw.name.map_or_else(|| crate::text::escape(default_name).into_owned(), Spanned::into_inner),
            summary: raw.summary.unwrap_or_default(),
            rules,
            source: text.to_string(),
        })
    }

    /// Whether any rule acts at accept (refusals, server-down windows).
    pub fn has_accept_rules(&self) -> bool {
        self.rules.iter().any(|r| r.when == When::Accept)
    }
}

/// Names are shown on terminals (the summary, logs, the dashboard): a
/// control character in one would be an escape sequence there.
fn has_control(name: &str) -> bool {
    name.chars().any(char::is_control)
}
const CONTROL: &str = "holds a control character (an escape sequence on a terminal)";
const CONTROL_FIX: &str = "use printable characters only";

type ErrFn<'a> = dyn Fn(Range<usize>, &str, String, &str) -> ProfileError + 'a;

fn validate(text: &str, r: RawRule, i: usize, span: Range<usize>, err: &ErrFn<'_>) -> Result<Rule, ProfileError> {
    let n = i + 1;
    let at = |f: &str| format!("rule[{n}].{f}");
    let when = *r.when.get_ref();
    let name = match &r.name {
        Some(s) if s.get_ref().trim().is_empty() => {
            return Err(err(
                s.span(),
                &at("name"),
                "is empty".into(),
                "give the rule a short name, or leave `name` out",
            ));
        }
        Some(s) if has_control(s.get_ref()) => return Err(err(s.span(), &at("name"), CONTROL.into(), CONTROL_FIX)),
        Some(s) => s.get_ref().clone(),
        None => format!("{}-{n}", when.as_str()),
    };
    let prob = |p: &Option<Spanned<f64>>, f: &str| -> Result<f64, ProfileError> {
        match p {
            Some(s) if !(0.0..=1.0).contains(s.get_ref()) => Err(err(
                s.span(),
                &at(f),
                format!("{} is not a probability", s.get_ref()),
                "use a number from 0.0 to 1.0",
            )),
            Some(s) => Ok(*s.get_ref()),
            None => Ok(1.0),
        }
    };
    let probability = prob(&r.probability, "probability")?;
    if let Some(c) = &r.command {
        if !when.has_command() {
            return Err(err(
                c.span(),
                &at("command"),
                format!("there is no command to match at when = \"{}\"", when.as_str()),
                "remove `command`, or use when = \"command\", \"forwarded\", \"status\", \"body\" or \"response\"",
            ));
        }
        // Only known keywords are kept from the wire (any other line is
        // OTHER), so a rule on another keyword could never fire.
        if !command::is_label(&c.get_ref().to_ascii_uppercase()) {
            return Err(err(
                c.span(),
                &at("command"),
                format!("'{}' is not a command keyword popfault knows", c.get_ref()),
                &format!("use one of {} (OTHER: any other line)", command::KEYWORDS.join(", ")),
            ));
        }
    }
    if let Some(nth) = &r.nth {
        if *nth.get_ref() == 0 {
            return Err(err(
                nth.span(),
                &at("nth"),
                "occurrences count from 1".into(),
                "use nth = 1 for the first match",
            ));
        }
    }
    let sessions_span = r.sessions.as_ref().map_or(span.clone(), |s| s.span());
    let sessions = r.sessions.map(Spanned::into_inner).unwrap_or_default();
    let s = &sessions;
    if s.every == Some(0) || s.first == Some(0) {
        return Err(err(
            sessions_span.clone(),
            &at("sessions"),
            "every / first must be at least 1".into(),
            "use every = 1 (all sessions) or leave it out",
        ));
    }
    if let Some(p) = s.probability {
        if !(0.0..=1.0).contains(&p) {
            return Err(err(
                sessions_span,
                &at("sessions.probability"),
                format!("{p} is not a probability"),
                "use a number from 0.0 to 1.0",
            ));
        }
    }
    // Body position.
    for (f, present) in
        [("offset", r.offset.as_ref().map(|s| s.span())), ("fraction", r.fraction.as_ref().map(|s| s.span()))]
    {
        if let (Some(sp), false) = (present, when == When::Body) {
            return Err(err(
                sp,
                &at(f),
                format!("`{f}` only applies to when = \"body\""),
                "remove it, or set when = \"body\"",
            ));
        }
    }
    if when == When::Body {
        match (&r.offset, &r.fraction) {
            (None, None) => {
                return Err(err(
                    r.when.span(),
                    &at("when"),
                    "a body rule needs a position".into(),
                    "add offset = BYTES or fraction = 0.0..1.0",
                ));
            }
            (Some(o), Some(_)) => {
                return Err(err(
                    o.span(),
                    &at("offset"),
                    "give offset or fraction, not both".into(),
                    "remove one of them",
                ));
            }
            (_, Some(f)) if !(0.0..=1.0).contains(f.get_ref()) => {
                return Err(err(
                    f.span(),
                    &at("fraction"),
                    format!("{} is outside 0.0..1.0", f.get_ref()),
                    "use a fraction of the message, e.g. 0.5",
                ));
            }
            _ => {}
        }
    }
    match (&r.after_ms, when == When::Timer) {
        (Some(a), false) => {
            return Err(err(
                a.span(),
                &at("after_ms"),
                "`after_ms` only applies to when = \"timer\"".into(),
                "remove it, or set when = \"timer\"",
            ));
        }
        (None, true) => {
            return Err(err(
                r.when.span(),
                &at("when"),
                "a timer rule needs a time".into(),
                "add after_ms = 2000 or after_ms = [1000, 5000]",
            ));
        }
        (Some(a), true) => {
            if let Millis::Range([lo, hi]) = a.get_ref() {
                if lo > hi {
                    return Err(err(
                        a.span(),
                        &at("after_ms"),
                        format!("range [{lo}, {hi}] is backwards"),
                        "write the smaller number first",
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(w) = &r.window {
        let w2 = w.get_ref();
        if w2.every_ms == 0 || w2.down_ms > w2.every_ms {
            return Err(err(
                w.span(),
                &at("window"),
                "down_ms must be at most every_ms, and every_ms more than 0".into(),
                "e.g. window = { every_ms = 20000, down_ms = 5000 }",
            ));
        }
    }
    let actions_span = r.actions.as_ref().map_or(span.clone(), |a| a.span());
    let actions: Vec<Spanned<toml::Value>> = r.actions.map(Spanned::into_inner).unwrap_or_default();
    if actions.is_empty() {
        let sp = actions_span;
        return Err(err(
            sp,
            &at("actions"),
            "the rule does nothing".into(),
            "add actions = [{ do = \"disconnect\" }] (see docs/PROFILES.md)",
        ));
    }
    let mut out = Vec::new();
    for (k, a) in actions.into_iter().enumerate() {
        let f = at(&format!("actions[{}]", k + 1));
        let sp = a.span();
        let action: Action = match Action::deserialize(a.get_ref().clone()) {
            Ok(action) => action,
            Err(e) => {
                let message = e.message().trim().to_string();
                // Point at the offending key inside the action if we can.
                let here = text.get(sp.clone()).unwrap_or_default();
                let at = named_in(&message)
                    .or_else(|| {
                        message
                            .split("unknown variant `")
                            .nth(1)
                            .and_then(|r| r.split('`').next())
                            .map(|v| format!("\"{v}\""))
                    })
                    .and_then(|needle| here.find(&needle))
                    .map_or(sp.clone(), |k| sp.start + k..sp.start + k);
                let name = match named_in(&message) {
                    Some(n) => format!(".{n}"),
                    // A bad value: the key it was given for (`do`, `side`…).
                    None if at.start > sp.start => {
                        key_before(text, at.start).map_or(String::new(), |k| format!(".{k}"))
                    }
                    None => String::new(),
                };
                return Err(err(at, &format!("{f}{name}"), plain_words(&message), &fix_for(&message)));
            }
        };
        let p = action.probability();
        if !(0.0..=1.0).contains(&p) {
            return Err(err(sp, &f, format!("probability {p} is not a probability"), "use a number from 0.0 to 1.0"));
        }
        match (&action, when) {
            (Action::Refuse { .. }, w) if w != When::Accept => {
                return Err(err(
                    sp,
                    &f,
                    "refuse only happens at accept".into(),
                    "set when = \"accept\", or use do = \"disconnect\"",
                ));
            }
            (Action::Reply { .. } | Action::Swallow { .. }, w) if w != When::Command => {
                return Err(err(
                    sp,
                    &f,
                    format!("{} acts on a command before it is forwarded", action.name()),
                    "set when = \"command\"",
                ));
            }
            (Action::Reply { text, .. }, _) if text.trim().is_empty() || text.contains(['\r', '\n']) => {
                return Err(err(
                    sp,
                    &f,
                    "reply text must be one non-empty line".into(),
                    "e.g. text = \"-ERR [IN-USE] maildrop locked\"",
                ));
            }
            (Action::Refuse { how: RefuseHow::Err, text, .. }, _)
                if text.contains(['\r', '\n']) || !text.get(..4).is_some_and(|t| t.eq_ignore_ascii_case("-ERR")) =>
            {
                return Err(err(
                    sp,
                    &f,
                    "an -ERR greeting must be one line starting with -ERR".into(),
                    "e.g. text = \"-ERR [SYS/TEMP] server down\"",
                ));
            }
            (Action::Corrupt { bytes, .. }, _) if *bytes > 16 << 20 => {
                return Err(err(sp, &f, format!("{bytes} bytes is more than 16 MiB"), "use at most 16777216"));
            }
            (Action::Throttle { bps, .. }, _) if *bps < 300 => {
                return Err(err(
                    sp,
                    &f,
                    format!("{bps} bit/s is too slow to be useful"),
                    "use at least 300 (e.g. 28800)",
                ));
            }
            (Action::Corrupt { bytes: 0, .. } | Action::Noise { bytes: 0, .. }, _) => {
                return Err(err(sp, &f, "bytes must be at least 1".into(), "e.g. bytes = 16"));
            }
            (Action::Noise { bytes, .. }, _) if *bytes > 65536 => {
                return Err(err(sp, &f, format!("{bytes} bytes of noise is more than 64 KiB"), "use at most 65536"));
            }
            (Action::Noise { toward: Side::Both, .. }, _) => {
                return Err(err(sp, &f, "noise goes toward one side".into(), "toward = \"client\" or \"server\""));
            }
            (Action::Stall { ms, jitter_ms, .. } | Action::Delay { ms, jitter_ms, .. }, _)
                if *ms > 3_600_000 || jitter_ms > ms =>
            {
                return Err(err(
                    sp,
                    &f,
                    "ms must be at most an hour and jitter_ms at most ms".into(),
                    "e.g. ms = 1500, jitter_ms = 300",
                ));
            }
            _ => {}
        }
        out.push(action);
    }
    Ok(Rule {
        name,
        when,
        command: r.command.map(|c| c.into_inner().to_ascii_uppercase()),
        nth: r.nth.map(Spanned::into_inner),
        state: r.state,
        min_retrieved: r.min_retrieved,
        min_deleted: r.min_deleted,
        sessions,
        probability,
        repeat: r.repeat,
        offset: r.offset.map(Spanned::into_inner),
        fraction: r.fraction.map(Spanned::into_inner),
        after_ms: r.after_ms.map(Spanned::into_inner),
        window: r.window.map(Spanned::into_inner),
        actions: out,
    })
}

/// The name a serde/toml message is about, when it says (`comand` in
/// "unknown field `comand`").
fn named_in(message: &str) -> Option<String> {
    for key in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.split(key).nth(1) {
            return rest.split('`').next().map(str::to_owned);
        }
    }
    None
}

/// `rule[N].` for a position inside the N-th `[[rule]]` table, else "".
fn rule_prefix(text: &str, pos: usize) -> String {
    let before = &text[..pos.min(text.len())];
    let n = before.lines().filter(|l| l.trim_start().starts_with("[[rule]]")).count();
    if n == 0 { String::new() } else { format!("rule[{n}].") }
}

/// The key whose value sits at `pos` (`when` in `when = "x"`).
fn key_before(text: &str, pos: usize) -> Option<String> {
    let mut end = pos.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let eq = before.rfind('=')?;
    let head = before[..eq].trim_end();
    let start = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')).map_or(0, |i| i + 1);
    let key = &head[start..];
    (!key.is_empty()).then(|| key.to_string())
}

/// Serde's words for types, in a profile author's words.
fn plain_words(message: &str) -> String {
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
fn fix_for(message: &str) -> String {
    let expected = || {
        message.split("expected ").nth(1).map(|e| {
            let e = e.trim_end_matches('.');
            format!("use {}", if e.starts_with("one of ") { e.to_string() } else { format!("one of {e}") })
        })
    };
    if message.contains("unknown field") {
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
    "fix the TOML syntax at this position".into()
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
