//! Running the real binary as a child process: the one wrapper every test
//! that launches `popfault` uses.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a wait for a line or an exit may take by default.
const LIMIT: Duration = Duration::from_secs(20);

/// A running binary whose stdout and stderr are collected as it runs (a
/// full pipe never holds it up); stderr is also read line by line.
pub struct Proc {
    /// The child process (taken by `wait`; killed on drop otherwise).
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    collected: Vec<String>,
    stdout: Option<thread::JoinHandle<String>>,
}

/// How a run ended, and everything it printed.
#[derive(Debug)]
pub struct Ended {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    /// Runs `popfault ARGS` (with no `POPFAULT_LOG` from the environment).
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_with(args, &[], None)
    }

    /// Runs `popfault ARGS` with trace logging.
    pub fn spawn_traced(args: &[&str]) -> Proc {
        Proc::spawn_with(args, &[("POPFAULT_LOG", "trace")], None)
    }

    /// Runs `popfault ARGS` with `env`; with `nofile`, under that open-file
    /// limit (through `sh -c ulimit`).
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)], nofile: Option<u64>) -> Proc {
        let bin = crate::support::BIN;
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(bin).args(args);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.args(args);
                c
            }
        };
        let mut child = cmd
            .env_remove("POPFAULT_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn popfault");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Proc { child: Some(child), stderr: rx, collected: Vec::new(), stdout: Some(stdout) }
    }

    /// `popfault proxy --headless --listen 127.0.0.1:0 --upstream UP
    /// EXTRA…`, and the address it listens on.
    pub fn proxy(up: impl ToString, extra: &[&str]) -> (Proc, SocketAddr) {
        Proc::proxy_with(up, extra, &[], None)
    }

    /// [`Proc::proxy`] with `env` and an open-file limit as for
    /// [`Proc::spawn_with`].
    pub fn proxy_with(
        up: impl ToString,
        extra: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> (Proc, SocketAddr) {
        let up = up.to_string();
        let mut args = vec!["proxy", "--headless", "--listen", "127.0.0.1:0", "--upstream", &up];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn_with(&args, env, nofile);
        let addr = p.addr_after("popfault: proxy");
        (p, addr)
    }

    /// Reads stderr until a line contains `marker`; returns that line.
    pub fn line_with(&mut self, marker: &str) -> String {
        let until = Instant::now() + LIMIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.collected.push(line.clone());
                    if line.contains(marker) {
                        return line;
                    }
                }
                Err(_) => panic!("no stderr line with {marker:?}; got:\n{}", self.collected.join("\n")),
            }
        }
    }

    /// The first `127.0.0.1:PORT` on the stderr line containing `marker`.
    pub fn addr_after(&mut self, marker: &str) -> SocketAddr {
        let line = self.line_with(marker);
        let start = line.find("127.0.0.1:").unwrap_or_else(|| panic!("an address in {line}"));
        let tail = &line[start..];
        let end = tail.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(tail.len());
        tail[..end].trim_end_matches(':').parse().expect("a socket address")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends signal `name` (`TERM`, `INT`, …).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status().expect("kill");
        assert!(ok.success(), "kill -{name}");
    }

    /// Waits up to `limit` for the process to end (killing it and failing
    /// the test if it does not); returns everything it printed.
    pub fn wait(mut self, limit: Duration) -> Ended {
        let mut child = self.child.take().expect("running");
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(200)) {
                    self.collected.push(l);
                }
                panic!("popfault did not end within {limit:?}; stderr:\n{}", self.collected.join("\n"));
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            self.collected.push(l);
        }
        Ended { code: status.code(), signal: status.signal(), stdout, stderr: self.collected.join("\n") }
    }

    /// Sends SIGTERM and returns everything it printed: stdout, then stderr.
    pub fn stop(self) -> String {
        // Not `signal`: a process that has already ended is fine here.
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let end = self.wait(LIMIT);
        end.stdout + "\n" + &end.stderr
    }

    /// A line of the process's /proc status (`VmRSS`, `VmHWM`) in KiB.
    pub fn status_kib(&self, key: &str) -> u64 {
        let Some(child) = &self.child else { return 0 };
        let text = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    /// A test that fails half-way must not leave the binary running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
