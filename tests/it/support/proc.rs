//! Running the real binary as a child process.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A running binary whose stderr is collected; `addr` is parsed from the
/// first stderr line containing `marker`.
pub struct Proc {
    /// The child process (taken by `stop`; killed on drop otherwise).
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
    collected: Vec<String>,
}

impl Proc {
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
        Proc { child: Some(child), stderr: rx, collected: Vec::new() }
    }

    /// Reads stderr until a line contains `marker`; returns the first
    /// `127.0.0.1:PORT` in it.
    pub fn addr_after(&mut self, marker: &str) -> SocketAddr {
        loop {
            let line = self.stderr.recv_timeout(Duration::from_secs(20)).expect("the process printed its address");
            self.collected.push(line.clone());
            if line.contains(marker) {
                let start = line.find("127.0.0.1:").expect("an address");
                let tail = &line[start..];
                let end = tail.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':')).unwrap_or(tail.len());
                return tail[..end].trim_end_matches(':').parse().expect("a socket address");
            }
        }
    }

    /// Sends SIGTERM and returns everything it printed.
    pub fn stop(mut self) -> String {
        let Some(mut child) = self.child.take() else { return String::new() };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let (done_tx, done_rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = done_tx.send(child.wait().map(|_| child));
        });
        let mut child = match done_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(c)) => c,
            _ => panic!("the process did not stop on SIGTERM"),
        };
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            self.collected.push(l);
        }
        out + "\n" + &self.collected.join("\n")
    }
}

impl Proc {
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
