//! `popfault audit`: does a real POP3 server keep RFC 1939 when the line
//! drops at the protocol points that matter?
//!
//! The audit drives its own [`Pop3Client`](crate::client::Pop3Client) through an internal proxy
//! (started in-process on 127.0.0.1:0, one per scenario, each with a
//! one-rule fault profile) and cuts the line at a chosen point: after the
//! greeting, after USER, after PASS, after DELE, inside a RETR body, after
//! RSET, and between QUIT and its reply; with `--destructive` it also checks
//! the normal QUIT commit. Before and after each cut it looks at the
//! maildrop in a fresh session straight to the server (STAT, UIDL, LIST,
//! QUIT with nothing marked), never through the fault, and compares message
//! counts and UIDs.
//!
//! Without `--destructive` the audit deletes nothing on a correct server:
//! it marks messages (DELE) only in sessions it then cuts before QUIT, and
//! loses QUIT's answer only with nothing marked. A server that does expunge
//! on a lost line would lose the marked message; after the first such loss
//! the audit marks nothing more.
//!
//! The password is only ever sent to the server: it is not printed, not
//! logged (the client logs `PASS ***`, the proxy redacts it) and not in the
//! report.
//!
//! Here: the command line ([`AuditArgs`] → [`AuditConfig`]) and [`run`];
//! `scenarios` is the table of cut points and what each expects, `runner`
//! plays them against the server, `report` holds and prints the verdicts.

mod report;
mod runner;
mod scenarios;

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::common::{RunError, seed_or_draw};
use crate::secret::Secret;

pub use report::{Report, ScenarioResult, Verdict};
pub use runner::audit;

/// The environment variable read for the password when `--pass` is not
/// given (keeps it out of `ps` and the shell history).
pub const PASS_ENV: &str = "POPFAULT_PASS";

/// `popfault audit`
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The real server, HOST:PORT (plain POP3). Use a test mailbox.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: String,
    /// The mailbox's user name.
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Its password; only ever sent to the server, never printed or logged.
    /// Default: the POPFAULT_PASS environment variable.
    #[arg(long, value_name = "PASSWORD")]
    pub pass: Option<Secret>,
    /// Also check the QUIT commit and lose QUIT's answer with a message
    /// marked: deletes up to two messages (on a correct server).
    #[arg(long)]
    pub destructive: bool,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the internal proxy (drawn and printed when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds to wait for each connect, read and write.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub timeout: f64,
    /// Seconds to keep retrying a login answered -ERR [IN-USE] (the server
    /// may hold the maildrop lock for a moment after a cut).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub lock_wait: f64,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 3600.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds between 0 and 3600")),
    }
}

/// What to audit and how, resolved from [`AuditArgs`].
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The server, `HOST:PORT`, as given.
    pub server: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// Whether the scenarios that delete may run.
    pub destructive: bool,
    /// The internal proxy's seed.
    pub seed: u64,
    /// Bound on each connect, read and write.
    pub timeout: Duration,
    /// How long a login answered `-ERR [IN-USE]` is retried.
    pub lock_wait: Duration,
    /// Print one line per scenario on stderr as it finishes.
    pub progress: bool,
}

impl AuditConfig {
    /// Resolves the command line: the password from `--pass` or
    /// [`PASS_ENV`], the seed drawn when not given.
    pub fn from_args(a: AuditArgs) -> Result<AuditConfig, RunError> {
        let password = match a.pass {
            Some(p) => p,
            None => std::env::var(PASS_ENV).map(Secret::from).map_err(|_| {
                RunError::Usage(format!("audit: no password: give --pass or set the {PASS_ENV} environment variable"))
            })?,
        };
        Ok(AuditConfig {
            server: a.server,
            user: a.user,
            password,
            destructive: a.destructive,
            seed: seed_or_draw(a.seed),
            timeout: Duration::from_secs_f64(a.timeout),
            lock_wait: Duration::from_secs_f64(a.lock_wait),
            progress: true,
        })
    }
}

/// Runs the audit as the CLI asked: the table (or `--json`) on stdout;
/// exit 0 when no scenario FAILs, 1 when one does, 2 for bad input (no
/// password, unreachable server, refused login…).
pub async fn run(a: AuditArgs) -> Result<ExitCode, RunError> {
    let json = a.json;
    let cfg = AuditConfig::from_args(a)?;
    let report = audit(&cfg).await?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table_width(table_width()));
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// The width of stdout's terminal, or [`report::DEFAULT_WIDTH`] when
/// stdout is not one (a pipe or a file has no width to fit).
fn table_width() -> usize {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return report::DEFAULT_WIDTH;
    }
    crossterm::terminal::size().map_or(report::DEFAULT_WIDTH, |(w, _)| usize::from(w).max(40))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let cfg = AuditConfig {
            server: "h:1".into(),
            user: "u".into(),
            password: "hunter2".into(),
            destructive: false,
            seed: 1,
            timeout: Duration::from_secs(1),
            lock_wait: Duration::from_secs(1),
            progress: false,
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
