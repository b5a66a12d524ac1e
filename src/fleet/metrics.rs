//! `GET /metrics`: every proxy's books in the Prometheus text exposition
//! format (version 0.0.4), labelled by proxy. Counts come from the same
//! fold as the summary, so they restart at 0 after a summary reset (a
//! counter reset, as Prometheus sees it).

use std::fmt::Write;
use std::sync::Arc;

use super::book::Book;
use crate::session::Outcome;

/// Latency histogram bounds, in seconds (and µs for the fold).
const BOUNDS_S: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A counter of the totals: name, help, value.
type Counter = (&'static str, &'static str, fn(&crate::stats::Totals) -> u64);

/// A label value, escaped as the format wants (`\`, `"`, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// The text of `/metrics` for these proxies.
pub fn render(books: &[Arc<Book>]) -> String {
    let bounds_us: Vec<u64> = BOUNDS_S.iter().map(|s| (s * 1e6) as u64).collect();
    let snapshots: Vec<_> = books
        .iter()
        .map(|b| {
            let (totals, latency) = b.with_stats(|s| (s.totals(), s.latency_buckets(&bounds_us)));
            (b, totals, latency)
        })
        .collect();
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    f.head("popfault_proxy_enabled", "gauge", "Whether the proxy listens (1) or not (0).");
    for (b, ..) in &snapshots {
        f.sample("popfault_proxy_enabled", &[("proxy", &b.name)], u8::from(b.is_enabled()));
    }
    f.head("popfault_live_sessions", "gauge", "Sessions in progress.");
    for (b, ..) in &snapshots {
        f.sample("popfault_live_sessions", &[("proxy", &b.name)], b.live());
    }
    f.head("popfault_sessions_total", "counter", "Sessions ended, by outcome.");
    for (b, t, _) in &snapshots {
        for o in Outcome::ALL {
            f.sample("popfault_sessions_total", &[("proxy", &b.name), ("outcome", o.as_str())], t.outcome(o));
        }
    }
    let messages: [Counter; 5] = [
        ("popfault_messages_downloaded_total", "Complete downloads delivered to clients.", |t| t.downloaded),
        (
            "popfault_messages_at_risk_total",
            "Messages at risk of a second download (rolled-back and in-doubt sessions).",
            |t| t.at_risk,
        ),
        ("popfault_messages_duplicated_total", "Downloads of a message the proxy had seen downloaded before.", |t| {
            t.duplicates
        }),
        ("popfault_messages_damaged_total", "Messages delivered with bytes changed by a fault.", |t| t.damaged),
        ("popfault_messages_cut_midway_total", "Messages the line was cut in.", |t| t.cut_midway),
    ];
    for (name, help, get) in messages {
        f.head(name, "counter", help);
        for (b, t, _) in &snapshots {
            f.sample(name, &[("proxy", &b.name)], get(t));
        }
    }
    f.head("popfault_faults_total", "counter", "Faults fired, by rule.");
    for (b, t, _) in &snapshots {
        for (rule, n) in &t.faults_fired {
            f.sample("popfault_faults_total", &[("proxy", &b.name), ("rule", rule)], n);
        }
    }
    f.head("popfault_bytes_total", "counter", "Bytes relayed: up (client to server) and down.");
    for (b, ..) in &snapshots {
        let (up, down) = b.control.bytes();
        f.sample("popfault_bytes_total", &[("proxy", &b.name), ("direction", "up")], up);
        f.sample("popfault_bytes_total", &[("proxy", &b.name), ("direction", "down")], down);
    }
    f.head(
        "popfault_dropped_events_total",
        "counter",
        "Events dropped because the proxy's queue was full (counts may be low by this much).",
    );
    for (b, ..) in &snapshots {
        f.sample("popfault_dropped_events_total", &[("proxy", &b.name)], b.dropped_events());
    }
    let name = "popfault_command_latency_seconds";
    f.head(name, "histogram", "From forwarding a command to the last byte of its answer delivered, by command.");
    for (b, _, latency) in &snapshots {
        for h in latency {
            for (le, n) in BOUNDS_S.iter().zip(&h.cumulative) {
                let le = le.to_string();
                f.sample(&format!("{name}_bucket"), &[("proxy", &b.name), ("command", h.command), ("le", &le)], n);
            }
            f.sample(&format!("{name}_bucket"), &[("proxy", &b.name), ("command", h.command), ("le", "+Inf")], h.count);
            let base = [("proxy", b.name.as_str()), ("command", h.command)];
            f.sample(&format!("{name}_sum"), &base, h.sum_us / 1e6);
            f.sample(&format!("{name}_count"), &base, h.count);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
