//! A session's two connections, plain TCP or TLS (popfault's own TLS with
//! the client, or with the upstream), and what the pumps read a TLS stream
//! with. The driver never knows which: it sees the POP3 inside.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::io::Source;
use crate::tls::rustls::pki_types::ServerName;
use crate::tls::tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use crate::tls::{Leaves, Side, describe_handshake_error, rustls};

/// Longest a status line may be (RFC 2449: 512 octets with its CRLF), for
/// the lines popfault reads itself before an upstream STLS.
const MAX_LINE: usize = 512;

/// How popfault speaks to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTls {
    /// Plain POP3; a client's STLS is relayed to the server and the rest of
    /// its session relayed unread (`encrypted`), as before popfault spoke
    /// TLS.
    #[default]
    Passthrough,
    /// Plain POP3 only: popfault answers STLS with `-ERR` itself.
    None,
    /// The listener is POP3S: TLS from the first byte.
    Implicit,
    /// Plain POP3 with STLS offered and carried out by popfault.
    Stls,
}

/// How popfault speaks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamTls {
    /// Plain POP3.
    #[default]
    None,
    /// POP3S: TLS from the first byte.
    Implicit,
    /// Plain POP3 upgraded with STLS before anything is relayed.
    Stls,
}

/// The TLS part of a proxy's configuration.
#[derive(Clone)]
pub struct TlsConfig {
    /// With the client.
    pub client: ClientTls,
    /// Makes the certificates shown to clients (with `Implicit` or `Stls`).
    pub leaves: Option<Arc<Leaves>>,
    /// With the upstream.
    pub upstream: UpstreamTls,
    /// Verifies the upstream (with `Implicit` or `Stls`).
    pub connector: Option<Arc<rustls::ClientConfig>>,
    /// The name the upstream's certificate must carry (and SNI).
    pub upstream_name: Option<ServerName<'static>>,
    /// Names for the client's certificate when it sends no SNI: the
    /// upstream's host.
    pub fallback_names: Vec<String>,
    /// Longest a handshake (or an upstream STLS exchange) may take.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("client", &self.client)
            .field("upstream", &self.upstream)
            .field("upstream_name", &self.upstream_name)
            .finish_non_exhaustive()
    }
}

/// A TCP connection with bytes already read from it in front (the TLS
/// records a client sent before popfault's `+OK` to its STLS was out).
#[derive(Debug)]
pub(super) struct Wire {
    tcp: TcpStream,
    front: Vec<u8>,
}

impl AsyncRead for Wire {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.front.is_empty() {
            let n = self.front.len().min(buf.remaining());
            buf.put_slice(&self.front[..n]);
            self.front.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// One side of a session.
pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<Wire>>),
}

impl Conn {
    /// The TCP connection underneath (to reset it, or to read its state).
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.get_ref().0.tcp,
        }
    }

    /// Whether popfault speaks TLS on this side.
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// A reset: no close_notify, no FIN, when the socket is dropped.
    pub(super) fn set_zero_linger(&self) {
        let _ = self.tcp().set_zero_linger();
    }

    /// The TLS version and cipher suite, for the session's record.
    pub(super) fn tls_summary(&self) -> Option<String> {
        let Conn::Tls(t) = self else { return None };
        let (_, state) = t.get_ref();
        let version = state.protocol_version().map(|v| format!("{v:?}"))?;
        let version = version.replace("TLSv1_", "TLS 1.");
        Some(match state.negotiated_cipher_suite() {
            Some(s) => format!("{version} {:?}", s.suite()),
            None => version,
        })
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }
    /// TLS: close_notify, then FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// TLS with the client: popfault is the server. `early`: bytes the client
/// sent already (after its STLS). The certificate is made for the name the
/// client asks for, else for the upstream's host and the address it
/// reached (and `localhost` when that is a loopback address). `Err`: why not, for `ended_by`.
pub(super) async fn accept_client(tcp: TcpStream, early: Vec<u8>, cfg: &TlsConfig) -> Result<Conn, String> {
    let Some(leaves) = cfg.leaves.as_deref() else {
        return Err("no certificate authority for TLS with the client".into());
    };
    let mut names = cfg.fallback_names.clone();
    if let Ok(local) = tcp.local_addr() {
        names.push(local.ip().to_string());
        // A client that reached a loopback address by name asked for
        // `localhost` (and clients that cannot check IP addresses, such as
        // fetchmail, are told to check that name).
        if local.ip().is_loopback() {
            names.push("localhost".into());
        }
    }
    let acceptor = TlsAcceptor::from(leaves.server_config(&names));
    let accept = acceptor.accept(Wire { tcp, front: early }).into_fallible();
    match tokio::time::timeout(cfg.handshake_timeout, accept).await {
        Ok(Ok(tls)) => Ok(Conn::Tls(Box::new(TlsStream::Server(tls)))),
        // The socket is dropped: the client sees the alert rustls sent,
        // then a close.
        Ok(Err((e, _wire))) => {
            Err(format!("TLS with the client failed: {}", describe_handshake_error(&e, Side::Client)))
        }
        Err(_) => Err(format!(
            "TLS with the client timed out after {:?} (a plain POP3 client waits for a greeting: is it set up for POP3S?)",
            cfg.handshake_timeout
        )),
    }
}

/// TLS with the upstream, as configured: from the first byte (`Implicit`)
/// or after popfault's own STLS (`Stls`). Returns the connection and, for
/// `Stls`, the server's greeting, read before the upgrade: it is the first
/// thing the driver sees from the server. `Err`: why not.
pub(super) async fn upstream(tcp: TcpStream, cfg: &TlsConfig) -> Result<(Conn, Vec<u8>), String> {
    let limit = cfg.handshake_timeout;
    match tokio::time::timeout(limit, upstream_tls(tcp, cfg)).await {
        Ok(r) => r,
        Err(_) => Err(format!("TLS with the upstream timed out after {limit:?}")),
    }
}

async fn upstream_tls(mut tcp: TcpStream, cfg: &TlsConfig) -> Result<(Conn, Vec<u8>), String> {
    let mut greeting = Vec::new();
    match cfg.upstream {
        UpstreamTls::None => return Ok((Conn::Plain(tcp), greeting)),
        UpstreamTls::Implicit => {}
        UpstreamTls::Stls => {
            greeting = read_line(&mut tcp, "greeting").await?;
            if !greeting.starts_with(b"+OK") {
                // Never a plaintext session where TLS was asked for: the
                // client would send its password in clear.
                return Err(format!("upstream greeted without +OK before STLS: {}", shown(&greeting)));
            }
            tcp.write_all(b"STLS\r\n").await.map_err(|e| format!("upstream STLS failed: {e}"))?;
            let answer = read_line(&mut tcp, "answer to STLS").await?;
            if !answer.starts_with(b"+OK") {
                return Err(format!("upstream refused STLS: {}", shown(&answer)));
            }
        }
    }
    let (Some(config), Some(name)) = (cfg.connector.clone(), cfg.upstream_name.clone()) else {
        return Err("no TLS configuration for the upstream".into());
    };
    let connect = TlsConnector::from(config).connect(name, Wire { tcp, front: Vec::new() }).into_fallible();
    match connect.await {
        Ok(tls) => Ok((Conn::Tls(Box::new(TlsStream::Client(tls))), greeting)),
        Err((e, _)) => Err(format!("TLS with the upstream failed: {}", describe_handshake_error(&e, Side::Upstream))),
    }
}

/// A server's line as people are shown it: no control characters, not
/// too long.
fn shown(line: &[u8]) -> String {
    String::from_utf8_lossy(line).chars().filter(|c| !c.is_control()).take(200).collect()
}

/// One line from a server that says nothing more until answered: read a
/// byte at a time, so nothing after the line is taken from the socket.
async fn read_line(tcp: &mut TcpStream, what: &str) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        match tokio::io::AsyncReadExt::read(tcp, &mut byte).await {
            Ok(0) => return Err(format!("upstream closed before its {what} (STLS)")),
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    return Ok(line);
                }
            }
            Err(e) => return Err(format!("upstream failed before its {what} (STLS): {e}")),
        }
    }
    Err(format!("upstream's {what} is longer than {MAX_LINE} bytes (STLS)"))
}

/// What a pump reads a TLS connection (or a plain one sharing a session
/// with one) with: any `AsyncRead` made a [`Source`]. A read that finds
/// nothing is asked with a waker that does nothing; the wait then asks
/// again with the task's, keeping what it finds until the pump reads it.
pub(super) struct Polled<R> {
    inner: R,
    /// Read by a wait and not yet taken (at most one TLS record's worth).
    kept: Vec<u8>,
    eof: bool,
    failed: Option<io::Error>,
}

impl<R> Polled<R> {
    pub(super) fn new(inner: R) -> Polled<R> {
        Polled { inner, kept: Vec::new(), eof: false, failed: None }
    }

    /// What a wait read and the pump did not take.
    pub(super) fn into_kept(self) -> Vec<u8> {
        self.kept
    }
}

/// A peer that closes TCP without TLS's close_notify (many POP3 clients
/// after QUIT) has closed, not reset: rustls reports it as `UnexpectedEof`.
fn is_truncation(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
}

impl<R: AsyncRead + Unpin> Polled<R> {
    fn poll_into(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>) -> Poll<io::Result<usize>> {
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, buf) {
            Poll::Ready(Err(e)) if is_truncation(&e) => Poll::Ready(Ok(0)),
            other => other,
        }
    }
}

impl<R: AsyncRead + Unpin> Source for Polled<R> {
    fn read_draining(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if !self.kept.is_empty() {
            let n = self.kept.len();
            buf.append(&mut self.kept);
            self.kept = Vec::new();
            return Ok(n);
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.eof {
            return Ok(0);
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_into(&mut cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.kept.is_empty() || self.eof || self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        // Into the stack: a wait that finds nothing (most of them)
        // allocates nothing. The rest of a record stays in rustls for the
        // pump's next read.
        let mut stack = [0u8; 8 * 1024];
        let mut got = ReadBuf::new(&mut stack);
        match Pin::new(&mut self.inner).poll_read(cx, &mut got) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) if got.filled().is_empty() => self.eof = true,
            Poll::Ready(Ok(())) => self.kept = got.filled().to_vec(),
            Poll::Ready(Err(e)) if is_truncation(&e) => self.eof = true,
            Poll::Ready(Err(e)) => self.failed = Some(e),
        }
        Poll::Ready(Ok(()))
    }
}
