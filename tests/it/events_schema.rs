//! The events file (`--events FILE`) against its contract, docs/EVENTS.md.
//!
//! A real run (embedded server, proxy with a profile that fires faults,
//! aggregator writing the file) is parsed line by line, and every line is
//! checked against the field tables of docs/EVENTS.md (compiled in):
//! every documented field is present with its documented type, and no line
//! has a field or an event type the page does not document. So the page and
//! the code cannot drift apart without this test failing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{LIMIT, loopback, profile};
use popfault::aggregate::Aggregator;
use popfault::client::{Mode, UidMemory, WorkloadConfig, run_session};
use popfault::control::Control;
use popfault::relay::{self, ProxyConfig};
use popfault::server::{self, Maildrop, ServerConfig};
use popfault::session::Outcome;
use serde_json::Value;

/// The page under test.
const EVENTS_MD: &str = include_str!("../../docs/EVENTS.md");

/// A seed above 2^53, so its exact round trip is checked.
const SEED: u64 = 0xfeed_f00d_dead_beef;
/// Never written anywhere (checked).
const PASSWORD: &str = "Schema-pw-0f-7e3";

/// Session 1 is refused at accept; every STAT answered gets a two-step
/// fault; even sessions lose the line in their 2nd RETR.
const PROFILE: &str = r#"
name = "schema"
summary = "Faults of every kind the events file records"

[[rule]]
name = "refuse-first"
when = "accept"
sessions = { first = 1 }
actions = [{ do = "refuse", how = "err" }]

[[rule]]
name = "glitch"
when = "response"
command = "STAT"
actions = [{ do = "stall", ms = 1 }, { do = "delay", ms = 1 }]

[[rule]]
name = "cut-mid-retr"
when = "body"
command = "RETR"
nth = 2
offset = 100
sessions = { every = 2 }
actions = [{ do = "disconnect", side = "both", how = "rst" }]
"#;

/// Floors under the page: fields that must stay documented whatever else
/// changes (the page may add fields, never drop these).
const REQUIRED: &[(&str, &[&str])] = &[
    ("session_start", &["event", "session", "client", "upstream", "profile"]),
    ("fault", &["event", "session", "rule", "action", "point"]),
    (
        "session_end",
        &[
            "event",
            "session",
            "client",
            "upstream",
            "user",
            "outcome",
            "state",
            "downloaded",
            "marked",
            "at_risk",
            "duplicates",
            "bytes_up",
            "bytes_down",
            "duration_ms",
            "faults",
            "encrypted",
            "violations",
            "profile",
            "ended_by",
        ],
    ),
    (
        "summary",
        &[
            "event",
            "sessions",
            "outcomes",
            "at_risk",
            "duplicates",
            "downloaded",
            "bytes_up",
            "bytes_down",
            "faults_fired",
            "latency_us",
            "session_ms",
            "dropped_events",
            "seed",
            "profile",
        ],
    ),
];

/// The types [`Schema::check`] knows besides the nested objects.
const SCALAR_TYPES: &[&str] = &[
    "string",
    "integer",
    "boolean",
    "string or null",
    "array of string",
    "address",
    "outcome",
    "state",
    "map of integer",
    "map of percentiles",
];

// === the page ===

/// Field name → type name, in page order.
type Fields = Vec<(String, String)>;

/// What docs/EVENTS.md says, parsed from its tables.
#[derive(Debug, Default)]
struct Schema {
    /// Type names of the "Types" table.
    types: BTreeSet<String>,
    /// Event type → its fields ("Event types", one `### \`name\`` each).
    events: BTreeMap<String, Fields>,
    /// Nested object type → its fields ("Nested objects").
    objects: BTreeMap<String, Fields>,
    /// The "Outcomes" table.
    outcomes: BTreeSet<String>,
    /// The "States" table.
    states: BTreeSet<String>,
}

/// The text between the first pair of backticks in `cell`.
fn ticked(cell: &str) -> Option<String> {
    let rest = &cell[cell.find('`')? + 1..];
    Some(rest[..rest.find('`')?].to_string())
}

fn parse_schema(md: &str) -> Schema {
    let mut s = Schema::default();
    let (mut section, mut sub) = (String::new(), None::<String>);
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
            sub = None;
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            sub = ticked(h);
            continue;
        }
        // Data rows start with a backticked name; header and rule rows do not.
        if !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(name) = ticked(cells[1]) else { continue };
        let ty = cells.get(2).and_then(|c| ticked(c));
        match (section.as_str(), &sub) {
            ("Types", _) => {
                s.types.insert(name);
            }
            ("Outcomes", _) => {
                s.outcomes.insert(name);
            }
            ("States", _) => {
                s.states.insert(name);
            }
            ("Event types", Some(ev)) => {
                let ty = ty.unwrap_or_else(|| panic!("EVENTS.md: `{ev}`.`{name}` has no `type`"));
                s.events.entry(ev.clone()).or_default().push((name, ty));
            }
            ("Nested objects", Some(obj)) => {
                let ty = ty.unwrap_or_else(|| panic!("EVENTS.md: `{obj}`.`{name}` has no `type`"));
                s.objects.entry(obj.clone()).or_default().push((name, ty));
            }
            _ => {}
        }
    }
    s
}

// === checking values ===

impl Schema {
    /// Whether `v` is a value of the documented type `ty`; `Err` says why not.
    fn check(&self, ty: &str, v: &Value) -> Result<(), String> {
        let ok = match ty {
            "string" => v.is_string(),
            "integer" => v.is_u64(),
            "boolean" => v.is_boolean(),
            "string or null" => v.is_string() || v.is_null(),
            "array of string" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "address" => v.as_str().is_some_and(|a| a.parse::<SocketAddr>().is_ok()),
            "outcome" => v.as_str().is_some_and(|o| self.outcomes.contains(o)),
            "state" => v.as_str().is_some_and(|o| self.states.contains(o)),
            "map of integer" => v.as_object().is_some_and(|m| m.values().all(Value::is_u64)),
            "map of percentiles" => match v.as_object() {
                Some(m) => return m.values().try_for_each(|p| self.check("percentiles", p)),
                None => false,
            },
            obj if self.objects.contains_key(obj) => return self.check_object(obj, &self.objects[obj], v),
            other => return Err(format!("type `{other}` is not one the test knows")),
        };
        if ok { Ok(()) } else { Err(format!("{v} is not `{ty}`")) }
    }

    /// Every documented field present and well typed, and nothing else.
    fn check_object(&self, what: &str, fields: &Fields, v: &Value) -> Result<(), String> {
        let Some(obj) = v.as_object() else { return Err(format!("{what}: {v} is not an object")) };
        for (name, ty) in fields {
            let value = obj.get(name).ok_or_else(|| format!("{what}: documented field `{name}` is missing"))?;
            self.check(ty, value).map_err(|e| format!("{what}.{name}: {e}"))?;
        }
        for key in obj.keys() {
            if !fields.iter().any(|(n, _)| n == key) {
                return Err(format!("{what}: field `{key}` is not documented in docs/EVENTS.md"));
            }
        }
        Ok(())
    }
}

// === the run ===

fn workload(mode: Mode) -> WorkloadConfig {
    WorkloadConfig {
        user: "user1".into(),
        password: PASSWORD.into(),
        mode,
        timeout: Duration::from_secs(10),
        max_messages: None,
    }
}

/// Runs four sessions through a proxy with [`PROFILE`] and returns the
/// events file's text: 1 refused, 2 cut in its 2nd RETR (rolled back),
/// 3 downloads everything again and commits, 4 finds an empty mailbox.
async fn events_file() -> String {
    let dir = std::env::temp_dir().join(format!("popfault-events-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let cfg = ServerConfig { users: 1, messages: 3, size: 1200, password: PASSWORD.into() };
    let srv = server::spawn(loopback(), Maildrop::new(&cfg)).await.unwrap();
    let agg = Aggregator::start(Some(&path)).unwrap();
    let control = Arc::new(Control::new(Arc::new(profile(PROFILE)), SEED));
    let proxy = relay::start(ProxyConfig::new(loopback(), srv.addr.to_string()), control, agg.sink()).await.unwrap();
    for mode in [Mode::DownloadAndDelete, Mode::DownloadAndDelete, Mode::DownloadAndDelete, Mode::LeaveOnServer] {
        let _ = run_session(proxy.local_addr, &workload(mode), &mut UidMemory::new()).await;
        // Sessions are numbered in accept order: one at a time.
        tokio::time::timeout(LIMIT, async {
            while srv.maildrop.is_locked("user1") || proxy.live_sessions() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the session ended in time");
    }
    proxy.shutdown().await;
    srv.shutdown().await;
    agg.finish(SEED, "schema", Some(&path)).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    text
}

// === tests ===

#[test]
fn the_page_parses_into_a_schema() {
    let s = parse_schema(EVENTS_MD);
    for (event, required) in REQUIRED {
        let fields = s.events.get(*event).unwrap_or_else(|| panic!("EVENTS.md documents no `{event}`"));
        for name in *required {
            assert!(fields.iter().any(|(n, _)| n == name), "EVENTS.md: `{event}` lost its field `{name}`");
        }
    }
    for (what, fields) in s.events.iter().chain(&s.objects) {
        let mut seen = BTreeSet::new();
        for (name, ty) in fields {
            assert!(seen.insert(name), "EVENTS.md: `{what}`.`{name}` is documented twice");
            assert!(s.types.contains(ty), "EVENTS.md: `{what}`.`{name}`: type `{ty}` is not in the Types table");
        }
    }
    assert!(s.objects.contains_key("percentiles"), "EVENTS.md documents the percentiles object");
    // The outcome names are the code's, all of them.
    let code: BTreeSet<String> = Outcome::ALL.iter().map(|o| o.as_str().to_string()).collect();
    assert_eq!(s.outcomes, code, "EVENTS.md's Outcomes table vs Outcome::ALL");
    let states: BTreeSet<String> = ["AUTHORIZATION", "TRANSACTION", "UPDATE"].map(String::from).into();
    assert_eq!(s.states, states);
    // The page explains every type this test checks, and names no other.
    let known: BTreeSet<String> = SCALAR_TYPES.iter().map(|t| t.to_string()).chain(s.objects.keys().cloned()).collect();
    assert_eq!(s.types, known, "EVENTS.md's Types table vs the types this test checks");
}

#[tokio::test]
async fn every_line_matches_the_documented_schema() {
    let schema = parse_schema(EVENTS_MD);
    let text = events_file().await;
    let show = |why: String| -> String { format!("{why}\n--- events file ---\n{text}") };

    assert!(text.ends_with('\n'), "{}", show("the file does not end with a newline".into()));
    assert!(!text.contains(PASSWORD), "{}", show("the password is in the events file".into()));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}", show(format!("{e}: {l}")))))
        .collect();

    // Every line: a documented event type, exactly its documented fields.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        let event = line["event"].as_str().unwrap_or_else(|| panic!("{}", show(format!("no \"event\": {line}"))));
        let fields = schema
            .events
            .get(event)
            .unwrap_or_else(|| panic!("{}", show(format!("event type `{event}` is not documented"))));
        if let Err(e) = schema.check_object(event, fields, line) {
            panic!("{}", show(format!("{e}\nin: {line}")));
        }
        *seen.entry(event.to_string()).or_default() += 1;
    }
    // The run exercised every documented event type; nothing else was written.
    let documented: BTreeSet<&String> = schema.events.keys().collect();
    assert_eq!(seen.keys().collect::<BTreeSet<_>>(), documented, "{}", show("event types seen".into()));
    assert_eq!(seen["session_start"], 4);
    assert_eq!(seen["session_end"], 4);
    assert_eq!(seen["summary"], 1);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "summary", "the summary is the last line");

    // Documented details of the values, as this run makes them.
    let of = |event: &'static str| lines.iter().filter(move |l| l["event"] == event);
    let end = |n: u64| of("session_end").find(|l| l["session"] == n).expect("each session ended");
    assert_eq!(end(1)["outcome"], "refused");
    assert_eq!(end(1)["user"], Value::Null, "no USER reached the proxy: null");
    assert_eq!(end(1)["ended_by"], "refused by fault: refuse-first");
    assert_eq!((end(2)["outcome"].as_str(), end(2)["at_risk"].as_u64()), (Some("rolled-back"), Some(1)));
    assert_eq!((end(3)["outcome"].as_str(), end(3)["duplicates"].as_u64()), (Some("committed"), Some(1)));
    assert_eq!(end(3)["user"], "user1");
    for l in of("session_end") {
        // `faults` lists the rules of the session's fault lines, in order.
        let rules: Vec<&Value> = of("fault").filter(|f| f["session"] == l["session"]).map(|f| &f["rule"]).collect();
        assert_eq!(l["faults"].as_array().unwrap().iter().collect::<Vec<_>>(), rules, "{l}");
    }
    let faults: Vec<(&str, &str, &str)> = of("fault")
        .map(|f| (f["rule"].as_str().unwrap(), f["action"].as_str().unwrap(), f["point"].as_str().unwrap()))
        .collect();
    assert!(faults.contains(&("refuse-first", "refuse", "accept")), "{faults:?}");
    for (rule, action, point) in &faults {
        match *rule {
            "glitch" => {
                assert_eq!(*action, "stall+delay", "steps joined with +");
                assert!(point.starts_with("response STAT #") && !point.ends_with("#0"), "{point}");
            }
            "cut-mid-retr" => {
                assert_eq!(*action, "disconnect");
                assert!(point.starts_with("body RETR #") && point.ends_with(" @100"), "{point}");
            }
            _ => {}
        }
    }
    assert_eq!(last["seed"].as_u64(), Some(SEED), "the seed survives as an exact integer");
    assert_eq!(last["profile"], "schema");
    assert_eq!(last["sessions"], 4);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(&last["outcomes"]), schema.outcomes, "every outcome, 0 included");
    assert_eq!(last["faults_fired"]["glitch"], 2);
    assert!(keys(&last["latency_us"]).contains("RETR"));
}
