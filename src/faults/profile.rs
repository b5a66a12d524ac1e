//! Fault profiles: TOML documents of rules, deserialised into data the
//! engine interprets (docs/PROFILES.md documents every field).
//!
//! Parsing is strict: unknown fields, wrong types and rules that cannot
//! fire are errors naming the file, line, column, the field and the fix.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::action::params::Fields;
use super::action::{Action, Step, StepError};
pub use super::error::ProfileError;
use super::trigger::Trigger;
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
    pub when: Trigger,
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
    pub actions: Vec<Step>,
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
    // Optional here so that a rule without one is reported at the rule.
    when: Option<Spanned<Trigger>>,
    command: Option<Spanned<String>>,
    nth: Option<Spanned<u32>>,
    state: Option<Spanned<State>>,
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
    // Fields, not Steps: each key and value keeps its span, so an error
    // points at the key or value at fault.
    actions: Option<Spanned<Vec<Spanned<Fields>>>>,
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
            ProfileError::at(text, origin, span, field, message, fix)
        };
        let raw: RawProfile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| ProfileError::from_toml(text, origin, e))?;
        if let Some(name) = raw.name.as_ref().filter(|n| has_control(n.get_ref())) {
            return Err(err(name.span(), "name", CONTROL.into(), CONTROL_FIX));
        }
        let mut rules = Vec::new();
        for (i, spanned) in raw.rule.into_iter().enumerate() {
            let span = spanned.span();
            rules.push(validate(spanned.into_inner(), i, span, &err)?);
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
        self.rules.iter().any(|r| r.when == Trigger::Accept)
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

fn validate(r: RawRule, i: usize, span: Range<usize>, err: &ErrFn<'_>) -> Result<Rule, ProfileError> {
    let n = i + 1;
    let at = |f: &str| format!("rule[{n}].{f}");
    let Some(when_spanned) = r.when else {
        return Err(err(
            span,
            &at("when"),
            "missing field `when`: a rule needs a trigger point".into(),
            "add the field, e.g. when = \"command\" (see docs/PROFILES.md#trigger-points)",
        ));
    };
    let when = *when_spanned.get_ref();
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
    if let Some(p) = r.probability.as_ref().filter(|p| *p.get_ref() == 0.0) {
        return Err(err(
            p.span(),
            &at("probability"),
            "probability 0 never fires: the rule could never do anything".into(),
            "use a chance above 0 (e.g. 0.1), or remove the rule",
        ));
    }
    never_fires(when, r.command.as_ref(), r.state.as_ref(), &at, err)?;
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
        if p == 0.0 {
            return Err(err(
                sessions_span,
                &at("sessions.probability"),
                "probability 0 picks no session: the rule could never fire".into(),
                "use a chance above 0 (e.g. 0.1), or remove the rule",
            ));
        }
    }
    // Body position.
    for (f, present) in
        [("offset", r.offset.as_ref().map(|s| s.span())), ("fraction", r.fraction.as_ref().map(|s| s.span()))]
    {
        if let (Some(sp), false) = (present, when == Trigger::Body) {
            return Err(err(
                sp,
                &at(f),
                format!("`{f}` only applies to when = \"body\""),
                "remove it, or set when = \"body\"",
            ));
        }
    }
    if when == Trigger::Body {
        match (&r.offset, &r.fraction) {
            (None, None) => {
                return Err(err(
                    when_spanned.span(),
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
    match (&r.after_ms, when == Trigger::Timer) {
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
                when_spanned.span(),
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
        if w2.down_ms == 0 {
            return Err(err(
                w.span(),
                &at("window.down_ms"),
                "down_ms = 0: the window is never down, so the rule could never fire".into(),
                "give down_ms more than 0 (e.g. down_ms = 2000), or remove `window`",
            ));
        }
    }
    let actions_span = r.actions.as_ref().map_or(span.clone(), |a| a.span());
    let actions: Vec<Spanned<Fields>> = r.actions.map(Spanned::into_inner).unwrap_or_default();
    if actions.is_empty() {
        return Err(err(
            actions_span,
            &at("actions"),
            "the rule does nothing".into(),
            "add actions = [{ do = \"disconnect\" }] (see docs/PROFILES.md)",
        ));
    }
    let mut out = Vec::new();
    for (k, a) in actions.iter().enumerate() {
        let f = at(&format!("actions[{}]", k + 1));
        let step = Step::parse(a.get_ref(), a.span()).map_err(|e: StepError| {
            let field = e.field.as_ref().map_or(f.clone(), |x| format!("{f}.{x}"));
            err(e.span, &field, e.message, &e.fix)
        })?;
        if let Err(p) = step.action.check(when) {
            return Err(err(a.span(), &f, p.message, &p.fix));
        }
        if step.probability == 0.0 {
            return Err(err(
                a.span(),
                &f,
                "probability 0: this step could never happen".into(),
                "use a chance above 0 (e.g. 0.4), or remove the step",
            ));
        }
        // A certain disconnect ends the session: nothing after it runs.
        if let Some(k0) =
            out.iter().position(|s: &Step| matches!(s.action, Action::Disconnect(_)) && s.probability >= 1.0)
        {
            return Err(err(
                a.span(),
                &f,
                format!(
                    "`{}` comes after the `disconnect` of step {}, which ends the session: it could never run",
                    step.action.name(),
                    k0 + 1
                ),
                "move it before the `disconnect`, give the `disconnect` a probability below 1, or remove it",
            ));
        }
        out.push(step);
    }
    Ok(Rule {
        name,
        when,
        command: r.command.map(|c| c.into_inner().to_ascii_uppercase()),
        nth: r.nth.map(Spanned::into_inner),
        state: r.state.map(Spanned::into_inner),
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

/// Commands whose `+OK` answer has a body (`Command::multiline_on_ok`;
/// `AUTH` without a mechanism lists them on common servers).
const WITH_BODY: [&str; 6] = ["RETR", "TOP", "LIST", "UIDL", "CAPA", "AUTH"];
/// Valid only once logged in (RFC 1939 §5; `LAST`: RFC 1460).
const TRANSACTION_ONLY: [&str; 9] = ["STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST"];
/// Valid only before a login (RFC 1939 §4, `AUTH` RFC 5034, `STLS`
/// RFC 2595, `UTF8` RFC 6856).
const AUTHORIZATION_ONLY: [&str; 6] = ["USER", "PASS", "APOP", "AUTH", "STLS", "UTF8"];
/// Logins: at `response` their `+OK` has been delivered, so the state
/// there is already TRANSACTION.
const LOGINS: [&str; 3] = ["PASS", "APOP", "AUTH"];

/// Rules whose point, command and state can never meet in a session that
/// follows RFC 1939: a rule that can never fire is a mistake, not a no-op.
fn never_fires(
    when: Trigger,
    command: Option<&Spanned<String>>,
    state: Option<&Spanned<State>>,
    at: &dyn Fn(&str) -> String,
    err: &ErrFn<'_>,
) -> Result<(), ProfileError> {
    let cmd = command.map(|c| (c.get_ref().to_ascii_uppercase(), c.span()));
    if let (Trigger::Body, Some((c, span))) = (when, &cmd) {
        if !WITH_BODY.contains(&c.as_str()) {
            return Err(err(
                span.clone(),
                &at("command"),
                format!("the answer to {c} has no body, so a body rule for it could never fire"),
                &format!("use a command with a multi-line answer ({}), or another `when`", WITH_BODY.join(", ")),
            ));
        }
    }
    let Some(state) = state else { return Ok(()) };
    let s = *state.get_ref();
    let state_fix = |valid: &str| format!("use state = \"{valid}\", or remove `state`");
    match (when, s) {
        (Trigger::Accept | Trigger::Greeting, State::Transaction | State::Update) => {
            return Err(err(
                state.span(),
                &at("state"),
                format!("at when = \"{when}\" the session is always in AUTHORIZATION, never {s}"),
                &state_fix("AUTHORIZATION"),
            ));
        }
        (Trigger::Command, State::Update) => {
            return Err(err(
                state.span(),
                &at("state"),
                "no command is sent in UPDATE: the session enters it when its QUIT is forwarded".into(),
                "use when = \"forwarded\", \"status\" or \"response\" for QUIT in UPDATE, or state = \"TRANSACTION\"",
            ));
        }
        _ => {}
    }
    let Some((c, _)) = cmd else { return Ok(()) };
    let c = c.as_str();
    let wrong = if TRANSACTION_ONLY.contains(&c) && s != State::Transaction {
        Some(("TRANSACTION", "only valid in TRANSACTION (after a login)"))
    } else if AUTHORIZATION_ONLY.contains(&c)
        && s != State::Authorization
        && !(s == State::Transaction && when == Trigger::Response && LOGINS.contains(&c))
    {
        Some(("AUTHORIZATION", "only valid in AUTHORIZATION (before a login)"))
    } else if c != "QUIT" && s == State::Update {
        Some(("TRANSACTION", "never sent in UPDATE (only QUIT's answer is)"))
    } else {
        None
    };
    if let Some((valid, why)) = wrong {
        return Err(err(
            state.span(),
            &at("state"),
            format!("{c} is {why}, so a rule for it in {s} could never fire"),
            &state_fix(valid),
        ));
    }
    Ok(())
}
