//! Fault actions: what a rule does. One file per action holds its params
//! (serde), its checks and its tests; this file is the one dispatch point
//! (the [`Action`] enum) and the shared [`Step`] (an action plus its own
//! `probability`). docs/EXTENDING.md says how to add one.

mod corrupt;
mod delay;
mod disconnect;
mod limit;
mod linger;
mod noise;
pub mod params;
mod refuse;
mod reply;
mod stall;
mod swallow;
mod throttle;
mod truncate;

use serde::Deserialize;

pub use corrupt::Corrupt;
pub use delay::Delay;
pub use disconnect::{Disconnect, How};
pub use limit::Limit;
pub use linger::Linger;
pub use noise::Noise;
pub use refuse::{Refuse, RefuseHow};
pub use reply::Reply;
pub use stall::Stall;
pub use swallow::Swallow;
pub use throttle::Throttle;
pub use truncate::{BodyLine, Truncate};

use std::ops::Range;

use super::error::{did_you_mean, fix_for, one_of, plain_words};
use super::trigger::Trigger;
use params::{FieldError, FieldErrorKind, Fields};

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

/// Why an action cannot be used as written: what is wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub message: String,
    /// What would fix it.
    pub fix: String,
}

impl Problem {
    /// A problem with its fix.
    pub fn new(message: impl Into<String>, fix: impl Into<String>) -> Problem {
        Problem { message: message.into(), fix: fix.into() }
    }
}

/// What an action's params must say about themselves.
pub trait Params: serde::de::DeserializeOwned {
    /// The action's name, its `do` in TOML.
    const NAME: &'static str;

    /// Whether the params make sense at trigger point `at`: a located
    /// error for `check-profile` otherwise.
    fn check(&self, at: Trigger) -> Result<(), Problem>;
}

/// What a rule does (one step of its sequence), with its params. The relay
/// matches on these to carry a decision out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Lost carrier.
    Disconnect(Disconnect),
    /// Pause relaying both ways, then resume.
    Stall(Stall),
    /// Inject line-noise bytes toward a side.
    Noise(Noise),
    /// Flip one bit in each of the next bytes relayed.
    Corrupt(Corrupt),
    /// A line speed, both directions, from now on.
    Throttle(Throttle),
    /// Latency added before each response from now on.
    Delay(Delay),
    /// Answer the command without forwarding it.
    Reply(Reply),
    /// Drop the command: never forwarded, never answered.
    Swallow(Swallow),
    /// Server down, at accept.
    Refuse(Refuse),
    /// End the body early with a terminator; drop the rest.
    Truncate(Truncate),
    /// Close the session once so many more bytes went one way.
    Limit(Limit),
    /// Pass a close on later.
    Linger(Linger),
}

impl Action {
    /// Every action's name, as `do` takes it.
    pub const NAMES: [&'static str; 12] = [
        Disconnect::NAME,
        Stall::NAME,
        Noise::NAME,
        Corrupt::NAME,
        Throttle::NAME,
        Delay::NAME,
        Reply::NAME,
        Swallow::NAME,
        Refuse::NAME,
        Truncate::NAME,
        Limit::NAME,
        Linger::NAME,
    ];

    /// The action's name (`disconnect`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Disconnect(_) => Disconnect::NAME,
            Action::Stall(_) => Stall::NAME,
            Action::Noise(_) => Noise::NAME,
            Action::Corrupt(_) => Corrupt::NAME,
            Action::Throttle(_) => Throttle::NAME,
            Action::Delay(_) => Delay::NAME,
            Action::Reply(_) => Reply::NAME,
            Action::Swallow(_) => Swallow::NAME,
            Action::Refuse(_) => Refuse::NAME,
            Action::Truncate(_) => Truncate::NAME,
            Action::Limit(_) => Limit::NAME,
            Action::Linger(_) => Linger::NAME,
        }
    }

    /// The action `name` with its params from `fields` (all but `skip`);
    /// `None` when there is no such action.
    pub fn from_fields(name: &str, fields: &Fields, skip: &[&str]) -> Option<Result<Action, FieldError>> {
        fn p<T: Params>(f: &Fields, skip: &[&str], wrap: fn(T) -> Action) -> Option<Result<Action, FieldError>> {
            Some(f.params::<T>(skip).map(wrap))
        }
        match name {
            Disconnect::NAME => p(fields, skip, Action::Disconnect),
            Stall::NAME => p(fields, skip, Action::Stall),
            Noise::NAME => p(fields, skip, Action::Noise),
            Corrupt::NAME => p(fields, skip, Action::Corrupt),
            Throttle::NAME => p(fields, skip, Action::Throttle),
            Delay::NAME => p(fields, skip, Action::Delay),
            Reply::NAME => p(fields, skip, Action::Reply),
            Swallow::NAME => p(fields, skip, Action::Swallow),
            Refuse::NAME => p(fields, skip, Action::Refuse),
            Truncate::NAME => p(fields, skip, Action::Truncate),
            Limit::NAME => p(fields, skip, Action::Limit),
            Linger::NAME => p(fields, skip, Action::Linger),
            _ => None,
        }
    }

    /// Whether the action makes sense at trigger point `at`.
    pub fn check(&self, at: Trigger) -> Result<(), Problem> {
        match self {
            Action::Disconnect(p) => p.check(at),
            Action::Stall(p) => p.check(at),
            Action::Noise(p) => p.check(at),
            Action::Corrupt(p) => p.check(at),
            Action::Throttle(p) => p.check(at),
            Action::Delay(p) => p.check(at),
            Action::Reply(p) => p.check(at),
            Action::Swallow(p) => p.check(at),
            Action::Refuse(p) => p.check(at),
            Action::Truncate(p) => p.check(at),
            Action::Limit(p) => p.check(at),
            Action::Linger(p) => p.check(at),
        }
    }
}

/// One step of a rule's sequence: an action and its own chance.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What to do.
    pub action: Action,
    /// Chance this step happens once the rule fires (default 1).
    pub probability: f64,
}

impl Step {
    /// A step that always happens.
    pub fn always(action: Action) -> Step {
        Step { action, probability: 1.0 }
    }
}

/// The fields every step has besides its action's params.
pub const STEP_FIELDS: [&str; 2] = ["do", "probability"];

/// Why a step's fields do not make a step: where (a span of the profile's
/// text), the field at fault under the step (`ms`, `do`), what and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// Where in the text.
    pub span: Range<usize>,
    /// The field under the step, if one is at fault.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What would fix it.
    pub fix: String,
}

impl Step {
    /// The step written as `fields` (the inline table at `span`).
    pub fn parse(fields: &Fields, span: Range<usize>) -> Result<Step, StepError> {
        let fail = |span: Range<usize>, field: &str, message: String, fix: String| StepError {
            span,
            field: Some(field.to_string()),
            message,
            fix,
        };
        let Some((_, name)) = fields.get("do") else {
            return Err(fail(
                span,
                "do",
                "missing field `do`".into(),
                format!("add do = \"disconnect\" ({})", one_of(&Action::NAMES)),
            ));
        };
        let Some(name_str) = name.get_ref().as_str() else {
            return Err(fail(
                name.span(),
                "do",
                "expected an action name in quotes".into(),
                format!("use {}", one_of(&Action::NAMES)),
            ));
        };
        let action = match Action::from_fields(name_str, fields, &STEP_FIELDS) {
            None => {
                let message = format!("unknown variant `{name_str}`, expected {}", one_of(&Action::NAMES));
                let fix = match did_you_mean(name_str, &Action::NAMES) {
                    Some(near) => format!("did you mean `{near}`? ({})", one_of(&Action::NAMES)),
                    None => format!("use {}", one_of(&Action::NAMES)),
                };
                return Err(fail(name.span(), "do", message, fix));
            }
            Some(Ok(action)) => action,
            Some(Err(e)) => return Err(field_error(fields, span, e)),
        };
        let probability = match fields.get("probability") {
            None => 1.0,
            Some((_, v)) => match v.get_ref() {
                toml::Value::Float(p) => *p,
                toml::Value::Integer(p) => *p as f64,
                _ => {
                    let message = "expected a number such as 0.5".to_string();
                    return Err(fail(
                        v.span(),
                        "probability",
                        message,
                        "write a number without quotes, e.g. 0.5".into(),
                    ));
                }
            },
        };
        if !(0.0..=1.0).contains(&probability) {
            return Err(StepError {
                span,
                field: None,
                message: format!("probability {probability} is not a probability"),
                fix: "use a number from 0.0 to 1.0".into(),
            });
        }
        Ok(Step { action, probability })
    }
}

/// A params error located at its key (unknown), its value (wrong) or the
/// step (missing).
fn field_error(fields: &Fields, table: Range<usize>, e: FieldError) -> StepError {
    let entry = e.field.as_deref().and_then(|f| fields.get(f));
    let (span, message, fix) = match &e.kind {
        FieldErrorKind::Unknown(own) => {
            let names: Vec<&str> = own.iter().copied().chain(["probability"]).collect();
            let field = e.field.as_deref().unwrap_or_default();
            let fix = match did_you_mean(field, &names) {
                Some(near) => format!("did you mean `{near}`? (fields: {})", one_of(&names)),
                None => format!("use {}", one_of(&names)),
            };
            let at = entry.map_or(table, |(k, _)| k.span());
            (at, format!("unknown field `{field}`, expected {}", one_of(&names)), fix)
        }
        FieldErrorKind::Missing => (table, e.to_string(), "add the field (see docs/PROFILES.md)".into()),
        FieldErrorKind::Value(m) => (entry.map_or(table, |(_, v)| v.span()), plain_words(m), fix_for(m)),
    };
    StepError { span, field: e.field, message, fix }
}

/// Shared checks of times in milliseconds with a jitter (`stall`, `delay`).
fn check_ms(ms: u64, jitter_ms: u64) -> Result<(), Problem> {
    if ms > 3_600_000 || jitter_ms > ms {
        return Err(Problem::new(
            "ms must be at most an hour and jitter_ms at most ms",
            "e.g. ms = 1500, jitter_ms = 300",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_makes_its_action() {
        #[derive(Deserialize)]
        struct Doc {
            a: Fields,
        }
        // The least each action needs.
        let least = |name: &str| match name {
            "stall" | "delay" => ", ms = 10",
            "corrupt" => ", bytes = 1",
            "throttle" => ", bps = 28800",
            "reply" => ", text = \"-ERR no\"",
            "limit" => ", bytes = 10",
            "linger" => ", ms = 10",
            _ => "",
        };
        for name in Action::NAMES {
            let doc: Doc = toml::from_str(&format!("a = {{ do = \"{name}\"{} }}", least(name))).expect("toml");
            let action = Action::from_fields(name, &doc.a, &STEP_FIELDS).expect("known").expect("valid");
            assert_eq!(action.name(), name);
        }
        assert!(Action::from_fields("hangup", &Fields::default(), &[]).is_none());
    }
}
