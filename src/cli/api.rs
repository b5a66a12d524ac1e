//! `popfault api`: many named proxies in one process, driven over a
//! Toxiproxy-compatible HTTP API (docs/API.md), until a signal or
//! `--duration`; then every proxy's summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::common::{
    RunError, Signals, listen_arg, load_profile, positive_secs, resolve_listen, say, say_err, seed_or_draw,
    wait_for_end, warn_if_exposed,
};
use crate::fleet::{Fleet, ProxySpec, Settings};
use crate::rest::{ApiServer, VERSION};

/// `popfault api`
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Where the HTTP API listens, IP:PORT or HOST:PORT (loopback by
    /// default; 8474 is Toxiproxy's port; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8474", value_parser = listen_arg)]
    pub listen: String,
    /// Proxies to create at start: Toxiproxy's JSON array
    /// (`[{"name", "listen", "upstream", "enabled"}]`) or popfault's TOML
    /// (`[[proxy]]` tables, which may also name a `profile`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed for every random choice of every proxy (toxicity included);
    /// drawn and printed when not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Cut a session after this many seconds without a byte either way.
    #[arg(long, default_value_t = 600.0, value_parser = positive_secs)]
    pub idle_timeout: f64,
    /// Give up on an upstream that accepts but does not greet within this
    /// many seconds (the session is `refused`).
    #[arg(long, default_value_t = 30.0, value_parser = positive_secs)]
    pub greeting_timeout: f64,
    /// Seconds to wait for the upstream to accept a connection.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    pub connect_timeout: f64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = positive_secs)]
    pub duration: Option<f64>,
    /// No dashboard: the API, logs and each proxy's summary at exit. The
    /// dashboard (when stdout is a terminal) shows every proxy at once
    /// (`*`, with a proxy column), or one proxy: `]` and `[` switch.
    #[arg(long)]
    pub headless: bool,
}

/// popfault's own config file: proxies, each optionally with a profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    proxy: Vec<ConfigProxy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigProxy {
    name: String,
    #[serde(default)]
    listen: String,
    upstream: String,
    #[serde(default)]
    enabled: Option<bool>,
    /// A built-in profile name or a TOML file.
    #[serde(default)]
    profile: Option<String>,
}

/// Creates the proxies of `--config`.
async fn load_config(fleet: &Fleet, path: &std::path::Path) -> Result<usize, RunError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| RunError::Usage(format!("--config {shown}: {e}")))?;
    let toxiproxy = text.trim_start().starts_with('[') && !text.trim_start().starts_with("[[");
    if toxiproxy {
        let specs: Vec<ProxySpec> = serde_json::from_str(&text)
            .map_err(|e| RunError::Usage(format!("--config {shown}: not a Toxiproxy JSON array: {e}")))?;
        let n = specs.len();
        fleet.populate(specs).await.map_err(|(e, _)| RunError::Usage(format!("--config {shown}: {e}")))?;
        return Ok(n);
    }
    let file: ConfigFile = toml::from_str(&text).map_err(|e| RunError::Usage(format!("--config {shown}: {e}")))?;
    let n = file.proxy.len();
    for p in file.proxy {
        let profile = match &p.profile {
            Some(name) => load_profile(name)?,
            None => crate::faults::Profile::passthrough(),
        };
        let spec = ProxySpec { name: p.name.clone(), listen: p.listen, upstream: p.upstream, enabled: p.enabled };
        fleet
            .create_with(spec, profile)
            .await
            .map_err(|e| RunError::Usage(format!("--config {shown}: proxy {}: {e}", p.name)))?;
    }
    Ok(n)
}

/// Serves the API until a signal or `--duration`, then prints each
/// proxy's summary.
pub async fn run(a: ApiArgs) -> Result<ExitCode, RunError> {
    let mut signals = Signals::catch();
    let seed = seed_or_draw(a.seed);
    let dashboard = !a.headless && std::io::stdout().is_terminal();
    let settings = Settings {
        connect_timeout: Duration::from_secs_f64(a.connect_timeout),
        idle_timeout: Duration::from_secs_f64(a.idle_timeout),
        greeting_timeout: Duration::from_secs_f64(a.greeting_timeout),
        dashboard,
        ..Settings::default()
    };
    let fleet = Fleet::with_settings(Some(seed), settings);
    if let Some(path) = &a.config {
        let n = load_config(&fleet, path).await?;
        say_err(&format!("popfault: {n} proxy(ies) from {}", path.display()));
    }
    let mut server = None;
    let mut last = String::new();
    for addr in resolve_listen(&a.listen).await? {
        match ApiServer::start(addr, fleet.clone()).await {
            Ok(s) => {
                server = Some(s);
                break;
            }
            Err(e) => last = format!("cannot listen on {addr}: {e}"),
        }
    }
    let Some(server) = server else { return Err(RunError::Usage(last)) };
    warn_if_exposed(server.addr);
    eprintln!("popfault: api http://{} (Toxiproxy API {VERSION}), seed {seed} (Ctrl-C to stop)", server.addr);
    let quit = CancellationToken::new();
    let ui = dashboard.then(|| {
        let (fleet, quit) = (fleet.clone(), quit.clone());
        let profiles = crate::faults::builtin::builtins().unwrap_or_default();
        std::thread::spawn(move || crate::dashboard::run_panes(&move || fleet.panes(), profiles, quit))
    });
    let why = tokio::select! {
        why = wait_for_end(a.duration, &mut signals) => why,
        _ = quit.cancelled() => "quit",
    };
    quit.cancel();
    if let Some(t) = ui {
        // The terminal is restored before anything more is printed.
        if let Ok(Ok(Err(e))) = tokio::task::spawn_blocking(move || t.join()).await {
            say_err(&format!("popfault: dashboard unavailable ({e})"));
        }
    }
    say_err(&format!("popfault: stopping ({why}); closing every proxy"));
    server.stop().await;
    let summaries = fleet.shutdown().await;
    let mut out = String::new();
    for (name, summary) in summaries {
        out.push_str(&format!("== proxy {} ==\n", crate::text::escape(&name)));
        out.push_str(&summary.to_table());
        out.push('\n');
    }
    say(&out);
    Ok(ExitCode::SUCCESS)
}
