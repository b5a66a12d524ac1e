//! `popfault demo --headless` for every built-in profile: the invariants
//! hold (exit 0), and under lost-carrier download-and-delete gets
//! duplicates while the UIDL-tracking client gets none.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use popfault::codec::Command as Pop3;
use popfault::faults::builtin::{BUILTIN, builtin};
use popfault::faults::{Engine, Facts};
use popfault::session::State;

/// Runs the demo; returns (exit code, stdout).
fn demo(profile: &str, seed: u64, secs: &str) -> (Option<i32>, String) {
    let out = Command::new(crate::support::BIN)
        .args(["demo", "--headless", "--duration", secs, "--seed", &seed.to_string(), "--profile", profile])
        .args(["--users", "4", "--messages", "8"])
        .output()
        .expect("run the demo");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The duplicate count a workload's line reports.
fn duplicates(out: &str, workload: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(workload))
        .unwrap_or_else(|| panic!("no {workload} line:\n{out}"));
    let after = line.split("duplicates").nth(1).expect("a duplicates figure");
    after.trim().parse().expect("a number")
}

#[test]
fn every_builtin_profile_keeps_the_invariants() {
    // Two at a time: the machine has two cores.
    let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
    for pair in names.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|name| {
                let name = name.to_string();
                std::thread::spawn(move || (name.clone(), demo(&name, 11, "3")))
            })
            .collect();
        for r in runs {
            let (name, (code, out)) = r.join().expect("demo thread");
            assert_eq!(code, Some(0), "demo under {name} broke an invariant:\n{out}");
            assert!(out.contains("[ok] no message lost"), "{name}:\n{out}");
            assert!(!out.contains("BROKEN"), "{name}:\n{out}");
            assert_eq!(duplicates(&out, "leave-on-server"), 0, "{name}: the UIDL client never downloads twice");
        }
    }
}

/// The first seed under which sessions 1 to 4 all lose the carrier in the
/// 3rd RETR: every first session of a mailbox is cut, whichever client
/// gets which session number.
fn seed_cutting_first_sessions() -> u64 {
    let p = Arc::new(builtin("lost-carrier").unwrap().unwrap());
    let facts =
        |n: u64| Facts { state: State::Transaction, retrieved: n, deleted: n, run_elapsed: Duration::ZERO, seq: n };
    (0..100_000)
        .find(|&seed| {
            (1..=4).all(|session| {
                let mut e = Engine::new(p.clone(), seed, session);
                (1..=3)
                    .map(|n| e.plan_body(&Pop3::Retr(n), Some(2048), &facts(n as u64)))
                    .last()
                    .is_some_and(|c| !c.is_empty())
            })
        })
        .expect("a seed")
}

#[test]
fn lost_carrier_duplicates_download_and_delete_only() {
    let seed = seed_cutting_first_sessions();
    let (code, out) = demo("lost-carrier", seed, "4");
    assert_eq!(code, Some(0), "{out}");
    assert!(duplicates(&out, "download-and-delete") > 0, "the KB Q141343 case duplicates:\n{out}");
    assert_eq!(duplicates(&out, "leave-on-server"), 0, "{out}");
    assert!(out.contains("rolled-back"), "{out}");
}
