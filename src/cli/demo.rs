//! `popfault demo`: the embedded server, the two client workloads and the
//! proxy in one process, with a summary and an invariant check at the end
//! computed from the server's ledger and the clients' own records.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::common::{
    RunError, Signals, Ui, events_verdict, listen_arg, load_profile, positive_secs, resolve_listen, say, seed_or_draw,
    warn_if_exposed,
};
use crate::aggregate::Aggregator;
use crate::client::{self, Mode, SessionReport, UidMemory, WorkloadConfig};
use crate::control::Control;
use crate::events::SessionEnd;
use crate::relay::{self, ProxyConfig};
use crate::server::{self, Maildrop, ServerConfig};
use crate::session::Outcome;
use crate::stats::Summary;

/// Default length of a headless demo.
const DEFAULT_SECS: f64 = 20.0;

/// `popfault demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// No dashboard: print a summary at the end.
    #[arg(long)]
    pub headless: bool,
    /// Without the dashboard, a one-line status on stderr every 2 s (on by
    /// default when stderr is a terminal).
    #[arg(long)]
    pub progress: bool,
    /// Fault profile: a built-in name or a TOML file (default: the demo mix).
    #[arg(long, default_value = "demo")]
    pub profile: String,
    /// Seed for every random choice (drawn and printed when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run for this many seconds (default: 20 headless).
    #[arg(long, value_parser = positive_secs)]
    pub duration: Option<f64>,
    /// The demo's clients, one mailbox each; odd users download-and-delete,
    /// even users leave mail on the server and track UIDL. One more mailbox
    /// gets mail but no client: it is yours, for your own mail client.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub users: u32,
    /// Messages in each mailbox at start.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub messages: u32,
    /// Write every event as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Where the proxy listens, IP:PORT or HOST:PORT, so your own mail
    /// client can join (default: a free port on 127.0.0.1).
    #[arg(long, value_parser = listen_arg)]
    pub listen: Option<String>,
}

/// What one workload saw, from its own records.
#[derive(Debug, Default, Clone)]
pub struct WorkloadTally {
    /// Sessions run.
    pub sessions: u64,
    /// Messages received in full.
    pub received: u64,
    /// Messages received that this user had received before.
    pub duplicates: u64,
    /// Sessions whose QUIT was answered +OK.
    pub quit_ok: u64,
}

fn mode_of(user_index: u32) -> Mode {
    if user_index % 2 == 1 { Mode::DownloadAndDelete } else { Mode::LeaveOnServer }
}

/// Runs the demo as the CLI asked.
pub async fn run(a: DemoArgs) -> Result<ExitCode, RunError> {
    // First: from here on no ending signal kills the run without a summary.
    let mut signals = Signals::catch();
    // Headless, a demo needs an end; with the dashboard it runs until q.
    let duration = if a.headless || ui_off() { Some(a.duration.unwrap_or(DEFAULT_SECS)) } else { a.duration };
    let secs = duration.map_or("until q".to_string(), |d| format!("for {d}s"));
    let listen = match &a.listen {
        Some(l) => resolve_listen(l).await?,
        None => vec![([127, 0, 0, 1], 0).into()],
    };
    // The last mailbox has no demo client: a visitor's own.
    let cfg = ServerConfig {
        users: a.users as usize + 1,
        messages: a.messages as usize,
        size: 2048,
        password: "secret".into(),
    };
    let maildrop = Maildrop::new(&cfg);
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let srv = server::spawn(loopback, maildrop.clone())
        .await
        .map_err(|e| RunError::Failed(format!("embedded server: {e}")))?;
    let profile = load_profile(&a.profile)?;
    let seed = seed_or_draw(a.seed);
    let profile_name = profile.name.clone();
    let control = Arc::new(Control::new(Arc::new(profile), seed));
    let mut ui = Ui::with_progress(a.headless, a.progress);
    let agg = Aggregator::with_model(a.events.as_deref(), ui.model.clone(), true)
        .map_err(|e| RunError::Usage(e.to_string()))?;
    // A name may resolve to several addresses: the first that binds is used.
    let mut proxy = None;
    let mut last_error = String::new();
    for addr in &listen {
        match relay::start(ProxyConfig::new(*addr, srv.addr.to_string()), control.clone(), agg.sink()).await {
            Ok(h) => {
                proxy = Some(h);
                break;
            }
            Err(e) => last_error = format!("proxy: cannot listen on {addr}: {e}"),
        }
    }
    let Some(proxy) = proxy else {
        srv.shutdown().await;
        return Err(RunError::Usage(last_error));
    };
    warn_if_exposed(proxy.local_addr);
    eprintln!(
        "popfault demo: server {} ← proxy {} ← {} clients, profile {profile_name}, seed {seed}, {secs}",
        srv.addr, proxy.local_addr, a.users
    );
    eprintln!(
        "popfault demo: join with your own POP3 client at {}: user user{} (yours alone), password {}; \
         user1…user{} work too but share their mail with the demo's clients",
        proxy.local_addr,
        a.users + 1,
        maildrop.password(),
        a.users
    );

    let stop = CancellationToken::new();
    let mut clients = tokio::task::JoinSet::new();
    for i in 1..=a.users {
        let wl = WorkloadConfig {
            user: format!("user{i}"),
            password: maildrop.password().into(),
            mode: mode_of(i),
            timeout: Duration::from_secs(10),
            max_messages: None,
        };
        let rng = SmallRng::seed_from_u64(seed ^ u64::from(i));
        clients.spawn(client_loop(proxy.local_addr, wl, rng, stop.clone()));
    }
    let mut mail = tokio::task::JoinSet::new();
    for i in 1..=a.users + 1 {
        // The visitor's mailbox gets less: a person's client polls rarely.
        let pace = if i > a.users { VISITOR_MAIL } else { CLIENT_MAIL };
        let rng = SmallRng::seed_from_u64(seed.rotate_left(32) ^ u64::from(i));
        mail.spawn(new_mail(maildrop.clone(), format!("user{i}"), pace, rng, stop.clone()));
    }

    ui.start(control, proxy.local_addr.to_string(), format!("embedded server {}", srv.addr));
    ui.wait(duration, &mut signals).await;
    ui.close().await;
    // No new sessions; cut the live ones at the proxy (recorded as such);
    // then the clients, whose sessions just ended, report.
    stop.cancel();
    proxy.shutdown().await;
    let mut reports: Vec<(Mode, Vec<SessionReport>)> = Vec::new();
    while let Some(r) = clients.join_next().await {
        if let Ok(r) = r {
            reports.push(r);
        }
    }
    mail.join_all().await;
    srv.shutdown().await;
    let (summary, stats, report) =
        agg.finish_report(seed, &profile_name).await.map_err(|e| RunError::Failed(format!("summarising: {e}")))?;

    let tallies = tally(&reports);
    let (ours, visitors) = split_ends(&reports, stats.ends());
    let checks = check(&maildrop, &reports, &ours, &visitors, &summary);
    // One string, written once and without panicking: the terminal may be
    // gone (SIGHUP).
    use std::fmt::Write;
    let mut out = summary.to_table();
    let verdict = events_verdict(report.as_ref(), &mut out);
    let _ = writeln!(out, "  what each workload saw (from the clients' own records):");
    for (mode, t) in &tallies {
        let _ = writeln!(
            out,
            "    {mode:<20} sessions {:>5}  received {:>6}  duplicates {:>5}",
            t.sessions, t.received, t.duplicates
        );
    }
    let dnd = tallies.get(&Mode::DownloadAndDelete.to_string()).map_or(0, |t| t.duplicates);
    let uidl = tallies.get(&Mode::LeaveOnServer.to_string()).map_or(0, |t| t.duplicates);
    let _ = writeln!(
        out,
        "  lesson: download-and-delete got {dnd} duplicate(s), leave-on-server with UIDL got {uidl}: \
         a line that drops before QUIT rolls back every DELE, and only a client that tracks UIDs notices."
    );
    if !visitors.is_empty() {
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for e in &visitors {
            *seen.entry(format!("{} {}", e.user.as_deref().unwrap_or("?"), e.outcome)).or_default() += 1;
        }
        let list: Vec<String> = seen.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let _ = writeln!(
            out,
            "  your own clients: {} session(s) logged in ({}); left out of the checks below \
             (as a demo user, their mail can still show in that client's figures)",
            visitors.len(),
            list.join(", ")
        );
    }
    let _ = writeln!(out, "  invariants (server ledger and client records, not the proxy's counters):");
    let mut ok = true;
    for c in &checks {
        ok &= c.holds;
        let _ = writeln!(out, "    [{}] {}", if c.holds { "ok" } else { "BROKEN" }, c.text);
    }
    say(&out);
    Ok(if ok { verdict } else { ExitCode::from(1) })
}

/// One invariant of the demo, checked.
#[derive(Debug, Clone)]
pub struct Check {
    /// Whether it holds.
    pub holds: bool,
    /// What it says, with the figures.
    pub text: String,
}

/// The proxy's session ends split into the demo clients' (`ours`) and the
/// logged-in sessions of anyone else who joined (`visitors`), told apart by
/// client address and user. Sessions that never logged in stay in `ours`:
/// a refused demo client never learns its own address.
pub fn split_ends(reports: &[(Mode, Vec<SessionReport>)], ends: &[SessionEnd]) -> (Vec<SessionEnd>, Vec<SessionEnd>) {
    let known: HashSet<(SocketAddr, &str)> =
        reports.iter().flat_map(|(_, s)| s.iter()).filter_map(|s| Some((s.local?, s.user.as_str()))).collect();
    ends.iter().cloned().partition(|e| e.user.as_deref().is_none_or(|u| known.contains(&(e.client, u))))
}

/// The demo's invariants, from the server's ledger, the clients' records
/// and the proxy's session ends (`ends`, the demo clients' own; `visitors`,
/// those of anyone who joined, left out of the totals):
/// no message lost; every duplicate a client received traces to an earlier
/// session of that client the proxy reported rolled-back or in-doubt; the
/// proxy's duplicate and at-risk totals equal the clients' ground truth.
pub fn check(
    maildrop: &Maildrop,
    reports: &[(Mode, Vec<SessionReport>)],
    ends: &[SessionEnd],
    visitors: &[SessionEnd],
    summary: &Summary,
) -> Vec<Check> {
    let mut out = Vec::new();
    let lost = lost_messages(maildrop, reports, visitors);
    out.push(Check {
        holds: lost.is_empty(),
        text: if lost.is_empty() {
            format!("no message lost: {} delivered, each received or still on the server", maildrop.delivered().len())
        } else {
            format!("{} message(s) lost: {:?}", lost.len(), &lost[..lost.len().min(5)])
        },
    });

    // A long run reuses client ports: several sessions can share an address.
    let mut by_client: HashMap<SocketAddr, Vec<&SessionEnd>> = HashMap::new();
    for e in ends {
        by_client.entry(e.client).or_default().push(e);
    }
    let (mut dups, mut traced, mut untraced) = (0u64, 0u64, Vec::new());
    let mut at_risk = 0u64;
    for (_, sessions) in reports {
        // Per user: the last session that received each message.
        let mut last: HashMap<(&str, String), &SessionReport> = HashMap::new();
        for s in sessions {
            for m in &s.received {
                let id = message_key(m);
                if let Some(prev) = last.get(&(s.user.as_str(), id.clone())) {
                    dups += 1;
                    let outcome = prev.local.and_then(|l| session_of(&by_client, l, &s.user, &id)).map(|e| e.outcome);
                    if outcome.is_some_and(Outcome::puts_at_risk) {
                        traced += 1;
                    } else {
                        untraced.push(format!("{} {id} (earlier session: {outcome:?})", s.user));
                    }
                }
                last.insert((s.user.as_str(), id), s);
            }
            if s.logged_in && s.quit_ok != Some(true) {
                let mut numbers: HashSet<u32> = s.received.iter().map(|m| m.number).collect();
                numbers.extend(s.marked.iter().copied());
                at_risk += numbers.len() as u64;
            }
        }
    }
    out.push(Check {
        holds: untraced.is_empty(),
        text: if untraced.is_empty() {
            format!("all {dups} duplicate(s) trace to an earlier rolled-back or in-doubt session ({traced} traced)")
        } else {
            format!(
                "{} duplicate(s) without a rolled-back/in-doubt cause: {:?}",
                untraced.len(),
                &untraced[..untraced.len().min(5)]
            )
        },
    });
    // The proxy's totals less what it counted for visitors (their own
    // mailbox, or a demo one shared with a demo client).
    let proxy_dups = summary.duplicates - visitors.iter().map(|e| e.duplicates).sum::<u64>();
    let proxy_at_risk = summary.at_risk - visitors.iter().map(|e| e.at_risk as u64).sum::<u64>();
    out.push(Check {
        holds: proxy_dups == dups,
        text: format!("proxy counted {proxy_dups} duplicate(s); the clients received {dups}"),
    });
    out.push(Check {
        holds: proxy_at_risk == at_risk,
        text: format!(
            "proxy counted {proxy_at_risk} message(s) at risk; the clients' unfinished sessions hold {at_risk}"
        ),
    });
    out
}

/// How often a demo client checks its mail, in ms (drawn afresh each time,
/// so the clients do not march in step).
const POLL_MS: std::ops::RangeInclusive<u64> = 700..=1300;

async fn client_loop(
    proxy: SocketAddr,
    wl: WorkloadConfig,
    mut rng: SmallRng,
    stop: CancellationToken,
) -> (Mode, Vec<SessionReport>) {
    let mut memory = UidMemory::new();
    let mut reports = Vec::new();
    // A session in progress is never abandoned: at the end the proxy cuts
    // it, and the client's record then says what it really got.
    while !stop.is_cancelled() {
        reports.push(client::run_session(proxy, &wl, &mut memory).await);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(rng.gen_range(POLL_MS))) => {}
            _ = stop.cancelled() => break,
        }
    }
    (wl.mode, reports)
}

/// How mail arrives in one mailbox: a burst of `burst` messages every
/// `every_ms`, both drawn afresh each time.
#[derive(Debug, Clone)]
struct MailPace {
    every_ms: std::ops::RangeInclusive<u64>,
    burst: std::ops::RangeInclusive<u32>,
}

/// A demo client's mailbox: a burst about as often as the client polls
/// (a little more often), so most sessions have mail to fetch, and often
/// two or more messages, where a lost carrier mid-download hurts. About
/// 2 messages a second a mailbox.
const CLIENT_MAIL: MailPace = MailPace { every_ms: 500..=1300, burst: 1..=3 };

/// The visitor's mailbox: a person's client polls now and then; a message
/// or two every few seconds keeps it from piling up.
const VISITOR_MAIL: MailPace = MailPace { every_ms: 3000..=7000, burst: 1..=2 };

/// Delivers new mail to `user` at `pace` until stopped.
async fn new_mail(maildrop: Maildrop, user: String, pace: MailPace, mut rng: SmallRng, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(rng.gen_range(pace.every_ms.clone()))) => {}
            _ = stop.cancelled() => return,
        }
        for _ in 0..rng.gen_range(pace.burst.clone()) {
            let _ = maildrop.generate_message(&user);
        }
    }
}

/// How the clients' records name a message: its Message-ID, else the
/// start of its digest (as the proxy does, by Message-ID else hash).
/// The proxy's record of the session at client address `at` that relayed
/// message `id` to `user`. Addresses alone are not enough: a long run
/// reuses client ports, and a later session at the same address would be
/// taken for the earlier one.
fn session_of<'a>(
    by_client: &HashMap<SocketAddr, Vec<&'a SessionEnd>>,
    at: SocketAddr,
    user: &str,
    id: &str,
) -> Option<&'a SessionEnd> {
    let candidates = by_client.get(&at)?;
    let key = crate::session::MessageKey::message_id(id.as_bytes());
    let relayed = |e: &SessionEnd| e.fingerprints.iter().any(|f| f.key == key);
    let of_user: Vec<&SessionEnd> = candidates.iter().copied().filter(|e| e.user.as_deref() == Some(user)).collect();
    of_user.iter().copied().find(|e| relayed(e)).or_else(|| (of_user.len() == 1).then(|| of_user[0]))
}

fn message_key(m: &client::ReceivedMessage) -> String {
    m.message_id.clone().unwrap_or_else(|| format!("{:02x?}", &m.digest[..8]))
}

/// Per workload: sessions, messages received, and duplicates as the clients
/// themselves saw them (a Message-ID received twice by the same user).
pub fn tally(reports: &[(Mode, Vec<SessionReport>)]) -> BTreeMap<String, WorkloadTally> {
    let mut out: BTreeMap<String, WorkloadTally> = BTreeMap::new();
    for (mode, sessions) in reports {
        let t = out.entry(mode.to_string()).or_default();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for s in sessions {
            t.sessions += 1;
            if s.quit_ok == Some(true) {
                t.quit_ok += 1;
            }
            for m in &s.received {
                t.received += 1;
                let id = message_key(m);
                if !seen.insert((s.user.clone(), id)) {
                    t.duplicates += 1;
                }
            }
        }
    }
    out
}

/// Messages delivered to the demo clients' mailboxes that no client
/// received and the server no longer holds: lost mail. Must be empty. A
/// message the proxy relayed to a visitor who logged in as a demo user
/// counts as received (by them); the visitor's own mailbox is theirs.
pub fn lost_messages(
    maildrop: &Maildrop,
    reports: &[(Mode, Vec<SessionReport>)],
    visitors: &[SessionEnd],
) -> Vec<String> {
    let users: HashSet<&str> = reports.iter().flat_map(|(_, s)| s.iter()).map(|s| s.user.as_str()).collect();
    let received: HashSet<&str> = reports
        .iter()
        .flat_map(|(_, s)| s.iter())
        .flat_map(|s| s.received.iter())
        .filter_map(|m| m.message_id.as_deref())
        .collect();
    let by_visitors: HashSet<crate::session::MessageKey> =
        visitors.iter().flat_map(|e| e.fingerprints.iter()).map(|f| f.key).collect();
    let remaining: HashSet<String> =
        maildrop.users().iter().flat_map(|u| maildrop.remaining(u)).map(|m| m.message_id).collect();
    maildrop
        .delivered()
        .into_iter()
        .filter(|m| users.contains(m.user.as_str()))
        .filter(|m| !received.contains(m.message_id.as_str()) && !remaining.contains(&m.message_id))
        .filter(|m| !by_visitors.contains(&crate::session::MessageKey::message_id(m.message_id.as_bytes())))
        .map(|m| m.message_id)
        .collect()
}

/// Whether the dashboard cannot be shown (stdout is not a terminal).
fn ui_off() -> bool {
    use std::io::IsTerminal;
    !std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Fingerprints, State};

    fn end(session: u64, client: SocketAddr, user: &str, outcome: Outcome, ids: &[&str]) -> SessionEnd {
        SessionEnd {
            client,
            upstream: "127.0.0.1:110".into(),
            user: Some(user.into()),
            outcome,
            state: State::Transaction,
            downloaded: ids.len() as u64,
            profile: "demo".into(),
            fingerprints: Fingerprints::from_message_ids(ids),
            ended_by: "closed".into(),
            ..SessionEnd::example(session)
        }
    }

    #[test]
    fn the_ends_the_demo_keeps_carry_their_fingerprints() {
        let mut stats = crate::stats::Stats::keeping_ends();
        let at: SocketAddr = "127.0.0.1:42000".parse().unwrap();
        let ev = crate::events::Event::SessionEnd(Box::new(end(1, at, "user3", Outcome::RolledBack, &["<u35@x>"])));
        stats.apply(&ev);
        assert_eq!(stats.ends()[0].fingerprints.len(), 1);
    }

    #[test]
    fn a_reused_client_port_is_told_apart_by_user_and_message() {
        let at: SocketAddr = "127.0.0.1:42000".parse().unwrap();
        let ends = [
            end(1, at, "user3", Outcome::RolledBack, &["<u35@x>"]),
            end(900, at, "user1", Outcome::CleanQuit, &[]),
            end(1800, at, "user3", Outcome::CleanQuit, &["<u99@x>"]),
        ];
        let mut by_client: HashMap<SocketAddr, Vec<&SessionEnd>> = HashMap::new();
        for e in &ends {
            by_client.entry(e.client).or_default().push(e);
        }
        assert_eq!(session_of(&by_client, at, "user3", "<u35@x>").map(|e| e.session), Some(1));
        assert_eq!(session_of(&by_client, at, "user3", "<u99@x>").map(|e| e.session), Some(1800));
        // One session of that user at that address: it, whatever it relayed.
        assert_eq!(session_of(&by_client, at, "user1", "<u1@x>").map(|e| e.session), Some(900));
        // Two of that user and neither relayed it: no guess.
        assert_eq!(session_of(&by_client, at, "user3", "<u7@x>").map(|e| e.session), None);
        assert!(session_of(&by_client, "127.0.0.1:1".parse().unwrap(), "user3", "<u35@x>").is_none());
    }
}
