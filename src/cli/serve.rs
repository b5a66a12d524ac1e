//! `popfault serve`: the embedded POP3 test server on its own, until a
//! signal; then how many messages QUIT deleted.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

use super::common::{RunError, Signals, say, wait_for_end, warn_if_exposed};
use crate::relay;
use crate::server::{self, Maildrop, ServerConfig};

/// `popfault serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2110")]
    pub listen: SocketAddr,
    /// Mailboxes user1 … userN.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: u32,
    /// Messages in each mailbox at start.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub messages: u32,
    /// Approximate size of each message in bytes.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(64..=1_073_741_824))]
    pub size: u64,
    /// Every user's password.
    #[arg(long, default_value = "secret")]
    pub password: String,
    /// Listen backlog: connections the kernel queues before they are
    /// accepted (capped by net.core.somaxconn).
    #[arg(long, default_value_t = relay::DEFAULT_BACKLOG, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub backlog: u32,
}

/// Runs the server as the command line asked.
pub async fn run(a: ServeArgs) -> Result<ExitCode, RunError> {
    let mut signals = Signals::catch();
    warn_if_exposed(a.listen);
    let cfg = ServerConfig {
        users: a.users as usize,
        messages: a.messages as usize,
        size: a.size as usize,
        password: a.password.into(),
    };
    let maildrop = Maildrop::new(&cfg);
    let listener =
        relay::bind(a.listen, a.backlog).map_err(|e| RunError::Usage(format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(|e| RunError::Failed(e.to_string()))?;
    eprintln!(
        "popfault: POP3 server on {addr}: users user1…user{} with {} messages each (Ctrl-C to stop)",
        a.users, a.messages
    );
    server::serve(listener, maildrop.clone(), async {
        wait_for_end(None, &mut signals).await;
    })
    .await;
    let ledger = maildrop.ledger();
    say(&format!("popfault serve: {} messages deleted by QUIT\n", ledger.len()));
    Ok(ExitCode::SUCCESS)
}
