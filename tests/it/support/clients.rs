//! Real POP3 clients for the interop matrix, each run non-interactively
//! from a private configuration in a temp directory of its own, delivering
//! every message to a numbered file there (through a two-line MDA script,
//! or curl's `-o`), so a test can read back exactly what each run stored.
//!
//! A [`Client`] keeps its directory across runs: the state a client keeps
//! between runs (fetchmail's id file, mpop's UIDL file, getmail's oldmail
//! file) survives as it would for a user, and each run delivers into a
//! fresh `out-N` folder. All of them talk only to the address given, on
//! 127.0.0.1. A missing client prints a SKIPPED line, or fails the test when
//! `POPFAULT_REQUIRE_INTEROP=1`.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::dovecot::{temp_root, which};
use super::mailutils::skip_interop;

/// Bound on one client run (each client's own network timeout is 10 s).
const RUN_LIMIT: Duration = Duration::from_secs(40);

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// The clients of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// fetchmail as installed: downloads each message with `TOP n 99999999`
    /// and deletes it (`DELE`) once delivered; no memory of UIDs.
    Fetchmail,
    /// fetchmail with `fetchall`: the same, with `RETR`.
    FetchmailAll,
    /// mpop (`keep off`, `only_new on`, its defaults): pipelines `RETR` for
    /// every message it has not seen, then `DELE`s them; remembers UIDs.
    Mpop,
    /// getmail6 (`delete = false`, `read_all = false`): `RETR` of the
    /// messages it has not seen, keeps them on the server; remembers UIDs.
    Getmail,
    /// curl: `LIST`, then `RETR` of message 1..N over one reused connection
    /// (one URL each); never deletes; remembers nothing.
    Curl,
    /// Python's poplib, as a naive script: `RETR` and `DELE` of each
    /// message, then `QUIT`; remembers nothing.
    Poplib,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fetchmail => "fetchmail",
            Kind::FetchmailAll => "fetchmail fetchall",
            Kind::Mpop => "mpop",
            Kind::Getmail => "getmail6",
            Kind::Curl => "curl",
            Kind::Poplib => "poplib",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::Fetchmail | Kind::FetchmailAll => "fetchmail",
            Kind::Mpop => "mpop",
            Kind::Getmail => "getmail",
            Kind::Curl => "curl",
            Kind::Poplib => "python3",
        }
    }

    /// The command whose downloads the matrix cuts after (fetchmail's
    /// default mode downloads with TOP).
    pub fn download_command(self) -> &'static str {
        if self == Kind::Fetchmail { "TOP" } else { "RETR" }
    }

    /// Whether the client deletes what it downloaded.
    pub fn deletes(self) -> bool {
        matches!(self, Kind::Fetchmail | Kind::FetchmailAll | Kind::Mpop | Kind::Poplib)
    }
}

/// The mailbox a client logs in to.
#[derive(Debug, Clone)]
pub struct Account {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
}

/// One message a run stored, with the local port of the connection that
/// brought it when the client reports it (curl).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub bytes: Vec<u8>,
    pub port: Option<u16>,
}

/// What one run of a client did.
#[derive(Debug)]
pub struct Run {
    /// The messages it stored, in the order it stored them.
    pub delivered: Vec<Delivered>,
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// The local ports of its connections in the order it used them, when
    /// the client reports them (curl); else empty.
    pub connections: Vec<u16>,
    /// Its stdout and stderr, for failure messages (no credential: none of
    /// the clients prints the password).
    pub log: String,
}

/// A client with its private directory (removed on drop).
pub struct Client {
    pub kind: Kind,
    dir: PathBuf,
    runs: usize,
    /// TLS (mpop and fetchmail only): POP3S (`implicit`) or STLS, trusting
    /// the CA certificate in the file.
    tls: Option<(bool, PathBuf)>,
}

impl Client {
    /// `None` (after a SKIPPED line) when the client is not installed.
    pub fn new(kind: Kind) -> Option<Client> {
        if which(kind.program()).is_none() {
            return skip_interop(&format!("{} is not installed", kind.program()));
        }
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = temp_root().join(format!("popfault-client-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the client's directory");
        Some(Client { kind, dir, runs: 0, tls: None })
    }

    /// The client speaks TLS: POP3S when `implicit`, else STLS; it trusts
    /// `ca` alone and checks the server's name (mpop and fetchmail).
    pub fn with_tls(mut self, implicit: bool, ca: &Path) -> Client {
        assert!(matches!(self.kind, Kind::Mpop | Kind::Fetchmail | Kind::FetchmailAll), "TLS for {:?}", self.kind);
        self.tls = Some((implicit, ca.to_path_buf()));
        self
    }

    /// Runs the client once against `account`; `count` is the number of
    /// messages curl asks for (the others find out themselves).
    pub async fn run(&mut self, account: &Account, count: usize) -> Run {
        self.runs += 1;
        let out = self.dir.join(format!("out-{}", self.runs));
        fs::create_dir_all(&out).expect("create the output folder");
        let deliver = self.dir.join("deliver");
        // Numbered files in delivery order; the MDA gets one message on stdin.
        write_mode(
            &deliver,
            format!("#!/bin/sh\nn=$(ls '{0}' | wc -l)\nexec cat > \"{0}/$(printf %04d \"$n\")\"\n", out.display()),
            0o755,
        );
        let port = account.addr.port();
        let mut cmd = match self.kind {
            Kind::Fetchmail | Kind::FetchmailAll => {
                let rc = self.dir.join("fetchmailrc");
                let fetchall = if self.kind == Kind::FetchmailAll { " fetchall" } else { "" };
                let tls = match &self.tls {
                    None => "sslproto ''".to_string(),
                    // fetchmail cannot check an IP address against a
                    // certificate: it checks the name `localhost` instead.
                    Some((true, ca)) => {
                        format!("ssl sslcertck sslcommonname localhost sslcertfile \"{}\"", ca.display())
                    }
                    Some((false, ca)) => {
                        format!("sslproto 'tls1.2+' sslcertck sslcommonname localhost sslcertfile \"{}\"", ca.display())
                    }
                };
                write_mode(
                    &rc,
                    format!(
                        "set no syslog\npoll 127.0.0.1 service {port} proto POP3 timeout 10\n  \
                         user \"{}\" there with password \"{}\"\n  {tls}{fetchall}\n  mda \"{}\"\n",
                        account.user,
                        account.password,
                        deliver.display()
                    ),
                    0o600,
                );
                let mut c = tokio::process::Command::new("fetchmail");
                c.arg("-f").arg(&rc).arg("--idfile").arg(self.dir.join("fetchids"));
                c.arg("--pidfile").arg(self.dir.join("fetchmail.pid")).args(["--nosyslog", "-v"]);
                c
            }
            Kind::Mpop => {
                let rc = self.dir.join("mpoprc");
                let tls = match &self.tls {
                    None => "tls off".to_string(),
                    Some((implicit, ca)) => format!(
                        "tls on\ntls_starttls {}\ntls_trust_file {}",
                        if *implicit { "off" } else { "on" },
                        ca.display()
                    ),
                };
                write_mode(
                    &rc,
                    format!(
                        "account test\nhost 127.0.0.1\nport {port}\n{tls}\nauth user\nuser {}\npassword {}\n\
                         timeout 10\nkeep off\nonly_new on\nreceived_header off\nuidls_file {}\ndelivery mda {}\n",
                        account.user,
                        account.password,
                        self.dir.join("uidls").display(),
                        deliver.display()
                    ),
                    0o600,
                );
                let mut c = tokio::process::Command::new("mpop");
                c.arg("-C").arg(&rc).args(["--debug", "test"]);
                c
            }
            Kind::Getmail => {
                let rc = self.dir.join("getmailrc");
                write_mode(
                    &rc,
                    format!(
                        "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {port}\n\
                         username = {}\npassword = {}\ntimeout = 10\n\n[destination]\ntype = MDA_external\n\
                         path = {}\nallow_root_commands = true\n\n[options]\nverbose = 2\nread_all = false\n\
                         delete = false\ndelivered_to = false\nreceived = false\nmessage_log_syslog = false\n",
                        account.user,
                        account.password,
                        deliver.display()
                    ),
                    0o600,
                );
                let mut c = tokio::process::Command::new("getmail");
                c.arg("--getmaildir").arg(&self.dir).arg("-r").arg(&rc);
                c
            }
            Kind::Curl => {
                let mut c = tokio::process::Command::new("curl");
                // The credentials from a netrc file: never on the command line.
                let netrc = self.dir.join("netrc");
                write_mode(
                    &netrc,
                    format!("machine 127.0.0.1 login {} password {}\n", account.user, account.password),
                    0o600,
                );
                c.args(["--silent", "--show-error", "--max-time", "20"]).arg("--netrc-file").arg(&netrc);
                c.args(["--write-out", "%{local_port} %{exitcode} %{url}\\n"]);
                c.arg(format!("pop3://{}/", account.addr)).arg("-o").arg(self.dir.join("list"));
                for n in 1..=count {
                    c.arg(format!("pop3://{}/{n}", account.addr)).arg("-o").arg(out.join(format!("{:04}", n - 1)));
                }
                c
            }
            Kind::Poplib => {
                let script = self.dir.join("fetch.py");
                write_mode(&script, POPLIB.to_string(), 0o644);
                let mut c = tokio::process::Command::new("python3");
                c.arg(&script).arg(account.addr.ip().to_string()).arg(port.to_string()).arg(&out);
                c.env("POP_USER", &account.user).env("POP_PASS", &account.password);
                c
            }
        };
        cmd.env("HOME", &self.dir).env("FETCHMAILHOME", &self.dir).env("LC_ALL", "C");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("run {}: {e}", self.kind.name()));
        let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{} did not finish in {RUN_LIMIT:?}", self.kind.name()))
            .expect("the client ran");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let log = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        let (delivered, connections) = if self.kind == Kind::Curl {
            curl_deliveries(&stdout, &out)
        } else {
            (read_numbered(&out).into_iter().map(|bytes| Delivered { bytes, port: None }).collect(), Vec::new())
        };
        Run { delivered, code: output.status.code(), connections, log }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// curl's `--write-out` lines (`PORT EXITCODE URL`, one per URL): a
/// message counts as delivered when its transfer succeeded.
fn curl_deliveries(stdout: &str, out: &Path) -> (Vec<Delivered>, Vec<u16>) {
    let mut delivered = Vec::new();
    let mut connections = Vec::new();
    for line in stdout.lines() {
        let mut parts = line.split_whitespace();
        let (Some(port), Some(code), Some(url)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(port) = port.parse::<u16>() else { continue };
        if port != 0 && !connections.contains(&port) {
            connections.push(port);
        }
        let Some(n) = url.rsplit('/').next().and_then(|n| n.parse::<usize>().ok()) else { continue };
        if code == "0" {
            let path = out.join(format!("{:04}", n - 1));
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("curl reported {url} but {}: {e}", path.display()));
            delivered.push(Delivered { bytes, port: Some(port) });
        }
    }
    (delivered, connections)
}

fn read_numbered(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> =
        fs::read_dir(dir).expect("read the output folder").flatten().map(|e| e.path()).collect();
    names.sort();
    names.iter().map(|p| fs::read(p).expect("read a delivered message")).collect()
}

fn write_mode(path: &Path, text: String, mode: u32) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A naive poplib client: every message is fetched and deleted, then QUIT.
/// The credentials come from the environment, not the command line.
const POPLIB: &str = r#"import os, poplib, sys
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
box = poplib.POP3(host, port, timeout=10)
box.user(os.environ["POP_USER"])
box.pass_(os.environ["POP_PASS"])
count, _ = box.stat()
for n in range(1, count + 1):
    _, lines, _ = box.retr(n)
    with open(os.path.join(out, "%04d" % (n - 1)), "wb") as f:
        f.write(b"".join(line + b"\r\n" for line in lines))
    box.dele(n)
box.quit()
"#;
