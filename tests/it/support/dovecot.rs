//! A private Dovecot POP3 server for tests against a real server.
//!
//! [`Dovecot::start`] writes a whole configuration under a fresh temp
//! directory (`<tmp>/popfault-dovecot-<pid>-<n>`; `/etc/dovecot` is never
//! read), seeds a Maildir, starts `dovecot -c CONF` (it daemonizes) listening
//! on 127.0.0.1 on a free port, and waits for its `+OK` greeting. Dropping the
//! handle sends SIGTERM to the master's process group, waits for it to go
//! and removes the directory; a watchdog does the same if the test process
//! dies first. Every instance has its own directory and port, so tests in
//! one binary may run in parallel.
//!
//! When Dovecot is not installed, `start` prints a `SKIPPED: ...` line and
//! returns `None`; with `POPFAULT_REQUIRE_DOVECOT=1` it panics instead (CI
//! installs Dovecot with `.ci/install-dovecot.sh` and sets it).
//! `POPFAULT_DOVECOT_BIN` names the binary to use instead of searching `PATH`
//! and the sbin directories (set it to a missing path to simulate absence).
//!
//! Written for and tested with Dovecot 2.3 (Debian bookworm ships 2.3.19);
//! 2.2 is accepted too, untested. 2.4 changed the configuration syntax: with
//! any other version `start` skips (or, when required, fails) saying so.
//!
//! Run as root (as CI does), the passwd-file user maps to the `mail` system
//! user (Dovecot refuses uid 0 for mail) and Dovecot's own `dovecot` and
//! `dovenull` users run the auth and login processes. Run as anyone else,
//! everything runs as that user.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Bound on Dovecot's start: pid file and first `+OK` greeting.
const START_LIMIT: Duration = Duration::from_secs(10);
/// Bound on Dovecot's stop after SIGTERM (then SIGKILL).
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// Bound on [`Dovecot::wait_idle`].
const IDLE_LIMIT: Duration = Duration::from_secs(10);
/// How often to try a fresh port when another process took ours.
const PORT_ATTEMPTS: usize = 10;
/// Longest temp-dir prefix used as is: Dovecot's sockets live below it and a
/// Unix socket path may not exceed 107 bytes.
const MAX_ROOT_LEN: usize = 60;

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// A running private Dovecot POP3 server with one user and a seeded Maildir.
pub struct Dovecot {
    /// Where it listens for POP3 (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The one user's name ...
    pub user: String,
    /// ... and password (USER/PASS and SASL PLAIN work, plaintext allowed).
    pub password: String,
    /// `dovecot --version`, e.g. "2.3.19.1 (9b53102964)".
    pub version: String,
    /// Where it listens for POP3S (implicit TLS), when started with
    /// [`Dovecot::start_tls`]; STLS is then offered on `addr` too.
    pub pop3s: Option<SocketAddr>,
    dir: PathBuf,
    pid: u32,
    /// Stops Dovecot if this test process dies without dropping us.
    watchdog: Option<Child>,
}

impl Dovecot {
    /// Starts a server whose user has `messages` messages: message `n`
    /// (1-based, in order) is [`Dovecot::seeded_message`]`(n)`.
    ///
    /// `None` (after printing a `SKIPPED:` line) when Dovecot is not
    /// installed and `POPFAULT_REQUIRE_DOVECOT` is unset; panics if it is set,
    /// and whenever an installed Dovecot fails to start.
    pub fn start(messages: usize) -> Option<Dovecot> {
        Dovecot::start_with(messages, false)
    }

    /// As [`Dovecot::start`], with TLS: a POP3S listener ([`Dovecot::pop3s`])
    /// and STLS on the plain one, with a self-signed certificate for
    /// `localhost` made for this instance by `openssl` (its key lives and
    /// dies with the instance's directory). Skips like `start` when
    /// `openssl` is missing.
    pub fn start_tls(messages: usize) -> Option<Dovecot> {
        if which("openssl").is_none() {
            return skip("openssl not installed", "openssl makes the test certificate");
        }
        Dovecot::start_with(messages, true)
    }

    /// As [`Dovecot::start`], seeded with `messages` (message `n` is
    /// `messages[n - 1]`, byte for byte; a Message-ID is not required).
    pub fn start_seeded(messages: &[Vec<u8>]) -> Option<Dovecot> {
        Dovecot::start_with_contents(messages, false)
    }

    fn start_with(messages: usize, tls: bool) -> Option<Dovecot> {
        let contents: Vec<Vec<u8>> = (1..=messages).map(Dovecot::seeded_message).collect();
        Dovecot::start_with_contents(&contents, tls)
    }

    fn start_with_contents(messages: &[Vec<u8>], tls: bool) -> Option<Dovecot> {
        let bin = match find_binary() {
            Ok(bin) => bin,
            Err(why) => return skip("dovecot not installed", &why),
        };
        let version = run(Command::new(&bin).arg("--version"))
            .map(|out| out.lines().next().unwrap_or_default().to_string())
            .unwrap_or_else(|e| panic!("{} is installed but `--version` fails: {e}", bin.display()));
        if !supported(&version) {
            let why = format!("{} is version {version}; this support is written for Dovecot 2.3", bin.display());
            return skip("dovecot installed but unsupported", &why);
        }
        Some(Dovecot::launch(&bin, version, messages, tls))
    }

    /// The Message-ID (with angle brackets) of seeded message `n` (1-based).
    pub fn message_id(n: usize) -> String {
        format!("<dovecot-{n}@popfault.test>")
    }

    /// Seeded message `n` (1-based) byte for byte: an RFC 5322 message with
    /// CRLF line endings, a unique Message-ID, and body lines that begin with
    /// '.' (a lone ".", "..", ".text") so that byte-stuffing is exercised.
    /// Sizes differ from message to message.
    pub fn seeded_message(n: usize) -> Vec<u8> {
        let mut lines = vec![
            "Return-Path: <sender@popfault.test>".to_string(),
            "From: popfault sender <sender@popfault.test>".to_string(),
            "To: popfault@popfault.test".to_string(),
            format!("Subject: popfault dovecot test message {n}"),
            "Date: Mon, 01 Jan 2024 00:00:00 +0000".to_string(),
            format!("Message-ID: {}", Dovecot::message_id(n)),
            "MIME-Version: 1.0".to_string(),
            "Content-Type: text/plain; charset=us-ascii".to_string(),
            String::new(),
            format!("This is test message {n}."),
            ".".to_string(),
            ".leading dot".to_string(),
            "..".to_string(),
            "...three dots".to_string(),
            " .not at the start".to_string(),
        ];
        for k in 1..=(3 + n % 7) {
            lines.push(format!("Line {k} of message {n}: the quick brown fox jumps over the lazy dog."));
        }
        lines.push(".".to_string());
        lines.push(format!("End of message {n}."));
        let mut out = Vec::new();
        for line in lines {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// The user's Maildir.
    /// The server's certificate (with [`Dovecot::start_tls`]): self-signed
    /// for `localhost` and 127.0.0.1, an end-entity certificate a client can
    /// trust as it is.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.join("home").join("Maildir")
    }

    /// How many messages are in the Maildir (`cur` + `new`). Reliable when
    /// no session is in progress; see [`Dovecot::wait_idle`].
    pub fn remaining(&self) -> usize {
        self.files().len()
    }

    /// The Message-IDs of the messages in the Maildir, in seeded order.
    pub fn message_ids(&self) -> Vec<String> {
        self.files()
            .iter()
            .map(|path| {
                let content = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                popfault::client::extract_message_id(&content)
                    .unwrap_or_else(|| panic!("{} has no Message-ID", path.display()))
            })
            .collect()
    }

    /// The contents of the messages in the Maildir, in seeded order.
    pub fn contents(&self) -> Vec<Vec<u8>> {
        self.files()
            .iter()
            .map(|path| fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
            .collect()
    }

    /// Dovecot's log (one file for errors, info and debug).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Waits (asynchronously, at most 10 s, else panics) until no POP3
    /// session is left on the server: no `pop3` or `pop3-login` process.
    /// A client that vanished is noticed by Dovecot soon but not at once;
    /// call this before [`remaining`](Dovecot::remaining) when a session
    /// ended abnormally (e.g. QUIT sent, connection cut).
    pub async fn wait_idle(&self) {
        let deadline = Instant::now() + IDLE_LIMIT;
        loop {
            let busy = self.session_processes();
            if busy.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!("dovecot still has sessions {busy:?} after {IDLE_LIMIT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // --- internals ---

    fn launch(bin: &Path, version: String, messages: &[Vec<u8>], tls: bool) -> Dovecot {
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let name = format!("popfault-dovecot-{}-{n}", std::process::id());
        let dir = temp_root().join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        set_mode(&dir, 0o755);
        let accounts = Accounts::resolve();
        let user = "popfault".to_string();
        let password = "popfault-secret".to_string();

        // The mail home with its Maildir, owned by the mail uid.
        let home = dir.join("home");
        let maildir = home.join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).expect("create Maildir");
        }
        for (i, content) in messages.iter().enumerate() {
            let n = i + 1;
            // Dovecot assigns UIDs to new mail in the order of the time
            // stamp that starts the file name, so message n is number n.
            let file = format!(
                "{}.M{n}P{}.popfault,S={len},W={len}",
                1_700_000_000 + n,
                std::process::id(),
                len = content.len()
            );
            fs::write(maildir.join("new").join(file), content).expect("seed a message");
        }
        if accounts.root {
            chown_r(&home, accounts.mail_uid, accounts.mail_gid);
        }

        // Read by the auth process, which runs as `dovecot`.
        let users = dir.join("users");
        fs::write(
            &users,
            format!("{user}:{{PLAIN}}{password}:{}:{}::{}::\n", accounts.mail_uid, accounts.mail_gid, home.display()),
        )
        .expect("write users");
        set_mode(&users, 0o644);
        fs::create_dir_all(dir.join("state")).expect("create state dir");
        if tls {
            make_certificate(&dir);
        }

        let conf = dir.join("dovecot.conf");
        let mut port = 0;
        let mut tls_port = None;
        for attempt in 1..=PORT_ATTEMPTS {
            port = free_port();
            tls_port = tls.then(free_port);
            fs::write(&conf, config(&dir, &name, port, tls_port, &accounts)).expect("write dovecot.conf");
            // Not pipes: the daemon would inherit them and hold them open,
            // so reading them to EOF would never end.
            let errors = dir.join("start.err");
            let status = Command::new(bin)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&errors).expect("create start.err"))
                .status()
                .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
            if status.success() {
                break;
            }
            let stderr = fs::read_to_string(&errors).unwrap_or_default();
            if stderr.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                continue;
            }
            let log = fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
            let _ = fs::remove_dir_all(&dir);
            panic!("dovecot -c {} failed ({status}): {stderr}\nlog:\n{log}", conf.display());
        }

        // It daemonized; the master writes its pid file right after.
        let pid_file = dir.join("run").join("master.pid");
        let deadline = Instant::now() + START_LIMIT;
        let pid = loop {
            if let Some(pid) = fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
                break pid;
            }
            if Instant::now() >= deadline {
                let log = fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
                panic!("dovecot wrote no {} in {START_LIMIT:?}; log:\n{log}", pid_file.display());
            }
            thread::sleep(Duration::from_millis(5));
        };

        // From here on Drop cleans up, also if a panic follows.
        let watchdog = watchdog(pid, &dir);
        let pop3s = tls_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        let dovecot =
            Dovecot { addr: ([127, 0, 0, 1], port).into(), user, password, version, pop3s, dir, pid, watchdog };
        dovecot.wait_ready(deadline);
        dovecot
    }

    /// Connects until the `+OK` greeting arrives (the listener is up before
    /// the daemon forks; the login process needs a moment more).
    fn wait_ready(&self, deadline: Instant) {
        loop {
            let last = match greeting(self.addr) {
                Ok(line) if line.starts_with("+OK") => return,
                Ok(line) => format!("greeting {line:?}"),
                Err(e) => e.to_string(),
            };
            if !alive(self.pid) {
                panic!("dovecot (pid {}) exited while starting; log:\n{}", self.pid, self.log());
            }
            if Instant::now() >= deadline {
                panic!("dovecot on {} not ready in {START_LIMIT:?} ({last}); log:\n{}", self.addr, self.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Message files in `cur` and `new`, in seeded order (by file name,
    /// whose time stamps have equal width).
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for sub in ["cur", "new"] {
            let dir = self.maildir().join(sub);
            let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    files.push((name, entry.path()));
                }
            }
        }
        files.sort();
        files.into_iter().map(|(_, path)| path).collect()
    }

    /// Pids of this instance's `pop3` and `pop3-login` processes (the
    /// master's process group; each serves one connection and exits).
    fn session_processes(&self) -> Vec<u32> {
        group_members(self.pid)
            .into_iter()
            .filter(|(_, stat)| matches!(stat.comm.as_str(), "pop3" | "pop3-login"))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Signals the whole process group: the daemon called setsid, so the
    /// master leads a group holding all its children. (SIGTERM to the master
    /// alone works too but takes a second while it lets them drain.) While
    /// the group has members its id can't be reused, so it is surely ours.
    fn stop(&self) {
        let group = format!("-{}", self.pid);
        if !group_alive(self.pid) {
            return;
        }
        let _ = signal("-TERM", &group);
        if wait_gone(self.pid, STOP_LIMIT) {
            return;
        }
        let _ = signal("-KILL", &group);
        if !wait_gone(self.pid, Duration::from_secs(2)) {
            eprintln!("dovecot (process group {}) survived SIGKILL", self.pid);
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if thread::panicking() {
            // Shown with the failing test's output.
            eprintln!("--- dovecot log ({}) ---\n{}--- end of dovecot log ---", self.dir.display(), self.log());
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A shell that outlives a killed test process (own process group, so a
/// Ctrl-C to `cargo test` misses it; no inherited pipes) and then stops
/// Dovecot and removes its directory. Drop kills it first.
pub fn watchdog(dovecot: u32, dir: &Path) -> Option<Child> {
    let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill -TERM -- "-$2" 2>/dev/null
sleep 3
rm -rf "$3""#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("popfault-dovecot-watchdog")
        .arg(std::process::id().to_string())
        .arg(dovecot.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

/// Who the processes run as.
struct Accounts {
    /// Whether we run as root (then Dovecot drops privileges itself).
    root: bool,
    mail_uid: u32,
    mail_gid: u32,
    /// Not root: the user and group that run everything.
    me: Option<(String, String)>,
}

impl Accounts {
    fn resolve() -> Accounts {
        let uid = id(&["-u"]).expect("`id -u` works");
        let gid = id(&["-g"]).expect("`id -g` works");
        if uid != "0" {
            let name = id(&["-un"]).expect("`id -un` works");
            let group = id(&["-gn"]).expect("`id -gn` works");
            let parse = |s: &str| s.parse::<u32>().expect("numeric id");
            return Accounts { root: false, mail_uid: parse(&uid), mail_gid: parse(&gid), me: Some((name, group)) };
        }
        // Dovecot refuses uid 0 for mail; `mail` exists on Debian (uid 8).
        for candidate in ["mail", "dovecot"] {
            let ids = id(&["-u", candidate]).zip(id(&["-g", candidate]));
            if let Some((u, g)) = ids.and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?))) {
                if u != 0 && g != 0 {
                    return Accounts { root: true, mail_uid: u, mail_gid: g, me: None };
                }
            }
        }
        panic!("running as root, but neither a `mail` nor a `dovecot` user exists to own the Maildir");
    }
}

/// The whole Dovecot 2.3 configuration of one instance.
fn config(dir: &Path, name: &str, port: u16, tls_port: Option<u16>, accounts: &Accounts) -> String {
    let dir = dir.display();
    let ssl = match tls_port {
        Some(_) => format!("ssl = yes\nssl_cert = <{dir}/cert.pem\nssl_key = <{dir}/key.pem\n"),
        None => "ssl = no\n".to_string(),
    };
    let tls_port = tls_port.unwrap_or(0);
    // Without root, nothing can chroot and every process runs as us.
    let (identity, chroot) = match &accounts.me {
        Some((user, group)) => (
            format!("default_internal_user = {user}\ndefault_internal_group = {group}\ndefault_login_user = {user}\n"),
            "  chroot =\n",
        ),
        None => (String::new(), ""),
    };
    format!(
        "# popfault test instance, generated by tests/support/dovecot.rs (Dovecot 2.3 syntax)
protocols = pop3
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = {name}
log_path = {dir}/dovecot.log
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain
auth_verbose = yes
# Answer failed logins at once (Dovecot still batches them every 0.5 s).
auth_failure_delay = 0
# The mail uid is a system user (Debian's `mail` is uid 8).
first_valid_uid = 1
first_valid_gid = 1
mail_max_userip_connections = 100
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
{identity}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users
}}

service pop3-login {{
{chroot}  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = {tls_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
# No anvil penalty socket: the auth process then skips its per-IP penalty,
# which would delay every login (even a good one) by up to 15 s after a
# failed one.
service anvil {{
{chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service ipc {{
{chroot}}}
service old-stats {{
{chroot}}}
"
    )
}

/// Prints a SKIPPED line that `cargo test` shows even for a passing test
/// (written to stderr directly, not through the captured `eprintln!`), or
/// panics when Dovecot is required.
fn skip(what: &str, why: &str) -> Option<Dovecot> {
    let required = std::env::var("POPFAULT_REQUIRE_DOVECOT").is_ok_and(|v| !v.is_empty() && v != "0");
    if required {
        panic!("POPFAULT_REQUIRE_DOVECOT is set but {what}: {why}");
    }
    let test = thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED: {what}: {test}: {why} (set POPFAULT_REQUIRE_DOVECOT=1 to fail instead)"
    );
    None
}

/// `POPFAULT_DOVECOT_BIN`, else `dovecot` on `PATH`, else in an sbin
/// directory (which a non-root `PATH` often lacks).
fn find_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("POPFAULT_DOVECOT_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return if executable(&bin) {
            Ok(bin)
        } else {
            Err(format!("POPFAULT_DOVECOT_BIN={} is not an executable file", bin.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|d| d.join("dovecot"))
        .find(|bin| executable(bin))
        .ok_or_else(|| "no `dovecot` on PATH or in /usr/sbin, /usr/local/sbin, /sbin".to_string())
}

fn executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// 2.2 and 2.3 share the syntax used here.
fn supported(version: &str) -> bool {
    let mut parts = version.split(|c: char| c == '.' || c.is_whitespace());
    matches!((parts.next(), parts.next()), (Some("2"), Some("2" | "3")))
}

/// The system temp dir, unless Dovecot's users can't reach it or its path is
/// too long for sockets or not plain enough for the config: then /tmp.
pub fn temp_root() -> PathBuf {
    let tmp = std::env::temp_dir();
    let plain = tmp.to_str().is_some_and(|s| {
        s.starts_with('/')
            && s.len() <= MAX_ROOT_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    });
    let reachable = tmp.ancestors().all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if plain && reachable { tmp } else { PathBuf::from("/tmp") }
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    run(Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(path))
        .unwrap_or_else(|e| panic!("chown -R {uid}:{gid} {}: {e}", path.display()));
}

/// A port that was free a moment ago (Dovecot binds it next; a conflict is
/// retried with another one).
/// A self-signed certificate for `localhost` and 127.0.0.1, made now, in
/// `dir` (cert.pem, key.pem): no key is ever checked in.
fn make_certificate(dir: &Path) {
    // An end-entity certificate (CA:FALSE), so that a verifying client
    // (popfault's rustls, with --upstream-ca) can take it as its own
    // trust anchor.
    let conf = dir.join("cert.cnf");
    fs::write(
        &conf,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n[dn]\nCN = localhost\n\
         [ext]\nsubjectAltName = DNS:localhost,IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .expect("write cert.cnf");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-config"])
        .arg(&conf)
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl: {e}"));
    assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
    // Read by Dovecot's master (root) before it drops privileges.
    set_mode(&dir.join("key.pem"), 0o600);
    set_mode(&dir.join("cert.pem"), 0o644);
}

/// The path of `name` on `PATH`, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Reads the greeting and says QUIT.
fn greeting(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let _ = (&stream).write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_string())
}

/// Runs a command; its trimmed stdout, or why it failed.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn id(args: &[&str]) -> Option<String> {
    run(Command::new("id").args(args)).ok()
}

/// `kill SIGNAL TARGET` (a pid, or `-pgid` for a process group).
fn signal(sig: &str, target: &str) -> Result<String, String> {
    run(Command::new("kill").arg(sig).arg("--").arg(target))
}

pub struct ProcStat {
    comm: String,
    state: char,
    pgrp: u32,
}

/// `/proc/PID/stat`: "pid (comm) state ppid pgrp ...".
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(ProcStat { comm, state, pgrp })
}

/// Whether `pid` runs. A zombie counts as gone: the daemon's parent is
/// init, which in a container may reap late or never.
fn alive(pid: u32) -> bool {
    if Path::new("/proc/self/stat").exists() {
        proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
    } else {
        signal("-0", &pid.to_string()).is_ok()
    }
}

/// Live (not zombie) processes in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<(u32, ProcStat)> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, stat)| stat.pgrp == pgid && stat.state != 'Z' && stat.state != 'X')
        .collect()
}

/// Whether any process of group `pgid` (the master's) still runs.
fn group_alive(pgid: u32) -> bool {
    if Path::new("/proc/self/stat").exists() { !group_members(pgid).is_empty() } else { alive(pgid) }
}

/// Waits until the master's group is gone.
fn wait_gone(pgid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while group_alive(pgid) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}
