//! One session's I/O: the shell around its driver. It connects upstream,
//! runs the two pumps and the timers' wait in one task, does what the
//! driver says, and closes each side as the driver says.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::conn::{self, ClientTls, Conn, Polled, UpstreamTls};
use super::io::{Source, futures_select_all, gated, spare};
use super::{ProxyConfig, READ_MAX, READ_MIN};
use crate::control::Control;
use crate::driver::{Accept, Dir, Driver, Transmit};
use crate::events::{Event, EventSink};
use crate::faults::{How, RefuseHow, Side};

/// The longest popfault waits to close a side in order (inside TLS,
/// writing what rustls holds and close_notify) before giving up on a peer
/// that does not read.
const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a session's futures share, apart from its driver.
pub(super) struct SessionCtx {
    pub(super) cfg: Arc<ProxyConfig>,
    pub(super) sink: EventSink,
    /// The proxy is shutting down.
    pub(super) shutdown: CancellationToken,
    /// This session is being cut (a fault, a manual cut, shutdown): every
    /// wait on it ends.
    pub(super) cut: CancellationToken,
    /// `cut` as the directions see it, without the token's lock.
    pub(super) cut_seen: AtomicBool,
    /// The driver queued something for a direction (noise, the proxy's
    /// own answer): a one-shot permit taken by that direction's wait.
    pub(super) injected: [AtomicBool; 2],
    pub(super) control: Arc<Control>,
    /// Someone wants the session's transcript (a file or the dashboard).
    pub(super) transcribing: bool,
}

fn lock(driver: &Mutex<Driver>) -> MutexGuard<'_, Driver> {
    // A panic elsewhere cannot leave the driver half-updated in a way that
    // matters more than losing the session, so poisoning is ignored.
    driver.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reading side sent FIN; FIN passed on.
    Eof,
    /// The reading side reset, or writing to the other side failed.
    Reset,
    /// The session was cut (fault, manual, idle, shutdown).
    Cut,
    /// The client's STLS was answered by popfault: the handshake is next.
    StartTls,
}

/// A session's future. Not an `async fn`: those keep their arguments
/// twice (as arguments and as moved locals), and every idle session
/// carries this future whole.
pub(super) fn run_session(client: TcpStream, ctx: SessionCtx, driver: Driver) -> impl Future<Output = ()> + Send {
    let _ = client.set_nodelay(true);
    let driver = Mutex::new(driver);
    async move {
        let number = lock(&driver).number();
        let remote = ctx.control.register(number);
        let s = Shell { ctx: &ctx, driver: &driver };
        let ended_by = s.run(client, &remote).await;
        ctx.control.unregister(number);
        let mut driver = driver.into_inner().unwrap_or_else(|p| p.into_inner());
        let events = driver.finish(ended_by, Instant::now());
        if ctx.transcribing {
            hand_over(&ctx, number, driver.take_transcript());
        }
        if let Some(t) = &ctx.cfg.transcripts {
            t.end(number);
        }
        for ev in events {
            if let Event::SessionEnd(end) = &ev {
                // Plain key=value for grep and log tools: `-` for no user,
                // quotes where a value has spaces.
                info!(
                    session = end.session,
                    outcome = %end.outcome,
                    user = %end.user.as_deref().unwrap_or("-"),
                    ended_by = ?end.ended_by.to_string(),
                    "session ended"
                );
            }
            ctx.sink.emit(ev);
        }
    }
}

/// Transcript lines go to the `--transcripts` writer and to the dashboard
/// (its session view), whichever wants them.
fn hand_over(ctx: &SessionCtx, session: u64, lines: Vec<String>) {
    for line in lines {
        if ctx.sink.wants_transcripts() {
            if let Some(t) = &ctx.cfg.transcripts {
                t.line(session, line.clone());
            }
            ctx.sink.emit(Event::Transcript { session, line });
        } else if let Some(t) = &ctx.cfg.transcripts {
            t.line(session, line);
        }
    }
}

/// One session's I/O: the thin shell around its [`Driver`].
#[derive(Clone, Copy)]
struct Shell<'a> {
    ctx: &'a SessionCtx,
    driver: &'a Mutex<Driver>,
}

impl Shell<'_> {
    /// Cuts the session: every wait on it ends.
    fn cut_now(&self) {
        self.ctx.cut_seen.store(true, Ordering::Release);
        self.ctx.cut.cancel();
    }

    fn is_cut(&self) -> bool {
        self.ctx.cut_seen.load(Ordering::Acquire)
    }

    fn paused(&self) -> bool {
        self.ctx.control.paused()
    }

    /// After the driver was told something: its events go out, a stop
    /// ends every wait, and output it queued for a direction is that
    /// direction's to take. Returns whether the task must be polled again.
    fn sync(&self, d: &mut Driver) -> bool {
        if self.ctx.transcribing {
            hand_over(self.ctx, d.number(), d.take_transcript());
        }
        if d.has_events() {
            for ev in d.take_events() {
                if let Event::Fault { session, rule, action, point } = &ev {
                    info!(session, rule = %rule, point = %point, actions = %action, "fault");
                }
                self.ctx.sink.emit(ev);
            }
        }
        if d.is_stopped() && !self.is_cut() {
            self.cut_now();
        }
        if d.take_wake() {
            for permit in &self.ctx.injected {
                permit.store(true, Ordering::Release);
            }
            return true;
        }
        false
    }

    /// Has the session's task polled again, so that each direction's wait
    /// sees what was queued for it.
    async fn wake_task(&self) {
        std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::Ready(())
        })
        .await
    }

    /// Returns `ended_by` when the shell knows better than the driver (a
    /// refusal, a failed connect, a failed handshake).
    async fn run(self, client: TcpStream, remote: &Notify) -> Option<String> {
        // === accept ===
        let accept = {
            let mut d = lock(self.driver);
            d.set_paused(self.paused());
            let a = d.accept(Instant::now());
            self.sync(&mut d);
            a
        };
        let mut client = Conn::Plain(client);
        match accept {
            Accept::Connect => {}
            Accept::Refuse { how, text, rule } => {
                // A POP3S client reads the -ERR inside TLS.
                if how == RefuseHow::Err && self.client_tls() == ClientTls::Implicit {
                    client = match self.client_handshake(client, Vec::new()).await {
                        Ok(c) => c,
                        Err(why) => return Some(why),
                    };
                }
                return Some(Box::pin(self.refuse(&mut client, how, &text, &rule, remote)).await);
            }
            Accept::Cut => {
                Box::pin(self.finish_cut(&mut client, None, remote)).await;
                return None;
            }
        }
        // A stall at accept holds the connect (and any handshake) too.
        let hold = lock(self.driver).hold_until();
        if let Some(h) = hold {
            tokio::select! {
                _ = tokio::time::sleep_until(h.into()) => {}
                _ = self.ctx.cut.cancelled() => {}
            }
        }
        if self.client_tls() == ClientTls::Implicit {
            client = match self.client_handshake(client, Vec::new()).await {
                Ok(c) => c,
                Err(why) => {
                    lock(self.driver).refused();
                    return Some(why);
                }
            };
        }
        let (mut server, greeting) = match Box::pin(self.open_upstream(&mut client)).await {
            Ok(up) => up,
            Err(why) => return Some(why),
        };

        // === relay ===
        // What each direction read and has not yet done with; kept across
        // a handshake with the client (STLS).
        let mut input = [Vec::new(), greeting];
        if !input[1].is_empty() {
            lock(self.driver).read(Dir::Down, input[1].len(), Instant::now());
        }
        let (up, down) = loop {
            let ends = self.relay(&mut client, &mut server, &mut input, remote).await;
            if ends != (End::StartTls, End::StartTls) {
                break ends;
            }
            let early = std::mem::take(&mut input[0]);
            client = match self.client_handshake(client, early).await {
                Ok(c) => c,
                Err(why) => return Some(why),
            };
            lock(self.driver).tls_started(Instant::now());
        };
        for buf in input {
            spare::give(buf);
        }
        if self.ctx.shutdown.is_cancelled() {
            lock(self.driver).shutdown();
        }

        if lock(self.driver).close().is_some() {
            Box::pin(self.finish_cut(&mut client, Some(&mut server), remote)).await;
            return None;
        }
        if up == End::Reset || down == End::Reset || self.ctx.shutdown.is_cancelled() {
            // A reset on one side becomes a reset on the other; a session
            // cut at shutdown is reset both ways, like a lost carrier.
            client.set_zero_linger();
            server.set_zero_linger();
        } else {
            // Ended by a timeout or a close: a TLS peer gets close_notify,
            // the clean end a plain one gets from the FIN.
            if client.is_tls() || server.is_tls() {
                Box::pin(self.close_tls(&mut client, &mut server)).await;
            }
        }
        None
    }

    /// Connects upstream, with TLS as configured. Returns the connection
    /// and, after an upstream STLS, the greeting read before it. `Err`: the
    /// session is refused, why. Boxed by the caller: connecting is a one-off
    /// and every idle session would carry its state.
    async fn open_upstream(&self, client: &mut Conn) -> Result<(Conn, Vec<u8>), String> {
        let server = match self.connect_upstream().await {
            Err(why) => return Err(self.upstream_failed(client, why).await),
            Ok(s) => s,
        };
        let _ = server.set_nodelay(true);
        let Some(t) = self.ctx.cfg.tls.as_deref().filter(|t| t.upstream != UpstreamTls::None) else {
            return Ok((Conn::Plain(server), Vec::new()));
        };
        let up = tokio::select! {
            r = conn::upstream(server, t) => r,
            _ = self.ctx.cut.cancelled() => Err("cut during TLS with the upstream".into()),
        };
        match up {
            Ok(c) => {
                self.tls_up(Side::Server, &c.0);
                Ok(c)
            }
            Err(why) => Err(self.upstream_failed(client, why).await),
        }
    }

    /// The upstream could not be reached, or its TLS set up: the session is
    /// refused, and the client sees what it would from a dead server (a
    /// reset when it refused; else a close, inside TLS with close_notify).
    async fn upstream_failed(&self, client: &mut Conn, why: String) -> String {
        lock(self.driver).refused();
        if why.starts_with("refused") {
            client.set_zero_linger();
        } else if client.is_tls() {
            self.close_write(client, false).await;
        }
        why
    }

    /// Closes each TLS side in order (see `close_write`).
    async fn close_tls(&self, client: &mut Conn, server: &mut Conn) {
        for c in [client, server] {
            if c.is_tls() {
                self.close_write(c, false).await;
            }
        }
    }

    /// Closes `to` for writing (inside TLS: close_notify, then FIN) without
    /// waiting on a peer that does not read: at most `CLOSE_LIMIT`, not past
    /// shutdown and, with `until_cut`, not past a cut. A plain socket closes
    /// at once. Whether it closed.
    async fn close_write<W: AsyncWrite + Unpin>(&self, to: &mut W, until_cut: bool) -> bool {
        let closed = async { matches!(tokio::time::timeout(CLOSE_LIMIT, to.shutdown()).await, Ok(Ok(()))) };
        tokio::select! {
            ok = closed => ok,
            _ = self.ctx.shutdown.cancelled() => false,
            _ = self.ctx.cut.cancelled(), if until_cut => false,
        }
    }

    fn client_tls(&self) -> ClientTls {
        self.ctx.cfg.tls.as_deref().map_or(ClientTls::Passthrough, |t| t.client)
    }

    /// TLS with the client, unless the session is cut meanwhile. `Err`:
    /// why not (the session's `ended_by`).
    async fn client_handshake(&self, client: Conn, early: Vec<u8>) -> Result<Conn, String> {
        let Conn::Plain(tcp) = client else { return Ok(client) };
        let Some(tls) = self.ctx.cfg.tls.as_deref() else { return Ok(Conn::Plain(tcp)) };
        let c = tokio::select! {
            r = Box::pin(conn::accept_client(tcp, early, tls)) => r?,
            _ = self.ctx.cut.cancelled() => return Err("cut during TLS with the client".into()),
        };
        self.tls_up(Side::Client, &c);
        Ok(c)
    }

    fn tls_up(&self, side: Side, c: &Conn) {
        if let Some(what) = c.tls_summary() {
            lock(self.driver).tls_up(side, &what, Instant::now());
        }
    }

    /// One relaying phase: both pumps until both end, with the timers'
    /// wait beside them. Plain TCP both ways has its own, leaner path.
    async fn relay(
        &self,
        client: &mut Conn,
        server: &mut Conn,
        input: &mut [Vec<u8>; 2],
        remote: &Notify,
    ) -> (End, End) {
        let [up_in, down_in] = input;
        match (client, server) {
            (Conn::Plain(c), Conn::Plain(s)) => {
                let (mut cr, mut cw) = c.split();
                let (mut sr, mut sw) = s.split();
                let pumps = std::pin::pin!(async {
                    tokio::join!(
                        self.pump(Dir::Up, &mut cr, &mut sw, up_in),
                        self.pump(Dir::Down, &mut sr, &mut cw, down_in)
                    )
                });
                self.with_timers(pumps, remote).await
            }
            // Boxed: rarer, and every idle plain session carries its state.
            (c, s) => {
                Box::pin(async {
                    let (cr, mut cw) = tokio::io::split(c);
                    let (sr, mut sw) = tokio::io::split(s);
                    let (mut cr, mut sr) = (Polled::new(cr), Polled::new(sr));
                    let ends = {
                        let pumps = std::pin::pin!(async {
                            tokio::join!(
                                self.pump(Dir::Up, &mut cr, &mut sw, up_in),
                                self.pump(Dir::Down, &mut sr, &mut cw, down_in)
                            )
                        });
                        self.with_timers(pumps, remote).await
                    };
                    // Read by a wait, not yet by its pump: still input.
                    for (dir, src, buf) in [(Dir::Up, cr, up_in), (Dir::Down, sr, down_in)] {
                        let kept = src.into_kept();
                        if !kept.is_empty() {
                            buf.extend_from_slice(&kept);
                            lock(self.driver).read(dir, kept.len(), Instant::now());
                        }
                    }
                    ends
                })
                .await
            }
        }
    }

    /// Runs `pumps` with the timers' wait beside them. Timers end only by
    /// cutting the session, which ends the pumps too; when the pumps end
    /// first, the timers are dropped.
    /// Takes the pumps pinned by the caller: an `async fn` keeps a future
    /// argument twice (argument and local), and every idle session carries
    /// this state.
    async fn with_timers<F: Future<Output = (End, End)>>(&self, mut pumps: Pin<&mut F>, remote: &Notify) -> (End, End) {
        tokio::select! {
            ends = &mut pumps => ends,
            () = gated(self.timers_and_cuts(remote)) => {
                self.ctx.cut_seen.store(true, Ordering::Release);
                pumps.await
            }
        }
    }

    /// Carries out a cut: rst / fin / silent per side, as the driver says.
    /// Silent sides are held open, read and ignored, until they close, the
    /// idle timeout, or shutdown.
    /// Inside TLS, `fin` sends close_notify before the FIN; `rst` sends
    /// neither.
    async fn finish_cut(&self, client: &mut Conn, server: Option<&mut Conn>, remote: &Notify) {
        let Some((for_client, for_server)) = lock(self.driver).close() else {
            client.set_zero_linger();
            return;
        };
        let mut silent: Vec<&mut Conn> = Vec::new();
        for (how, stream) in [(for_client, Some(client)), (for_server, server)] {
            let Some(stream) = stream else { continue };
            match how {
                How::Rst => stream.set_zero_linger(),
                How::Fin => {
                    if !Box::pin(self.close_write(&mut *stream, false)).await {
                        stream.set_zero_linger();
                    }
                }
                How::Silent => silent.push(stream),
            }
        }
        if !silent.is_empty() {
            self.hold_silent(silent, remote).await;
        }
    }

    /// Keeps `streams` open and unanswered (the half-open line) until a
    /// peer closes, the idle timeout passes, or the proxy shuts down.
    async fn hold_silent(&self, mut streams: Vec<&mut Conn>, remote: &Notify) {
        let idle = self.ctx.cfg.idle_timeout;
        let drain = async {
            let mut futs = Vec::new();
            for s in streams.iter_mut() {
                futs.push(async move {
                    let mut sink = [0u8; 4096];
                    // Read and drop: bounded memory whatever the peer sends.
                    while let Ok(n) = tokio::time::timeout(idle, s.read(&mut sink)).await {
                        if matches!(n, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                });
            }
            // The first side to close (or go idle) ends the hold.
            let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
            if !futs.is_empty() {
                let _ = futures_select_all(&mut futs).await;
            }
        };
        let by_hand = tokio::select! {
            _ = drain => false,
            _ = self.ctx.shutdown.cancelled() => false,
            // A person cuts a held line (`k`, the API's cut): a lost
            // carrier now.
            _ = remote.notified() => true,
        };
        if by_hand {
            lock(self.driver).cut_held(Instant::now());
            for s in streams {
                s.set_zero_linger();
            }
            return;
        }
        // The hold is over: the line closes as with a FIN (inside TLS,
        // close_notify first, so a client sees the same clean end).
        for s in streams {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.shutdown()).await;
        }
    }

    async fn refuse(&self, client: &mut Conn, how: RefuseHow, text: &str, rule: &str, remote: &Notify) -> String {
        match how {
            RefuseHow::Rst => client.set_zero_linger(),
            RefuseHow::Close => {
                let _ = client.shutdown().await;
            }
            RefuseHow::Err => {
                let mut line = text.as_bytes().to_vec();
                line.extend_from_slice(b"\r\n");
                let _ = tokio::time::timeout(CLOSE_LIMIT, async {
                    let _ = client.write_all(&line).await;
                    client.flush().await
                })
                .await;
                Box::pin(self.close_write(&mut *client, false)).await;
                lock(self.driver).refused_with(line.len());
            }
            RefuseHow::Hang => self.hold_silent(vec![client], remote).await,
        }
        format!("refused by fault: {rule}")
    }

    async fn connect_upstream(&self) -> Result<TcpStream, String> {
        let upstream = self.ctx.cfg.upstream.as_str();
        let connect = async {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for addr in tokio::net::lookup_host(upstream).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let limit = self.ctx.cfg.connect_timeout;
        tokio::select! {
            _ = self.ctx.cut.cancelled() => Err("upstream connect cancelled".into()),
            r = tokio::time::timeout(limit, connect) => match r {
                Err(_) => Err(format!("upstream connect timed out after {limit:?}")),
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(format!("refused by upstream: {e}")),
                Ok(Err(e)) => Err(format!("upstream unreachable: {e}")),
                Ok(Ok(s)) => Ok(s),
            }
        }
    }

    /// Timer faults, manual cuts and the idle and greeting timeouts: the
    /// driver says when; this waits and tells it.
    async fn timers_and_cuts(&self, remote: &Notify) {
        loop {
            let at = lock(self.driver).poll_timeout();
            tokio::select! {
                _ = self.ctx.cut.cancelled() => return,
                _ = remote.notified() => {
                    let mut d = lock(self.driver);
                    d.cut_manual(Instant::now());
                    self.sync(&mut d);
                    return;
                }
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            let (stopped, wake) = {
                let mut d = lock(self.driver);
                d.set_paused(self.paused());
                d.handle_timeout(Instant::now());
                (d.is_stopped(), self.sync(&mut d))
            };
            if stopped {
                return;
            }
            if wake {
                self.wake_task().await;
            }
        }
    }

    /// Moves one direction until EOF, reset or a cut, doing what the
    /// driver says. Holds at most one read's worth of bytes, released when
    /// idle so an idle session costs no buffer.
    async fn pump<R: Source, W: AsyncWrite + Unpin>(
        &self,
        dir: Dir,
        from: &mut R,
        to: &mut W,
        buf: &mut Vec<u8>,
    ) -> End {
        let mut want = READ_MIN;
        let end = loop {
            let (t, wake) = {
                let mut d = lock(self.driver);
                d.set_paused(self.paused());
                let t = d.poll_transmit(dir, buf, Instant::now());
                (t, self.sync(&mut d))
            };
            if wake {
                self.wake_task().await;
            }
            match t {
                // Writes are boxed: an idle session should not carry a
                // write's state (RSS per session).
                Transmit::Write(range) => {
                    if let Err(e) = Box::pin(self.write(dir, to, &buf[range.clone()])).await {
                        break e;
                    }
                    self.written(dir, buf, range.len());
                }
                Transmit::Own(bytes) => {
                    if let Err(e) = Box::pin(self.write(dir, to, &bytes)).await {
                        break e;
                    }
                    self.written(dir, buf, bytes.len());
                }
                Transmit::Wait(at) => {
                    // Boxed: pacing and stalls are rare, and a sleep is big.
                    let cut = Box::pin(async {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at.into()) => false,
                            _ = self.ctx.cut.cancelled() => true,
                        }
                    })
                    .await;
                    if cut {
                        self.ctx.cut_seen.store(true, Ordering::Release);
                        break End::Cut;
                    }
                }
                Transmit::Consumed(n) => {
                    buf.drain(..n);
                }
                Transmit::Eof => {
                    // Boxed: rare, and a timeout's state is big.
                    Box::pin(self.close_write(to, true)).await;
                    break End::Eof;
                }
                Transmit::Stop => break End::Cut,
                Transmit::StartTls => break End::StartTls,
                Transmit::NeedMore => {
                    if self.is_cut() {
                        // Cut from outside (shutdown): the driver learns it
                        // when the session ends.
                        break End::Cut;
                    }
                    // Read first, wait only when there is nothing: a stream
                    // in full flow never builds the wait machinery below.
                    if buf.capacity() == 0 {
                        *buf = spare::take();
                    }
                    buf.reserve(want);
                    let room = buf.capacity() - buf.len();
                    match from.read_draining(buf) {
                        Ok(n) => {
                            lock(self.driver).read(dir, n, Instant::now());
                            want = if n >= room { (want * 2).min(READ_MAX) } else { (want / 2).max(READ_MIN) };
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if buf.is_empty() {
                                // Idle: hold no buffer while waiting, nor
                                // queues that are empty.
                                spare::give(std::mem::take(buf));
                                lock(self.driver).shed();
                            }
                            if let Err(end) = self.wait(dir, from).await {
                                break end;
                            }
                        }
                        Err(e) => {
                            debug!(session = self.number(), ?dir, error = %e, "read failed");
                            let mut d = lock(self.driver);
                            d.read_failed(dir);
                            self.sync(&mut d);
                            break End::Reset;
                        }
                    }
                }
            }
        };
        if buf.is_empty() {
            spare::give(std::mem::take(buf));
        }
        end
    }

    fn number(&self) -> u64 {
        lock(self.driver).number()
    }

    /// A write the driver asked for is done.
    fn written(&self, dir: Dir, input: &[u8], n: usize) {
        self.ctx.control.count(dir == Dir::Up, n);
        let mut d = lock(self.driver);
        d.written(dir, input, Instant::now());
        self.sync(&mut d);
    }

    /// Waits until `from` is readable, something is queued toward `dir`,
    /// or the session is cut. Holds no waiter of its own but the socket's:
    /// every future of a session shares its task, which any of them waking
    /// re-polls whole (`join!`, `select!`), and a cut always wakes the
    /// timers' wait on the cut token. This keeps an idle session small.
    async fn wait<R: Source>(&self, dir: Dir, from: &mut R) -> Result<(), End> {
        std::future::poll_fn(|cx| {
            if self.is_cut() {
                return Poll::Ready(Err(End::Cut));
            }
            if self.ctx.injected[dir as usize].swap(false, Ordering::AcqRel) {
                return Poll::Ready(Ok(()));
            }
            match from.poll_ready(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => {
                    debug!(?dir, error = %e, "wait failed");
                    let mut d = lock(self.driver);
                    d.read_failed(dir);
                    self.sync(&mut d);
                    Poll::Ready(Err(End::Reset))
                }
            }
        })
        .await
    }

    /// Writes `bytes` toward `dir`'s destination, unless the session is cut.
    async fn write<W: AsyncWrite + Unpin>(&self, dir: Dir, to: &mut W, bytes: &[u8]) -> Result<(), End> {
        // Once cut, nothing more goes out. The flag is checked first, and the
        // token only while a write waits: polling the token takes its locks.
        if self.is_cut() {
            return Err(End::Cut);
        }
        tokio::select! {
            biased;
            r = async { to.write_all(bytes).await?; to.flush().await } => r.map_err(|e| {
                debug!(?dir, error = %e, "write failed");
                let mut d = lock(self.driver);
                d.write_failed(dir);
                self.sync(&mut d);
                End::Reset
            }),
            _ = self.ctx.cut.cancelled() => {
                self.ctx.cut_seen.store(true, Ordering::Release);
                Err(End::Cut)
            }
        }
    }
}
