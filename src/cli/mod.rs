//! The command line: its clap types and the dispatch to one file per
//! subcommand. The binary is a thin shell around [`main`].
//!
//! The subcommand files (`proxy`, `serve`, `demo`, `audit`, `profiles`, `ca`,
//! `api`)
//! share what they need through [`common`] and never use each other or
//! this file, so the shell has no import cycle; nothing outside `cli`
//! uses it (docs/ARCHITECTURE.md, "Dependencies").

pub mod api;
pub mod audit;
pub mod ca;
pub mod common;
pub mod demo;
pub mod profiles;
pub mod proxy;
pub mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A fault-injecting, POP3-aware man-in-the-middle proxy.
///
/// popfault sits between a POP3 client and server, parses both directions,
/// and reports what each session's end meant: committed, rolled back, in
/// doubt, refused.
#[derive(Debug, Parser)]
#[command(name = "popfault", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace). Secrets are never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Relay clients to a real POP3 server, tracking every session.
    Proxy(proxy::ProxyArgs),
    /// Run the embedded POP3 test server (users user1…userN).
    Serve(serve::ServeArgs),
    /// Everything embedded: server, client workloads and proxy in one process.
    Demo(demo::DemoArgs),
    /// List the built-in fault profiles, or print one as TOML.
    Profiles(profiles::ProfilesArgs),
    /// Validate a fault profile file; errors name file:line:column and the fix.
    CheckProfile(profiles::CheckProfileArgs),
    /// Check a real server's RFC 1939 behaviour under a matrix of cut points.
    Audit(audit::AuditArgs),
    /// Make (once) and show popfault's local CA, and how clients trust it.
    Ca(ca::CaArgs),
    /// Many named proxies driven over a Toxiproxy-compatible HTTP API.
    Api(api::ApiArgs),
}

/// Runs the command line; the exit code is 0 on success, 2 on bad input
/// (as clap does for usage errors), 1 when a run fails, 3
/// ([`common::EXIT_EVENTS_INCOMPLETE`]) when only the events file failed.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs on stderr would tear the dashboard: with it, -v logs to a file.
    let dashboard = match &cli.command {
        Command::Proxy(a) => !a.headless,
        Command::Demo(a) => !a.headless,
        Command::Api(a) => !a.headless,
        _ => false,
    } && std::io::stdout().is_terminal();
    crate::logging::init(cli.verbose, dashboard);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popfault: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Proxy(a) => proxy::run(a).await,
            Command::Serve(a) => serve::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Profiles(a) => profiles::profiles(a),
            Command::CheckProfile(a) => profiles::check_profile(a),
            Command::Audit(a) => audit::run(a).await,
            Command::Ca(a) => ca::run(a),
            Command::Api(a) => api::run(a).await,
        }
    });
    crate::logging::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            common::say_err(&format!("popfault: {e:#}"));
            ExitCode::from(e.exit_code())
        }
    }
}
