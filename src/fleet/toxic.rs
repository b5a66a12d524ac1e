//! Toxics: Toxiproxy's fault vocabulary, each turned into popfault rules
//! (docs/API.md, "Toxics"). A toxic is data; `rules` writes it as the TOML
//! of a profile's `[[rule]]`s, which `Profile::from_toml` checks exactly
//! as `check-profile` checks a file.

use serde::Serialize;
use serde_json::{Map, Value};

use super::FleetError;
use crate::faults::Profile;

/// The toxic types popfault knows: Toxiproxy's standard ones and `pop3`.
pub const TYPES: [&str; 8] =
    ["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data", "pop3"];

/// The longest `stall` or `delay` a rule may hold (docs/PROFILES.md).
const HOUR_MS: i64 = 3_600_000;

/// One toxic of a proxy, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Toxic {
    /// Its attributes: the standard ones for its type, or a popfault rule.
    pub attributes: Map<String, Value>,
    /// Its name, unique in its proxy (default `TYPE_STREAM`).
    pub name: String,
    /// Its type ([`TYPES`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// `upstream` (client → server) or `downstream` (server → client).
    pub stream: String,
    /// The chance that a session gets it (drawn per session, seeded).
    pub toxicity: f64,
}

/// Integer attributes of each standard type, in Toxiproxy's order.
fn standard_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "latency" => &["latency", "jitter"],
        "bandwidth" => &["rate"],
        "slow_close" => &["delay"],
        "timeout" => &["timeout"],
        "reset_peer" => &["timeout"],
        "slicer" => &["average_size", "size_variation", "delay"],
        "limit_data" => &["bytes"],
        _ => return None,
    })
}

impl Toxic {
    /// A toxic from an API request's fields, checked: a type popfault
    /// knows, a stream, a toxicity in 0..=1 and attributes that make rules.
    pub fn new(
        name: Option<String>,
        kind: String,
        stream: Option<String>,
        toxicity: Option<f64>,
        attributes: Map<String, Value>,
    ) -> Result<Toxic, FleetError> {
        let stream = stream.unwrap_or_else(|| "downstream".into());
        if stream != "upstream" && stream != "downstream" {
            return Err(FleetError::bad("stream was invalid, can be either upstream or downstream"));
        }
        if !TYPES.contains(&kind.as_str()) {
            return Err(FleetError::bad("invalid toxic type"));
        }
        let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("{kind}_{stream}"));
        let toxic = Toxic { attributes, name, kind, stream, toxicity: toxicity.unwrap_or(1.0) };
        toxic.normalised()
    }

    /// The same toxic with new attributes (merged over the old ones, as
    /// Toxiproxy does) and toxicity, checked again.
    pub fn updated(&self, attributes: Option<Map<String, Value>>, toxicity: Option<f64>) -> Result<Toxic, FleetError> {
        let mut t = self.clone();
        if let Some(a) = attributes {
            for (k, v) in a {
                t.attributes.insert(k, v);
            }
        }
        if let Some(x) = toxicity {
            t.toxicity = x;
        }
        t.normalised()
    }

    /// Checks the toxic; standard types get every attribute, 0 when not
    /// given (as Toxiproxy shows them).
    fn normalised(mut self) -> Result<Toxic, FleetError> {
        if !(0.0..=1.0).contains(&self.toxicity) || self.toxicity.is_nan() {
            return Err(FleetError::bad(format!("bad request body: toxicity {} is not in 0.0..1.0", self.toxicity)));
        }
        if self.name.chars().any(char::is_control) {
            return Err(FleetError::bad("bad request body: the toxic's name holds a control character"));
        }
        if let Some(fields) = standard_fields(&self.kind) {
            let mut attrs = Map::new();
            for f in fields {
                let v = match self.attributes.get(*f) {
                    None | Some(Value::Null) => 0,
                    Some(v) => v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
                        FleetError::bad(format!(
                            "bad request body: attributes.{f}: {v} is not a whole number (0 or more)"
                        ))
                    })?,
                };
                attrs.insert((*f).into(), v.into());
            }
            // Unknown attributes are ignored, as Toxiproxy's JSON decoding does.
            self.attributes = attrs;
        }
        self.rules_toml()?;
        Ok(self)
    }

    fn int(&self, field: &str) -> i64 {
        self.attributes.get(field).and_then(Value::as_i64).unwrap_or(0)
    }

    /// This toxic's rules as TOML `[[rule]]` tables (empty when it does
    /// nothing, as with a toxicity of 0), checked as a profile of their own.
    pub fn rules_toml(&self) -> Result<String, FleetError> {
        if self.toxicity == 0.0 {
            return Ok(String::new());
        }
        let mut rules = if self.kind == "pop3" { self.pop3_rule()? } else { self.standard_rules()? };
        if rules.is_empty() {
            return Ok(String::new());
        }
        if self.kind != "pop3" && self.toxicity < 1.0 {
            if rules.len() > 1 {
                // Each rule draws its sessions on its own: two rules could
                // pick different sessions, and half a toxic is not one.
                return Err(FleetError::bad(format!(
                    "bad request body: toxicity {}: popfault carries {} with a timeout out with two rules \
                     and cannot give it to a fraction of sessions; use 0 or 1 (docs/API.md)",
                    self.toxicity, self.kind,
                )));
            }
            let mut s = toml::Table::new();
            s.insert("probability".into(), toml::Value::Float(self.toxicity));
            rules[0].insert("sessions".into(), toml::Value::Table(s));
        }
        let mut doc = toml::Table::new();
        doc.insert("rule".into(), toml::Value::Array(rules.into_iter().map(toml::Value::Table).collect()));
        let text = toml::to_string(&doc).map_err(|e| FleetError::bad(format!("bad request body: {e}")))?;
        let origin = format!("toxic {}", self.name);
        Profile::from_toml(&text, &origin, &self.name).map_err(|e| FleetError::profile(e, text.clone()))?;
        Ok(text)
    }

    /// The rules that carry a standard toxic out (docs/API.md, "Toxics").
    fn standard_rules(&self) -> Result<Vec<toml::Table>, FleetError> {
        let down = self.stream == "downstream";
        // Downstream faults act on the server's first line (the greeting),
        // upstream ones on the client's first command.
        let first = if down { "greeting" } else { "command" };
        let hour = |f: &str, v: i64| {
            if v > HOUR_MS {
                Err(FleetError::bad(format!(
                    "bad request body: attributes.{f}: {v} ms is over popfault's limit of an hour"
                )))
            } else {
                Ok(v)
            }
        };
        let step = |what: &str, fields: &[(&str, toml::Value)]| {
            let mut t = toml::Table::new();
            t.insert("do".into(), toml::Value::String(what.into()));
            for (k, v) in fields {
                t.insert((*k).into(), v.clone());
            }
            toml::Value::Table(t)
        };
        let int = |v: i64| toml::Value::Integer(v);
        let (when, repeat, actions) = match self.kind.as_str() {
            "latency" => {
                let ms = hour("latency", self.int("latency"))?;
                // A delay cannot go below 0: jitter beyond the latency is cut to it.
                let jitter = self.int("jitter").min(ms);
                if ms == 0 {
                    return Ok(Vec::new());
                }
                if down {
                    // The greeting is held (stall) and every answer after it (delay).
                    let t = [("ms", int(ms)), ("jitter_ms", int(jitter))];
                    ("greeting", false, vec![step("stall", &t), step("delay", &t)])
                } else {
                    ("command", true, vec![step("stall", &[("ms", int(ms)), ("jitter_ms", int(jitter))])])
                }
            }
            "bandwidth" => {
                let rate = self.int("rate");
                if rate <= 0 {
                    return Ok(Vec::new());
                }
                // KB/s of 1000 bytes, as Toxiproxy counts them.
                let bps = rate.saturating_mul(8000).max(300);
                ("accept", false, vec![step("throttle", &[("bps", int(bps))])])
            }
            "slow_close" => {
                let ms = hour("delay", self.int("delay"))?;
                if ms == 0 {
                    return Ok(Vec::new());
                }
                let toward = if down { "client" } else { "server" };
                ("accept", false, vec![step("linger", &[("ms", int(ms)), ("toward", toward.into())])])
            }
            "timeout" | "reset_peer" => {
                let ms = hour("timeout", self.int("timeout"))?;
                let how = if self.kind == "timeout" { "fin" } else { "rst" };
                if ms == 0 {
                    // timeout 0: nothing more, never closed; reset_peer 0: reset now.
                    let how = if self.kind == "timeout" { "silent" } else { how };
                    (first, false, vec![step("disconnect", &[("side", "both".into()), ("how", how.into())])])
                } else {
                    // Nothing goes on from the first line (held as long as
                    // popfault holds anything), and the close comes `ms`
                    // after the client connected.
                    let hold = self.rule(first, false, vec![step("stall", &[("ms", int(HOUR_MS))])]);
                    let mut close = self.rule(
                        "timer",
                        false,
                        vec![step("disconnect", &[("side", "both".into()), ("how", how.into())])],
                    );
                    close.insert("after_ms".into(), int(ms));
                    return Ok(vec![hold, close]);
                }
            }
            "slicer" => {
                let size = self.int("average_size");
                let delay_us = self.int("delay");
                if size == 0 || delay_us == 0 {
                    // Slices without a pause are the same byte stream.
                    return Ok(Vec::new());
                }
                // average_size bytes every `delay` µs is a line speed.
                let bps = (size as i128 * 8 * 1_000_000 / delay_us as i128).clamp(300, i64::MAX as i128) as i64;
                ("accept", false, vec![step("throttle", &[("bps", int(bps))])])
            }
            "limit_data" => {
                let bytes = self.int("bytes");
                let mut fields = vec![("bytes", int(bytes))];
                fields.push(("toward", (if down { "client" } else { "server" }).into()));
                ("accept", false, vec![step("limit", &fields)])
            }
            _ => return Err(FleetError::bad("invalid toxic type")),
        };
        Ok(vec![self.rule(when, repeat, actions)])
    }

    /// A rule named after the toxic.
    fn rule(&self, when: &str, repeat: bool, actions: Vec<toml::Value>) -> toml::Table {
        let mut rule = toml::Table::new();
        rule.insert("name".into(), toml::Value::String(self.name.clone()));
        rule.insert("when".into(), toml::Value::String(when.into()));
        if repeat {
            rule.insert("repeat".into(), toml::Value::Boolean(true));
        }
        rule.insert("actions".into(), toml::Value::Array(actions));
        rule
    }

    /// A `pop3` toxic's attributes are a rule's fields; its name is the
    /// toxic's, and a toxicity below 1 is the rule's `sessions.probability`.
    fn pop3_rule(&self) -> Result<Vec<toml::Table>, FleetError> {
        let mut rule = toml::Table::new();
        rule.insert("name".into(), toml::Value::String(self.name.clone()));
        for (k, v) in &self.attributes {
            if k == "name" {
                return Err(FleetError::bad(
                    "bad request body: attributes.name: a pop3 toxic's rule is named by the toxic's `name`",
                ));
            }
            rule.insert(k.clone(), to_toml(v, &format!("attributes.{k}"))?);
        }
        if self.toxicity < 1.0 {
            let sessions = rule.entry("sessions").or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match sessions {
                toml::Value::Table(t) if !t.contains_key("probability") => {
                    t.insert("probability".into(), toml::Value::Float(self.toxicity));
                }
                // Left as it is: the profile check says what is wrong with it.
                toml::Value::Table(_) => {
                    return Err(FleetError::bad(
                        "bad request body: give the chance once: toxicity, or attributes.sessions.probability",
                    ));
                }
                _ => {}
            }
        }
        Ok(vec![rule])
    }
}

/// JSON as TOML (TOML has no null).
fn to_toml(v: &Value, at: &str) -> Result<toml::Value, FleetError> {
    Ok(match v {
        Value::Null => return Err(FleetError::bad(format!("bad request body: {at}: null has no meaning in a rule"))),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
            _ => return Err(FleetError::bad(format!("bad request body: {at}: {n} is too large"))),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(
            a.iter().enumerate().map(|(i, x)| to_toml(x, &format!("{at}[{}]", i + 1))).collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => toml::Value::Table(
            o.iter().map(|(k, x)| Ok((k.clone(), to_toml(x, &format!("{at}.{k}"))?))).collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn toxic(kind: &str, stream: &str, attrs: Value) -> Result<Toxic, FleetError> {
        let Value::Object(a) = attrs else { panic!() };
        Toxic::new(None, kind.into(), Some(stream.into()), None, a)
    }

    #[test]
    fn every_standard_type_makes_a_valid_rule_both_ways() {
        for kind in TYPES.iter().filter(|k| **k != "pop3") {
            for stream in ["upstream", "downstream"] {
                let attrs = json!({"latency": 100, "jitter": 10, "rate": 10, "delay": 50, "timeout": 100,
                    "average_size": 64, "size_variation": 8, "bytes": 100});
                let t = toxic(kind, stream, attrs).unwrap_or_else(|e| panic!("{kind} {stream}: {e:?}"));
                assert_eq!(t.name, format!("{kind}_{stream}"));
                assert!(!t.rules_toml().unwrap().is_empty(), "{kind} {stream} does nothing");
            }
        }
    }

    #[test]
    fn standard_attributes_default_to_zero_and_reject_negatives() {
        let t = toxic("latency", "downstream", json!({"latency": 5})).unwrap();
        assert_eq!(Value::Object(t.attributes.clone()), json!({"latency": 5, "jitter": 0}));
        assert!(toxic("latency", "downstream", json!({"latency": -1})).is_err());
        assert!(toxic("nope", "downstream", json!({})).is_err());
        assert!(toxic("latency", "sideways", json!({})).is_err());
    }

    #[test]
    fn toxicity_is_the_rules_session_probability() {
        let a = |v: Value| v.as_object().unwrap().clone();
        let t = Toxic::new(None, "latency".into(), None, Some(0.25), a(json!({"latency": 10}))).unwrap();
        assert!(t.rules_toml().unwrap().contains("probability = 0.25"), "{}", t.rules_toml().unwrap());
        let none = Toxic::new(None, "latency".into(), None, Some(0.0), a(json!({"latency": 10}))).unwrap();
        assert_eq!(none.rules_toml().unwrap(), "");
        // Two rules cannot share one draw: refused rather than half applied.
        assert!(Toxic::new(None, "timeout".into(), None, Some(0.5), a(json!({"timeout": 10}))).is_err());
        assert!(Toxic::new(None, "timeout".into(), None, Some(0.5), a(json!({"timeout": 0}))).is_ok());
    }

    #[test]
    fn a_bad_pop3_rule_is_located_as_check_profile_locates_it() {
        let e = toxic(
            "pop3",
            "downstream",
            json!({"when": "status", "probability": 1.5, "actions": [{"do": "disconnect"}]}),
        )
        .unwrap_err();
        let FleetError::Profile { error, .. } = e else { panic!("{e:?}") };
        assert_eq!(error.field, "rule[1].probability");
        assert_eq!(error.message, "1.5 is not a probability");
    }
}
