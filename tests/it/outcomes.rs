//! Session outcomes, duplicates across sessions, and the events file.

use std::time::Duration;

use crate::support::*;
use popfault::aggregate::Aggregator;
use popfault::client::{Mode, UidMemory, WorkloadConfig, run_session};
use popfault::control::Control;
use popfault::events::Event;
use popfault::relay::{self, ProxyConfig};
use popfault::server::{self, Maildrop, ServerConfig};
use popfault::session::Outcome;
use popfault::stats::Stats;
use std::sync::Arc;

/// Cut after the 3rd of 5 downloads has been delivered, i.e. after DELE 1
/// and DELE 2 and before DELE 3.
const CUT_AFTER_THIRD: &str = r#"
[[rule]]
name = "cut-after-third-retr"
when = "response"
command = "RETR"
nth = 3
sessions = { first = 1 }
actions = [{ do = "disconnect", how = "rst" }]
"#;

fn workload(mode: Mode) -> WorkloadConfig {
    WorkloadConfig {
        user: "user1".into(),
        password: "secret".into(),
        mode,
        timeout: Duration::from_secs(10),
        max_messages: None,
    }
}

/// Runs two sessions of `mode` against 5 messages, the first cut after its
/// 3rd download; returns both session ends as the stats fold recorded them
/// (with its duplicate counts).
async fn cut_then_reconnect(mode: Mode) -> (Vec<popfault::events::SessionEnd>, Stats) {
    let mut w = World::with(profile(CUT_AFTER_THIRD), 1, 1, 5, 1500).await;
    let mut memory = UidMemory::new();
    let mut stats = Stats::keeping_ends();
    for _ in 0..2 {
        let _ = run_session(w.proxy.local_addr, &workload(mode), &mut memory).await;
        stats.apply(&Event::SessionEnd(Box::new(w.next_end().await)));
        tokio::time::timeout(LIMIT, async {
            while w.maildrop().is_locked("user1") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }
    (stats.ends().to_vec(), stats)
}

#[tokio::test]
async fn download_and_delete_duplicates_what_a_cut_rolled_back() {
    let (ends, stats) = cut_then_reconnect(Mode::DownloadAndDelete).await;
    let (a, b) = (&ends[0], &ends[1]);
    assert_eq!(a.outcome, Outcome::RolledBack);
    assert_eq!((a.downloaded, a.marked, a.at_risk, a.duplicates), (3, 2, 3, 0));
    assert_eq!(b.outcome, Outcome::Committed);
    assert_eq!((b.downloaded, b.marked, b.duplicates), (5, 5, 3));
    let s = stats.summary(1, "test", 0);
    assert_eq!(s.sessions, 2);
    assert_eq!(s.outcomes["rolled-back"], 1);
    assert_eq!(s.outcomes["committed"], 1);
    assert_eq!((s.at_risk, s.duplicates, s.downloaded), (3, 3, 8));
}

#[tokio::test]
async fn uidl_tracking_client_gets_no_duplicates() {
    let (ends, stats) = cut_then_reconnect(Mode::LeaveOnServer).await;
    let (a, b) = (&ends[0], &ends[1]);
    assert_eq!(a.outcome, Outcome::RolledBack);
    assert_eq!((a.downloaded, a.marked, a.at_risk), (3, 0, 3));
    // It remembered the three UIDs and fetched only the other two.
    assert_eq!(b.outcome, Outcome::CleanQuit);
    assert_eq!((b.downloaded, b.duplicates), (2, 0));
    assert_eq!(stats.duplicates(), 0);
}

/// A mixed run writes an events file: every line parses, has "event", the
/// summary is last and its counts equal the session_end lines'; no secret.
#[tokio::test]
async fn events_file_is_complete_and_consistent() {
    let dir = std::env::temp_dir().join(format!("popfault-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.jsonl");
    let password = "Pw-d0-not-leak-77";
    let cfg = ServerConfig { users: 2, messages: 6, size: 1200, password: password.into() };
    let srv = server::spawn(loopback(), Maildrop::new(&cfg)).await.unwrap();
    let agg = Aggregator::start(Some(&path)).unwrap();
    let control = Arc::new(Control::new(Arc::new(builtin("flaky-line")), 99));
    let proxy = relay::start(ProxyConfig::new(loopback(), srv.addr.to_string()), control, agg.sink()).await.unwrap();
    for i in 0..12 {
        let mode = if i % 2 == 0 { Mode::DownloadAndDelete } else { Mode::LeaveOnServer };
        let user = format!("user{}", i % 2 + 1);
        let cfg = WorkloadConfig {
            user: user.clone(),
            password: password.into(),
            mode,
            timeout: Duration::from_secs(10),
            max_messages: Some(3),
        };
        let _ = run_session(proxy.local_addr, &cfg, &mut UidMemory::new()).await;
        tokio::time::timeout(LIMIT, async {
            while srv.maildrop.is_locked(&user) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }
    proxy.shutdown().await;
    let summary = agg.finish(99, "flaky-line", Some(&path)).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(password), "the password is in the events file");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().all(|l| l["event"].is_string()));
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "summary");
    assert_eq!(lines.iter().filter(|l| l["event"] == "summary").count(), 1);
    let ends: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "session_end").collect();
    let starts = lines.iter().filter(|l| l["event"] == "session_start").count();
    assert_eq!(ends.len(), 12);
    assert_eq!(starts, 12);
    assert_eq!(last["sessions"], 12);
    for outcome in Outcome::ALL {
        let n = ends.iter().filter(|e| e["outcome"] == outcome.as_str()).count() as u64;
        assert_eq!(last["outcomes"][outcome.as_str()].as_u64(), Some(n), "{outcome}");
    }
    let sum = |k: &str| ends.iter().map(|e| e[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(last["at_risk"].as_u64(), Some(sum("at_risk")));
    assert_eq!(last["duplicates"].as_u64(), Some(sum("duplicates")));
    let faults = lines.iter().filter(|l| l["event"] == "fault").count() as u64;
    let fired: u64 = last["faults_fired"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(faults, fired);
    for key in [
        "session",
        "client",
        "user",
        "outcome",
        "downloaded",
        "marked",
        "at_risk",
        "duplicates",
        "bytes_up",
        "bytes_down",
        "duration_ms",
        "faults",
    ] {
        assert!(ends[0].get(key).is_some(), "session_end has {key}");
    }
    assert!(last["latency_us"]["RETR"]["p99"].as_u64().is_some());
    assert_eq!(last["seed"], 99);
    assert_eq!(summary.sessions, 12);
    let _ = std::fs::remove_dir_all(&dir);
}
