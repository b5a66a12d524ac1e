//! popfault's benchmark: the proxy (profile `passthrough`) against a direct
//! connection to the embedded server, measured in the same run
//! (docs/PERFORMANCE.md says what it measures and why).
//!
//! ```text
//! cargo build --release                      # the real binary, for RSS and the dashboard
//! cargo run --release --example bench -- [--quick] [--child] [--only bulk,noop,...]
//! ```
//!
//! Figures (docs/PERFORMANCE.md explains them and the targets):
//!
//! - `bulk`: 20 messages × 5 MB downloaded 3 times by a raw client, every
//!   byte checked against the server's stored content; MB/s direct, proxied.
//! - `noop`: 20 000 sequential NOOPs, p50/p99 round trip, direct and proxied.
//! - `pinned`: the same under `taskset -c 0` (client, proxy and server on one
//!   CPU), by re-running this program with `--noop-only`.
//! - `sessions`: 2 000 full sessions (login, STAT, UIDL, RETR 5 × 10 KB,
//!   DELE 5, QUIT) with 50 in flight; sessions/s.
//! - `memory`: RSS of the real `popfault proxy --headless` with 10 000 idle
//!   logged-in sessions (the server is a `popfault serve` child).
//! - `dashboard`: bulk MB/s through the real binary drawing its dashboard
//!   (under a pseudo-terminal from `script`) against a headless one, and
//!   the drawing thread's share of the proxy's CPU.
//! - `tls-bulk`, `tls-sessions`: bulk and sessions/s with TLS on both
//!   sides. Direct: the client speaks TLS to a terminator (an in-bench
//!   POP3S server: rustls in front of the embedded server). Proxied: TLS
//!   to popfault (`--client-tls implicit`), which speaks TLS to the same
//!   terminator (`--upstream-tls implicit`).
//!
//! Next to the speeds it prints the CPU used per unit of work (per GB, per
//! NOOP, per session; summed from /proc/PID/task/*/schedstat), which a
//! neighbour's load on a shared machine disturbs far less than a speed.
//!
//! The proxy runs in-process (`relay::start`, fed to an aggregator as the
//! binary does) unless `--child` asks for the real binary everywhere; set
//! `POPFAULT_BENCH_WRAP="perf record -F 4999 -o p.data --"` to run every
//! proxy child under a profiler, `POPFAULT_BIN` to use another binary.
//!
//! Every wait is bounded and every child is stopped, also on errors. The
//! program prints figures; it asserts only correctness (bytes, +OK).

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use popfault::aggregate::Aggregator;
use popfault::control::Control;
use popfault::faults::builtin;
use popfault::relay::{self, ClientTls, ProxyConfig, ProxyHandle, TlsConfig, UpstreamTls};
use popfault::server::{self, Maildrop, ServerConfig, ServerHandle, StoredMessage};
use popfault::tls::rustls::{self, client::Resumption, pki_types::ServerName};
use popfault::tls::tokio_rustls::{TlsAcceptor, TlsConnector, client::TlsStream};
use popfault::tls::{self, Ca, Leaves, UpstreamTrust};

/// Every user's password on the embedded server.
const PASSWORD: &str = "secret";
/// Bound on any one connect, read or write of the load client.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on a child process starting (printing its address) or stopping.
const CHILD_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one whole figure.
const FIGURE_TIMEOUT: Duration = Duration::from_secs(600);
/// The end of a multi-line response.
const TERMINATOR: &[u8] = b"\r\n.\r\n";
/// Fixed seed, so the proxied runs are the same each time.
const SEED: &str = "1";

// === options ===

/// How big each figure is.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    bulk_messages: usize,
    bulk_size: usize,
    bulk_passes: usize,
    noops: usize,
    noop_warmup: usize,
    sessions: usize,
    in_flight: usize,
    retr_per_session: usize,
    session_message_size: usize,
    idle_sessions: usize,
    dashboard_rounds: usize,
}

const FULL: Sizes = Sizes {
    bulk_messages: 20,
    bulk_size: 5_000_000,
    bulk_passes: 3,
    noops: 20_000,
    noop_warmup: 1_000,
    sessions: 2_000,
    in_flight: 50,
    retr_per_session: 5,
    session_message_size: 10_000,
    idle_sessions: 10_000,
    dashboard_rounds: 3,
};

const QUICK: Sizes = Sizes {
    bulk_messages: 5,
    bulk_size: 1_000_000,
    bulk_passes: 2,
    noops: 2_000,
    noop_warmup: 200,
    sessions: 200,
    in_flight: 20,
    retr_per_session: 5,
    session_message_size: 10_000,
    idle_sessions: 500,
    dashboard_rounds: 1,
};

const FIGURES: &[&str] =
    &["bulk", "noop", "pinned", "sessions", "haproxy", "memory", "dashboard", "tls-bulk", "tls-sessions"];

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    /// Internal: measure NOOPs only and print one machine-readable line.
    noop_only: bool,
    /// The real binary as the proxy for every figure.
    child: bool,
    only: Vec<String>,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut o = Opts { quick: false, noop_only: false, child: false, only: Vec::new() };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--noop-only" => o.noop_only = true,
                "--child" => o.child = true,
                "--only" => {
                    let list = args.next().ok_or_else(|| anyhow!("--only needs a list: {}", FIGURES.join(",")))?;
                    for f in list.split(',').filter(|f| !f.is_empty()) {
                        ensure!(FIGURES.contains(&f), "unknown figure '{f}' (figures: {})", FIGURES.join(","));
                        o.only.push(f.to_string());
                    }
                }
                "-h" | "--help" => {
                    println!(
                        "usage: cargo run --release --example bench -- [--quick] [--child] [--only {}]\n\
                         \n  --quick   small sizes (a smoke test)\
                         \n  --child   use the real binary as the proxy for every figure\
                         \n  --only    run only these figures\
                         \n\nThe real binary (cargo build --release) is needed for memory and dashboard.",
                        FIGURES.join(",")
                    );
                    std::process::exit(0);
                }
                _ => bail!("unknown argument '{a}' (try --help)"),
            }
        }
        Ok(o)
    }

    fn sizes(&self) -> Sizes {
        if self.quick { QUICK } else { FULL }
    }

    fn wants(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == figure)
    }
}

// === main ===

fn main() -> ExitCode {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !opts.noop_only {
        raise_nofile();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async { if opts.noop_only { noop_only(&opts).await } else { run(&opts).await } });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Re-executes through `sh -c 'ulimit -n HARD'` when the soft limit on open
/// files is below the hard one (10 000 idle sessions need ~20 000 fds in the
/// proxy child, which inherits the limit). There is no libc dependency for
/// setrlimit; `ulimit` can only raise up to the hard limit.
fn raise_nofile() {
    const GUARD: &str = "POPFAULT_BENCH_NOFILE";
    let Some((soft, hard)) = nofile_limits(None) else { return };
    let want = hard.min(1 << 20);
    if soft >= want || std::env::var_os(GUARD).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    eprintln!("bench: raising the open-files limit from {soft} to {want} (re-executing under sh -c 'ulimit -n')");
    let err = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {want} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(GUARD, "1")
        .exec();
    eprintln!("bench: could not re-execute ({err}); going on with {soft}");
}

/// (soft, hard) RLIMIT_NOFILE of `pid` (self if None), from /proc.
fn nofile_limits(pid: Option<u32>) -> Option<(u64, u64)> {
    let path = pid.map_or_else(|| "/proc/self/limits".to_string(), |p| format!("/proc/{p}/limits"));
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    let soft = nums.next()?.parse().ok()?;
    let hard = nums.next()?.parse().ok()?;
    Some((soft, hard))
}

async fn run(opts: &Opts) -> Result<()> {
    let sizes = opts.sizes();
    let bin = popfault_binary();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = loadavg();
    eprintln!(
        "bench: {} run, {cpus} CPUs, load average {load_before}, proxy {}",
        if opts.quick { "quick" } else { "full" },
        if opts.child { "= real binary (child)" } else { "in-process (relay::start)" }
    );
    match &bin {
        Ok(b) => eprintln!("bench: real binary {}", b.display()),
        Err(e) => eprintln!("bench: {e:#}: the figures that need it are skipped"),
    }
    let mode = if opts.child { ProxyMode::Child } else { ProxyMode::InProcess };
    let bin = bin.ok();
    let mut table = Table::default();

    if opts.wants("bulk") || opts.wants("dashboard") {
        figure("bulk", bulk_figure(opts, &sizes, mode, bin.as_deref(), &mut table)).await;
    }
    if opts.wants("noop") {
        figure("noop", noop_figure(&sizes, mode, bin.as_deref(), &mut table)).await;
    }
    if opts.wants("pinned") {
        figure("pinned", pinned_figure(opts, &mut table)).await;
    }
    if opts.wants("sessions") {
        figure("sessions", sessions_figure(&sizes, mode, bin.as_deref(), &mut table)).await;
    }
    if opts.wants("tls-bulk") || opts.wants("tls-sessions") {
        match Pki::new() {
            Ok(pki) => {
                if opts.wants("tls-bulk") {
                    figure("tls-bulk", tls_bulk_figure(&sizes, mode, bin.as_deref(), &pki, &mut table)).await;
                }
                if opts.wants("tls-sessions") {
                    figure("tls-sessions", tls_sessions_figure(&sizes, mode, bin.as_deref(), &pki, &mut table)).await;
                }
            }
            Err(e) => table.skip("TLS figures", &format!("no CA: {e:#}")),
        }
    }
    if opts.wants("haproxy") {
        match (&bin, which("haproxy")) {
            (Some(b), Some(h)) => figure("haproxy", haproxy_figure(&sizes, b, &h, &mut table)).await,
            (None, _) => table.skip("sessions/s vs haproxy", "no popfault binary: cargo build --release"),
            (_, None) => table.skip("sessions/s vs haproxy", "haproxy not installed (Debian: apt-get install haproxy)"),
        }
    }
    if opts.wants("memory") {
        match &bin {
            Some(b) => figure("memory", memory_figure(&sizes, b, &mut table)).await,
            None => table.skip("idle sessions", "no popfault binary: cargo build --release"),
        }
    }

    println!();
    println!(
        "popfault bench ({}): {cpus} CPUs, load average {load_before} → {}; proxy {}, profile passthrough",
        if opts.quick { "--quick" } else { "full" },
        loadavg(),
        if opts.child { "real binary" } else { "in-process" }
    );
    println!("{}", table.render());
    Ok(())
}

/// Runs one figure with a time bound; a failure is reported, not fatal.
async fn figure(name: &str, f: impl Future<Output = Result<()>>) {
    let started = Instant::now();
    match timeout(FIGURE_TIMEOUT, f).await {
        Ok(Ok(())) => eprintln!("bench: {name} done in {:.1} s", started.elapsed().as_secs_f64()),
        Ok(Err(e)) => eprintln!("bench: {name} FAILED: {e:#}"),
        Err(_) => eprintln!("bench: {name} FAILED: over {FIGURE_TIMEOUT:?}"),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `target/release/popfault` next to `target/release/examples/bench`.
fn popfault_binary() -> Result<PathBuf> {
    let bin = match std::env::var_os("POPFAULT_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().context("where am I")?;
            let dir = exe.parent().and_then(Path::parent).ok_or_else(|| anyhow!("no target directory"))?;
            dir.join("popfault")
        }
    };
    ensure!(bin.is_file(), "no popfault binary at {} (run cargo build --release first)", bin.display());
    // `cargo run --example` rebuilds the library, not the binary: warn when
    // the binary is older than the library it should contain.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(l)) = (modified(&bin), bin.parent().and_then(|d| modified(&d.join("libpopfault.rlib")))) {
        if l > b {
            eprintln!("bench: WARNING: {} is older than libpopfault.rlib: run cargo build --release", bin.display());
        }
    }
    Ok(bin)
}

// === the result table ===

#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(&mut self, figure: &str, direct: String, proxy: String, ratio: String, target: &str, ok: Option<bool>) {
        let ok = match ok {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        self.rows.push([figure.into(), direct, proxy, ratio, target.into(), ok.into()]);
    }

    /// A speed measured direct and through the proxy: the medians' ratio,
    /// met when at least `target` × direct.
    fn ratio_row(&mut self, figure: &str, direct: &[f64], proxied: &[f64], target: f64) {
        let ratio = median(proxied) / median(direct);
        let (d, p, want) = (spread(direct, 0), spread(proxied, 0), format!("≥ {target:.2}×"));
        self.row(figure, d, p, format!("{ratio:.2}×"), &want, Some(ratio >= target));
    }

    /// CPU per unit of work, direct and through the proxy, and its ratio.
    fn cpu_row(&mut self, figure: &str, direct: &[f64], proxied: &[f64], decimals: usize) {
        let ratio = format!("{:.2}×", median(proxied) / median(direct));
        self.row(figure, spread(direct, decimals), spread(proxied, decimals), ratio, "", None);
    }

    fn skip(&mut self, figure: &str, why: &str) {
        self.rows.push([
            figure.into(),
            format!("skipped: {why}"),
            String::new(),
            String::new(),
            String::new(),
            "".into(),
        ]);
    }

    fn render(&self) -> String {
        let head = ["figure", "direct", "proxy", "proxy/direct", "target", "met"];
        let mut width = head.map(str::len);
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (c, w) in cells.iter().zip(width) {
                let pad = w - c.chars().count();
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            }
            s
        };
        let mut out = line(&head.map(String::from));
        out.push('\n');
        out.push_str(&line(&width.map(|w| "-".repeat(w))));
        for r in &self.rows {
            out.push('\n');
            out.push_str(&line(r));
        }
        out
    }
}

/// Median and range of a few repeats, e.g. `812 (790–830)`.
fn spread(v: &[f64], decimals: usize) -> String {
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    if v.len() < 2 {
        return format!("{:.*}", decimals, median(v));
    }
    format!("{:.*} ({:.*}–{:.*})", decimals, median(v), decimals, lo, decimals, hi)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

// === the raw load client ===

/// Where the load client connects, and whether it speaks TLS there.
#[derive(Clone)]
struct Dial {
    addr: SocketAddr,
    /// TLS from the first byte (POP3S), checking a certificate for the
    /// address's IP; `None`: plain POP3.
    tls: Option<TlsConnector>,
}

impl From<SocketAddr> for Dial {
    fn from(addr: SocketAddr) -> Dial {
        Dial { addr, tls: None }
    }
}

/// The load client's connection: plain TCP, or TLS over it.
enum Line {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Line {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Line::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Line::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Line {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Line::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Line::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Line::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Line::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Line::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Line::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A minimal POP3 client over a tokio TcpStream (or TLS over one) with one
/// growing buffer: it finds line ends and the `CRLF.CRLF` terminator with
/// memchr, and leaves checking (unstuffing) to the caller, off the clock.
struct Raw {
    s: Line,
    buf: Vec<u8>,
    /// Start of the bytes not consumed yet.
    pos: usize,
    /// Bytes asked of the kernel per read.
    chunk: usize,
}

/// Where a multi-line response lies in [`Raw::buf`].
struct Multiline {
    /// Status line, body and terminator.
    wire: usize,
    /// The body as on the wire (stuffed), CRLF of its last line included.
    body: std::ops::Range<usize>,
}

impl Raw {
    async fn connect(to: impl Into<Dial>, chunk: usize) -> Result<Raw> {
        let to = to.into();
        let s = timeout(IO_TIMEOUT, TcpStream::connect(to.addr)).await.context("connect timed out")??;
        s.set_nodelay(true)?;
        let s = match &to.tls {
            None => Line::Plain(s),
            Some(connector) => {
                let name = ServerName::IpAddress(to.addr.ip().into());
                let t = timeout(IO_TIMEOUT, connector.connect(name, s)).await.context("TLS handshake timed out")?;
                Line::Tls(Box::new(t.context("TLS handshake")?))
            }
        };
        let mut c = Raw { s, buf: Vec::new(), pos: 0, chunk };
        c.ok().await.context("greeting")?;
        Ok(c)
    }

    async fn login(to: impl Into<Dial>, user: &str, chunk: usize) -> Result<Raw> {
        let mut c = Raw::connect(to, chunk).await?;
        c.command(&format!("USER {user}")).await?;
        c.command(&format!("PASS {PASSWORD}")).await.with_context(|| format!("login {user}"))?;
        Ok(c)
    }

    /// Reads more; the buffer is emptied only when everything in it was
    /// consumed, so offsets relative to `pos` stay valid.
    async fn fill(&mut self) -> Result<()> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.reserve(self.chunk);
        let n = timeout(IO_TIMEOUT, self.s.read_buf(&mut self.buf)).await.context("read timed out")??;
        ensure!(n > 0, "connection closed by peer");
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        timeout(IO_TIMEOUT, self.s.write_all(bytes)).await.context("write timed out")??;
        // TLS: the record out now, not left in rustls (plain: a no-op).
        if let Line::Tls(_) = self.s {
            timeout(IO_TIMEOUT, self.s.flush()).await.context("write timed out")??;
        }
        Ok(())
    }

    /// The next line, CRLF included, as a range of `buf`.
    async fn line(&mut self) -> Result<std::ops::Range<usize>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos + scanned..]) {
                let start = self.pos;
                self.pos += scanned + i + 1;
                return Ok(start..self.pos);
            }
            scanned = self.buf.len() - self.pos;
            ensure!(scanned < 4096, "status line without end");
            self.fill().await?;
        }
    }

    /// Reads a status line; it must be `+OK`.
    async fn ok(&mut self) -> Result<()> {
        let r = self.line().await?;
        let line = &self.buf[r];
        ensure!(line.starts_with(b"+OK"), "expected +OK, got {:?}", String::from_utf8_lossy(line).trim_end());
        Ok(())
    }

    async fn command(&mut self, cmd: &str) -> Result<()> {
        let mut line = Vec::with_capacity(cmd.len() + 2);
        line.extend_from_slice(cmd.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.send(&line).await?;
        self.ok().await.with_context(|| format!("answer to {}", cmd.split(' ').next().unwrap_or(cmd)))
    }

    /// Sends `cmd` and reads its `+OK` and body up to the terminator.
    async fn multiline(&mut self, cmd: &str) -> Result<Multiline> {
        let mut line = Vec::with_capacity(cmd.len() + 2);
        line.extend_from_slice(cmd.as_bytes());
        line.extend_from_slice(b"\r\n");
        self.send(&line).await?;
        let status = self.line().await?;
        let line = &self.buf[status.clone()];
        ensure!(line.starts_with(b"+OK"), "{cmd}: {:?}", String::from_utf8_lossy(line).trim_end());
        let status_len = status.len();
        // Offsets from `pos` (the body's start): `fill` may move the buffer.
        let mut scanned = 0usize;
        let (body_len, total) = loop {
            let avail = &self.buf[self.pos..];
            if avail.starts_with(b".\r\n") {
                break (0, 3);
            }
            let from = scanned.saturating_sub(TERMINATOR.len() - 1);
            if let Some(i) = memmem::find(&avail[from..], TERMINATOR) {
                break (from + i + 2, from + i + TERMINATOR.len());
            }
            scanned = avail.len();
            self.fill().await?;
        };
        let start = self.pos;
        self.pos += total;
        Ok(Multiline { wire: status_len + total, body: start..start + body_len })
    }

    /// Forgets the read buffer (an idle connection holds nothing).
    fn shrink(&mut self) {
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }
}

/// Undoes byte-stuffing: a line starting with "." lost its first dot.
fn unstuff_into(wire: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = usize::from(wire.first() == Some(&b'.'));
    for p in memmem::find_iter(wire, b"\n.") {
        if p + 1 < i {
            continue;
        }
        out.extend_from_slice(&wire[i..=p]);
        i = p + 2;
    }
    out.extend_from_slice(&wire[i.min(wire.len())..]);
}

/// Checks a RETR body against the stored message, byte for byte.
fn check_body(wire: &[u8], want: &StoredMessage, scratch: &mut Vec<u8>) -> Result<()> {
    unstuff_into(wire, scratch);
    if scratch.as_slice() != &want.content[..] {
        let at = scratch.iter().zip(want.content.iter()).position(|(a, b)| a != b).unwrap_or(scratch.len());
        bail!(
            "{}: content differs at byte {at} (got {} bytes, stored {})",
            want.uid,
            scratch.len(),
            want.content.len()
        );
    }
    Ok(())
}

// === proxies ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProxyMode {
    InProcess,
    Child,
}

/// The proxy under test, in-process or the real binary.
enum Proxy {
    InProcess { handle: ProxyHandle, agg: Aggregator },
    Child(PopfaultChild),
}

impl Proxy {
    /// `tls`: POP3S on both sides (`--client-tls implicit --upstream-tls
    /// implicit`) with the bench's CAs; `None`: plain.
    async fn start(mode: ProxyMode, upstream: SocketAddr, bin: Option<&Path>, tls: Option<&Pki>) -> Result<Proxy> {
        match mode {
            ProxyMode::InProcess => {
                let profile = builtin::load("passthrough").context("profile passthrough")?;
                let control = Arc::new(Control::new(Arc::new(profile), 1));
                // Like the binary headless: an aggregator reads the events.
                let agg = Aggregator::start(None)?;
                let mut cfg = ProxyConfig::new("127.0.0.1:0".parse()?, upstream.to_string());
                if let Some(pki) = tls {
                    cfg.tls = Some(Arc::new(pki.proxy_config(upstream)?));
                }
                let handle = relay::start(cfg, control, agg.sink()).await?;
                Ok(Proxy::InProcess { handle, agg })
            }
            ProxyMode::Child => {
                let bin = bin.ok_or_else(|| anyhow!("--child needs the popfault binary (cargo build --release)"))?;
                Ok(Proxy::Child(PopfaultChild::spawn(bin, upstream, false, tls).await?))
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Proxy::InProcess { handle, .. } => handle.local_addr,
            Proxy::Child(c) => c.addr,
        }
    }

    /// CPU the proxy used so far (only a child's can be told apart).
    fn cpu_ns(&self) -> Option<u64> {
        match self {
            Proxy::InProcess { .. } => None,
            Proxy::Child(c) => cpu_ns(c.pid),
        }
    }

    async fn stop(self) -> Result<()> {
        match self {
            Proxy::InProcess { handle, agg } => {
                handle.shutdown().await;
                timeout(CHILD_TIMEOUT, agg.finish(1, "passthrough", None)).await.context("aggregator")??;
                Ok(())
            }
            Proxy::Child(c) => c.stop().await,
        }
    }
}

/// A `popfault` child process (proxy or serve), stopped on drop.
struct PopfaultChild {
    child: Child,
    /// The popfault process itself (under `script` or a wrapper it is a
    /// descendant of `child`).
    pid: u32,
    addr: SocketAddr,
    stderr: PathBuf,
    /// Bytes the dashboard wrote to its terminal.
    drawn: Option<Arc<AtomicU64>>,
    /// Held open so that `script` never sees end of input.
    _stdin: Option<ChildStdin>,
}

static CHILDREN: AtomicU64 = AtomicU64::new(0);

fn temp_path(what: &str) -> PathBuf {
    let n = CHILDREN.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("popfault-bench-{}-{n}-{what}", std::process::id()))
}

/// `POPFAULT_BENCH_WRAP`, split into words (e.g. a profiler command line).
fn wrapper() -> Vec<String> {
    std::env::var("POPFAULT_BENCH_WRAP").map(|w| w.split_whitespace().map(String::from).collect()).unwrap_or_default()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl PopfaultChild {
    /// `popfault proxy --headless`, or with the dashboard drawing on a
    /// pseudo-terminal made by `script`.
    async fn spawn(bin: &Path, upstream: SocketAddr, dashboard: bool, tls: Option<&Pki>) -> Result<PopfaultChild> {
        let stderr = temp_path("proxy.err");
        let mut args: Vec<String> = wrapper();
        args.push(bin.display().to_string());
        args.extend(
            ["proxy", "--listen", "127.0.0.1:0", "--profile", "passthrough", "--seed", SEED, "--drain", "0"]
                .map(String::from),
        );
        // A backstop: an orphan (bench killed) still ends.
        args.extend(["--duration", "900"].map(String::from));
        args.push("--upstream".into());
        args.push(upstream.to_string());
        if let Some(pki) = tls {
            args.extend(["--client-tls", "implicit", "--upstream-tls", "implicit"].map(String::from));
            args.extend(["--ca".into(), pki.popfault_dir.display().to_string()]);
            args.extend(["--upstream-ca".into(), pki.server_ca.display().to_string()]);
        }
        if !dashboard {
            args.push("--headless".into());
            return PopfaultChild::spawn_plain(args, stderr).await;
        }
        // script runs `sh -c CMD` on a new pty: size it, then exec the
        // proxy with stderr (our address line) to a file.
        let cmd = format!(
            "stty rows 50 cols 160 2>/dev/null; exec {} 2>{}",
            args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
            shell_quote(&stderr.display().to_string())
        );
        let mut child = Command::new("script")
            .args(["-qfc", cmd.as_str(), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting script (util-linux) for a pseudo-terminal")?;
        let drawn = Arc::new(AtomicU64::new(0));
        if let Some(mut out) = child.stdout.take() {
            let drawn = drawn.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 16384];
                while let Ok(n) = out.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    drawn.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
        let stdin = child.stdin.take();
        let mut c = PopfaultChild {
            pid: child.id(),
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            stderr,
            drawn: Some(drawn),
            _stdin: stdin,
        };
        c.addr = c.wait_for_addr().await?;
        c.pid = c.find_popfault().await?;
        Ok(c)
    }

    async fn spawn_plain(args: Vec<String>, stderr: PathBuf) -> Result<PopfaultChild> {
        let err = std::fs::File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", args[0]))?;
        let mut c = PopfaultChild {
            pid: child.id(),
            child,
            addr: ([127, 0, 0, 1], 0).into(),
            stderr,
            drawn: None,
            _stdin: None,
        };
        c.addr = c.wait_for_addr().await?;
        c.pid = c.find_popfault().await?;
        Ok(c)
    }

    /// `popfault serve` with `users` mailboxes of `messages` messages.
    async fn serve(bin: &Path, users: usize, messages: usize, size: usize) -> Result<PopfaultChild> {
        // `timeout` (coreutils) is the backstop: serve has no --duration.
        let mut args = vec!["timeout".to_string(), "900".into(), bin.display().to_string()];
        args.extend(["serve", "--listen", "127.0.0.1:0", "--password", PASSWORD].map(String::from));
        args.extend(["--users".into(), users.to_string(), "--messages".into(), messages.to_string()]);
        args.extend(["--size".into(), size.to_string()]);
        PopfaultChild::spawn_plain(args, temp_path("serve.err")).await
    }

    /// The first `127.0.0.1:PORT` popfault prints on stderr: its listening
    /// address ("proxy 127.0.0.1:P → …", "POP3 server on 127.0.0.1:P").
    async fn wait_for_addr(&mut self) -> Result<SocketAddr> {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            // Only popfault's own complete lines (a wrapper may echo the
            // command line, --listen 127.0.0.1:0 included).
            let line = text
                .split_inclusive('\n')
                .filter(|l| l.starts_with("popfault:") && l.ends_with('\n'))
                .find_map(|l| l.split_once("127.0.0.1:"));
            if let Some((_, rest)) = line {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port @ 1..) = digits.parse::<u16>() {
                    return Ok(([127, 0, 0, 1], port).into());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("popfault exited ({status}) before listening: {}", text.trim());
            }
            ensure!(Instant::now() < deadline, "popfault printed no address in {CHILD_TIMEOUT:?}: {}", text.trim());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid of the `popfault` process: the child itself or a descendant
    /// (under `script`, `sh` or a profiler). A wrapper that renames the
    /// process (valgrind) leaves the deepest descendant.
    async fn find_popfault(&self) -> Result<u32> {
        let wrapped = !wrapper().is_empty();
        let deadline = Instant::now() + if wrapped { Duration::from_secs(3) } else { CHILD_TIMEOUT };
        loop {
            let mut queue = vec![self.child.id()];
            let mut last = self.child.id();
            while let Some(p) = queue.pop() {
                if std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "popfault") {
                    return Ok(p);
                }
                last = p;
                let children = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
                queue.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
            if Instant::now() >= deadline {
                ensure!(wrapped, "no popfault process under pid {}", self.child.id());
                return Ok(last);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM to popfault (it drains 0 s, prints its summary, restores the
    /// terminal), then waits; SIGKILL (on drop) if it does not end.
    async fn stop(mut self) -> Result<()> {
        signal(self.pid, "TERM");
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("popfault (pid {}) did not stop in {CHILD_TIMEOUT:?}; killed", self.pid);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// A child killed if still running when dropped (a figure that failed or
/// ran out of time).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `kill -SIG pid` (no libc dependency for kill(2)).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for PopfaultChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.pid, "KILL");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// CPU time used so far by the live threads of `pid`, in ns (the first
/// field of each /proc/PID/task/TID/schedstat).
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(total)
}

/// CPU used so far by the threads of `pid` that are neither its main thread
/// nor tokio's: in a proxy with a dashboard, the drawing thread.
fn side_threads_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let mut total = 0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if t.file_name().to_str() == Some(&pid.to_string()) || comm.starts_with("tokio") {
            continue;
        }
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// CPU used so far by this process (client, server, an in-process proxy)
/// and a proxy child, in ns.
fn cpu_all(proxy: Option<&Proxy>) -> u64 {
    cpu_ns(std::process::id()).unwrap_or(0) + proxy.and_then(Proxy::cpu_ns).unwrap_or(0)
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).ok_or_else(|| anyhow!("bad VmRSS line {line}"))
}

// === bulk ===

/// Reads a CPU clock in ns (e.g. [`cpu_all`]).
type Meter<'a> = &'a dyn Fn() -> u64;

/// One download of every message: (wire bytes, time on the wire, CPU ns
/// `meter` counted on the wire). Checking each body happens off the clock
/// and off the meter.
async fn bulk_pass(
    to: &Dial,
    want: &[StoredMessage],
    scratch: &mut Vec<u8>,
    meter: Option<Meter<'_>>,
) -> Result<(u64, Duration, u64)> {
    let mut c = Raw::login(to.clone(), "user1", 1 << 20).await?;
    let mut busy = Duration::ZERO;
    let (mut bytes, mut cpu) = (0u64, 0u64);
    let read = || meter.map_or(0, |m| m());
    for (i, m) in want.iter().enumerate() {
        let c0 = read();
        let t = Instant::now();
        let r = c.multiline(&format!("RETR {}", i + 1)).await?;
        busy += t.elapsed();
        cpu += read().saturating_sub(c0);
        bytes += r.wire as u64;
        check_body(&c.buf[r.body], m, scratch)?;
    }
    c.command("QUIT").await?;
    Ok((bytes, busy, cpu))
}

/// MB/s (10^6 bytes) of each of `passes` downloads, the bytes in all, and
/// the CPU ns `meter` counted on the wire.
async fn bulk_rates(
    to: impl Into<Dial>,
    want: &[StoredMessage],
    passes: usize,
    meter: Option<Meter<'_>>,
) -> Result<(Vec<f64>, u64, u64)> {
    let to = to.into();
    let mut scratch = Vec::new();
    let mut rates = Vec::new();
    let (mut total, mut cpu) = (0, 0);
    for _ in 0..passes {
        let (bytes, busy, used) = bulk_pass(&to, want, &mut scratch, meter).await?;
        rates.push(bytes as f64 / busy.as_secs_f64() / 1e6);
        total += bytes;
        cpu += used;
    }
    Ok((rates, total, cpu))
}

/// CPU seconds per GB (= ns per byte).
fn per_gb(cpu_ns: u64, bytes: u64) -> f64 {
    cpu_ns as f64 / bytes.max(1) as f64
}

async fn bulk_figure(opts: &Opts, s: &Sizes, mode: ProxyMode, bin: Option<&Path>, table: &mut Table) -> Result<()> {
    let cfg = ServerConfig { users: 1, messages: s.bulk_messages, size: s.bulk_size, password: PASSWORD.into() };
    let server = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
    let want = server.maildrop.remaining("user1");
    let mb = want.iter().map(|m| m.size).sum::<usize>() as f64 / 1e6;
    let result = async {
        if opts.wants("bulk") {
            let proxy = Proxy::start(mode, server.addr, bin, None).await?;
            let (mut direct, mut proxied) = (Vec::new(), Vec::new());
            let (mut cpu, mut relayed) = (0, 0);
            // Interleaved, so that a neighbour's load falls on both alike.
            for pass in 0..s.bulk_passes {
                let d = bulk_rates(server.addr, &want, 1, None).await?.0[0];
                let c0 = proxy.cpu_ns();
                let (p, bytes, _) = bulk_rates(proxy.addr(), &want, 1, None).await?;
                let p = p[0];
                if let (Some(c0), Some(c1)) = (c0, proxy.cpu_ns()) {
                    cpu += c1 - c0;
                    relayed += bytes;
                }
                eprintln!("bench: bulk pass {}: direct {d:.0} MB/s, proxy {p:.0} MB/s", pass + 1);
                direct.push(d);
                proxied.push(p);
            }
            proxy.stop().await?;
            let figure = format!(
                "bulk MB/s ({}×{:.0} MB ×{}, {mb:.0} MB/pass)",
                want.len(),
                s.bulk_size as f64 / 1e6,
                s.bulk_passes
            );
            table.ratio_row(&figure, &direct, &proxied, 0.6);
            if relayed > 0 {
                let v = per_gb(cpu, relayed);
                eprintln!("bench: bulk: the proxy used {v:.2} CPU s per GB relayed");
                table.row("bulk: proxy CPU s per GB", String::new(), format!("{v:.2}"), String::new(), "", None);
            }
        }
        if opts.wants("dashboard") {
            match bin {
                Some(b) => dashboard_figure(s, b, server.addr, &want, table).await?,
                None => table.skip("dashboard cost", "no popfault binary: cargo build --release"),
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    server.shutdown().await;
    result
}

/// Bulk through the real binary drawing its dashboard vs headless.
async fn dashboard_figure(
    s: &Sizes,
    bin: &Path,
    upstream: SocketAddr,
    want: &[StoredMessage],
    table: &mut Table,
) -> Result<()> {
    let (mut headless, mut drawing) = (Vec::new(), Vec::new());
    // CPU s per GB: steadier than MB/s on a shared machine.
    let (mut headless_cpu, mut drawing_cpu) = (Vec::new(), Vec::new());
    // The drawing thread's own CPU, and the whole proxy's, during bulk.
    let (mut thread_ns, mut proxy_ns, mut wall) = (0, 0, Duration::ZERO);
    let mut drawn = 0;
    for round in 0..s.dashboard_rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for dashboard in order {
            let p = PopfaultChild::spawn(bin, upstream, dashboard, None).await?;
            // Let the dashboard enter the alternate screen and draw a frame.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = p.drawn.as_ref().map_or(0, |d| d.load(Ordering::Relaxed));
            let (c0, t0, w0) = (cpu_ns(p.pid).unwrap_or(0), side_threads_ns(p.pid), Instant::now());
            let (rates, bytes, _) = bulk_rates(p.addr, want, s.bulk_passes, None).await?;
            let used = cpu_ns(p.pid).unwrap_or(0).saturating_sub(c0);
            let cpu = per_gb(used, bytes);
            if dashboard {
                thread_ns += side_threads_ns(p.pid).saturating_sub(t0);
                proxy_ns += used;
                wall += w0.elapsed();
            }
            let after = p.drawn.as_ref().map_or(0, |d| d.load(Ordering::Relaxed));
            let counter = p.drawn.clone();
            p.stop().await?;
            // Everything written to the terminal, first frame included (a
            // short bulk can fit between two frames).
            let total = counter.map_or(0, |d| d.load(Ordering::Relaxed));
            let r = median(&rates);
            eprintln!(
                "bench: dashboard round {}: {} {r:.0} MB/s, {cpu:.2} CPU s/GB{}",
                round + 1,
                if dashboard { "drawing" } else { "headless" },
                if dashboard {
                    format!(" ({} bytes drawn during bulk, {total} in all)", after - before)
                } else {
                    String::new()
                }
            );
            if dashboard {
                drawn += total;
                drawing.push(r);
                drawing_cpu.push(cpu);
            } else {
                headless.push(r);
                headless_cpu.push(cpu);
            }
        }
    }
    ensure!(drawn > 0, "the dashboard drew nothing on the pseudo-terminal");
    let cost = 1.0 - median(&drawing) / median(&headless);
    // When the two ranges overlap, a neighbour's load decides, not the
    // dashboard: no verdict from MB/s then (the thread's CPU gives one).
    let range = |v: &[f64]| v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    let ((hl, hh), (dl, dh)) = (range(&headless), range(&drawing));
    let noise = hl.max(dl) <= hh.min(dh);
    table.row(
        "bulk MB/s, real binary: headless vs dashboard",
        spread(&headless, 0),
        spread(&drawing, 0),
        format!("{:+.1}% cost{}", cost * 100.0, if noise { ", within noise" } else { "" }),
        "≤ 5%",
        (!noise).then_some(cost <= 0.05),
    );
    let extra = median(&drawing_cpu) / median(&headless_cpu) - 1.0;
    table.row(
        "bulk: proxy CPU s per GB, headless vs dashboard",
        spread(&headless_cpu, 2),
        spread(&drawing_cpu, 2),
        format!("{:+.1}% CPU", extra * 100.0),
        "",
        None,
    );
    let share = thread_ns as f64 / proxy_ns.max(1) as f64;
    eprintln!(
        "bench: dashboard thread: {:.1} ms CPU in {:.2} s of bulk, {:.2}% of the proxy's CPU",
        thread_ns as f64 / 1e6,
        wall.as_secs_f64(),
        share * 100.0
    );
    // Under a second of bulk is a few frames at most: no verdict (--quick).
    let judged = wall >= Duration::from_secs(1);
    table.row(
        "bulk: dashboard thread CPU, share of the proxy's",
        String::new(),
        format!("{:.1} ms/s", thread_ns as f64 / 1e6 / wall.as_secs_f64().max(1e-9)),
        format!("{:.2}%{}", share * 100.0, if judged { "" } else { ", bulk too short" }),
        "≤ 5%",
        judged.then_some(share <= 0.05),
    );
    Ok(())
}

// === round trip ===

/// Round trips of `n` NOOPs, in nanoseconds, appended to `out`.
async fn noops(c: &mut Raw, n: usize, out: &mut Vec<u64>) -> Result<()> {
    for _ in 0..n {
        let t = Instant::now();
        c.send(b"NOOP\r\n").await?;
        c.ok().await?;
        out.push(t.elapsed().as_nanos() as u64);
    }
    Ok(())
}

/// p50 and p99 in µs.
fn percentiles(v: &mut [u64]) -> (f64, f64) {
    v.sort_unstable();
    let at = |p: usize| v.get((v.len() * p / 100).min(v.len().saturating_sub(1))).map_or(f64::NAN, |n| *n as f64 / 1e3);
    (at(50), at(99))
}

/// Direct p50, p99, proxied p50, p99 (µs, blocks interleaved), and the CPU
/// µs per NOOP of all the processes, direct and proxied.
async fn noop_latencies(s: &Sizes, mode: ProxyMode, bin: Option<&Path>) -> Result<[f64; 6]> {
    let cfg = ServerConfig { users: 2, messages: 1, size: 1024, password: PASSWORD.into() };
    let server = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
    let result = async {
        let proxy = Proxy::start(mode, server.addr, bin, None).await?;
        let mut direct = Raw::login(server.addr, "user1", 4096).await?;
        let mut proxied = Raw::login(proxy.addr(), "user2", 4096).await?;
        let (mut d, mut p) = (Vec::with_capacity(s.noops), Vec::with_capacity(s.noops));
        noops(&mut direct, s.noop_warmup, &mut Vec::new()).await?;
        noops(&mut proxied, s.noop_warmup, &mut Vec::new()).await?;
        let block = (s.noops / 10).max(1);
        let (mut cpu_d, mut cpu_p) = (0, 0);
        while d.len() < s.noops {
            let k = block.min(s.noops - d.len());
            let c0 = cpu_all(Some(&proxy));
            noops(&mut direct, k, &mut d).await?;
            let c1 = cpu_all(Some(&proxy));
            noops(&mut proxied, k, &mut p).await?;
            cpu_d += c1 - c0;
            cpu_p += cpu_all(Some(&proxy)) - c1;
        }
        let per = |ns: u64| ns as f64 / 1e3 / s.noops as f64;
        direct.command("QUIT").await?;
        proxied.command("QUIT").await?;
        proxy.stop().await?;
        let (d50, d99) = percentiles(&mut d);
        let (p50, p99) = percentiles(&mut p);
        Ok::<_, anyhow::Error>([d50, d99, p50, p99, per(cpu_d), per(cpu_p)])
    }
    .await;
    server.shutdown().await;
    result
}

fn noop_rows(table: &mut Table, label: &str, n: usize, l: [f64; 6], target_p50: bool) {
    let [d50, d99, p50, p99, cpu_d, cpu_p] = l;
    let added = p50 - d50;
    let (target, ok) = if target_p50 { ("≤ +20 µs", Some(added <= 20.0)) } else { ("", None) };
    table.row(
        &format!("NOOP p50 µs, {label} ({n})"),
        format!("{d50:.1}"),
        format!("{p50:.1}"),
        format!("{added:+.1} µs"),
        target,
        ok,
    );
    table.row(
        &format!("NOOP p99 µs, {label}"),
        format!("{d99:.1}"),
        format!("{p99:.1}"),
        format!("{:+.1} µs", p99 - d99),
        "",
        None,
    );
    table.row(
        &format!("NOOP: CPU µs per NOOP, all processes, {label}"),
        format!("{cpu_d:.1}"),
        format!("{cpu_p:.1}"),
        format!("{:.2}×", cpu_p / cpu_d),
        "",
        None,
    );
}

async fn noop_figure(s: &Sizes, mode: ProxyMode, bin: Option<&Path>, table: &mut Table) -> Result<()> {
    let l = noop_latencies(s, mode, bin).await?;
    eprintln!(
        "bench: NOOP unpinned: direct p50 {:.1} p99 {:.1} µs, proxy p50 {:.1} p99 {:.1} µs",
        l[0], l[1], l[2], l[3]
    );
    noop_rows(table, "unpinned", s.noops, l, false);
    Ok(())
}

/// `--noop-only`: what the pinned re-run does; one line on stdout.
async fn noop_only(opts: &Opts) -> Result<()> {
    let mode = if opts.child { ProxyMode::Child } else { ProxyMode::InProcess };
    let bin = popfault_binary().ok();
    let [d50, d99, p50, p99, cpu_d, cpu_p] = noop_latencies(&opts.sizes(), mode, bin.as_deref()).await?;
    println!("noop-result {d50} {d99} {p50} {p99} {cpu_d} {cpu_p}");
    Ok(())
}

/// Re-runs this program under `taskset -c 0` with `--noop-only`.
async fn pinned_figure(opts: &Opts, table: &mut Table) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg("0").arg(exe).arg("--noop-only");
    if opts.quick {
        cmd.arg("--quick");
    }
    if opts.child {
        cmd.arg("--child");
    }
    let out_path = temp_path("pinned.out");
    let out = std::fs::File::create(&out_path)?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting taskset (util-linux)")?;
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + FIGURE_TIMEOUT / 2;
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < deadline, "pinned run over {:?}", FIGURE_TIMEOUT / 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    ensure!(status.success(), "pinned run failed ({status}): {}", text.trim());
    let line = text.lines().find(|l| l.starts_with("noop-result ")).ok_or_else(|| anyhow!("no result: {text}"))?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let l: [f64; 6] = v.try_into().map_err(|_| anyhow!("bad result line {line}"))?;
    eprintln!(
        "bench: NOOP pinned: direct p50 {:.1} p99 {:.1} µs, proxy p50 {:.1} p99 {:.1} µs",
        l[0], l[1], l[2], l[3]
    );
    noop_rows(table, "pinned to 1 CPU", opts.sizes().noops, l, true);
    Ok(())
}

// === sessions/s ===

/// One realistic session: login, STAT, UIDL, RETR and DELE each of `want`
/// (messages 1..), QUIT (which commits the deletions).
async fn one_session(to: &Dial, user: &str, want: &[StoredMessage], scratch: &mut Vec<u8>) -> Result<()> {
    let mut c = Raw::login(to.clone(), user, 64 * 1024).await?;
    c.command("STAT").await?;
    c.multiline("UIDL").await?;
    for (i, m) in want.iter().enumerate() {
        let r = c.multiline(&format!("RETR {}", i + 1)).await?;
        check_body(&c.buf[r.body], m, scratch)?;
    }
    for i in 0..want.len() {
        c.command(&format!("DELE {}", i + 1)).await?;
    }
    c.command("QUIT").await
}

/// Sessions per second of `s.sessions` sessions, `s.in_flight` at a time,
/// each worker on its own mailbox.
async fn session_rate(to: impl Into<Dial>, maildrop: &Maildrop, s: &Sizes) -> Result<f64> {
    let to = to.into();
    let per = s.sessions / s.in_flight;
    let extra = s.sessions % s.in_flight;
    let mut workers = JoinSet::new();
    let started = Instant::now();
    for w in 0..s.in_flight {
        let user = format!("user{}", w + 1);
        let mail = maildrop.remaining(&user);
        let n = per + usize::from(w < extra);
        let k = s.retr_per_session;
        ensure!(mail.len() >= n * k, "{user} has {} messages, needs {}", mail.len(), n * k);
        let to = to.clone();
        workers.spawn(async move {
            let mut scratch = Vec::new();
            for i in 0..n {
                one_session(&to, &user, &mail[i * k..(i + 1) * k], &mut scratch)
                    .await
                    .with_context(|| format!("{user} session {}", i + 1))?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let elapsed = started.elapsed();
    let expunged = maildrop.ledger().len();
    ensure!(
        expunged == s.sessions * s.retr_per_session,
        "{expunged} messages expunged, expected {}",
        s.sessions * s.retr_per_session
    );
    Ok(s.sessions as f64 / elapsed.as_secs_f64())
}

async fn sessions_figure(s: &Sizes, mode: ProxyMode, bin: Option<&Path>, table: &mut Table) -> Result<()> {
    let per_user = s.sessions.div_ceil(s.in_flight) * s.retr_per_session;
    let cfg = ServerConfig {
        users: s.in_flight,
        messages: per_user,
        size: s.session_message_size,
        password: PASSWORD.into(),
    };
    // Fresh mailboxes for each run: the previous one deleted its mail.
    // Each with the CPU µs per session of all the processes.
    let per = |ns: u64| ns as f64 / 1e3 / s.sessions as f64;
    let run_direct = async || -> Result<(f64, f64)> {
        let server = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
        let c0 = cpu_all(None);
        let r = session_rate(server.addr, &server.maildrop, s).await;
        let cpu = per(cpu_all(None) - c0);
        server.shutdown().await;
        Ok((r?, cpu))
    };
    let run_proxied = async || -> Result<(f64, f64)> {
        let server: ServerHandle = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
        let r = async {
            let proxy = Proxy::start(mode, server.addr, bin, None).await?;
            let c0 = cpu_all(Some(&proxy));
            let r = session_rate(proxy.addr(), &server.maildrop, s).await;
            let cpu = per(cpu_all(Some(&proxy)) - c0);
            proxy.stop().await?;
            Ok((r?, cpu))
        }
        .await;
        server.shutdown().await;
        r
    };
    let (mut direct, mut proxied, mut cpu_d, mut cpu_p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..2 {
        let (d, cd) = run_direct().await?;
        let (p, cp) = run_proxied().await?;
        eprintln!(
            "bench: sessions round {}: direct {d:.0}/s ({cd:.0} CPU µs each), proxy {p:.0}/s ({cp:.0} CPU µs each)",
            round + 1
        );
        direct.push(d);
        proxied.push(p);
        cpu_d.push(cd);
        cpu_p.push(cp);
    }
    table.ratio_row(&format!("sessions/s ({} @{} in flight)", s.sessions, s.in_flight), &direct, &proxied, 0.5);
    table.cpu_row("sessions: CPU µs per session, all processes", &cpu_d, &cpu_p, 0);
    Ok(())
}

// === haproxy ===

/// The path of `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// haproxy 2.x in tcp mode in front of `upstream`: a plain relay with no
/// POP3 in it, the yardstick for popfault's per-session cost.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
}

impl Haproxy {
    async fn start(bin: &Path, upstream: SocketAddr) -> Result<Haproxy> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = temp_path("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend pop3\n  bind 127.0.0.1:{port}\n  default_backend server\nbackend server\n  server s1 {upstream}\n"
            ),
        )?;
        let errors = temp_path("haproxy.err");
        let mut child = Command::new(bin)
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&errors)?)
            .spawn()
            .context("starting haproxy")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while TcpStream::connect(addr).await.is_err() {
            let said = || std::fs::read_to_string(&errors).unwrap_or_default();
            if let Some(status) = child.try_wait()? {
                bail!("haproxy exited ({status}): {}", said().trim());
            }
            ensure!(
                Instant::now() < deadline,
                "haproxy did not listen on {addr} in {CHILD_TIMEOUT:?}: {}",
                said().trim()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Haproxy { child, addr, config })
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Sessions per second through the real popfault binary (headless,
/// passthrough) and through haproxy in tcp mode, interleaved, each in
/// front of a fresh embedded server: popfault's sessions/s as a multiple
/// of haproxy's in the same sitting.
async fn haproxy_figure(s: &Sizes, bin: &Path, haproxy: &Path, table: &mut Table) -> Result<()> {
    let per_user = s.sessions.div_ceil(s.in_flight) * s.retr_per_session;
    let cfg = ServerConfig {
        users: s.in_flight,
        messages: per_user,
        size: s.session_message_size,
        password: PASSWORD.into(),
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let server = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
        let proxy = Proxy::start(ProxyMode::Child, server.addr, Some(bin), None).await?;
        let p = session_rate(proxy.addr(), &server.maildrop, s).await;
        proxy.stop().await?;
        server.shutdown().await;
        let server = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
        let h = Haproxy::start(haproxy, server.addr).await?;
        let r = session_rate(h.addr, &server.maildrop, s).await;
        h.stop();
        server.shutdown().await;
        let (p, r) = (p?, r?);
        eprintln!("bench: haproxy round {}: popfault {p:.0}/s, haproxy {r:.0}/s", round + 1);
        ours.push(p);
        theirs.push(r);
    }
    let ratio = median(&ours) / median(&theirs);
    table.row(
        &format!("sessions/s, real binary vs haproxy tcp mode ({} @{})", s.sessions, s.in_flight),
        spread(&theirs, 0),
        spread(&ours, 0),
        format!("{ratio:.2}× haproxy"),
        "≥ 1.00×",
        Some(ratio >= 1.0),
    );
    Ok(())
}

// === memory ===

/// Opens `n` logged-in sessions through `addr` (user1…userN), `parallel`
/// at a time; the failures are counted, the first error kept.
async fn open_idle(addr: SocketAddr, n: usize, parallel: usize) -> (Vec<Raw>, usize, Option<String>) {
    let mut held = Vec::with_capacity(n);
    let (mut failed, mut first) = (0, None);
    let mut set = JoinSet::new();
    let mut next = 0;
    loop {
        while set.len() < parallel && next < n {
            next += 1;
            let user = format!("user{next}");
            set.spawn(async move {
                let mut c = Raw::login(addr, &user, 512).await?;
                c.shrink();
                Ok::<_, anyhow::Error>(c)
            });
        }
        let Some(r) = set.join_next().await else { break };
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(c) => held.push(c),
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    (held, failed, first)
}

async fn memory_figure(s: &Sizes, bin: &Path, table: &mut Table) -> Result<()> {
    let n = s.idle_sessions;
    let server = PopfaultChild::serve(bin, n, 1, 256).await?;
    let proxy = PopfaultChild::spawn(bin, server.addr, false, None).await?;
    // Warm up (runtime threads, allocator arenas), then the baseline.
    for _ in 0..20 {
        let mut c = Raw::login(proxy.addr, "user1", 512).await?;
        c.command("QUIT").await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = rss_kib(proxy.pid)?;
    let server_base = rss_kib(server.pid)?;
    let t = Instant::now();
    let (mut held, failed, first) = open_idle(proxy.addr, n, 64).await;
    eprintln!("bench: {} sessions opened in {:.1} s, {failed} failed", held.len(), t.elapsed().as_secs_f64());
    if let Some(e) = &first {
        eprintln!("bench: first failure: {e}");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let with = rss_kib(proxy.pid)?;
    let server_with = rss_kib(server.pid)?;
    // Held means still answering, all at once: a NOOP on every one.
    let mut alive = 0;
    for c in &mut held {
        if c.command("NOOP").await.is_ok() {
            alive += 1;
            c.shrink();
        }
    }
    let after_noop = rss_kib(proxy.pid)?;
    drop(held);
    let limits = nofile_limits(Some(proxy.pid));
    proxy.stop().await?;
    server.stop().await?;

    let per = (with as f64 - base as f64) / alive.max(1) as f64;
    let per_after = (after_noop as f64 - base as f64) / alive.max(1) as f64;
    eprintln!(
        "bench: proxy RSS {base} KiB idle → {with} KiB with {alive} sessions ({per:.2} KiB each; {per_after:.2} after a NOOP on each); \
         server {server_base} → {server_with} KiB"
    );
    table.row(
        &format!("RSS KiB per idle session ({alive} held)"),
        format!("server {:.2}", (server_with as f64 - server_base as f64) / alive.max(1) as f64),
        format!("{per:.2} ({base}→{with} KiB)"),
        format!("{per_after:.2} after NOOP"),
        "≤ 4 KiB",
        Some(per <= 4.0),
    );
    let why = match (alive < n, limits) {
        (true, Some((soft, _))) => format!("proxy open-files limit {soft}: 2 fds a session"),
        _ => String::new(),
    };
    table.row(
        &format!("idle sessions held at once{}", if why.is_empty() { String::new() } else { format!(" ({why})") }),
        String::new(),
        format!("{alive}/{n}"),
        String::new(),
        &format!("{n}"),
        Some(alive == n),
    );
    Ok(())
}

// === TLS ===

/// The TLS figures' certificates, in a temporary directory removed on drop:
/// the POP3S server's CA (the terminator's leaf) and popfault's own CA (the
/// leaves it shows clients), and the load client's configs trusting one or
/// the other.
struct Pki {
    dir: PathBuf,
    /// The server CA's certificate, what popfault trusts upstream
    /// (`--upstream-ca`).
    server_ca: PathBuf,
    /// popfault's CA directory (`--ca`).
    popfault_dir: PathBuf,
    popfault_ca: Arc<Ca>,
    /// The terminator's: a leaf for 127.0.0.1 signed by the server CA.
    terminator: Arc<rustls::ServerConfig>,
    /// The load client to the terminator (direct), and to popfault.
    to_server: TlsConnector,
    to_popfault: TlsConnector,
}

impl Pki {
    fn new() -> Result<Pki> {
        let dir = temp_path("tls");
        let popfault_dir = dir.join("popfault-ca");
        let (server_ca, _) = Ca::load_or_create(&dir.join("server-ca"))?;
        let (popfault_ca, _) = Ca::load_or_create(&popfault_dir)?;
        let client = |ca: PathBuf| -> Result<TlsConnector> {
            let mut config = (*tls::client_config(&UpstreamTrust::File(ca), None)?).clone();
            // A full handshake every session, as a mail client started afresh
            // (from cron, say) makes: the dearest case for sessions/s.
            config.resumption = Resumption::disabled();
            Ok(TlsConnector::from(Arc::new(config)))
        };
        let to_server = client(server_ca.cert_path())?;
        let to_popfault = client(popfault_ca.cert_path())?;
        let server_ca_file = server_ca.cert_path();
        let terminator = Leaves::new(Arc::new(server_ca), None).server_config(&["127.0.0.1".into()]);
        Ok(Pki {
            dir,
            server_ca: server_ca_file,
            popfault_dir,
            popfault_ca: Arc::new(popfault_ca),
            terminator,
            to_server,
            to_popfault,
        })
    }

    /// popfault's TLS as `--client-tls implicit --upstream-tls implicit
    /// --ca DIR --upstream-ca FILE` make it, in front of `upstream`.
    fn proxy_config(&self, upstream: SocketAddr) -> Result<TlsConfig> {
        Ok(TlsConfig {
            client: ClientTls::Implicit,
            leaves: Some(Arc::new(Leaves::new(self.popfault_ca.clone(), None))),
            upstream: UpstreamTls::Implicit,
            connector: Some(tls::client_config(&UpstreamTrust::File(self.server_ca.clone()), None)?),
            upstream_name: Some(tls::upstream_name(&upstream.to_string())?),
            fallback_names: vec![upstream.ip().to_string()],
            handshake_timeout: Duration::from_secs(10),
        })
    }

    fn dial_server(&self, t: &Terminator) -> Dial {
        Dial { addr: t.addr, tls: Some(self.to_server.clone()) }
    }

    fn dial_popfault(&self, p: &Proxy) -> Dial {
        Dial { addr: p.addr(), tls: Some(self.to_popfault.clone()) }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The terminator's copy buffers, each way: tokio's default 8 KiB would
/// make it, not popfault, the narrow part in bulk.
const TERMINATOR_BUF: usize = 64 * 1024;

/// A POP3S server for the TLS figures: rustls (the server CA's leaf) in
/// front of the embedded server's plain port, bytes copied both ways. The
/// direct and the proxied paths both go through it, so their ratio is
/// popfault's own cost: two TLS sessions instead of none, and the parsing.
struct Terminator {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<TerminatorStats>,
}

#[derive(Default)]
struct TerminatorStats {
    full: AtomicU64,
    resumed: AtomicU64,
    /// Version and cipher suite of the first handshake.
    suite: std::sync::OnceLock<String>,
}

impl Terminator {
    async fn start(upstream: SocketAddr, config: Arc<rustls::ServerConfig>) -> Result<Terminator> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let stats = Arc::new(TerminatorStats::default());
        let counts = stats.clone();
        let task = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    // Out of descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let (acceptor, stats) = (acceptor.clone(), counts.clone());
                conns.spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    // A plain probe (the binary checks the upstream is up
                    // with a bare connect) ends here, uncounted.
                    let Ok(Ok(mut tls)) = timeout(IO_TIMEOUT, acceptor.accept(tcp)).await else { return };
                    let state = tls.get_ref().1;
                    let resumed = state.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                    let count = if resumed { &stats.resumed } else { &stats.full };
                    count.fetch_add(1, Ordering::Relaxed);
                    if let (Some(v), Some(s)) = (state.protocol_version(), state.negotiated_cipher_suite()) {
                        stats.suite.get_or_init(|| format!("{v:?} {:?}", s.suite()));
                    }
                    let Ok(Ok(mut up)) = timeout(IO_TIMEOUT, TcpStream::connect(upstream)).await else { return };
                    let _ = up.set_nodelay(true);
                    // Ends in an error when a client drops its TLS without
                    // close_notify after QUIT, as the load client does.
                    let _ = tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut up, TERMINATOR_BUF, TERMINATOR_BUF)
                        .await;
                });
            }
        });
        Ok(Terminator { addr, task, stats })
    }

    /// Handshakes so far: (full, resumed).
    fn handshakes(&self) -> (u64, u64) {
        (self.stats.full.load(Ordering::Relaxed), self.stats.resumed.load(Ordering::Relaxed))
    }

    fn suite(&self) -> String {
        self.stats.suite.get().cloned().unwrap_or_else(|| "?".into())
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Bulk with TLS on both sides: the load client over TLS to the terminator
/// (direct) and to popfault, which speaks TLS to the same terminator;
/// passes interleaved. MB/s as `bulk` counts it, and the CPU per GB of all
/// the processes, counted on the wire only (not the check).
async fn tls_bulk_figure(s: &Sizes, mode: ProxyMode, bin: Option<&Path>, pki: &Pki, table: &mut Table) -> Result<()> {
    let cfg = ServerConfig { users: 1, messages: s.bulk_messages, size: s.bulk_size, password: PASSWORD.into() };
    let server = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
    let want = server.maildrop.remaining("user1");
    let mb = want.iter().map(|m| m.size).sum::<usize>() as f64 / 1e6;
    let term = Terminator::start(server.addr, pki.terminator.clone()).await?;
    let result = async {
        let proxy = Proxy::start(mode, term.addr, bin, Some(pki)).await?;
        let (direct_to, proxy_to) = (pki.dial_server(&term), pki.dial_popfault(&proxy));
        let meter = || cpu_all(Some(&proxy));
        let (mut direct, mut proxied, mut cpu_d, mut cpu_p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut own, mut relayed) = (0, 0);
        for pass in 0..s.bulk_passes {
            let (d, bytes_d, used_d) = bulk_rates(direct_to.clone(), &want, 1, Some(&meter)).await?;
            let c0 = proxy.cpu_ns();
            let (p, bytes_p, used_p) = bulk_rates(proxy_to.clone(), &want, 1, Some(&meter)).await?;
            if let (Some(c0), Some(c1)) = (c0, proxy.cpu_ns()) {
                own += c1 - c0;
                relayed += bytes_p;
            }
            let (d, p) = (d[0], p[0]);
            let (gd, gp) = (per_gb(used_d, bytes_d), per_gb(used_p, bytes_p));
            eprintln!(
                "bench: tls-bulk pass {}: direct {d:.0} MB/s ({gd:.2} CPU s/GB), proxy {p:.0} MB/s ({gp:.2} CPU s/GB)",
                pass + 1
            );
            direct.push(d);
            proxied.push(p);
            cpu_d.push(gd);
            cpu_p.push(gp);
        }
        proxy.stop().await?;
        let figure = format!(
            "tls-bulk MB/s, TLS both sides ({}×{:.0} MB ×{}, {mb:.0} MB/pass; {})",
            want.len(),
            s.bulk_size as f64 / 1e6,
            s.bulk_passes,
            term.suite()
        );
        table.ratio_row(&figure, &direct, &proxied, 0.5);
        table.cpu_row("tls-bulk: CPU s per GB, all processes", &cpu_d, &cpu_p, 2);
        if relayed > 0 {
            let v = per_gb(own, relayed);
            eprintln!("bench: tls-bulk: the proxy used {v:.2} CPU s per GB relayed");
            table.row("tls-bulk: proxy CPU s per GB", String::new(), format!("{v:.2}"), String::new(), "", None);
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    term.stop().await;
    server.shutdown().await;
    result
}

/// Sessions/s with TLS on both sides, as `sessions` runs them: each
/// session a full handshake with whatever the client reaches (the
/// terminator, or popfault, which makes its own to the terminator). Two
/// rounds, each with a fresh server and terminator, direct then proxied.
async fn tls_sessions_figure(
    s: &Sizes,
    mode: ProxyMode,
    bin: Option<&Path>,
    pki: &Pki,
    table: &mut Table,
) -> Result<()> {
    let per_user = s.sessions.div_ceil(s.in_flight) * s.retr_per_session;
    let cfg = ServerConfig {
        users: s.in_flight,
        messages: per_user,
        size: s.session_message_size,
        password: PASSWORD.into(),
    };
    let per = |ns: u64| ns as f64 / 1e3 / s.sessions as f64;
    // (sessions/s, CPU µs per session of all the processes and of a proxy
    // child alone, the terminator's (full, resumed) handshakes, its suite)
    type Run = (f64, f64, Option<f64>, (u64, u64), String);
    let run = async |proxied: bool| -> Result<Run> {
        let server: ServerHandle = server::spawn("127.0.0.1:0".parse()?, Maildrop::new(&cfg)).await?;
        let term = Terminator::start(server.addr, pki.terminator.clone()).await?;
        let r = async {
            if !proxied {
                let c0 = cpu_all(None);
                let r = session_rate(pki.dial_server(&term), &server.maildrop, s).await?;
                return Ok((r, per(cpu_all(None) - c0), None));
            }
            let proxy = Proxy::start(mode, term.addr, bin, Some(pki)).await?;
            let (c0, own0) = (cpu_all(Some(&proxy)), proxy.cpu_ns());
            let r = session_rate(pki.dial_popfault(&proxy), &server.maildrop, s).await;
            let cpu = per(cpu_all(Some(&proxy)) - c0);
            let own = own0.zip(proxy.cpu_ns()).map(|(a, b)| per(b - a));
            proxy.stop().await?;
            Ok::<_, anyhow::Error>((r?, cpu, own))
        }
        .await;
        let (handshakes, suite) = (term.handshakes(), term.suite());
        term.stop().await;
        server.shutdown().await;
        let (rate, cpu, own) = r?;
        Ok((rate, cpu, own, handshakes, suite))
    };
    let (mut direct, mut proxied, mut cpu_d, mut cpu_p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut resumed_d, mut resumed_p, mut suite, mut cpu_own) = ((0, 0), (0, 0), String::new(), Vec::new());
    for round in 0..2 {
        let (d, cd, _, (full_d, res_d), _) = run(false).await?;
        let (p, cp, own, (full_p, res_p), su) = run(true).await?;
        eprintln!(
            "bench: tls-sessions round {}: direct {d:.0}/s ({cd:.0} CPU µs each), proxy {p:.0}/s ({cp:.0} CPU µs each{}); \
             server handshakes resumed: direct {res_d}/{}, from popfault {res_p}/{}",
            round + 1,
            own.map_or(String::new(), |o| format!(", {o:.0} of them the proxy's")),
            full_d + res_d,
            full_p + res_p
        );
        cpu_own.extend(own);
        direct.push(d);
        proxied.push(p);
        cpu_d.push(cd);
        cpu_p.push(cp);
        resumed_d = (resumed_d.0 + res_d, resumed_d.1 + full_d + res_d);
        resumed_p = (resumed_p.0 + res_p, resumed_p.1 + full_p + res_p);
        suite = su;
    }
    let figure = format!("tls-sessions/s, TLS both sides ({} @{} in flight; {suite})", s.sessions, s.in_flight);
    table.ratio_row(&figure, &direct, &proxied, 0.4);
    table.cpu_row("tls-sessions: CPU µs per session, all processes", &cpu_d, &cpu_p, 0);
    if !cpu_own.is_empty() {
        table.row(
            "tls-sessions: proxy CPU µs per session",
            String::new(),
            spread(&cpu_own, 0),
            String::new(),
            "",
            None,
        );
    }
    table.row(
        "tls-sessions: server-side handshakes resumed (client: never)",
        format!("{}/{}", resumed_d.0, resumed_d.1),
        format!("{}/{} (popfault's)", resumed_p.0, resumed_p.1),
        String::new(),
        "",
        None,
    );
    Ok(())
}
