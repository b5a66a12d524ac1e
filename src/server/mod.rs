//! The embedded RFC 1939 maildrop server: the world `demo` and `serve`
//! run, and the tests' reference server.
//!
//! What `serve`, `demo`, `audit` and the tests talk to: USER/PASS, APOP,
//! AUTH PLAIN, the TRANSACTION commands, CAPA and pipelining, with strict
//! UPDATE semantics (deletions happen only on QUIT, before its `+OK`) and a
//! [`Maildrop`] ledger recording each expunge and the session that made it.
//!
//! Layers: [`store`](Maildrop) holds the mail, `session` is the pure
//! protocol state machine, `framer` bounds input lines, and this file only
//! moves bytes between a socket and a session.

mod base64;
mod framer;
mod message;
mod session;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, debug, warn};

use framer::{Frame, LineFramer};
use session::{Next, ServerSession};

pub use store::{LedgerEntry, Maildrop, ServerConfig, StoredMessage};

/// A session idle this long is closed without UPDATE (RFC 1939 §3 asks for
/// at least 10 minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Pending output beyond this is written before more lines are handled, so
/// a long pipeline of RETRs cannot grow the buffer without bound.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Size of each socket read.
const READ_CHUNK: usize = 4096;

/// A running server, from [`spawn`]. Dropping it also stops the server.
#[derive(Debug)]
pub struct ServerHandle {
    /// The address actually bound (with the real port when 0 was asked).
    pub addr: SocketAddr,
    /// The store the server serves from; inspect it in tests.
    pub maildrop: Maildrop,
    served: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting, ends every live session (without UPDATE, as a
    /// dropped connection would) and waits until all are gone, so the
    /// ledger is final and every mailbox unlocked when this returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            warn!(error = %e, "server task ended abnormally");
        }
    }

    /// How many connections this server has accepted.
    pub fn sessions_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// Binds `addr` (use `127.0.0.1:0` in tests) and serves in a spawned task
/// until [`ServerHandle::shutdown`] or the handle is dropped.
pub async fn spawn(addr: SocketAddr, maildrop: Maildrop) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_counting(listener, maildrop.clone(), Arc::clone(&served), async {
        // A dropped handle counts as a shutdown request.
        let _ = stopped.await;
    }));
    Ok(ServerHandle { addr, maildrop, served, stop: Some(stop), task })
}

/// Serves on an existing listener until `shutdown` resolves, then ends
/// every live session (without UPDATE) and returns once they are gone.
pub async fn serve(listener: TcpListener, maildrop: Maildrop, shutdown: impl Future<Output = ()>) {
    serve_counting(listener, maildrop, Arc::new(AtomicU64::new(0)), shutdown).await;
}

async fn serve_counting(
    listener: TcpListener,
    maildrop: Maildrop,
    served: Arc<AtomicU64>,
    shutdown: impl Future<Output = ()>,
) {
    let mut sessions = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    served.fetch_add(1, Ordering::Relaxed);
                    let number = maildrop.next_session();
                    let span = tracing::debug_span!("pop3 session", session = number, %peer);
                    sessions.spawn(connection(stream, maildrop.clone(), number).instrument(span));
                }
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished sessions so the set does not grow with every connection.
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = done {
                    warn!(error = %e, "session task failed");
                }
            }
        }
    }
    // Aborting a session drops it between two awaits; an UPDATE never spans
    // an await, so it either happened entirely or not at all.
    sessions.shutdown().await;
}

/// Runs one client connection to its end and logs how it ended.
async fn connection(stream: TcpStream, maildrop: Maildrop, number: u64) {
    let _ = stream.set_nodelay(true);
    let mut session = ServerSession::new(maildrop, number, timestamp());
    match drive(stream, &mut session).await {
        Ok(end) => debug!(user = session.user(), ?end, "session ended"),
        Err(e) => debug!(user = session.user(), error = %e, "session ended by I/O error"),
    }
    // Dropping `session` here releases any mailbox lock, without UPDATE unless QUIT ran.
}

/// How a connection ended, for the log.
#[derive(Debug)]
enum End {
    Quit,
    Eof,
    Idle,
}

/// Moves bytes between the socket and the session. Responses accumulate in
/// one buffer and are written when the input buffer holds no further
/// complete line: one write per pipelined batch, and no answer waits on
/// input that has not arrived.
async fn drive(mut stream: TcpStream, session: &mut ServerSession) -> std::io::Result<End> {
    let mut out = Vec::with_capacity(READ_CHUNK);
    session.greeting(&mut out);
    let mut framer = LineFramer::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        while let Some(frame) = framer.next_frame(session.max_line()) {
            let flow = match frame {
                Frame::Line(line) => session.handle_line(&line, &mut out),
                Frame::TooLong => session.line_too_long(&mut out),
            };
            if flow == Next::Close {
                stream.write_all(&out).await?;
                // The session is over either way; a peer that already left is not an error.
                let _ = stream.shutdown().await;
                return Ok(End::Quit);
            }
            if out.len() >= WRITE_HIGH_WATER {
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut chunk)).await {
            // RFC 1939 §3: on autologout close without UPDATE and without a response.
            Err(_) => return Ok(End::Idle),
            Ok(Ok(0)) => return Ok(End::Eof),
            Ok(Ok(n)) => framer.push(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// The APOP timestamp `<pid.clock.nonce@popfault>`: unique per greeting.
fn timestamp() -> String {
    let clock = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("<{}.{}.{}@popfault>", std::process::id(), clock, rand::random::<u32>())
}
