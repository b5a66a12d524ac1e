//! A private GNU Mailutils POP3 server (`pop3d`, Debian `mailutils-pop3d`)
//! for the interop matrix.
//!
//! [`Mailutils::start`] writes a configuration under a fresh temp directory
//! (`<tmp>/popfault-mailutils-<pid>-<n>`; no site-wide configuration is
//! read), with `authorization virtdomain` over a password directory (one
//! user, `popfault@localhost`, its password as a SHA-512 crypt hash), an APOP
//! database made with `popauth` (the greeting offers APOP, and curl then
//! uses it), and an mbox seeded with the given messages. It runs `pop3d` in
//! the foreground as our child, in its own process group, on 127.0.0.1 on a
//! free port, and waits for its `+OK` greeting. Dropping the handle kills the
//! group and removes the directory; a watchdog does the same if the test
//! process dies first.
//!
//! When `pop3d` or `popauth` is missing, `start` prints a `SKIPPED:` line and
//! returns `None`; with `POPFAULT_REQUIRE_INTEROP=1` it panics instead (CI
//! installs `mailutils-pop3d` and sets it).
//!
//! pop3d shows a message as it stores it: it adds `X-UIDL` to a message
//! without one when it opens the mbox (so each seeded message carries a
//! fixed `X-UIDL`, to keep instances byte-identical), and after a session
//! that read messages and quit it rewrites them with `X-IMAPbase`, `X-UID`
//! and `Status:` headers: the same message (same UIDL) has other bytes in
//! the next session.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::dovecot::{free_port, group_members, temp_root, watchdog, which};

const START_LIMIT: Duration = Duration::from_secs(10);
const IDLE_LIMIT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 10;

/// `openssl passwd -6 -salt popfaultinterop` of [`PASSWORD`]: pop3d's
/// generic authentication compares crypt hashes.
const PASSWORD_HASH: &str =
    "$6$popfaultinterop$xA.5/FkZiIh5etb6wjbNuDTl0.uXbutGIeVUP2v1REfrjpcYBmXPruAKN.y3Jt3tprlQEUEduB1K9B5spyUJb.";
const PASSWORD: &str = "popfault-secret";

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// Whether a missing interop server or client fails the test.
pub fn interop_required() -> bool {
    std::env::var("POPFAULT_REQUIRE_INTEROP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A SKIPPED line that `cargo test` shows (written to stderr directly), or a
/// panic when `POPFAULT_REQUIRE_INTEROP` is set.
pub fn skip_interop<T>(what: &str) -> Option<T> {
    if interop_required() {
        panic!("POPFAULT_REQUIRE_INTEROP is set but {what}");
    }
    let test = thread::current().name().unwrap_or("?").to_string();
    let _ =
        writeln!(std::io::stderr().lock(), "SKIPPED: {what}: {test} (set POPFAULT_REQUIRE_INTEROP=1 to fail instead)");
    None
}

/// A running private pop3d with one user and a seeded mbox.
pub struct Mailutils {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    dir: PathBuf,
    child: Option<Child>,
    watchdog: Option<Child>,
}

impl Mailutils {
    /// Starts a server whose user's mbox holds `messages` (CRLF or LF; each
    /// is stored with LF line ends and an `X-UIDL: popfault-N` header added
    /// after its first line; no line may begin with "From ").
    pub fn start(messages: &[Vec<u8>]) -> Option<Mailutils> {
        let Some(pop3d) = which("pop3d").or_else(|| Some(PathBuf::from("/usr/sbin/pop3d")).filter(|p| p.is_file()))
        else {
            return skip_interop("GNU mailutils pop3d is not installed (Debian mailutils-pop3d)");
        };
        let Some(popauth) = which("popauth") else {
            return skip_interop("popauth is not installed (Debian mailutils-pop3d)");
        };
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let dir = temp_root().join(format!("popfault-mailutils-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let home = dir.join("home");
        fs::create_dir_all(&home).expect("create the mail home");
        fs::create_dir_all(dir.join("passwd")).expect("create the password directory");
        let uid = run_id("-u");
        let gid = run_id("-g");
        // virtdomain: the file named after the domain, passwd(5) lines.
        fs::write(
            dir.join("passwd").join("localhost"),
            format!("popfault:{PASSWORD_HASH}:{uid}:{gid}::{}:/bin/sh\n", home.display()),
        )
        .expect("write the password file");
        let user = "popfault@localhost".to_string();
        fs::write(home.join("INBOX"), mbox(messages)).expect("seed the mbox");

        let apop = dir.join("apop.db");
        let mut child = Command::new(&popauth)
            .arg("--create")
            .arg("--permissions=600")
            .arg("--output")
            .arg(&apop)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run popauth: {e}"));
        child.stdin.take().expect("stdin").write_all(format!("{user} {PASSWORD}\n").as_bytes()).expect("feed popauth");
        let out = child.wait_with_output().expect("popauth ran");
        assert!(out.status.success(), "popauth --create failed: {}", String::from_utf8_lossy(&out.stderr));

        let conf = dir.join("pop3d.conf");
        let log = dir.join("pop3d.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            fs::write(&conf, config(&dir, &apop, port)).expect("write pop3d.conf");
            let mut child = Command::new(&pop3d)
                .arg(format!("--config-file={}", conf.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).expect("create the log"))
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("run {}: {e}", pop3d.display()));
            let watchdog = watchdog(child.id(), &dir);
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + START_LIMIT;
            loop {
                if let Ok(line) = greeting(addr) {
                    assert!(line.starts_with("+OK"), "pop3d greeted {line:?}");
                    let password = PASSWORD.to_string();
                    return Some(Mailutils { addr, user, password, dir, child: Some(child), watchdog });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("in use") && attempt < PORT_ATTEMPTS {
                        break;
                    }
                    let _ = fs::remove_dir_all(&dir);
                    panic!("pop3d exited while starting ({status}); log:\n{text}");
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    panic!(
                        "pop3d on {addr} not ready in {START_LIMIT:?}; log:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("pop3d found no free port in {PORT_ATTEMPTS} attempts");
    }

    /// The messages in the mbox as pop3d stores them (LF line ends, its own
    /// headers included), in order. Reliable when no session is in
    /// progress; see [`Mailutils::wait_idle`].
    pub fn contents(&self) -> Vec<Vec<u8>> {
        let text = fs::read(self.dir.join("home").join("INBOX")).unwrap_or_default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut previous_blank = true;
        for line in text.split_inclusive(|&b| b == b'\n') {
            if previous_blank && line.starts_with(b"From ") {
                out.push(Vec::new());
            } else if let Some(m) = out.last_mut() {
                m.extend_from_slice(line);
            }
            previous_blank = line == b"\n";
        }
        out
    }

    /// How many messages the mbox holds.
    pub fn remaining(&self) -> usize {
        self.contents().len()
    }

    /// Waits (at most 10 s, else panics) until pop3d serves no session: it
    /// forks a child per connection, which holds the mbox's lock until it
    /// has noticed the client is gone (and, after QUIT, has expunged).
    pub async fn wait_idle(&self) {
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        let deadline = Instant::now() + IDLE_LIMIT;
        while group_members(pid).len() > 1 {
            if Instant::now() >= deadline {
                panic!("pop3d still serves a session after {IDLE_LIMIT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pop3d.log")).unwrap_or_default()
    }
}

impl Drop for Mailutils {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- pop3d log ({}) ---\n{}--- end of pop3d log ---", self.dir.display(), self.log());
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut child) = self.child.take() {
            // The whole group: the sessions' children too.
            let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", child.id())).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn config(dir: &Path, apop: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "# popfault test instance, generated by tests/it/support/mailutils.rs
logging {{ syslog no; }};
auth {{ authorization virtdomain; authentication generic; }};
virtdomain {{ passwd-dir \"{dir}/passwd\"; }};
apop-database-file \"gdbm://{apop}\";
mode daemon;
foreground yes;
timeout 60;
server 127.0.0.1:{port} {{ }};
",
        apop = apop.display()
    )
}

/// The seeded mbox: an mboxo "From " line before each message, LF line
/// ends, `X-UIDL` after the first header line.
fn mbox(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        out.extend_from_slice(b"From sender@popfault.test Mon Jan  1 00:00:00 2024\n");
        let text = String::from_utf8_lossy(m).replace("\r\n", "\n");
        let (first, rest) = text.split_once('\n').expect("a header line");
        assert!(!rest.contains("\nFrom "), "an mbox message may not have a line that begins with From");
        out.extend_from_slice(format!("{first}\nX-UIDL: popfault-{}\n{rest}", i + 1).as_bytes());
        if !rest.ends_with('\n') {
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

fn run_id(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn greeting(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let _ = (&stream).write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_string())
}
