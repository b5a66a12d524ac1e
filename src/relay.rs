//! The relay: all of popfault's network I/O. It accepts clients, connects
//! upstream, and moves bytes both ways through the pure codec, tracker and
//! fault engine. The engine decides; [`Session::act`] is the one place that
//! carries decisions out, and [`Session::deliver`] the one place that
//! writes relayed bytes, so a fault lands at the exact byte.
//!
//! One task per session. Its two directions are two futures joined in that
//! task with a third that runs timers and manual cuts; they share the pure
//! state under a mutex that is never held across an `.await`. A direction
//! holds only bytes it has read and not yet written: at most one read's
//! worth, or one incomplete line (bounded by RFC 2449's limits).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::codec::framer::NextServerLine;
use crate::codec::status::announced_size;
use crate::codec::{ClientEvent, Command, Pop3Codec, ServerEvent, Status, Step};
use crate::control::Control;
use crate::events::{Event, EventSink, SessionEnd, SessionSnapshot};
use crate::faults::engine::{jittered, rng_for};
use crate::faults::{
    Action, BodyCut, BodyLine, Corrupt, Decision, Delay, Disconnect, Engine, Facts, How, LineSoFar, Noise, Point,
    Refuse, RefuseHow, Reply, Side, Stall, Throttle,
};
use crate::session::Tracker;

/// Bytes asked of the kernel per read, growing while reads come back full
/// (a bulk transfer). The least is enough for a typical answer (a message
/// of a few KB, a UIDL listing) to come in one read and go out in one
/// write: with 2 KiB, a 10 KB message took three of each. Idle sessions
/// hold no buffer whatever the size (see `spare`).
const READ_MIN: usize = 16 * 1024;
const READ_MAX: usize = 64 * 1024;

/// Latency samples a session sends at once (and the rest when it ends).
const LATENCY_BATCH: usize = 16;

/// A latency sample waiting to be sent: kept inline (no allocation) since
/// an idle session holds its last few.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seq: u64,
    micros: u64,
    /// The command keyword (at most 16 bytes, see `codec::command`).
    name: [u8; 16],
    len: u8,
}

impl Sample {
    fn new(seq: u64, name: &str, micros: u64) -> Sample {
        let mut buf = [0u8; 16];
        let n = name.len().min(16);
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        Sample { seq, micros, name: buf, len: n as u8 }
    }

    fn event(&self, session: u64) -> Event {
        let command = String::from_utf8_lossy(&self.name[..self.len as usize]).into_owned();
        Event::Latency { session, seq: self.seq, command, micros: self.micros }
    }
}

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The real server, `host:port`; resolved at each connect.
    pub upstream: String,
    /// Give up connecting upstream after this long (outcome `refused`).
    pub connect_timeout: Duration,
    /// Cut a session after this long without a byte either way.
    pub idle_timeout: Duration,
    /// Give up on an upstream that accepted but has not greeted after this
    /// long (outcome `refused`).
    pub greeting_timeout: Duration,
    /// Most sessions at once; more clients are told `-ERR [SYS/TEMP]` and
    /// closed.
    pub max_sessions: usize,
}

impl ProxyConfig {
    /// A proxy from `listen` to `upstream` with default timeouts.
    pub fn new(listen: SocketAddr, upstream: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            listen,
            upstream: upstream.into(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            greeting_timeout: Duration::from_secs(30),
            max_sessions: 10_000,
        }
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    /// The address it listens on (the real port when asked for port 0).
    pub local_addr: SocketAddr,
    /// Its live controls.
    pub control: Arc<Control>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    live: watch::Receiver<usize>,
}

impl ProxyHandle {
    /// Stops accepting, cuts live sessions (recording their outcomes) and
    /// waits for every session to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stops accepting and waits up to `drain` for live sessions to end on
    /// their own, then cuts the rest.
    pub async fn drain(mut self, drain: Duration) {
        let _ = tokio::time::timeout(drain, self.live.wait_for(|n| *n == 0)).await;
        self.shutdown().await;
    }

    /// Sessions in progress.
    pub fn live_sessions(&self) -> usize {
        *self.live.borrow()
    }
}

/// Binds `cfg.listen` and relays every client to `cfg.upstream`, with the
/// faults of `control`'s profile.
pub async fn start(cfg: ProxyConfig, control: Arc<Control>, sink: EventSink) -> io::Result<ProxyHandle> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let (live_tx, live) = watch::channel(0usize);
    let task = tokio::spawn(accept_loop(listener, Arc::new(cfg), control.clone(), sink, stop.clone(), live_tx));
    Ok(ProxyHandle { local_addr, control, stop, task, live })
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ProxyConfig>,
    control: Arc<Control>,
    sink: EventSink,
    stop: CancellationToken,
    live: watch::Sender<usize>,
) {
    let started = Instant::now();
    let counter = AtomicU64::new(0);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {
                live.send_replace(sessions.len());
                continue;
            }
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, peer)) if sessions.len() >= cfg.max_sessions => {
                // Over the limit: say so, as a busy POP3 server would, and
                // close. Not a session: nothing is counted.
                warn!(%peer, limit = cfg.max_sessions, "too many sessions; turning a client away");
                tokio::spawn(async move {
                    let mut client = client;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.write_all(b"-ERR [SYS/TEMP] too many sessions\r\n"),
                    )
                    .await;
                    let _ = client.shutdown().await;
                });
            }
            Ok((client, peer)) => {
                let number = counter.fetch_add(1, Ordering::Relaxed) + 1;
                let profile = control.profile();
                let ctx = SessionCtx {
                    number,
                    peer,
                    cfg: cfg.clone(),
                    sink: sink.clone(),
                    shutdown: stop.clone(),
                    cut: stop.child_token(),
                    cut_seen: AtomicBool::new(false),
                    injected: [AtomicBool::new(false), AtomicBool::new(false)],
                    control: control.clone(),
                    run_started: started,
                    started: Instant::now(),
                    engine_seed: control.seed(),
                };
                let engine = Engine::new(profile, ctx.engine_seed, number);
                sessions.spawn(run_session(client, ctx, engine));
                live.send_replace(sessions.len());
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {
        live.send_replace(sessions.len());
    }
    live.send_replace(0);
}

/// What a session knows that does not change.
struct SessionCtx {
    number: u64,
    peer: SocketAddr,
    cfg: Arc<ProxyConfig>,
    sink: EventSink,
    /// The proxy is shutting down.
    shutdown: CancellationToken,
    /// This session is being cut (a fault, a manual cut, shutdown).
    cut: CancellationToken,
    /// `cut` as the directions see it, without the token's lock: set with
    /// every cut the session makes, and by the relay when the timers see
    /// a cut from outside (shutdown) — which always ends their wait.
    cut_seen: AtomicBool,
    /// A direction has something newly injected to write (noise, the
    /// proxy's own answer): a one-shot permit, as `Notify` gives, taken by
    /// that direction's wait.
    injected: [AtomicBool; 2],
    control: Arc<Control>,
    run_started: Instant,
    started: Instant,
    engine_seed: u64,
}

/// Which way bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client → server.
    Up = 0,
    /// Server → client.
    Down = 1,
}

impl Dir {
    fn toward(side: Side) -> Dir {
        if side == Side::Server { Dir::Up } else { Dir::Down }
    }

    /// The side bytes going this way come from.
    fn source(self) -> Side {
        if self == Dir::Up { Side::Client } else { Side::Server }
    }

    /// The side bytes going this way are written to.
    fn destination(self) -> Side {
        if self == Dir::Up { Side::Server } else { Side::Client }
    }
}

/// The pure state of one session plus the fault effects in force, shared
/// by its directions.
struct Core {
    codec: Pop3Codec,
    tracker: Tracker,
    engine: Engine,
    /// Rule names that fired, in order.
    faults: Vec<String>,
    /// When each unanswered command was forwarded, oldest first.
    inflight: VecDeque<(u64, Instant)>,
    /// The multi-line response being delivered: (seq, command).
    answering: Option<(u64, Command)>,
    /// Fault effects in force; boxed, made when a fault first needs it
    /// (most sessions of most profiles never do, and every session's
    /// state counts).
    fx: Option<Box<Effects>>,
    /// Draws for fault effects, in the order they happen.
    rng: SmallRng,
    /// How the session was cut, if a fault or a person cut it.
    cut: Option<(Side, How, String)>,
    last_activity: Instant,
    /// The idle timeout ended the session.
    idle: bool,
    /// The upstream never greeted in time.
    no_greeting: bool,
    /// The first end a peer made, as observed: its side, and whether it
    /// reset (or closed in order).
    first_end: Option<(Side, bool)>,
    /// Latency samples not yet sent (see [`LATENCY_BATCH`]).
    latencies: Vec<Sample>,
}

/// The effects of faults that outlast the decision that made them.
#[derive(Default)]
struct Effects {
    /// Cuts planned in the body being delivered.
    body_cuts: VecDeque<BodyCut>,
    /// Answers the proxy makes itself (`reply`), in command order.
    replies: VecDeque<Vec<u8>>,
    /// Bytes to inject, per direction (line noise).
    inject: [Vec<u8>; 2],
    /// Flip a bit in each of this many next bytes, per direction.
    corrupt: [usize; 2],
    /// Nothing is written before this instant (stall).
    hold_until: Option<Instant>,
    /// Line speed in bytes per second (throttle).
    rate: Option<u64>,
    /// Added before each response: (ms, jitter ms).
    delay: Option<(u64, u64)>,
    /// A `truncate` step ran at the body cut being carried out.
    truncate: bool,
    /// Where the body delivered so far stands in its line (while cuts are
    /// planned in it): what a `truncate` must send to end it.
    body_line: BodyLine,
    /// A `truncate` ended the body for the client: the server's rest of it
    /// is read and dropped up to its real end.
    discard_body: bool,
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic elsewhere cannot leave Core half-updated in a way that
    // matters more than losing the session, so poisoning is ignored.
    core.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    fn facts(&self, ctx: &SessionCtx, seq: u64) -> Facts {
        Facts {
            state: self.tracker.state(),
            retrieved: self.tracker.downloads(),
            deleted: self.tracker.marked() as u64,
            run_elapsed: ctx.run_started.elapsed(),
            seq,
        }
    }

    /// The fault effects, made on first use.
    fn fx(&mut self) -> &mut Effects {
        self.fx.get_or_insert_default()
    }

    /// Frees empty queues' memory before a direction waits.
    fn shed(&mut self) {
        self.codec.shed();
        if self.inflight.is_empty() {
            self.inflight = VecDeque::new();
        }
    }

    /// Microseconds since `seq` was forwarded, once its response is
    /// delivered in full.
    fn answered(&mut self, seq: u64, now: Instant) -> Option<u64> {
        while let Some(&(s, at)) = self.inflight.front() {
            if s > seq {
                return None;
            }
            self.inflight.pop_front();
            if s == seq {
                return Some(now.duration_since(at).as_micros() as u64);
            }
        }
        None
    }
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
}

/// What to do with the bytes of the event that triggered decisions.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Relay them.
    Go,
    /// The session is being cut: relay nothing more.
    Stop,
    /// Do not forward the command (`swallow`).
    Swallow,
    /// Answer the command with this line instead of forwarding it.
    Reply(Vec<u8>),
}

/// A session's future. Not an `async fn`: those keep their arguments
/// twice (as arguments and as moved locals), and every idle session
/// carries this future whole.
fn run_session(mut client: TcpStream, ctx: SessionCtx, engine: Engine) -> impl Future<Output = ()> + Send {
    let _ = client.set_nodelay(true);
    ctx.sink.emit(Event::SessionStart {
        session: ctx.number,
        client: ctx.peer,
        upstream: ctx.cfg.upstream.clone(),
        profile: engine.profile().name.clone(),
    });
    let rng = rng_for(ctx.engine_seed, ctx.number, usize::MAX, 0);
    let core = Mutex::new(Core {
        codec: Pop3Codec::new(),
        tracker: Tracker::new(),
        engine,
        faults: Vec::new(),
        inflight: VecDeque::new(),
        answering: None,
        fx: None,
        rng,
        cut: None,
        last_activity: Instant::now(),
        idle: false,
        no_greeting: false,
        first_end: None,
        latencies: Vec::new(),
    });
    async move {
        let remote = ctx.control.register(ctx.number);
        let s = Session { ctx: &ctx, core: &core };
        let ended_by = s.run(&mut client, &remote).await;
        ctx.control.unregister(ctx.number);

        let mut core = core.into_inner().unwrap_or_else(|p| p.into_inner());
        let fingerprints = core.tracker.take_fingerprints();
        let faults = std::mem::take(&mut core.faults);
        let t = &core.tracker;
        let end = SessionEnd {
            session: ctx.number,
            client: ctx.peer,
            upstream: ctx.cfg.upstream.clone(),
            user: t.user().map(str::to_owned),
            outcome: t.outcome(),
            state: t.state(),
            downloaded: t.downloads(),
            marked: t.marked(),
            at_risk: t.at_risk(),
            duplicates: 0,
            bytes_up: t.bytes_up(),
            bytes_down: t.bytes_down(),
            duration_ms: ctx.started.elapsed().as_millis() as u64,
            faults,
            encrypted: t.encrypted(),
            violations: t.violations(),
            profile: core.engine.profile().name.clone(),
            fingerprints,
            ended_by,
        };
        info!(session = end.session, outcome = %end.outcome, user = ?end.user, ended_by = %end.ended_by, "session ended");
        for sample in core.latencies {
            ctx.sink.emit(sample.event(ctx.number));
        }
        ctx.sink.emit(Event::SessionEnd(Box::new(end)));
    }
}

/// One session's I/O, borrowing its context and core.
#[derive(Clone, Copy)]
struct Session<'a> {
    ctx: &'a SessionCtx,
    core: &'a Mutex<Core>,
}

impl Session<'_> {
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

    /// Notes that `side` ended its connection (reset or FIN), unless a
    /// peer's end was seen already: what follows a first end (a write
    /// failing toward a client that closed) is its consequence.
    fn ended(&self, side: Side, reset: bool) {
        let mut c = lock(self.core);
        if c.first_end.is_none() {
            c.first_end = Some((side, reset));
        }
    }

    async fn run(self, client: &mut TcpStream, remote: &Notify) -> String {
        // === accept ===
        if !self.paused() {
            let decisions = {
                let mut c = lock(self.core);
                let facts = Facts::at_accept(self.ctx.run_started.elapsed());
                c.engine.decide(&Point::Accept, &facts)
            };
            for d in &decisions {
                self.record(d);
                for a in &d.actions {
                    if let Action::Refuse(Refuse { how, text }) = a {
                        lock(self.core).tracker.set_refused();
                        return Box::pin(self.refuse(client, *how, text, &d.rule)).await;
                    }
                }
            }
            for d in decisions {
                if Box::pin(self.act(d, Dir::Up)).await == Flow::Stop {
                    lock(self.core).tracker.set_refused();
                    return Box::pin(self.finish_cut(client, None)).await;
                }
            }
        }
        let mut server = match self.connect_upstream().await {
            Err(why) => {
                lock(self.core).tracker.set_refused();
                // Mirror what a client sees from a dead server: a reset when
                // it refused, a close when it never answered.
                if why.starts_with("refused") {
                    let _ = client.set_zero_linger();
                }
                return why;
            }
            Ok(s) => s,
        };
        let _ = server.set_nodelay(true);

        // === relay ===
        let (up, down) = {
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let mut pumps = std::pin::pin!(async {
                tokio::join!(self.pump(Dir::Up, &mut cr, &mut sw), self.pump(Dir::Down, &mut sr, &mut cw))
            });
            // Timers end only by cutting the session, which ends the pumps
            // too; when the pumps end first, the timers are dropped.
            tokio::select! {
                ends = &mut pumps => ends,
                () = gated(self.timers_and_cuts(remote)) => {
                    self.ctx.cut_seen.store(true, Ordering::Release);
                    pumps.await
                }
            }
        };

        let (faulted, idle, no_greeting, first_end) = {
            let c = lock(self.core);
            (c.cut.is_some(), c.idle, c.no_greeting, c.first_end)
        };
        if faulted {
            return Box::pin(self.finish_cut(client, Some(&mut server))).await;
        }
        if up == End::Reset || down == End::Reset || self.ctx.shutdown.is_cancelled() {
            // A reset on one side becomes a reset on the other; a session
            // cut at shutdown is reset both ways, like a lost carrier.
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        // Who ended it, as first observed: a client that resets midway is
        // not "reset by server" because the write toward it failed after.
        match first_end {
            Some((side, reset)) => {
                let who = if side == Side::Client { "client" } else { "server" };
                format!("{} by {who}", if reset { "reset" } else { "closed" })
            }
            None if self.ctx.shutdown.is_cancelled() => "cut at shutdown".into(),
            None if no_greeting => format!("no greeting from upstream within {:?}", self.ctx.cfg.greeting_timeout),
            None if idle => "idle timeout".into(),
            None => "closed".into(),
        }
    }

    /// Carries out a cut: rst / fin / silent per side. Silent sides are held
    /// open, read and ignored, until they close, the idle timeout, or
    /// shutdown.
    async fn finish_cut(&self, client: &mut TcpStream, server: Option<&mut TcpStream>) -> String {
        let cut = lock(self.core).cut.clone();
        let Some((side, how, why)) = cut else {
            let _ = client.set_zero_linger();
            return "cut".into();
        };
        let how_for = |s: Side| if side == Side::Both || side == s { how } else { How::Fin };
        let mut silent: Vec<&mut TcpStream> = Vec::new();
        for (s, stream) in [(Side::Client, Some(client)), (Side::Server, server)] {
            let Some(stream) = stream else { continue };
            match how_for(s) {
                How::Rst => {
                    let _ = stream.set_zero_linger();
                }
                How::Fin => {
                    let _ = stream.shutdown().await;
                }
                How::Silent => silent.push(stream),
            }
        }
        if !silent.is_empty() {
            self.hold_silent(silent).await;
        }
        why
    }

    /// Keeps `streams` open and unanswered (the half-open line) until a
    /// peer closes, the idle timeout passes, or the proxy shuts down.
    async fn hold_silent(&self, streams: Vec<&mut TcpStream>) {
        let idle = self.ctx.cfg.idle_timeout;
        let drain = async {
            let mut futs = Vec::new();
            for s in streams {
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
        tokio::select! {
            _ = drain => {}
            _ = self.ctx.shutdown.cancelled() => {}
        }
    }

    async fn refuse(&self, client: &mut TcpStream, how: RefuseHow, text: &str, rule: &str) -> String {
        match how {
            RefuseHow::Rst => {
                let _ = client.set_zero_linger();
            }
            RefuseHow::Close => {
                let _ = client.shutdown().await;
            }
            RefuseHow::Err => {
                let mut line = text.as_bytes().to_vec();
                line.extend_from_slice(b"\r\n");
                let _ = client.write_all(&line).await;
                let _ = client.shutdown().await;
                lock(self.core).tracker.on_unframed(false, line.len());
            }
            RefuseHow::Hang => self.hold_silent(vec![client]).await,
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

    /// Timer faults, manual cuts and the idle timeout.
    async fn timers_and_cuts(&self, remote: &Notify) {
        let timers = lock(self.core).engine.timers();
        let mut timers: VecDeque<(Duration, usize)> = timers.into();
        let idle = self.ctx.cfg.idle_timeout;
        loop {
            let next_timer = timers.front().map(|(after, _)| self.ctx.started + *after);
            let (idle_at, greeted) = {
                let c = lock(self.core);
                (c.last_activity + idle, c.codec.greeted())
            };
            let mut wake_at = next_timer.map_or(idle_at, |t| t.min(idle_at));
            if !greeted {
                wake_at = wake_at.min(self.ctx.started + self.ctx.cfg.greeting_timeout);
            }
            tokio::select! {
                _ = self.ctx.cut.cancelled() => return,
                _ = remote.notified() => {
                    let d = Decision { rule: "manual".into(), point: "manual".into(), actions: vec![Action::Disconnect(Disconnect { side: Side::Both, how: How::Rst })] };
                    self.record(&d);
                    let _ = Box::pin(self.act(d, Dir::Down)).await;
                    return;
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
            let now = Instant::now();
            let greeted = lock(self.core).codec.greeted();
            if !greeted && self.ctx.started + self.ctx.cfg.greeting_timeout <= now {
                debug!(session = self.ctx.number, "no greeting");
                lock(self.core).no_greeting = true;
                self.cut_now();
                return;
            }
            if lock(self.core).last_activity + idle <= now {
                debug!(session = self.ctx.number, "idle timeout");
                lock(self.core).idle = true;
                self.cut_now();
                return;
            }
            while let Some(&(after, rule)) = timers.front() {
                if self.ctx.started + after > now {
                    break;
                }
                timers.pop_front();
                if self.paused() {
                    continue;
                }
                let d = {
                    let mut c = lock(self.core);
                    let facts = c.facts(self.ctx, 0);
                    c.engine.timer_due(rule, after, &facts)
                };
                if let Some(d) = d {
                    self.record(&d);
                    if Box::pin(self.act(d, Dir::Down)).await == Flow::Stop {
                        return;
                    }
                }
            }
        }
    }

    /// Emits the fault event(s) of a decision and remembers the rule.
    fn record(&self, d: &Decision) {
        lock(self.core).faults.push(d.rule.clone());
        let actions = if d.actions.is_empty() {
            "none".to_string()
        } else {
            d.actions.iter().map(Action::name).collect::<Vec<_>>().join("+")
        };
        info!(session = self.ctx.number, rule = %d.rule, point = %d.point, actions = %actions, "fault");
        self.ctx.sink.emit(Event::Fault {
            session: self.ctx.number,
            rule: d.rule.clone(),
            action: actions,
            point: d.point.clone(),
        });
    }

    /// Carries out a decision's steps, in order. `dir` is the direction of
    /// the bytes that triggered it (corrupt acts on those).
    async fn act(&self, d: Decision, dir: Dir) -> Flow {
        let mut flow = Flow::Go;
        for a in d.actions {
            match a {
                Action::Disconnect(Disconnect { side, how }) => {
                    lock(self.core).cut = Some((side, how, format!("fault: {}", d.rule)));
                    self.cut_now();
                    return Flow::Stop;
                }
                Action::Stall(Stall { ms, jitter_ms }) => {
                    let until = {
                        let mut c = lock(self.core);
                        let until = Instant::now() + jittered(&mut c.rng, ms, jitter_ms);
                        let fx = c.fx();
                        fx.hold_until = Some(fx.hold_until.map_or(until, |h| h.max(until)));
                        until
                    };
                    // The triggering direction waits here; the other holds
                    // at its next write.
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = self.ctx.cut.cancelled() => return Flow::Stop,
                    }
                }
                Action::Noise(Noise { bytes, toward }) => {
                    let to = Dir::toward(toward);
                    {
                        let mut c = lock(self.core);
                        let mut noise = vec![0u8; bytes];
                        c.rng.fill_bytes(&mut noise);
                        c.fx().inject[to as usize].extend_from_slice(&noise);
                    }
                    self.injected(to).await;
                }
                Action::Corrupt(Corrupt { bytes }) => lock(self.core).fx().corrupt[dir as usize] += bytes,
                Action::Throttle(Throttle { bps }) => lock(self.core).fx().rate = Some((bps / 8).max(1)),
                Action::Delay(Delay { ms, jitter_ms }) => lock(self.core).fx().delay = Some((ms, jitter_ms)),
                Action::Reply(Reply { text }) => {
                    let mut line = text.into_bytes();
                    line.extend_from_slice(b"\r\n");
                    flow = Flow::Reply(line);
                }
                Action::Swallow(_) => flow = Flow::Swallow,
                // Refusals happen at accept, before there is a stream.
                Action::Refuse(_) => {}
                // Carried out by `body`, once the cut's steps have run.
                Action::Truncate(_) => lock(self.core).fx().truncate = true,
            }
        }
        flow
    }

    /// Runs decisions for a point; the flow of the last that says anything.
    async fn decide_and_act(&self, point: Point<'_>, seq: u64, dir: Dir) -> Flow {
        if self.is_cut() {
            // Nothing is decided, or recorded, after a cut.
            return Flow::Stop;
        }
        if self.paused() {
            return Flow::Go;
        }
        let decisions = {
            let mut c = lock(self.core);
            if c.engine.is_inert() {
                // Not even the facts: they read the clock.
                return Flow::Go;
            }
            let facts = c.facts(self.ctx, seq);
            c.engine.decide(&point, &facts)
        };
        if decisions.is_empty() {
            return Flow::Go;
        }
        // Boxed: faults are rare, and an inline future would make every
        // session's state as big as the biggest fault (RSS per session).
        Box::pin(self.act_all(decisions, dir)).await
    }

    async fn act_all(&self, decisions: Vec<Decision>, dir: Dir) -> Flow {
        let mut flow = Flow::Go;
        for d in decisions {
            self.record(&d);
            match self.act(d, dir).await {
                Flow::Stop => return Flow::Stop,
                Flow::Go => {}
                f => flow = f,
            }
        }
        flow
    }

    /// Writes relayed bytes toward `dir`'s destination, honouring stalls,
    /// line speed and corruption. Injected noise goes out first.
    async fn deliver(&self, dir: Dir, to: &mut WriteHalf<'_>, bytes: &[u8]) -> Result<(), End> {
        self.flush_injected(dir, to).await?;
        let plain = {
            let c = lock(self.core);
            c.fx.as_deref().is_none_or(|f| f.hold_until.is_none() && f.rate.is_none() && f.corrupt[dir as usize] == 0)
        };
        if plain {
            self.write(dir, to, bytes).await?;
            self.ctx.control.count(dir == Dir::Up, bytes.len());
            return Ok(());
        }
        Box::pin(self.deliver_shaped(dir, to, bytes)).await
    }

    /// [`deliver`](Session::deliver) under a stall, a line speed or corruption.
    async fn deliver_shaped(&self, dir: Dir, to: &mut WriteHalf<'_>, bytes: &[u8]) -> Result<(), End> {
        let mut written = 0;
        let r = self.deliver_paced(dir, to, bytes, &mut written).await;
        if r.is_err() && written > 0 {
            // Cut midway: the caller learns nothing of these bytes, but the
            // peer got them (bytes_up / bytes_down count what was written).
            lock(self.core).tracker.on_unframed(dir == Dir::Up, written);
        }
        r
    }

    async fn deliver_paced(
        &self,
        dir: Dir,
        to: &mut WriteHalf<'_>,
        bytes: &[u8],
        written: &mut usize,
    ) -> Result<(), End> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let (hold, rate, flip) = {
                let c = lock(self.core);
                c.fx.as_deref().map_or((None, None, 0), |f| (f.hold_until, f.rate, f.corrupt[dir as usize]))
            };
            if let Some(h) = hold.filter(|h| *h > Instant::now()) {
                tokio::select! {
                    _ = tokio::time::sleep_until(h.into()) => {}
                    _ = self.ctx.cut.cancelled() => return Err(End::Cut),
                }
            }
            // At a line speed, write in slices of ~50 ms worth.
            let n = rate.map_or(rest.len(), |r| rest.len().min((r as usize / 20).max(1)));
            let piece = &rest[..n];
            if flip > 0 {
                let mut owned = piece.to_vec();
                let k = flip.min(owned.len());
                {
                    let mut c = lock(self.core);
                    for b in &mut owned[..k] {
                        *b ^= 1 << c.rng.gen_range(0..8);
                    }
                    c.fx().corrupt[dir as usize] -= k;
                }
                self.write(dir, to, &owned).await?;
            } else {
                self.write(dir, to, piece).await?;
            }
            *written += n;
            self.ctx.control.count(dir == Dir::Up, n);
            rest = &rest[n..];
            if let Some(r) = rate {
                let pace = Duration::from_secs_f64(n as f64 / r as f64);
                tokio::select! {
                    _ = tokio::time::sleep(pace) => {}
                    // Once every byte is out, they count as delivered
                    // (a whole body is a download) even if the cut comes
                    // while pacing.
                    _ = self.ctx.cut.cancelled() => {
                        // The relay stops at its next step (`is_cut`).
                        self.ctx.cut_seen.store(true, Ordering::Release);
                        return if rest.is_empty() { Ok(()) } else { Err(End::Cut) };
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `bytes` toward `dir`'s destination, unless the session is cut.
    async fn write(&self, dir: Dir, to: &mut WriteHalf<'_>, bytes: &[u8]) -> Result<(), End> {
        // Once cut, nothing more goes out. The flag is checked first, and the
        // token only while a write waits: polling the token takes its locks.
        if self.is_cut() {
            return Err(End::Cut);
        }
        tokio::select! {
            biased;
            r = to.write_all(bytes) => r.map_err(|e| {
                debug!(session = self.ctx.number, error = %e, "write failed");
                // The destination is gone (it reset, or closed and then got
                // data): it ended the session, unless something came first.
                self.ended(dir.destination(), true);
                self.cut_now();
                End::Reset
            }),
            _ = self.ctx.cut.cancelled() => {
                self.ctx.cut_seen.store(true, Ordering::Release);
                Err(End::Cut)
            }
        }
    }

    /// Writes injected noise for `dir`, and (server → client) the proxy's
    /// own answers that are due.
    async fn flush_injected(&self, dir: Dir, to: &mut WriteHalf<'_>) -> Result<(), End> {
        let pending = {
            let c = lock(self.core);
            c.fx.as_deref()
                .is_some_and(|f| !f.inject[dir as usize].is_empty() || (dir == Dir::Down && !f.replies.is_empty()))
        };
        if !pending {
            return Ok(());
        }
        Box::pin(self.flush_injected_now(dir, to)).await
    }

    async fn flush_injected_now(&self, dir: Dir, to: &mut WriteHalf<'_>) -> Result<(), End> {
        let noise =
            lock(self.core).fx.as_deref_mut().map(|f| std::mem::take(&mut f.inject[dir as usize])).unwrap_or_default();
        if !noise.is_empty() {
            self.write(dir, to, &noise).await?;
            lock(self.core).tracker.on_unframed(dir == Dir::Up, noise.len());
        }
        if dir == Dir::Down {
            loop {
                let due = {
                    let mut c = lock(self.core);
                    match c.codec.take_synthetic() {
                        Some((cmd, seq)) => c.fx().replies.pop_front().map(|r| (cmd, seq, r)),
                        None => None,
                    }
                };
                let Some((cmd, seq, reply)) = due else { break };
                self.write(dir, to, &reply).await?;
                let mut c = lock(self.core);
                let status = Status::parse(&reply);
                let ev = ServerEvent::Status { cmd, seq, status, multiline: false };
                c.tracker.on_server(&ev, &reply);
            }
        }
        Ok(())
    }

    fn progress(&self) {
        if !self.ctx.sink.wants_progress() {
            return;
        }
        let c = lock(self.core);
        let t = &c.tracker;
        self.ctx.sink.emit(Event::Progress(Box::new(SessionSnapshot {
            session: self.ctx.number,
            state: t.state(),
            user: t.user().map(str::to_owned),
            last_command: t.last_command(),
            downloaded: t.downloads(),
            marked: t.marked(),
            bytes_up: t.bytes_up(),
            bytes_down: t.bytes_down(),
        })));
    }

    /// Moves one direction until EOF, reset or a cut. Holds at most one
    /// read's worth of bytes, released when idle so an idle session costs
    /// no buffer.
    async fn pump(&self, dir: Dir, from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>) -> End {
        let mut buf: Vec<u8> = Vec::new();
        let mut want = READ_MIN;
        loop {
            if let Err(e) = self.flush_injected(dir, to).await {
                return e;
            }
            if self.is_cut() {
                return End::Cut;
            }
            // Read first, wait only when there is nothing: a stream in full
            // flow never builds the wait machinery below.
            if buf.capacity() == 0 {
                buf = spare::take();
            }
            buf.reserve(want);
            let room = buf.capacity() - buf.len();
            let n = match read_draining(from, &mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if buf.is_empty() {
                        // Idle: hold no buffer while waiting, nor queues
                        // that are empty.
                        spare::give(std::mem::take(&mut buf));
                        lock(self.core).shed();
                    }
                    if let Err(end) = self.wait(dir, from).await {
                        return end;
                    }
                    continue;
                }
                Err(e) => {
                    debug!(session = self.ctx.number, ?dir, error = %e, "read failed");
                    self.ended(dir.source(), true);
                    self.cut_now();
                    return End::Reset;
                }
            };
            lock(self.core).last_activity = Instant::now();
            want = if n >= room { (want * 2).min(READ_MAX) } else { (want / 2).max(READ_MIN) };
            // Boxed: relaying is the biggest state a direction has, and an
            // idle session should not carry it (RSS per session).
            if let Some(end) = Box::pin(self.relay(dir, &mut buf, n == 0, to)).await {
                spare::give(buf);
                return end;
            }
        }
    }

    /// Waits until `from` is readable, something is injected toward `dir`,
    /// or the session is cut. Holds no waiter of its own but the socket's:
    /// every future of a session shares its task, which any of them waking
    /// re-polls whole (`join!`, `select!`), and a cut always wakes the
    /// timers' wait on the cut token. This keeps an idle session small.
    async fn wait(&self, dir: Dir, from: &ReadHalf<'_>) -> Result<(), End> {
        let stream: &TcpStream = from.as_ref();
        std::future::poll_fn(|cx| {
            if self.is_cut() {
                return Poll::Ready(Err(End::Cut));
            }
            if self.ctx.injected[dir as usize].swap(false, Ordering::AcqRel) {
                return Poll::Ready(Ok(()));
            }
            match stream.poll_read_ready(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => {
                    debug!(session = self.ctx.number, ?dir, error = %e, "wait failed");
                    self.ended(dir.source(), true);
                    self.cut_now();
                    Poll::Ready(Err(End::Reset))
                }
            }
        })
        .await
    }

    /// Something waits to be written toward `to`: gives that direction the
    /// permit and has the task polled again, so its wait sees it.
    async fn injected(&self, to: Dir) {
        self.ctx.injected[to as usize].store(true, Ordering::Release);
        std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::Ready(())
        })
        .await
    }

    /// Relays what a read brought: every whole event in `buf`, keeping an
    /// incomplete one for the next read. At EOF whatever is held is an
    /// incomplete line: it goes on as it is, then the FIN (half-close).
    async fn relay(&self, dir: Dir, buf: &mut Vec<u8>, eof: bool, to: &mut WriteHalf<'_>) -> Option<End> {
        if eof {
            if !self.is_cut() {
                self.ended(dir.source(), false);
            }
            if !buf.is_empty() {
                if let Err(e) = self.deliver(dir, to, buf).await {
                    return Some(e);
                }
                lock(self.core).tracker.on_unframed(dir == Dir::Up, buf.len());
            }
            if self.is_cut() {
                // The cut decides how this side closes, not the EOF.
                return Some(End::Cut);
            }
            let _ = to.shutdown().await;
            return Some(End::Eof);
        }
        let mut start = 0;
        while start < buf.len() {
            let step = match dir {
                Dir::Up => self.up_event(&buf[start..], to).await,
                Dir::Down => self.down_event(&buf[start..], to).await,
            };
            match step {
                // An incomplete line: held only while a rule may want it
                // whole, else relayed now (a peer waiting for an answer to
                // a partial line must not wait on us).
                Ok(0) if self.must_hold(dir, &buf[start..]) => break,
                Ok(0) => match self.pass(dir, &buf[start..], to).await {
                    Ok(()) => start = buf.len(),
                    Err(e) => return Some(e),
                },
                // A cut that came while the event's bytes went out (see
                // `deliver_shaped`) stops the relay here.
                Ok(_) if self.is_cut() => return Some(End::Cut),
                Ok(consumed) => start += consumed,
                Err(e) => return Some(e),
            }
        }
        buf.drain(..start);
        None
    }

    /// Whether the incomplete line `rest` must wait for its end: a rule at
    /// the point it will reach (command, greeting, status) may still want
    /// to act before any of it goes on. Never once part of it went on,
    /// never for SASL data, never while paused or with no rule in force.
    fn must_hold(&self, dir: Dir, rest: &[u8]) -> bool {
        if self.paused() {
            return false;
        }
        let c = lock(self.core);
        if c.engine.is_inert() {
            return false;
        }
        let line = match dir {
            Dir::Up if c.codec.client_line_started() || c.codec.next_client_line_is_sasl() => return false,
            Dir::Up => LineSoFar::Command(rest),
            Dir::Down if c.codec.server_line_started() => return false,
            Dir::Down => match c.codec.next_server_line() {
                NextServerLine::Greeting => LineSoFar::Greeting,
                NextServerLine::Answer(cmd) => LineSoFar::Status(cmd),
                NextServerLine::Other => return false,
            },
        };
        let facts = c.facts(self.ctx, c.codec.next_seq());
        c.engine.wants_whole_line(line, &facts)
    }

    /// Relays the start of an incomplete line now; the codec keeps what it
    /// needs to parse the line when it ends.
    async fn pass(&self, dir: Dir, rest: &[u8], to: &mut WriteHalf<'_>) -> Result<(), End> {
        let (ev, delay) = {
            let mut c = lock(self.core);
            // A delay in force is waited before a status line: before its
            // first byte when it goes on in parts.
            let answer =
                !c.codec.server_line_started() && matches!(c.codec.next_server_line(), NextServerLine::Answer(_));
            let delay = if dir == Dir::Down && answer { c.fx.as_deref().and_then(|f| f.delay) } else { None };
            let delay = delay.map(|(ms, j)| jittered(&mut c.rng, ms, j));
            let ev = match dir {
                Dir::Up => Ok(c.codec.pass_client(rest).event),
                Dir::Down => Err(c.codec.pass_server(rest).event),
            };
            (ev, delay)
        };
        if let Some(d) = delay {
            Box::pin(self.pause(d)).await?;
        }
        self.deliver(dir, to, rest).await?;
        let mut c = lock(self.core);
        match ev {
            Ok(Some(ev)) => c.tracker.on_client(&ev, rest, true),
            Err(Some(ev)) => c.tracker.on_server(&ev, rest),
            Ok(None) | Err(None) => {}
        }
        Ok(())
    }

    /// Decodes and relays the next client event in `buf`; returns the bytes
    /// consumed (0: need more).
    async fn up_event(&self, buf: &[u8], to: &mut WriteHalf<'_>) -> Result<usize, End> {
        let (step, started) = {
            let mut c = lock(self.core);
            let started = c.codec.client_line_started();
            (c.codec.decode_client(buf), started)
        };
        let Some(ev) = step.event else { return Ok(0) };
        let bytes = &buf[..step.consumed];
        let ClientEvent::Command { cmd, overlong } = &ev else {
            self.deliver(Dir::Up, to, bytes).await?;
            lock(self.core).tracker.on_client(&ev, bytes, true);
            return Ok(step.consumed);
        };
        // A line partly relayed already (over-long, or passed on before its
        // end because no rule wanted it whole) can only go on.
        if !*overlong && !started {
            let next = lock(self.core).codec.next_seq();
            match self.decide_and_act(Point::Command(cmd), next, Dir::Up).await {
                Flow::Stop => return Err(End::Cut),
                Flow::Go => {}
                Flow::Swallow => {
                    lock(self.core).tracker.on_client(&ev, bytes, false);
                    self.progress();
                    return Ok(step.consumed);
                }
                Flow::Reply(line) => {
                    {
                        let mut c = lock(self.core);
                        if c.codec.replied(cmd).is_some() {
                            c.fx().replies.push_back(line);
                        }
                        c.tracker.on_client(&ev, bytes, false);
                    }
                    self.injected(Dir::Down).await;
                    self.progress();
                    return Ok(step.consumed);
                }
            }
        }
        // Queue the command for framing before writing it: the answer can
        // arrive (and be decoded by the other direction) while this write
        // is still in progress, e.g. paced by a line speed.
        let seq = {
            let mut c = lock(self.core);
            let seq = c.codec.forwarded(cmd);
            if c.inflight.len() < crate::codec::framer::MAX_PENDING {
                c.inflight.push_back((seq, Instant::now()));
            }
            seq
        };
        self.deliver(Dir::Up, to, bytes).await?;
        lock(self.core).tracker.on_client(&ev, bytes, true);
        self.progress();
        if self.decide_and_act(Point::Forwarded(cmd), seq, Dir::Up).await == Flow::Stop {
            return Err(End::Cut);
        }
        Ok(step.consumed)
    }

    /// Decodes and relays the next server event in `buf`; returns the bytes
    /// consumed (0: need more).
    async fn down_event(&self, buf: &[u8], to: &mut WriteHalf<'_>) -> Result<usize, End> {
        self.flush_injected(Dir::Down, to).await?;
        let (step, started) = {
            let mut c = lock(self.core);
            let started = c.codec.server_line_started();
            (c.codec.decode_server(buf), started)
        };
        let Some(ev) = step.event else { return Ok(0) };
        let bytes = &buf[..step.consumed];
        match &ev {
            ServerEvent::Greeting(_) => {
                if self.decide_and_act(Point::Greeting, 0, Dir::Down).await == Flow::Stop {
                    return Err(End::Cut);
                }
                self.deliver(Dir::Down, to, bytes).await?;
                lock(self.core).tracker.on_server(&ev, bytes);
            }
            ServerEvent::Status { cmd, seq, multiline, .. } => {
                if self.decide_and_act(Point::Status(cmd), *seq, Dir::Down).await == Flow::Stop {
                    return Err(End::Cut);
                }
                // A line passed on in parts was delayed before its start.
                let delay = {
                    let mut c = lock(self.core);
                    let delay = c.fx.as_deref().and_then(|f| f.delay).filter(|_| !started);
                    delay.map(|(ms, j)| jittered(&mut c.rng, ms, j))
                };
                if let Some(d) = delay {
                    Box::pin(self.pause(d)).await?;
                }
                if !*multiline {
                    self.deliver(Dir::Down, to, bytes).await?;
                    lock(self.core).tracker.on_server(&ev, bytes);
                    self.response_done(*seq, cmd).await?;
                    return Ok(step.consumed);
                }
                // Plan the body's cuts first: they depend on nothing the
                // status line changes.
                let (plain, body) = {
                    let mut c = lock(self.core);
                    c.answering = Some((*seq, cmd.clone()));
                    // An inert engine never plans a cut, so it has none to clear.
                    if !self.paused() && !c.engine.is_inert() {
                        let facts = c.facts(self.ctx, *seq);
                        // Only RETR's "+OK n octets" is a message size.
                        let size = if matches!(cmd, Command::Retr(_)) { announced_size(bytes) } else { None };
                        let cuts = c.engine.plan_body(cmd, size, &facts);
                        if !cuts.is_empty() {
                            let fx = c.fx();
                            fx.body_cuts = cuts.into();
                            fx.body_line = BodyLine::Start;
                        } else if let Some(f) = c.fx.as_deref_mut() {
                            f.body_cuts.clear();
                        }
                    }
                    let plain = c.fx.as_deref().is_none_or(|f| f.body_cuts.is_empty());
                    // With nothing planned inside the body, the status line
                    // and the body bytes already read go out in one write.
                    let body = if plain { c.codec.decode_server(&buf[step.consumed..]) } else { Step::NEED_MORE };
                    (plain, body)
                };
                match body.event {
                    Some(ServerEvent::Body { offset, end }) if plain => {
                        let total = step.consumed + body.consumed;
                        self.deliver(Dir::Down, to, &buf[..total]).await?;
                        let finished = {
                            let mut c = lock(self.core);
                            c.tracker.on_server(&ev, bytes);
                            c.tracker.on_server(&ServerEvent::Body { offset, end }, &buf[step.consumed..total]);
                            if end { c.answering.take() } else { None }
                        };
                        if let Some((seq, cmd)) = finished {
                            self.response_done(seq, &cmd).await?;
                        }
                        return Ok(total);
                    }
                    _ => {
                        self.deliver(Dir::Down, to, bytes).await?;
                        lock(self.core).tracker.on_server(&ev, bytes);
                    }
                }
            }
            ServerEvent::Body { offset, end } => {
                self.body(bytes, *offset, *end, to).await?;
            }
            _ => {
                self.deliver(Dir::Down, to, bytes).await?;
                lock(self.core).tracker.on_server(&ev, bytes);
            }
        }
        Ok(step.consumed)
    }

    /// Waits `d` unless the session is cut meanwhile.
    async fn pause(&self, d: Duration) -> Result<(), End> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.ctx.cut.cancelled() => Err(End::Cut),
        }
    }

    /// Relays body bytes, stopping at each planned cut to act there.
    async fn body(&self, bytes: &[u8], offset: u64, end: bool, to: &mut WriteHalf<'_>) -> Result<(), End> {
        if let Some(f) = lock(self.core).fx.as_deref_mut().filter(|f| f.discard_body) {
            // Truncated: the client has seen this body end already.
            f.discard_body = !end;
            return Ok(());
        }
        let mut done = 0usize;
        loop {
            let cut = {
                let mut c = lock(self.core);
                let cuts = c.fx.as_deref_mut().map(|f| &mut f.body_cuts);
                match cuts {
                    Some(cuts) if cuts.front().is_some_and(|cut| cut.at < offset + bytes.len() as u64) => {
                        cuts.pop_front()
                    }
                    _ => None,
                }
            };
            let Some(cut) = cut else { break };
            // Exactly `cut.at` body bytes reach the client before it acts.
            let upto = (cut.at.saturating_sub(offset) as usize).clamp(done, bytes.len());
            if upto > done {
                let part = &bytes[done..upto];
                self.deliver(Dir::Down, to, part).await?;
                let ev = ServerEvent::Body { offset: offset + done as u64, end: false };
                let mut c = lock(self.core);
                c.tracker.on_server(&ev, part);
                let fx = c.fx();
                fx.body_line = fx.body_line.after(part);
                done = upto;
            }
            self.record(&cut.decision);
            if Box::pin(self.act(cut.decision, Dir::Down)).await == Flow::Stop {
                return Err(End::Cut);
            }
            if lock(self.core).fx.as_deref_mut().is_some_and(|f| std::mem::take(&mut f.truncate)) {
                return Box::pin(self.truncate(offset + done as u64, end, to)).await;
            }
        }
        let part = &bytes[done..];
        self.deliver(Dir::Down, to, part).await?;
        let finished = {
            let mut c = lock(self.core);
            c.tracker.on_server(&ServerEvent::Body { offset: offset + done as u64, end }, part);
            if let Some(f) = c.fx.as_deref_mut().filter(|f| !f.body_cuts.is_empty()) {
                f.body_line = f.body_line.after(part);
            }
            if end {
                if let Some(f) = c.fx.as_deref_mut() {
                    f.body_cuts.clear();
                }
                c.answering.take()
            } else {
                None
            }
        };
        if let Some((seq, cmd)) = finished {
            self.response_done(seq, &cmd).await?;
        }
        Ok(())
    }

    /// Ends the body being relayed for the client at body offset `at`
    /// (`truncate`): the terminator that closes the line in progress goes
    /// out, the client has a whole (short) response, and the rest of the
    /// server's body, up to its real end, is dropped (`discard_body`) so
    /// the next answer the client reads is the server's next answer.
    /// `end`: the real end was in the read being relayed.
    async fn truncate(&self, at: u64, end: bool, to: &mut WriteHalf<'_>) -> Result<(), End> {
        let line = lock(self.core).fx().body_line;
        let terminator = line.terminator();
        self.write(Dir::Down, to, terminator).await?;
        let finished = {
            let mut c = lock(self.core);
            c.tracker.on_server(&ServerEvent::Body { offset: at, end: true }, terminator);
            let fx = c.fx();
            // Cuts planned further in are past the end the client saw.
            fx.body_cuts.clear();
            fx.discard_body = !end;
            c.answering.take()
        };
        if let Some((seq, cmd)) = finished {
            self.response_done(seq, &cmd).await?;
        }
        Ok(())
    }

    /// A response was delivered in full: latency, then `response` faults.
    async fn response_done(&self, seq: u64, cmd: &Command) -> Result<(), End> {
        let flush = {
            let mut c = lock(self.core);
            if let Some(micros) = c.answered(seq, Instant::now()) {
                c.latencies.push(Sample::new(seq, cmd.name(), micros));
            }
            // Sent in bursts, not one by one: each send may wake the
            // aggregator, and those wake-ups cost more than the sample.
            if c.latencies.len() >= LATENCY_BATCH { std::mem::take(&mut c.latencies) } else { Vec::new() }
        };
        for sample in flush {
            self.ctx.sink.emit(sample.event(self.ctx.number));
        }
        if self.decide_and_act(Point::Response(cmd), seq, Dir::Down).await == Flow::Stop {
            return Err(End::Cut);
        }
        Ok(())
    }
}

/// Read buffers of the smallest size, kept per thread for the next read:
/// a session gives its buffer back each time it goes idle, and a fresh one
/// each time would take malloc's slow path (it is bigger than malloc's
/// per-thread cache), thousands of times a second. A few are kept; an idle
/// session holds none.
mod spare {
    use std::cell::RefCell;

    const KEPT: usize = 16;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> Vec<u8> {
        SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }

    pub(super) fn give(mut buf: Vec<u8>) {
        if buf.capacity() != super::READ_MIN {
            return;
        }
        buf.clear();
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < KEPT {
                s.push(buf);
            }
        });
    }
}

/// Reads what `from` holds into `buf`'s spare room. A read that leaves
/// room proves the socket drained, so it also clears tokio's readiness (as
/// tokio's own `poll_read` does): the next wait then sleeps at once rather
/// than costing a `recv` that says EAGAIN. The read happens inside `try_io`
/// so that only the readiness it saw is cleared, never a newer one.
fn read_draining(from: &ReadHalf<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    let stream: &TcpStream = from.as_ref();
    let room = buf.capacity() - buf.len();
    let mut got = None;
    let r = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        got = Some(n);
        if n > 0 && n < room { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(n) }
    });
    match got {
        Some(n) => Ok(n),
        None => r,
    }
}

/// Runs `fut`, polling it only when one of its own wakers fired. A
/// session's futures share one task, and `join!`/`select!` poll each of
/// them whenever any is woken: nearly every wake-up is for a pump, and the
/// timers' wait (the cut token, the manual cut, a sleep) takes locks each
/// time it is polled.
fn gated<F: Future>(fut: F) -> Gated<F> {
    let gate = Arc::new(Gate { woken: AtomicBool::new(true), task: OnceLock::new() });
    Gated { fut, waker: Waker::from(gate.clone()), gate }
}

pin_project_lite::pin_project! {
    /// See [`gated`]. A struct, not an `async fn`: that would hold `fut`
    /// twice in every session's state.
    struct Gated<F> {
        #[pin]
        fut: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let task = this.gate.task.get_or_init(|| cx.waker().clone());
        if !task.will_wake(cx.waker()) {
            // Polled on behalf of another task: no gate.
            return this.fut.poll(cx);
        }
        // Cleared before polling: a wake-up during the poll is kept.
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut.poll(&mut Context::from_waker(this.waker))
    }
}

/// The waker of a [`gated`] future: marks it woken, then wakes its task.
struct Gate {
    woken: AtomicBool,
    task: OnceLock<Waker>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

/// Resolves when the first of `futs` does (a tiny `select_all`, to avoid
/// a dependency for one use).
async fn futures_select_all<F: std::future::Future<Output = ()> + Unpin>(futs: &mut [F]) {
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod size_probe {
    #[test]
    fn a_session_future_stays_small() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::from_std({
                std_listener.set_nonblocking(true).unwrap();
                std_listener
            })
            .unwrap();
            let addr = l.local_addr().unwrap();
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (s, peer) = l.accept().await.unwrap();
            drop(c);
            let control =
                std::sync::Arc::new(super::Control::new(std::sync::Arc::new(crate::faults::Profile::passthrough()), 1));
            let stop = super::CancellationToken::new();
            let ctx = super::SessionCtx {
                number: 1,
                peer,
                cfg: std::sync::Arc::new(super::ProxyConfig::new(addr, "127.0.0.1:1")),
                sink: super::EventSink::discard(),
                shutdown: stop.clone(),
                cut: stop.child_token(),
                cut_seen: Default::default(),
                injected: Default::default(),
                control: control.clone(),
                run_started: std::time::Instant::now(),
                started: std::time::Instant::now(),
                engine_seed: 1,
            };
            let engine = super::Engine::new(control.profile(), 1, 1);
            let fut = super::run_session(s, ctx, engine);
            // Every idle session costs at least this much: keep it small
            // (rare fault paths and the relaying of a read are boxed; an idle
            // direction waits on its socket alone). See docs/PERFORMANCE.md.
            let size = std::mem::size_of_val(&fut);
            assert!(size <= 2304, "a session's future is {size} bytes");
        });
    }
}
