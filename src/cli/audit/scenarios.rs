//! The audit's scenario table: the cut points ([`Kind`]) in the order they
//! run, the fault rule that makes each cut, what each scenario does given
//! the maildrop ([`plan`]) and what RFC 1939 expects of the server
//! afterwards ([`judge`]). No I/O: the runner hands in what it saw.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::report::{ScenarioResult, Verdict, clean};

/// The name of the one fault rule of every scenario's profile.
pub(super) const RULE: &str = "audit-cut";

/// The cut points, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    AfterGreeting,
    AfterUser,
    AfterPass,
    AfterDele,
    MidDownload,
    AfterRset,
    QuitReplyLost,
    QuitCommit,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::AfterGreeting => "cut-after-greeting",
            Kind::AfterUser => "cut-after-user",
            Kind::AfterPass => "cut-after-pass",
            Kind::AfterDele => "cut-after-dele",
            Kind::MidDownload => "cut-mid-download",
            Kind::AfterRset => "cut-after-rset",
            Kind::QuitReplyLost => "quit-reply-lost",
            Kind::QuitCommit => "quit-commit",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            Kind::AfterGreeting => "before login (cut after greeting)",
            Kind::AfterUser => "after USER",
            Kind::AfterPass => "after PASS",
            Kind::AfterDele => "after DELE before QUIT",
            Kind::MidDownload => "mid-download (inside a RETR body)",
            Kind::AfterRset => "after RSET",
            Kind::QuitReplyLost => "QUIT reply lost",
            Kind::QuitCommit => "QUIT commit",
        }
    }

    pub(super) fn rfc(self) -> &'static str {
        match self {
            Kind::AfterGreeting | Kind::AfterUser => "§4",
            Kind::AfterPass => "§3, §4",
            Kind::AfterDele | Kind::MidDownload => "§6",
            Kind::AfterRset => "§5, §6",
            Kind::QuitReplyLost | Kind::QuitCommit => "§6",
        }
    }

    /// The scenario's one fault rule (TOML), if it has one.
    pub(super) fn rule(self, offset: u64) -> Option<String> {
        let (point, filters, side) = match self {
            Kind::AfterGreeting => ("command", "command = \"USER\"".to_string(), "both"),
            Kind::AfterUser => ("response", "command = \"USER\"".to_string(), "both"),
            Kind::AfterPass => ("response", "command = \"PASS\"\nstate = \"TRANSACTION\"".to_string(), "both"),
            Kind::AfterDele => ("response", "command = \"DELE\"\nstate = \"TRANSACTION\"".to_string(), "both"),
            Kind::MidDownload => ("body", format!("command = \"RETR\"\noffset = {offset}"), "both"),
            Kind::AfterRset => ("response", "command = \"RSET\"\nstate = \"TRANSACTION\"".to_string(), "both"),
            Kind::QuitReplyLost => ("status", "command = \"QUIT\"\nstate = \"UPDATE\"".to_string(), "client"),
            Kind::QuitCommit => return None,
        };
        Some(format!(
            "[[rule]]\nname = \"{RULE}\"\nwhen = \"{point}\"\n{filters}\n\
             actions = [{{ do = \"disconnect\", side = \"{side}\", how = \"rst\" }}]\n"
        ))
    }
}

/// The scenarios in the order they run; the QUIT commit only when
/// `destructive` (it deletes a message on a correct server).
pub(super) fn kinds(destructive: bool) -> Vec<Kind> {
    let mut kinds = vec![
        Kind::AfterGreeting,
        Kind::AfterUser,
        Kind::AfterPass,
        Kind::AfterDele,
        Kind::MidDownload,
        Kind::AfterRset,
        Kind::QuitReplyLost,
    ];
    if destructive {
        kinds.push(Kind::QuitCommit);
    }
    kinds
}

/// What one scenario will do.
pub(super) struct Plan {
    pub(super) kind: Kind,
    /// Message numbers to mark with DELE before the cut.
    pub(super) marks: Vec<u32>,
    /// The message to download (mid-download).
    pub(super) retr: Option<u32>,
    /// Its size (LIST) and where in its body to cut (half of it).
    pub(super) size: u64,
    pub(super) offset: u64,
    /// What RFC 1939 requires, for this plan.
    pub(super) expected: String,
}

/// A look at the maildrop from a fresh session (taken by the runner).
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) count: u32,
    /// (number, UID) from UIDL; `None` if the server refused UIDL.
    pub(super) uids: Option<Vec<(u32, String)>>,
    /// (number, size) from LIST (empty if refused).
    pub(super) sizes: Vec<(u32, u64)>,
    /// Total octets from STAT.
    pub(super) octets: u64,
    /// Login attempts answered `-ERR [IN-USE]` before this one got in.
    pub(super) locked: u32,
    /// How long getting in took, retries included.
    pub(super) waited: Duration,
}

impl Snapshot {
    /// How message `n` is named in the report: its UID, else `#n`.
    pub(super) fn ident(&self, n: u32) -> String {
        self.uids
            .as_ref()
            .and_then(|u| u.iter().find(|(m, _)| *m == n))
            .map_or_else(|| format!("#{n}"), |(_, uid)| clean(uid))
    }

    pub(super) fn size(&self, n: u32) -> u64 {
        self.sizes
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| if self.count > 0 { self.octets / u64::from(self.count) } else { 0 })
    }
}

/// What the cut session did, from the client's side.
#[derive(Default)]
pub(super) struct Played {
    /// The client's address (to find the proxy's record of the session).
    pub(super) local: Option<SocketAddr>,
    /// In words.
    pub(super) saw: Vec<String>,
    /// QUIT's answer: `Some(true)` +OK, `Some(false)` -ERR, `None` none.
    pub(super) quit: Option<bool>,
}

/// What the scenario will do given the maildrop now, or why it can't run.
/// `lost_marked` names the scenario (if any) that showed the server
/// removing marked messages without QUIT.
pub(super) fn plan(
    kind: Kind,
    now: &Snapshot,
    destructive: bool,
    lost_marked: Option<&'static str>,
) -> Result<Plan, String> {
    let n = now.count;
    // Marking is safe on a correct server; after a server lost a marked
    // message, the non-destructive audit marks nothing more.
    let may_mark = destructive || lost_marked.is_none();
    let guard = lost_marked
        .map(|s| format!(" (nothing marked: \"{s}\" showed this server removes marked messages without QUIT)"))
        .unwrap_or_default();
    let plan = |marks: Vec<u32>, retr: Option<u32>, expected: String| Plan {
        kind,
        marks,
        retr,
        size: retr.map_or(0, |r| now.size(r)),
        offset: retr.map_or(0, |r| now.size(r) / 2),
        expected,
    };
    Ok(match kind {
        Kind::AfterGreeting => plan(
            vec![],
            None,
            "a session cut before any command (AUTHORIZATION) changes nothing; the next login works".into(),
        ),
        Kind::AfterUser => plan(
            vec![],
            None,
            "a session cut after USER, before PASS, changes nothing and leaves no lock behind".into(),
        ),
        Kind::AfterPass => plan(
            vec![],
            None,
            "a session cut right after login does not enter UPDATE: nothing removed; the maildrop lock is \
             released"
                .into(),
        ),
        Kind::AfterDele => {
            if n == 0 {
                return Err("the mailbox is empty: nothing to mark".into());
            }
            if !may_mark {
                return Err(format!("not marking more{guard}"));
            }
            plan(vec![1], None, "marked messages survive a session that ends without QUIT".into())
        }
        Kind::MidDownload => {
            if n == 0 {
                return Err("the mailbox is empty: nothing to download".into());
            }
            if n >= 2 && may_mark {
                plan(
                    vec![1],
                    Some(2),
                    "a line lost inside RETR (after DELE 1) removes nothing: the marked message and the one \
                     being downloaded survive"
                        .into(),
                )
            } else {
                plan(
                    vec![],
                    Some(1),
                    format!("a line lost inside RETR removes nothing: the message being downloaded survives{guard}"),
                )
            }
        }
        Kind::AfterRset => {
            if n >= 1 && may_mark {
                plan(vec![1], None, "RSET unmarks (DELE 1, RSET); a session cut after it removes nothing".into())
            } else {
                plan(vec![], None, format!("a session cut after RSET removes nothing{guard}"))
            }
        }
        Kind::QuitReplyLost => {
            if destructive && n >= 1 {
                plan(
                    vec![1],
                    None,
                    "QUIT reached the server, its answer was lost: the server enters UPDATE and removes the \
                     marked message (only it); the client cannot know (in doubt)"
                        .into(),
                )
            } else {
                plan(
                    vec![],
                    None,
                    "QUIT reached the server with nothing marked, its answer was lost: nothing is removed".into(),
                )
            }
        }
        Kind::QuitCommit => {
            if n == 0 {
                return Err("the mailbox is empty: nothing to delete".into());
            }
            plan(vec![1], None, "after QUIT +OK the marked message is gone, and only it".into())
        }
    })
}

/// A result for a scenario that did not run.
pub(super) fn skipped(kind: Kind, why: &str) -> ScenarioResult {
    ScenarioResult {
        name: kind.name().into(),
        title: kind.title().into(),
        rfc: kind.rfc().into(),
        expected: "-".into(),
        observed: why.into(),
        proxy_outcome: None,
        verdict: Verdict::Skip,
        client_saw: "-".into(),
        marked: Vec::new(),
        removed: Vec::new(),
        server_committed: None,
        messages_before: None,
        messages_after: None,
    }
}

/// Compares the maildrop before and after and decides the verdict.
pub(super) fn judge(
    r: &mut ScenarioResult,
    plan: &Plan,
    played: &Played,
    cut: bool,
    before: &Snapshot,
    after: &Snapshot,
) {
    let marked: HashSet<&str> = r.marked.iter().map(String::as_str).collect();
    // Gone messages, and how many of them were not marked.
    let (removed, added, gone_other) = match (&before.uids, &after.uids) {
        (Some(b), Some(a)) => {
            let now: HashSet<&str> = a.iter().map(|(_, u)| u.as_str()).collect();
            let then: HashSet<&str> = b.iter().map(|(_, u)| u.as_str()).collect();
            let removed: Vec<String> =
                b.iter().filter(|(_, u)| !now.contains(u.as_str())).map(|(_, u)| clean(u)).collect();
            let added = a.iter().filter(|(_, u)| !then.contains(u.as_str())).count();
            let other = removed.iter().filter(|u| !marked.contains(u.as_str())).count();
            (removed, added, other)
        }
        // No UIDL: by count; the marked ones are assumed to go first.
        _ => {
            let gone = before.count.saturating_sub(after.count) as usize;
            let added = after.count.saturating_sub(before.count) as usize;
            let removed: Vec<String> = r.marked.iter().take(gone).cloned().collect();
            let other = gone - removed.len();
            let mut all = removed;
            all.extend((0..other).map(|_| "?".to_string()));
            (all, added, other)
        }
    };
    let gone_marked = removed.len() - gone_other;
    let uid_word = if before.uids.is_some() { "UIDs" } else { "count (no UIDL)" };
    let mut observed = format!("{} → {} messages", before.count, after.count);
    if removed.is_empty() {
        observed.push_str(&format!(", same {uid_word}"));
    } else {
        let names: Vec<String> = removed
            .iter()
            .map(|u| if marked.contains(u.as_str()) { format!("{u} (marked)") } else { format!("{u} (NOT marked)") })
            .collect();
        observed.push_str(&format!("; gone: {}", names.join(", ")));
    }
    if added > 0 {
        observed.push_str(&format!("; {added} new"));
    }
    r.removed = removed;
    let kept_marked: Vec<&String> = r.marked.iter().filter(|m| !r.removed.contains(m)).collect();
    let lock = if after.locked > 0 {
        format!("; fresh login waited {:.1} s ([IN-USE] × {})", after.waited.as_secs_f64(), after.locked)
    } else {
        "; fresh login at once".into()
    };

    let (verdict, note) = if gone_other > 0 {
        (Verdict::Fail, "messages that were never marked are gone".to_string())
    } else if !cut {
        (Verdict::Skip, format!("the planned cut did not happen (client: {})", played.saw.join(", ")))
    } else {
        match plan.kind {
            Kind::QuitReplyLost if !r.marked.is_empty() => {
                let committed = gone_marked == r.marked.len();
                r.server_committed = Some(committed);
                let what = if committed {
                    "server committed: yes (the marked message is gone)"
                } else if gone_marked == 0 {
                    "server committed: no (the marked message is still there)"
                } else {
                    "server committed: partly"
                };
                (Verdict::Info, what.to_string())
            }
            Kind::QuitCommit => match played.quit {
                Some(true) if kept_marked.is_empty() => (Verdict::Pass, "QUIT +OK; the marked message is gone".into()),
                Some(true) => (Verdict::Fail, "QUIT answered +OK but the marked message is still there".into()),
                Some(false) => (Verdict::Info, "QUIT answered -ERR: the server says the commit failed".into()),
                None => (Verdict::Info, "QUIT got no answer: in doubt".into()),
            },
            Kind::AfterRset if gone_marked > 0 => {
                (Verdict::Fail, "the message marked, then unmarked by RSET, is gone without QUIT".into())
            }
            _ if gone_marked > 0 => (Verdict::Fail, "a marked message is gone although QUIT was never answered".into()),
            Kind::QuitReplyLost => (Verdict::Pass, "nothing was marked; nothing removed".into()),
            Kind::AfterRset if !r.marked.is_empty() => {
                (Verdict::Pass, "the message marked, then unmarked by RSET, is still there".into())
            }
            _ if !r.marked.is_empty() => (Verdict::Pass, "the marked message is still there".into()),
            _ => (Verdict::Pass, String::new()),
        }
    };
    r.verdict = verdict;
    if !note.is_empty() {
        observed.push_str("; ");
        observed.push_str(&note);
    }
    observed.push_str(&lock);
    r.observed = observed;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Profile;

    #[test]
    fn every_rule_is_a_valid_profile() {
        for kind in kinds(false) {
            let toml = kind.rule(100).expect("a rule");
            let p = Profile::from_toml(&toml, kind.name(), kind.name()).unwrap_or_else(|e| panic!("{toml}\n{e}"));
            assert_eq!(p.rules.len(), 1);
        }
        assert_eq!(kinds(true).last(), Some(&Kind::QuitCommit));
        assert!(Kind::QuitCommit.rule(0).is_none());
    }

    fn snap(count: u32, uids: Option<&[&str]>) -> Snapshot {
        Snapshot {
            count,
            uids: uids.map(|u| u.iter().zip(1..).map(|(uid, n)| (n, uid.to_string())).collect()),
            sizes: Vec::new(),
            octets: 0,
            locked: 0,
            waited: Duration::ZERO,
        }
    }

    fn judged(kind: Kind, marks: Vec<u32>, quit: Option<bool>, before: &Snapshot, after: &Snapshot) -> ScenarioResult {
        let mut r = skipped(kind, "");
        r.marked = marks.iter().map(|&m| before.ident(m)).collect();
        let plan = Plan { kind, marks, retr: None, size: 0, offset: 0, expected: String::new() };
        let played = Played { local: None, saw: vec![], quit };
        judge(&mut r, &plan, &played, true, before, after);
        r
    }

    #[test]
    fn verdicts_by_uid() {
        let before = snap(3, Some(&["a", "b", "c"]));
        let kept = snap(3, Some(&["a", "b", "c"]));
        let lost_a = snap(2, Some(&["b", "c"]));
        let lost_b = snap(2, Some(&["a", "c"]));
        assert_eq!(judged(Kind::AfterDele, vec![1], None, &before, &kept).verdict, Verdict::Pass);
        let r = judged(Kind::AfterDele, vec![1], None, &before, &lost_a);
        assert_eq!((r.verdict, r.removed.clone()), (Verdict::Fail, vec!["a".to_string()]));
        assert!(r.observed.contains("a (marked)"), "{}", r.observed);
        // An unmarked message gone is a failure wherever it happens.
        let r = judged(Kind::QuitCommit, vec![1], Some(true), &before, &lost_b);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.observed.contains("b (NOT marked)"), "{}", r.observed);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &lost_a).verdict, Verdict::Pass);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &kept).verdict, Verdict::Fail);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(false), &before, &kept).verdict, Verdict::Info);
        let r = judged(Kind::QuitReplyLost, vec![1], None, &before, &lost_a);
        assert_eq!((r.verdict, r.server_committed), (Verdict::Info, Some(true)));
        let r = judged(Kind::QuitReplyLost, vec![1], None, &before, &kept);
        assert_eq!((r.verdict, r.server_committed), (Verdict::Info, Some(false)));
        let r = judged(Kind::QuitReplyLost, vec![], None, &before, &kept);
        assert_eq!((r.verdict, r.server_committed), (Verdict::Pass, None));
        // New mail is not a failure.
        let more = snap(4, Some(&["a", "b", "c", "d"]));
        let r = judged(Kind::AfterPass, vec![], None, &before, &more);
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.observed.contains("1 new"), "{}", r.observed);
    }

    #[test]
    fn verdicts_by_count_without_uidl() {
        let before = snap(3, None);
        let r = judged(Kind::AfterDele, vec![1], None, &before, &snap(2, None));
        assert_eq!(
            (r.verdict, r.marked.clone(), r.removed.clone()),
            (Verdict::Fail, vec!["#1".into()], vec!["#1".into()])
        );
        assert_eq!(judged(Kind::AfterDele, vec![1], None, &before, &snap(3, None)).verdict, Verdict::Pass);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &snap(2, None)).verdict, Verdict::Pass);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &snap(1, None)).verdict, Verdict::Fail);
    }
}
