//! Engine and profile unit tests: no sockets, no clock. Time is a number
//! handed in through [`Facts`]; randomness is the engine's own, seeded by
//! (seed, session), so every assertion here is deterministic.

use std::sync::Arc;
use std::time::Duration;

use super::action::{Action, Delay, Disconnect, How, Noise, Refuse, RefuseHow, Reply, Side, Step, Throttle, Truncate};
use super::builtin;
use super::engine::{BodyCut, Decision, Engine, Facts};
use super::profile::{Millis, Profile, Window};
use super::trigger::{LineSoFar, Point, Trigger};
use crate::codec::Command;
use crate::session::State;

// === helpers ===

fn profile(text: &str) -> Arc<Profile> {
    Arc::new(Profile::from_toml(text, "test.toml", "test").unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}")))
}

fn engine(text: &str, seed: u64, session: u64) -> Engine {
    Engine::new(profile(text), seed, session)
}

/// An engine on `text` edited after validation: a `Profile` built in code
/// (the library API takes one) may hold what `check-profile` refuses as
/// unable to fire, and the engine must still honour it.
fn edited_engine(text: &str, edit: impl FnOnce(&mut Profile), seed: u64, session: u64) -> Engine {
    let mut p = Profile::from_toml(text, "test.toml", "test").unwrap_or_else(|e| panic!("{e}\n--- in:\n{text}"));
    edit(&mut p);
    Engine::new(Arc::new(p), seed, session)
}

fn builtin_engine(name: &str, seed: u64, session: u64) -> Engine {
    let p = builtin::builtin(name).expect("a built-in").unwrap_or_else(|e| panic!("{e}"));
    Engine::new(Arc::new(p), seed, session)
}

/// Facts in TRANSACTION with nothing retrieved or deleted, at run start.
fn facts() -> Facts {
    Facts { state: State::Transaction, retrieved: 0, deleted: 0, run_elapsed: Duration::ZERO, seq: 1 }
}

fn at_ms(ms: u64) -> Facts {
    Facts { run_elapsed: Duration::from_millis(ms), ..facts() }
}

fn retr() -> Command {
    Command::Retr(1)
}

/// The rule names that fire at `point`.
fn fired(e: &mut Engine, point: Point<'_>, f: &Facts) -> Vec<String> {
    e.decide(&point, f).into_iter().map(|d| d.rule).collect()
}

/// Whether a rule fired at `point` (panics if more than one did).
fn fires(e: &mut Engine, point: Point<'_>, f: &Facts) -> bool {
    match fired(e, point, f).as_slice() {
        [] => false,
        [_] => true,
        more => panic!("expected one decision, got {more:?}"),
    }
}

/// A rule at `when` (with whatever `when` needs), firing on every match.
fn rule_at(when: Trigger) -> String {
    let extra = match when {
        Trigger::Body => "command = \"RETR\"\noffset = 10\n",
        Trigger::Timer => "after_ms = 1000\n",
        _ => "",
    };
    format!(
        "[[rule]]\nname = \"{when}\"\nwhen = \"{when}\"\nrepeat = true\n{extra}actions = [{{ do = \"stall\", ms = 1 }}]\n"
    )
}

/// Every point `decide` can be asked about, for `cmd`.
fn every_point(cmd: &Command) -> Vec<(Trigger, Point<'_>)> {
    vec![
        (Trigger::Accept, Point::Accept),
        (Trigger::Greeting, Point::Greeting),
        (Trigger::Command, Point::Command(cmd)),
        (Trigger::Forwarded, Point::Forwarded(cmd)),
        (Trigger::Status, Point::Status(cmd)),
        (Trigger::Response, Point::Response(cmd)),
    ]
}

/// One scripted POP3 session's worth of points, in order, with the
/// decisions and body cuts the engine makes: a fingerprint to compare.
fn script(e: &mut Engine) -> (Vec<Decision>, Vec<BodyCut>, Vec<(Duration, usize)>) {
    let mut decisions = Vec::new();
    let mut cuts = Vec::new();
    let timers = e.timers();
    let mut f = Facts::at_accept(Duration::from_millis(500));
    decisions.extend(e.decide(&Point::Accept, &f));
    decisions.extend(e.decide(&Point::Greeting, &f));
    let login = [Command::User("u".into()), Command::Pass];
    let mut seq = 0;
    for c in &login {
        seq += 1;
        f.seq = seq;
        for p in [Point::Command(c), Point::Forwarded(c), Point::Status(c), Point::Response(c)] {
            decisions.extend(e.decide(&p, &f));
        }
    }
    f.state = State::Transaction;
    for n in 1..=5 {
        for c in [Command::Retr(n), Command::Dele(n)] {
            seq += 1;
            f.seq = seq;
            decisions.extend(e.decide(&Point::Command(&c), &f));
            decisions.extend(e.decide(&Point::Forwarded(&c), &f));
            decisions.extend(e.decide(&Point::Status(&c), &f));
            if c.multiline_on_ok() {
                cuts.extend(e.plan_body(&c, Some(2000 + 100 * u64::from(n)), &f));
                f.retrieved += 1;
            } else {
                f.deleted += 1;
            }
            decisions.extend(e.decide(&Point::Response(&c), &f));
        }
    }
    let quit = Command::Quit;
    seq += 1;
    f.seq = seq;
    for p in [Point::Command(&quit), Point::Forwarded(&quit)] {
        decisions.extend(e.decide(&p, &f));
    }
    f.state = State::Update;
    for p in [Point::Status(&quit), Point::Response(&quit)] {
        decisions.extend(e.decide(&p, &f));
    }
    for &(after, rule) in &timers {
        decisions.extend(e.timer_due(rule, after, &f));
    }
    (decisions, cuts, timers)
}

// === trigger points ===

#[test]
fn each_trigger_point_matches_only_its_point() {
    let cmd = retr();
    for when in Trigger::ALL {
        let mut e = engine(&rule_at(when), 1, 1);
        for (at, point) in every_point(&cmd) {
            assert_eq!(fires(&mut e, point, &facts()), at == when, "a `{when}` rule asked at `{at}`");
        }
        let cuts = e.plan_body(&cmd, Some(1000), &facts());
        assert_eq!(!cuts.is_empty(), when == Trigger::Body, "a `{when}` rule asked for body cuts");
        let timers = e.timers();
        assert_eq!(!timers.is_empty(), when == Trigger::Timer, "a `{when}` rule asked for timers");
        // Asking timer_due about a non-timer rule never fires it.
        assert_eq!(
            e.timer_due(0, Duration::from_secs(1), &facts()).is_some(),
            when == Trigger::Timer,
            "timer_due on `{when}`"
        );
    }
}

#[test]
fn timer_due_on_an_unknown_rule_index_is_none() {
    let mut e = engine(&rule_at(Trigger::Timer), 1, 1);
    assert!(e.timer_due(7, Duration::from_secs(1), &facts()).is_none());
}

#[test]
fn decision_names_the_rule_and_the_point() {
    let mut e = engine(
        "[[rule]]\nname = \"q\"\nwhen = \"status\"\ncommand = \"QUIT\"\nactions = [{ do = \"disconnect\", side = \"client\" }]\n\
         [[rule]]\nwhen = \"accept\"\nactions = [{ do = \"refuse\" }]\n\
         [[rule]]\nwhen = \"timer\"\nafter_ms = 1500\nactions = [{ do = \"disconnect\" }]\n",
        1,
        1,
    );
    let f = Facts { seq: 9, ..facts() };
    let d = e.decide(&Point::Status(&Command::Quit), &f);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].rule, "q");
    assert_eq!(d[0].point, "status QUIT #9");
    assert_eq!(d[0].actions, vec![Action::Disconnect(Disconnect { side: Side::Client, how: How::Rst })]);
    let d = e.decide(&Point::Accept, &f);
    assert_eq!((d[0].rule.as_str(), d[0].point.as_str()), ("accept-2", "accept"), "unnamed rules are named when-N");
    let d = e.timer_due(2, Duration::from_millis(1500), &f).expect("timer fires");
    assert_eq!((d.rule.as_str(), d.point.as_str()), ("timer-3", "timer @1500ms"));
}

#[test]
fn rules_fire_in_profile_order_at_one_point() {
    let mut e = engine(
        "[[rule]]\nname = \"b\"\nwhen = \"response\"\nactions = [{ do = \"stall\", ms = 1 }]\n\
         [[rule]]\nname = \"a\"\nwhen = \"response\"\nactions = [{ do = \"stall\", ms = 2 }]\n",
        1,
        1,
    );
    assert_eq!(fired(&mut e, Point::Response(&retr()), &facts()), ["b", "a"]);
}

// === filters ===

#[test]
fn command_filter_matches_only_that_command_at_every_command_point() {
    // Lower case in the profile; commands compare upper-cased.
    for when in [Trigger::Command, Trigger::Forwarded, Trigger::Status, Trigger::Response] {
        let text = format!(
            "[[rule]]\nwhen = \"{when}\"\ncommand = \"dele\"\nrepeat = true\nactions = [{{ do = \"stall\", ms = 1 }}]\n"
        );
        let mut e = engine(&text, 1, 1);
        assert_eq!(e.profile().rules[0].command.as_deref(), Some("DELE"));
        for (at, point) in every_point(&Command::Dele(3)) {
            assert_eq!(fires(&mut e, point, &facts()), at == when, "`{when}` DELE rule at `{at}` DELE");
        }
        for (at, point) in every_point(&retr()) {
            assert!(!fires(&mut e, point, &facts()), "`{when}` DELE rule at `{at}` RETR");
        }
    }
}

#[test]
fn command_filter_matches_unknown_keywords_too() {
    let mut e = engine("[[rule]]\nwhen = \"command\"\ncommand = \"XTND\"\nactions = [{ do = \"swallow\" }]\n", 1, 1);
    assert!(!fires(&mut e, Point::Command(&Command::Noop), &facts()));
    assert!(fires(&mut e, Point::Command(&Command::parse(b"xtnd xmit\r\n")), &facts()));
}

#[test]
fn body_rules_filter_on_the_command() {
    let mut e = engine(
        "[[rule]]\nwhen = \"body\"\ncommand = \"TOP\"\noffset = 5\nrepeat = true\nactions = [{ do = \"disconnect\" }]\n",
        1,
        1,
    );
    assert!(e.plan_body(&retr(), Some(100), &facts()).is_empty());
    assert_eq!(e.plan_body(&Command::Top(1, 10), Some(100), &facts()).len(), 1);
}

#[test]
fn nth_fires_on_the_nth_match_only_and_other_commands_do_not_count() {
    let mut e = engine(
        "[[rule]]\nwhen = \"command\"\ncommand = \"RETR\"\nnth = 3\nrepeat = true\nactions = [{ do = \"disconnect\" }]\n",
        1,
        1,
    );
    let mut fired_at = Vec::new();
    for n in 1..=6 {
        // A DELE between every RETR: it is not a match of the rule.
        assert!(!fires(&mut e, Point::Command(&Command::Dele(n)), &facts()));
        if fires(&mut e, Point::Command(&Command::Retr(n)), &facts()) {
            fired_at.push(n);
        }
    }
    assert_eq!(fired_at, [3], "nth = 3 with repeat still fires once");
}

#[test]
fn nth_counts_only_matches_that_pass_the_other_filters() {
    let mut e = engine(
        "[[rule]]\nwhen = \"command\"\ncommand = \"RETR\"\nstate = \"TRANSACTION\"\nnth = 2\nactions = [{ do = \"disconnect\" }]\n",
        1,
        1,
    );
    let auth = Facts { state: State::Authorization, ..facts() };
    assert!(!fires(&mut e, Point::Command(&retr()), &auth));
    assert!(!fires(&mut e, Point::Command(&retr()), &facts()), "first match in TRANSACTION");
    assert!(fires(&mut e, Point::Command(&retr()), &facts()), "second match in TRANSACTION");
}

#[test]
fn without_repeat_a_rule_fires_once_per_session() {
    let mut e = engine("[[rule]]\nwhen = \"response\"\nactions = [{ do = \"stall\", ms = 1 }]\n", 1, 1);
    let hits = (0..10).filter(|_| fires(&mut e, Point::Response(&retr()), &facts())).count();
    assert_eq!(hits, 1);
    // A new session (a new engine) fires again.
    let mut e = engine("[[rule]]\nwhen = \"response\"\nactions = [{ do = \"stall\", ms = 1 }]\n", 1, 2);
    assert!(fires(&mut e, Point::Response(&retr()), &facts()));
}

#[test]
fn with_repeat_a_rule_fires_on_every_match() {
    let mut e = engine("[[rule]]\nwhen = \"response\"\nrepeat = true\nactions = [{ do = \"stall\", ms = 1 }]\n", 1, 1);
    let hits = (0..10).filter(|_| fires(&mut e, Point::Response(&retr()), &facts())).count();
    assert_eq!(hits, 10);
}

#[test]
fn a_once_rule_that_loses_its_roll_may_fire_on_a_later_match() {
    // "Once" means at most once: each match rolls until one wins.
    let text = "[[rule]]\nwhen = \"response\"\nprobability = 0.2\nactions = [{ do = \"stall\", ms = 1 }]\n";
    let mut late = 0;
    for session in 1..=200 {
        let mut e = engine(text, 3, session);
        let hits: Vec<usize> = (0..50).filter(|_| fires(&mut e, Point::Response(&retr()), &facts())).collect();
        assert!(hits.len() <= 1, "session {session}: fired at {hits:?}");
        late += usize::from(hits.first().is_some_and(|&i| i > 0));
    }
    assert!(late > 100, "most sessions fire on a later match ({late}/200)");
}

#[test]
fn state_filter() {
    let mut e = engine(
        "[[rule]]\nwhen = \"command\"\nstate = \"AUTHORIZATION\"\nrepeat = true\nactions = [{ do = \"stall\", ms = 1 }]\n",
        1,
        1,
    );
    for (state, expect) in [(State::Authorization, true), (State::Transaction, false), (State::Update, false)] {
        let f = Facts { state, ..facts() };
        assert_eq!(fires(&mut e, Point::Command(&Command::Pass), &f), expect, "{state}");
    }
}

#[test]
fn min_retrieved_and_min_deleted() {
    let text = "[[rule]]\nwhen = \"command\"\ncommand = \"QUIT\"\nmin_retrieved = 2\nmin_deleted = 1\nrepeat = true\n\
                actions = [{ do = \"disconnect\" }]\n";
    let mut e = engine(text, 1, 1);
    for (retrieved, deleted, expect) in [(0, 0, false), (1, 5, false), (2, 0, false), (2, 1, true), (9, 9, true)] {
        let f = Facts { retrieved, deleted, ..facts() };
        assert_eq!(
            fires(&mut e, Point::Command(&Command::Quit), &f),
            expect,
            "retrieved {retrieved} deleted {deleted}"
        );
    }
}

// === which sessions ===

fn selected_sessions(text: &str, seed: u64, sessions: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    sessions.filter(|&s| fires(&mut engine(text, seed, s), Point::Greeting, &facts())).collect()
}

#[test]
fn sessions_every() {
    let text = "[[rule]]\nwhen = \"greeting\"\nsessions = { every = 3 }\nactions = [{ do = \"stall\", ms = 1 }]\n";
    assert_eq!(selected_sessions(text, 1, 1..=10), [3, 6, 9]);
}

#[test]
fn an_engine_is_inert_exactly_when_no_rule_applies_to_its_session() {
    let text = "[[rule]]\nwhen = \"greeting\"\nsessions = { every = 3 }\nactions = [{ do = \"stall\", ms = 1 }]\n";
    let inert: Vec<u64> = (1..=7).filter(|&n| engine(text, 1, n).is_inert()).collect();
    assert_eq!(inert, [1, 2, 4, 5, 7]);
    // An inert engine decides nothing anywhere.
    for n in [1, 2, 4] {
        let (d, cuts, timers) = script(&mut engine(text, 1, n));
        assert!(d.is_empty() && cuts.is_empty() && timers.is_empty());
    }
    assert!(builtin_engine("passthrough", 1, 1).is_inert());
    assert!(!builtin_engine("lost-carrier-at-quit", 1, 1).is_inert());
}

#[test]
fn sessions_first() {
    let text = "[[rule]]\nwhen = \"greeting\"\nsessions = { first = 2 }\nactions = [{ do = \"stall\", ms = 1 }]\n";
    assert_eq!(selected_sessions(text, 1, 1..=10), [1, 2]);
}

#[test]
fn sessions_every_and_first_combine() {
    let text =
        "[[rule]]\nwhen = \"greeting\"\nsessions = { every = 2, first = 7 }\nactions = [{ do = \"stall\", ms = 1 }]\n";
    assert_eq!(selected_sessions(text, 1, 1..=20), [2, 4, 6]);
}

#[test]
fn sessions_probability_is_rolled_once_per_session() {
    let text = "[[rule]]\nwhen = \"response\"\nrepeat = true\nsessions = { probability = 0.5 }\n\
                actions = [{ do = \"stall\", ms = 1 }]\n";
    let mut chosen = 0;
    for session in 1..=2000 {
        let mut e = engine(text, 42, session);
        let hits = (0..20).filter(|_| fires(&mut e, Point::Response(&retr()), &facts())).count();
        // All or nothing within a session: the roll is not per match.
        assert!(hits == 0 || hits == 20, "session {session}: {hits}/20");
        // The same (seed, session) always makes the same choice.
        let again = fires(&mut engine(text, 42, session), Point::Response(&retr()), &facts());
        assert_eq!(again, hits == 20, "session {session} replays");
        chosen += usize::from(hits == 20);
    }
    assert!((900..=1100).contains(&chosen), "{chosen}/2000 sessions chosen at 0.5");
}

#[test]
fn sessions_probability_also_gates_timers() {
    let text = "[[rule]]\nwhen = \"timer\"\nafter_ms = 10\nsessions = { probability = 0.5 }\nactions = [{ do = \"disconnect\" }]\n";
    let mut with = 0;
    for session in 1..=400 {
        let mut e = engine(text, 5, session);
        let timers = e.timers();
        let fired = timers.first().and_then(|&(after, rule)| e.timer_due(rule, after, &facts())).is_some();
        assert_eq!(fired, !timers.is_empty(), "session {session}: an armed timer fires");
        with += usize::from(fired);
    }
    assert!((160..=240).contains(&with), "{with}/400");
}

// === probability ===

#[test]
fn rule_probability_over_many_sessions_is_roughly_right() {
    let text =
        "[[rule]]\nwhen = \"status\"\ncommand = \"QUIT\"\nprobability = 0.3\nactions = [{ do = \"disconnect\" }]\n";
    let hits = (1..=2000).filter(|&s| fires(&mut engine(text, 7, s), Point::Status(&Command::Quit), &facts())).count();
    assert!((500..=700).contains(&hits), "{hits}/2000 at 0.3 (±5%)");
}

#[test]
fn probability_zero_never_fires_and_one_always_does() {
    // check-profile refuses probability = 0 as a rule that cannot fire.
    let never = "[[rule]]\nwhen = \"greeting\"\nprobability = 0.5\nactions = [{ do = \"disconnect\" }]\n";
    let always = "[[rule]]\nwhen = \"greeting\"\nprobability = 1\nactions = [{ do = \"disconnect\" }]\n";
    for s in 1..=500 {
        let mut never = edited_engine(never, |p| p.rules[0].probability = 0.0, 9, s);
        assert!(!fires(&mut never, Point::Greeting, &facts()));
        assert!(fires(&mut engine(always, 9, s), Point::Greeting, &facts()));
    }
}

#[test]
fn each_step_rolls_its_own_probability() {
    let text = "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\nfraction = 0.3\nactions = [\n\
                { do = \"stall\", ms = 1500, jitter_ms = 300 },\n\
                { do = \"noise\", bytes = 24 },\n\
                { do = \"disconnect\", probability = 0.4 },\n]\n";
    let mut dropped = 0;
    for session in 1..=2000 {
        let cuts = engine(text, 11, session).plan_body(&retr(), Some(1000), &facts());
        assert_eq!(cuts.len(), 1, "the rule itself always fires");
        let names: Vec<&str> = cuts[0].decision.actions.iter().map(Action::name).collect();
        match names.as_slice() {
            ["stall", "noise"] => {}
            ["stall", "noise", "disconnect"] => dropped += 1,
            other => panic!("session {session}: steps out of order or missing: {other:?}"),
        }
    }
    assert!((700..=900).contains(&dropped), "{dropped}/2000 at 0.4 (±5%)");
}

#[test]
fn a_rule_whose_only_step_loses_still_fires_with_no_actions() {
    let text = "[[rule]]\nwhen = \"greeting\"\nactions = [{ do = \"disconnect\", probability = 0.5 }]\n";
    let mut e = edited_engine(text, |p| p.rules[0].actions[0].probability = 0.0, 1, 1);
    let d = e.decide(&Point::Greeting, &facts());
    assert_eq!(d.len(), 1);
    assert!(d[0].actions.is_empty());
    // And it used up its once-per-session.
    assert!(e.decide(&Point::Greeting, &facts()).is_empty());
}

// === windows ===

#[test]
fn window_fires_only_inside_the_down_time_of_each_period() {
    let text = "[[rule]]\nwhen = \"accept\"\nrepeat = true\nwindow = { every_ms = 10000, down_ms = 3000 }\n\
                actions = [{ do = \"refuse\" }]\n";
    let mut e = engine(text, 1, 1);
    for (ms, inside) in [
        (0, true),
        (2999, true),
        (3000, false),
        (9999, false),
        (10_000, true),
        (12_999, true),
        (13_000, false),
        (40_500, true),
    ] {
        let f = Facts::at_accept(Duration::from_millis(ms));
        assert_eq!(fires(&mut e, Point::Accept, &f), inside, "run_elapsed {ms} ms");
    }
}

#[test]
fn window_applies_at_other_points_too() {
    let text = "[[rule]]\nwhen = \"command\"\nrepeat = true\nwindow = { every_ms = 1000, down_ms = 1000 }\n\
                actions = [{ do = \"swallow\" }]\n";
    let mut e = engine(text, 1, 1);
    // down_ms = every_ms: always down.
    for ms in [0, 999, 1000, 123_456] {
        assert!(fires(&mut e, Point::Command(&Command::Noop), &at_ms(ms)), "{ms}");
    }
    let never = "[[rule]]\nwhen = \"command\"\nrepeat = true\nwindow = { every_ms = 1000, down_ms = 1 }\n\
                 actions = [{ do = \"swallow\" }]\n";
    let mut e = edited_engine(never, |p| p.rules[0].window = Some(Window { every_ms: 1000, down_ms: 0 }), 1, 1);
    for ms in [0, 999, 1000] {
        assert!(!fires(&mut e, Point::Command(&Command::Noop), &at_ms(ms)), "down_ms = 0 at {ms}");
    }
}

// === body plans ===

#[test]
fn body_offset_is_used_with_or_without_an_announced_size() {
    let text = "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\noffset = 1024\nrepeat = true\nactions = [{ do = \"disconnect\" }]\n";
    let mut e = engine(text, 1, 1);
    for size in [Some(10), Some(5000), None] {
        let cuts = e.plan_body(&retr(), size, &facts());
        assert_eq!(cuts.iter().map(|c| c.at).collect::<Vec<_>>(), [1024], "size {size:?}");
    }
    let f = Facts { seq: 4, ..facts() };
    assert_eq!(e.plan_body(&retr(), None, &f)[0].decision.point, "body RETR 1 #4 @1024");
}

#[test]
fn body_fraction_uses_the_announced_size_and_is_skipped_without_one() {
    let text = "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\nfraction = 0.5\nrepeat = true\nactions = [{ do = \"disconnect\" }]\n";
    let mut e = engine(text, 1, 1);
    assert!(e.plan_body(&retr(), None, &facts()).is_empty(), "no size: nothing to aim at");
    for (size, at) in [(1000, 500), (1001, 500), (1, 0), (0, 0)] {
        let cuts = e.plan_body(&retr(), Some(size), &facts());
        assert_eq!(cuts.iter().map(|c| c.at).collect::<Vec<_>>(), [at], "size {size}");
    }
}

#[test]
fn body_fraction_without_size_does_not_count_as_a_match() {
    // Skipped plans are not matches: nth counts only the plans that had a size.
    let text = "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\nfraction = 0.25\nnth = 2\nactions = [{ do = \"disconnect\" }]\n";
    let mut e = engine(text, 1, 1);
    assert!(e.plan_body(&retr(), Some(400), &facts()).is_empty(), "1st match");
    assert!(e.plan_body(&retr(), None, &facts()).is_empty(), "no size");
    let cuts = e.plan_body(&retr(), Some(400), &facts());
    assert_eq!(cuts.iter().map(|c| c.at).collect::<Vec<_>>(), [100], "2nd match");
}

#[test]
fn body_cuts_are_sorted_by_offset() {
    let text = "[[rule]]\nname = \"late\"\nwhen = \"body\"\noffset = 500\nactions = [{ do = \"disconnect\" }]\n\
                [[rule]]\nname = \"early\"\nwhen = \"body\"\noffset = 100\nactions = [{ do = \"noise\" }]\n\
                [[rule]]\nname = \"middle\"\nwhen = \"body\"\nfraction = 0.5\nactions = [{ do = \"stall\", ms = 5 }]\n";
    let cuts = engine(text, 1, 1).plan_body(&retr(), Some(400), &facts());
    let got: Vec<(u64, &str)> = cuts.iter().map(|c| (c.at, c.decision.rule.as_str())).collect();
    assert_eq!(got, [(100, "early"), (200, "middle"), (500, "late")]);
}

#[test]
fn body_nth_counts_multiline_responses() {
    let text =
        "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\nnth = 3\nfraction = 0.5\nactions = [{ do = \"disconnect\" }]\n";
    let mut e = engine(text, 1, 1);
    let planned: Vec<usize> = (1..=5).map(|n| e.plan_body(&Command::Retr(n), Some(1000), &facts()).len()).collect();
    assert_eq!(planned, [0, 0, 1, 0, 0]);
}

// === timers ===

#[test]
fn fixed_timers_are_exact_and_sorted() {
    let text = "[[rule]]\nwhen = \"timer\"\nafter_ms = 5000\nactions = [{ do = \"disconnect\" }]\n\
                [[rule]]\nwhen = \"timer\"\nafter_ms = 250\nactions = [{ do = \"stall\", ms = 10 }]\n\
                [[rule]]\nwhen = \"greeting\"\nactions = [{ do = \"stall\", ms = 10 }]\n";
    let e = engine(text, 1, 1);
    assert_eq!(e.timers(), [(Duration::from_millis(250), 1), (Duration::from_millis(5000), 0)]);
}

#[test]
fn ranged_timers_stay_in_range_replay_per_session_and_vary_across_sessions() {
    let text = "[[rule]]\nwhen = \"timer\"\nafter_ms = [1000, 5000]\nactions = [{ do = \"disconnect\" }]\n";
    let mut seen = std::collections::BTreeSet::new();
    for session in 1..=500 {
        let t = engine(text, 77, session).timers();
        assert_eq!(t.len(), 1);
        let ms = t[0].0.as_millis();
        assert!((1000..=5000).contains(&ms), "session {session}: {ms} ms");
        assert_eq!(engine(text, 77, session).timers(), t, "session {session} replays");
        seen.insert(ms);
    }
    assert!(seen.len() > 100, "only {} distinct delays over 500 sessions", seen.len());
    // A different seed draws differently for the same sessions.
    let a: Vec<_> = (1..=20).map(|s| engine(text, 77, s).timers()).collect();
    let b: Vec<_> = (1..=20).map(|s| engine(text, 78, s).timers()).collect();
    assert_ne!(a, b);
}

#[test]
fn a_range_of_one_value_is_that_value() {
    let text = "[[rule]]\nwhen = \"timer\"\nafter_ms = [300, 300]\nactions = [{ do = \"disconnect\" }]\n";
    assert_eq!(engine(text, 1, 1).timers(), [(Duration::from_millis(300), 0)]);
}

#[test]
fn timer_due_applies_the_other_filters_and_once() {
    let text =
        "[[rule]]\nwhen = \"timer\"\nafter_ms = 100\nstate = \"TRANSACTION\"\nactions = [{ do = \"disconnect\" }]\n";
    let mut e = engine(text, 1, 1);
    let auth = Facts { state: State::Authorization, ..facts() };
    assert!(e.timer_due(0, Duration::from_millis(100), &auth).is_none(), "wrong state");
    assert!(e.timer_due(0, Duration::from_millis(100), &facts()).is_some());
    assert!(e.timer_due(0, Duration::from_millis(100), &facts()).is_none(), "once");
}

// === determinism ===

#[test]
fn same_seed_and_session_replay_identically() {
    for (name, _) in builtin::BUILTIN {
        for session in 1..=30 {
            let a = script(&mut builtin_engine(name, 1234, session));
            let b = script(&mut builtin_engine(name, 1234, session));
            assert_eq!(a, b, "{name} session {session}");
        }
    }
}

#[test]
fn a_session_replays_whatever_other_sessions_did() {
    // Run sessions 1..=20 in order, then session 13 alone, then in reverse.
    let forward: Vec<_> = (1..=20).map(|s| script(&mut builtin_engine("flaky-line", 5, s))).collect();
    let alone = script(&mut builtin_engine("flaky-line", 5, 13));
    let backward: Vec<_> = (1..=20).rev().map(|s| script(&mut builtin_engine("flaky-line", 5, s))).collect();
    assert_eq!(forward[12], alone);
    assert_eq!(backward[20 - 13], alone);
}

#[test]
fn a_different_seed_gives_different_faults_for_a_probabilistic_profile() {
    for name in ["flaky-line", "demo", "lost-carrier", "call-waiting"] {
        let run = |seed| (1..=100).map(|s| script(&mut builtin_engine(name, seed, s))).collect::<Vec<_>>();
        assert_ne!(run(1), run(2), "{name}");
    }
}

#[test]
fn engines_are_independent_values() {
    // Cloning an engine mid-session forks it: both go on identically.
    let mut a = builtin_engine("flaky-line", 9, 3);
    a.decide(&Point::Accept, &facts());
    let mut b = a.clone();
    assert_eq!(script(&mut a), script(&mut b));
}

// === built-in profiles fire where their summaries say ===

#[test]
fn every_builtin_parses_round_trips_and_has_a_summary() {
    let all = builtin::builtins().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), builtin::BUILTIN.len());
    for p in all {
        assert!(!p.summary.trim().is_empty(), "{} has a summary", p.name);
        let again = Profile::from_toml(&p.source, "again", "x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(*p, again, "{} parses the same from its own source", p.name);
    }
}

#[test]
fn spec_builtins_exist() {
    for name in [
        "passthrough",
        "lost-carrier",
        "lost-carrier-at-quit",
        "call-waiting",
        "server-down",
        "modem-28k8",
        "flaky-line",
    ] {
        assert!(builtin::builtin(name).is_some(), "docs/PROFILES.md and the README promise built-in `{name}`");
    }
}

#[test]
fn passthrough_never_fires() {
    for session in 1..=50 {
        let (d, cuts, timers) = script(&mut builtin_engine("passthrough", 1, session));
        assert!(d.is_empty() && cuts.is_empty() && timers.is_empty());
    }
    assert!(Profile::passthrough().rules.is_empty());
}

#[test]
fn lost_carrier_cuts_half_way_through_the_third_retr_in_half_the_sessions() {
    let mut chosen = 0;
    for session in 1..=1000 {
        let mut e = builtin_engine("lost-carrier", 21, session);
        let mut cuts = Vec::new();
        for n in 1..=5 {
            let f = Facts { retrieved: u64::from(n - 1), seq: u64::from(n), ..facts() };
            cuts.push(e.plan_body(&Command::Retr(n), Some(4000), &f));
        }
        assert!(e.decide(&Point::Status(&Command::Quit), &facts()).is_empty());
        let planned: Vec<usize> = cuts.iter().map(Vec::len).collect();
        match planned.as_slice() {
            [0, 0, 0, 0, 0] => {}
            [0, 0, 1, 0, 0] => {
                chosen += 1;
                let cut = &cuts[2][0];
                assert_eq!(cut.at, 2000, "fraction 0.5 of 4000 octets");
                assert_eq!(cut.decision.actions, [Action::Disconnect(Disconnect { side: Side::Both, how: How::Rst })]);
            }
            other => panic!("session {session}: {other:?}"),
        }
    }
    assert!((450..=550).contains(&chosen), "{chosen}/1000 sessions lose the carrier");
}

#[test]
fn lost_carrier_at_quit_drops_the_client_side_at_the_quit_status() {
    for session in 1..=20 {
        let mut e = builtin_engine("lost-carrier-at-quit", 3, session);
        let (d, cuts, _) = script(&mut e.clone());
        assert!(cuts.is_empty());
        assert_eq!(d.len(), 1, "session {session}: fires once, at QUIT's status");
        assert!(d[0].point.starts_with("status QUIT"), "{}", d[0].point);
        assert_eq!(d[0].actions, [Action::Disconnect(Disconnect { side: Side::Client, how: How::Rst })]);
        // Not before QUIT is forwarded, nor at another status.
        for p in [Point::Command(&Command::Quit), Point::Forwarded(&Command::Quit), Point::Status(&retr())] {
            assert!(e.decide(&p, &facts()).is_empty());
        }
    }
}

#[test]
fn busy_mailbox_answers_every_login_in_use() {
    let mut e = builtin_engine("busy-mailbox", 1, 1);
    let auth = Facts { state: State::Authorization, ..facts() };
    assert!(e.decide(&Point::Command(&Command::User("u".into())), &auth).is_empty());
    for login in [Command::Pass, Command::Pass, Command::Apop("u".into())] {
        let d = e.decide(&Point::Command(&login), &auth);
        assert_eq!(d.len(), 1, "{login:?}");
        match d[0].actions.as_slice() {
            [Action::Reply(Reply { text })] => assert!(text.starts_with("-ERR [IN-USE]"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn server_down_variants_refuse_at_accept() {
    for (name, how) in
        [("server-down", RefuseHow::Rst), ("server-down-hang", RefuseHow::Hang), ("server-down-err", RefuseHow::Err)]
    {
        for session in 1..=10 {
            let mut e = builtin_engine(name, 1, session);
            let d = e.decide(&Point::Accept, &Facts::at_accept(Duration::from_millis(session * 7919)));
            assert_eq!(d.len(), 1, "{name}");
            match d[0].actions.as_slice() {
                [Action::Refuse(Refuse { how: h, text })] => {
                    assert_eq!(*h, how, "{name}");
                    assert!(text.starts_with("-ERR"), "{name}: {text}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

#[test]
fn server_flapping_refuses_only_in_its_down_windows() {
    for (ms, down) in [(0, true), (2_900, true), (3_000, false), (9_999, false), (10_000, true), (25_000, false)] {
        let mut e = builtin_engine("server-flapping", 1, 1);
        let d = e.decide(&Point::Accept, &Facts::at_accept(Duration::from_millis(ms)));
        assert_eq!(!d.is_empty(), down, "{ms} ms into the run");
        if down {
            assert!(matches!(d[0].actions.as_slice(), [Action::Refuse(Refuse { how: RefuseHow::Rst, .. })]));
        }
    }
}

#[test]
fn modem_28k8_sets_line_speed_and_latency_at_the_greeting() {
    let mut e = builtin_engine("modem-28k8", 1, 1);
    let d = e.decide(&Point::Greeting, &facts());
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].actions,
        [Action::Throttle(Throttle { bps: 28_800 }), Action::Delay(Delay { ms: 150, jitter_ms: 50 })]
    );
    let (rest, cuts, _) = script(&mut builtin_engine("modem-28k8", 1, 1));
    assert_eq!((rest.len(), cuts.len()), (1, 0), "only the greeting");
}

#[test]
fn call_waiting_stalls_then_noise_then_sometimes_drops() {
    let mut fired = 0;
    let mut dropped = 0;
    for session in 1..=2000 {
        let cuts = builtin_engine("call-waiting", 8, session).plan_body(&retr(), Some(1000), &facts());
        if let [cut] = cuts.as_slice() {
            fired += 1;
            assert_eq!(cut.at, 300);
            let names: Vec<&str> = cut.decision.actions.iter().map(Action::name).collect();
            assert_eq!(names[..2], ["stall", "noise"]);
            assert!(
                matches!(cut.decision.actions[1], Action::Noise(Noise { toward: Side::Client, .. })),
                "noise toward the client"
            );
            dropped += usize::from(names.len() == 3);
        }
    }
    assert!((700..=900).contains(&fired), "fires on {fired}/2000 downloads at 0.4");
    // 40% of the 40%.
    assert!((240..=400).contains(&dropped), "drops in {dropped}/2000");
}

#[test]
fn flaky_line_fires_each_rule_at_its_point() {
    let mut by_rule = std::collections::BTreeMap::<String, Vec<String>>::new();
    for session in 1..=300 {
        let (d, cuts, _) = script(&mut builtin_engine("flaky-line", 99, session));
        for d in d.into_iter().chain(cuts.into_iter().map(|c| c.decision)) {
            by_rule.entry(d.rule).or_default().push(d.point);
        }
    }
    let expect = [
        ("drop-mid-retr", "body RETR"),
        ("noise-burst", "body RETR"),
        ("stall", "response "),
        ("drop-before-quit", "command QUIT"),
        ("quit-answer-lost", "status QUIT"),
    ];
    for (rule, point) in expect {
        let points = by_rule.get(rule).unwrap_or_else(|| panic!("{rule} never fired in 300 sessions"));
        assert!(points.iter().all(|p| p.starts_with(point)), "{rule}: {points:?}");
    }
    assert_eq!(by_rule.len(), expect.len(), "{:?}", by_rule.keys());
}

#[test]
fn demo_fires_each_rule_at_its_point() {
    let mut by_rule = std::collections::BTreeMap::<String, Vec<String>>::new();
    for session in 1..=400 {
        let mut e = builtin_engine("demo", 4, session);
        // Inside a down window at accept, then the rest of a session.
        for d in e.decide(&Point::Accept, &Facts::at_accept(Duration::from_millis(1000))) {
            by_rule.entry(d.rule).or_default().push(d.point);
        }
        let (d, cuts, _) = script(&mut e);
        for d in d.into_iter().chain(cuts.into_iter().map(|c| c.decision)) {
            by_rule.entry(d.rule).or_default().push(d.point);
        }
    }
    for (rule, point) in [
        ("lost-carrier", "body RETR"),
        ("call-waiting", "body RETR"),
        ("quit-answer-lost", "status QUIT"),
        ("server-down", "accept"),
    ] {
        let points = by_rule.get(rule).unwrap_or_else(|| panic!("{rule} never fired in 400 sessions"));
        assert!(points.iter().all(|p| p.starts_with(point)), "{rule}: {points:?}");
    }
}

// === profile parsing (fields, defaults, errors as values) ===

#[test]
fn rule_defaults() {
    // Noise first: a step after a certain disconnect could never run.
    let p = profile("[[rule]]\nwhen = \"response\"\nactions = [{ do = \"noise\" }, { do = \"disconnect\" }]\n");
    assert_eq!(p.name, "test", "name defaults to the given default");
    assert_eq!(p.summary, "");
    let r = &p.rules[0];
    assert_eq!(r.name, "response-1");
    assert_eq!((r.command.as_ref(), r.nth, r.state), (None, None, None));
    assert_eq!((r.min_retrieved, r.min_deleted, r.probability, r.repeat), (0, 0, 1.0, false));
    assert_eq!((r.sessions.every, r.sessions.first, r.sessions.probability), (None, None, None));
    assert_eq!((r.offset, r.fraction, r.after_ms, r.window), (None, None, None, None));
    assert_eq!(
        r.actions,
        [
            Step::always(Action::Noise(Noise { bytes: 16, toward: Side::Client })),
            Step::always(Action::Disconnect(Disconnect { side: Side::Both, how: How::Rst })),
        ]
    );
    let p = profile("[[rule]]\nwhen = \"accept\"\nactions = [{ do = \"refuse\" }]\n");
    assert_eq!(
        p.rules[0].actions,
        [Step::always(Action::Refuse(Refuse {
            how: RefuseHow::Rst,
            text: "-ERR [SYS/TEMP] server unavailable".into()
        }))]
    );
}

#[test]
fn after_ms_is_a_number_or_a_range() {
    let p = profile(
        "[[rule]]\nwhen = \"timer\"\nafter_ms = 2000\nactions = [{ do = \"disconnect\" }]\n\
         [[rule]]\nwhen = \"timer\"\nafter_ms = [1000, 5000]\nactions = [{ do = \"disconnect\" }]\n",
    );
    assert_eq!(p.rules[0].after_ms, Some(Millis::Fixed(2000)));
    assert_eq!(p.rules[1].after_ms, Some(Millis::Range([1000, 5000])));
}

#[test]
fn has_accept_rules() {
    assert!(profile(&rule_at(Trigger::Accept)).has_accept_rules());
    assert!(!profile(&rule_at(Trigger::Greeting)).has_accept_rules());
}

/// (line, column, field) of the error for `text`.
fn error_at(text: &str) -> (usize, usize, String) {
    let e = Profile::from_toml(text, "t.toml", "t").expect_err("should be rejected");
    assert_eq!(e.origin, "t.toml");
    assert!(!e.fix.is_empty(), "{e}");
    (e.line, e.column, e.field)
}

#[test]
fn validation_errors_are_located() {
    let cases: &[(&str, (usize, usize, &str))] = &[
        (
            "[[rule]]\nwhen = \"greeting\"\nprobability = 2.0\nactions = [{ do = \"stall\", ms = 1 }]\n",
            (3, 15, "rule[1].probability"),
        ),
        (
            "[[rule]]\nwhen = \"greeting\"\nactions = [{ do = \"stall\", ms = 1 }]\n\n[[rule]]\nwhen = \"body\"\nactions = [{ do = \"stall\", ms = 1 }]\n",
            (6, 8, "rule[2].when"),
        ),
        ("[[rule]]\nwhen = \"status\"\nactions = [{ do = \"swallow\" }]\n", (3, 12, "rule[1].actions[1]")),
        ("[[rule]]\nwhen = \"command\"\nactions = [{ do = \"reply\", text = \"\" }]\n", (3, 12, "rule[1].actions[1]")),
        ("[[rule]]\nwhen = \"command\"\nactions = [{ do = \"corrupt\", bytes = 0 }]\n", (3, 12, "rule[1].actions[1]")),
        (
            "[[rule]]\nwhen = \"command\"\nactions = [{ do = \"noise\", bytes = 70000 }]\n",
            (3, 12, "rule[1].actions[1]"),
        ),
        ("[[rule]]\nwhen = \"command\"\nactions = [{ do = \"delay\", ms = 4000000 }]\n", (3, 12, "rule[1].actions[1]")),
        (
            "[[rule]]\nwhen = \"timer\"\nafter_ms = 5\ncommand = \"QUIT\"\nactions = [{ do = \"disconnect\" }]\n",
            (4, 11, "rule[1].command"),
        ),
        (
            "[[rule]]\nwhen = \"body\"\noffset = 5\nfraction = 0.5\nactions = [{ do = \"disconnect\" }]\n",
            (3, 10, "rule[1].offset"),
        ),
        (
            "[[rule]]\nwhen = \"greeting\"\nafter_ms = 5\nactions = [{ do = \"disconnect\" }]\n",
            (3, 12, "rule[1].after_ms"),
        ),
        (
            "[[rule]]\nwhen = \"greeting\"\nsessions = { first = 0 }\nactions = [{ do = \"disconnect\" }]\n",
            (3, 12, "rule[1].sessions"),
        ),
        (
            "[[rule]]\nwhen = \"accept\"\nwindow = { every_ms = 0, down_ms = 0 }\nactions = [{ do = \"refuse\" }]\n",
            (3, 10, "rule[1].window"),
        ),
        ("[[rule]]\nname = \"\"\nwhen = \"accept\"\nactions = [{ do = \"refuse\" }]\n", (2, 8, "rule[1].name")),
        ("[[rule]]\nwhen = \"accept\"\nactions = []\n", (3, 11, "rule[1].actions")),
        (
            "# é\n[[rule]]\nwhen = \"command\"\ncommand = \"RÉTR\"\nactions = [{ do = \"disconnect\" }]\n",
            (4, 11, "rule[1].command"),
        ),
        // Columns count characters, not bytes.
        (
            "[[rule]]\nwhen = \"command\"\nactions = [{ do = \"reply\", text = \"ééé\" }, { do = \"reply\", text = \"\" }]\n",
            (3, 44, "rule[1].actions[2]"),
        ),
    ];
    for (text, (line, column, field)) in cases {
        assert_eq!(error_at(text), (*line, *column, field.to_string()), "in:\n{text}");
    }
}

#[test]
fn serde_errors_are_located() {
    // Unknown fields and missing fields are reported where they are.
    assert_eq!(error_at("name = \"x\"\nsumary = \"y\"\n"), (2, 1, "sumary".into()));
    assert_eq!(
        error_at("[[rule]]\nwhen = \"command\"\nrepet = true\nactions = [{ do = \"disconnect\" }]\n"),
        (3, 1, "rule[1].repet".into())
    );
    assert!(error_at("[[rule]]\ncommand = \"QUIT\"\nactions = [{ do = \"disconnect\" }]\n").2.ends_with("when"));
    assert_eq!(
        error_at("[[rule]]\nwhen = \"command\"\nactions = [\n  { do = \"stall\" },\n]\n").2,
        "rule[1].actions[1].ms"
    );
    // A syntax error.
    assert_eq!(error_at("[[rule]\n").2, "toml");
}

#[test]
fn an_empty_profile_is_a_passthrough() {
    let p = profile("");
    assert!(p.rules.is_empty());
    let p = profile("name = \"quiet\"\nsummary = \"nothing\"\n");
    assert_eq!((p.name.as_str(), p.summary.as_str(), p.rules.len()), ("quiet", "nothing", 0));
}

// === holding a line whole ===

#[test]
fn a_line_is_held_only_while_a_rule_could_still_want_it() {
    let quit = "[[rule]]\nwhen = \"command\"\ncommand = \"QUIT\"\nactions = [{ do = \"swallow\" }]\n";
    let e = engine(quit, 1, 1);
    let holds = |e: &Engine, start: &[u8]| e.wants_whole_line(LineSoFar::Command(start), &facts());
    // Could still be QUIT: hold.
    assert!(holds(&e, b""));
    assert!(holds(&e, b"q"));
    assert!(holds(&e, b"QUI"));
    assert!(holds(&e, b"quit"));
    assert!(holds(&e, b"QUIT\r"));
    // Cannot be QUIT any more: relay now.
    assert!(!holds(&e, b"QUIX"));
    assert!(!holds(&e, b"QUITS"));
    assert!(!holds(&e, b"RETR 1"));
    assert!(!holds(&e, b"\x16\x03\x01"), "a TLS record is not a command");
    assert!(!e.wants_whole_line(LineSoFar::Greeting, &facts()));
    assert!(!e.wants_whole_line(LineSoFar::Status(&Command::Quit), &facts()), "a command rule holds no answer");
}

#[test]
fn a_rule_that_cannot_fire_again_holds_nothing() {
    let once = "[[rule]]\nwhen = \"status\"\ncommand = \"RETR\"\nactions = [{ do = \"stall\", ms = 1 }]\n";
    let mut e = engine(once, 1, 1);
    assert!(e.wants_whole_line(LineSoFar::Status(&retr()), &facts()));
    assert!(!e.wants_whole_line(LineSoFar::Status(&Command::Stat), &facts()));
    assert!(fires(&mut e, Point::Status(&retr()), &facts()));
    assert!(!e.wants_whole_line(LineSoFar::Status(&retr()), &facts()), "fired once, not repeat");

    let nth = "[[rule]]\nwhen = \"greeting\"\nnth = 1\nactions = [{ do = \"stall\", ms = 1 }]\n";
    let mut e = engine(nth, 1, 1);
    assert!(e.wants_whole_line(LineSoFar::Greeting, &facts()));
    assert!(fires(&mut e, Point::Greeting, &facts()));
    assert!(!e.wants_whole_line(LineSoFar::Greeting, &facts()));

    let state = "[[rule]]\nwhen = \"command\"\nstate = \"AUTHORIZATION\"\nactions = [{ do = \"swallow\" }]\n";
    let e = engine(state, 1, 1);
    assert!(!e.wants_whole_line(LineSoFar::Command(b"NO"), &facts()), "a TRANSACTION line");
    assert!(e.wants_whole_line(LineSoFar::Command(b"NO"), &Facts { state: State::Authorization, ..facts() }));

    // Rules at other points never hold a line.
    for name in ["passthrough", "lost-carrier"] {
        let e = builtin_engine(name, 1, 1);
        for line in [LineSoFar::Command(b"RE"), LineSoFar::Greeting, LineSoFar::Status(&retr())] {
            assert!(!e.wants_whole_line(line, &facts()), "{name}");
        }
    }
    // modem-28k8 acts at the greeting, and only there.
    let e = builtin_engine("modem-28k8", 1, 1);
    assert!(e.wants_whole_line(LineSoFar::Greeting, &facts()));
    assert!(!e.wants_whole_line(LineSoFar::Command(b"RE"), &facts()));
    assert!(!e.wants_whole_line(LineSoFar::Status(&retr()), &facts()));
}

#[test]
fn names_with_control_characters_are_refused() {
    // Names reach terminals: the summary, the logs, the dashboard.
    assert_eq!(
        error_at("[[rule]]\nname = \"r\\u001b[2J\"\nwhen = \"accept\"\nactions = [{ do = \"disconnect\" }]\n"),
        (2, 8, "rule[1].name".into())
    );
    assert_eq!(error_at("name = \"p\\u009b1m\"\n"), (1, 8, "name".into()));
    let p = Profile::from_toml("", "x", "stem\u{1b}[2J").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.name, "stem\\x1b[2J");
}

#[test]
fn command_filters_name_known_keywords_or_other() {
    let rule =
        |c: &str| format!("[[rule]]\nwhen = \"command\"\ncommand = \"{c}\"\nactions = [{{ do = \"swallow\" }}]\n");
    for ok in ["retr", "XTND", "utf8", "OTHER"] {
        profile(&rule(ok));
    }
    for bad in ["FOO", "PASS1", ""] {
        assert_eq!(error_at(&rule(bad)), (3, 11, "rule[1].command".into()), "{bad}");
    }
    // OTHER matches any line that is not a known keyword.
    let mut e = engine(&rule("OTHER"), 1, 1);
    assert!(fires(&mut e, Point::Command(&Command::parse(b"Zq7Kx9Wv3Tp\r\n")), &facts()));
    assert!(!fires(&mut e, Point::Command(&Command::Noop), &facts()));
}

// === truncate ===

#[test]
fn truncate_comes_out_as_a_body_cut_at_the_rules_position() {
    let text = "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\nfraction = 0.25\nrepeat = true\nactions = [{ do = \"truncate\" }]\n\
                [[rule]]\nwhen = \"body\"\ncommand = \"TOP\"\noffset = 0\nactions = [{ do = \"stall\", ms = 5 }, { do = \"truncate\" }]\n";
    let mut e = engine(text, 1, 1);
    let cuts = e.plan_body(&retr(), Some(1000), &facts());
    assert_eq!(cuts.len(), 1);
    assert_eq!((cuts[0].at, cuts[0].decision.actions.as_slice()), (250, &[Action::Truncate(Truncate {})][..]));
    assert_eq!(cuts[0].decision.point, "body RETR 1 #1 @250");
    // With other steps, in order: the relay sends the terminator after them.
    let cuts = e.plan_body(&Command::Top(1, 0), None, &facts());
    let names: Vec<&str> = cuts[0].decision.actions.iter().map(Action::name).collect();
    assert_eq!((cuts[0].at, names.as_slice()), (0, &["stall", "truncate"][..]));
    // Nowhere else.
    for (_, point) in every_point(&retr()) {
        assert!(e.decide(&point, &facts()).is_empty());
    }
}

#[test]
fn truncate_anywhere_but_body_is_a_located_error() {
    for when in Trigger::ALL.into_iter().filter(|t| *t != Trigger::Body && *t != Trigger::Timer) {
        let text =
            format!("[[rule]]\nwhen = \"{when}\"\nactions = [{{ do = \"stall\", ms = 1 }}, {{ do = \"truncate\" }}]\n");
        let e = Profile::from_toml(&text, "t.toml", "t").expect_err("only at body");
        assert_eq!((e.line, e.column, e.field.as_str()), (3, 38, "rule[1].actions[2]"), "{when}");
        assert!(e.message.contains("truncate") && e.fix.contains("when = \"body\""), "{e}");
    }
    let e = Profile::from_toml(
        "[[rule]]\nwhen = \"timer\"\nafter_ms = 5\nactions = [{ do = \"truncate\" }]\n",
        "t.toml",
        "t",
    )
    .expect_err("not at a timer");
    assert_eq!(e.field, "rule[1].actions[1]");
    // No params of its own.
    let e = Profile::from_toml(
        "[[rule]]\nwhen = \"body\"\noffset = 1\nactions = [{ do = \"truncate\", then = \"continue\" }]\n",
        "t.toml",
        "t",
    )
    .expect_err("no params");
    assert_eq!((e.line, e.column, e.field.as_str()), (4, 31, "rule[1].actions[1].then"));
    assert!(e.message.contains("expected `probability`"), "{e}");
}

#[test]
fn step_errors_point_at_the_key_or_value_at_fault() {
    let at = |actions: &str| {
        let text = format!("[[rule]]\nwhen = \"body\"\noffset = 1\nactions = [{actions}]\n");
        let e = Profile::from_toml(&text, "t.toml", "t").expect_err("invalid");
        (e.column, e.field, e.fix)
    };
    // An unknown field: at the key, with the nearest name.
    let (col, field, fix) = at("{ do = \"disconnect\", sid = \"client\" }");
    assert_eq!((col, field.as_str()), (33, "rule[1].actions[1].sid"));
    assert!(fix.starts_with("did you mean `side`?"), "{fix}");
    // A bad value: at the value.
    let (col, field, fix) = at("{ do = \"disconnect\", side = \"left\" }");
    assert_eq!((col, field.as_str()), (40, "rule[1].actions[1].side"));
    assert!(fix.contains("`client`"), "{fix}");
    // A misspelt action: at its name.
    let (col, field, fix) = at("{ do = \"stal\", ms = 1 }");
    assert_eq!((col, field.as_str()), (19, "rule[1].actions[1].do"));
    assert!(fix.starts_with("did you mean `stall`?"), "{fix}");
    // No action at all: at the step.
    let (col, field, _) = at("{ ms = 1 }");
    assert_eq!((col, field.as_str()), (12, "rule[1].actions[1].do"));
    // A quoted probability: at the value.
    let (col, field, _) = at("{ do = \"stall\", ms = 1, probability = \"0.5\" }");
    assert_eq!((col, field.as_str()), (50, "rule[1].actions[1].probability"));
}

#[test]
fn rule_errors_are_named_by_the_parsers_path() {
    // `[rule]` for `[[rule]]`.
    let e = Profile::from_toml("[rule]\nwhen = \"command\"\n", "t.toml", "t").expect_err("one table");
    assert_eq!(e.field, "rule");
    assert!(e.fix.contains("[[rule]]"), "{e}");
    // A field of a nested table is named under it.
    let e = Profile::from_toml("[[rule]]\nwhen = \"command\"\nsessions = { percent = 30 }\n", "t.toml", "t")
        .expect_err("unknown");
    assert_eq!((e.line, e.column, e.field.as_str()), (3, 14, "rule[1].sessions.percent"));
    // Rules count from 1, whatever precedes them.
    let e = Profile::from_toml(
        "[[rule]]\nwhen = \"command\"\nactions = [{ do = \"swallow\" }]\n[[rule]]\nwhen = \"command\"\nnth = \"3\"\n",
        "t.toml",
        "t",
    )
    .expect_err("a string");
    assert_eq!((e.line, e.column, e.field.as_str()), (6, 7, "rule[2].nth"));
}
