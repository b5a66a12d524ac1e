//! Shared test support: the embedded server and the proxy on port 0, an
//! event collector, and a recording tap.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use popfault::control::Control;
use popfault::events::{Event, EventSink, SessionEnd};
use popfault::faults::Profile;
use popfault::relay::{self, ProxyConfig, ProxyHandle};
use popfault::server::{self, Maildrop, ServerConfig, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The real binary, as `cargo test` built it: the one way tests launch it
/// (`proc::Proc` runs it as a child with limits and logs).
pub const BIN: &str = env!("CARGO_BIN_EXE_popfault");

/// Every await in tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

pub struct World {
    pub server: ServerHandle,
    pub proxy: ProxyHandle,
    pub events: mpsc::Receiver<Event>,
}

impl World {
    pub async fn start(users: usize, messages: usize) -> World {
        World::with(Profile::passthrough(), 1, users, messages, 1500).await
    }

    /// The embedded server (messages of exactly `size` bytes) behind a
    /// proxy running `profile` with `seed`.
    pub async fn with(profile: Profile, seed: u64, users: usize, messages: usize, size: usize) -> World {
        let cfg = ServerConfig { users, messages, size, password: "secret".into() };
        let server = server::spawn(loopback(), Maildrop::new(&cfg)).await.expect("server");
        let (proxy, events) = proxy_with(&server.addr.to_string(), profile, seed).await;
        World { server, proxy, events }
    }

    pub fn maildrop(&self) -> &Maildrop {
        &self.server.maildrop
    }

    /// Waits for the next session to end and returns its record.
    pub async fn next_end(&mut self) -> SessionEnd {
        next_end(&mut self.events).await
    }
}

pub async fn proxy_to(upstream: &str) -> (ProxyHandle, mpsc::Receiver<Event>) {
    proxy_with(upstream, Profile::passthrough(), 1).await
}

/// A proxy to `upstream` running `profile` with `seed`.
pub async fn proxy_with(upstream: &str, profile: Profile, seed: u64) -> (ProxyHandle, mpsc::Receiver<Event>) {
    let (sink, rx) = EventSink::channel(100_000);
    let control = Arc::new(Control::new(Arc::new(profile), seed));
    let proxy = relay::start(ProxyConfig::new(loopback(), upstream), control, sink).await.expect("proxy");
    (proxy, rx)
}

/// A built-in profile by name.
pub fn builtin(name: &str) -> Profile {
    popfault::faults::builtin::builtin(name).expect("a built-in").expect("valid")
}

/// A profile from TOML text (panics with the located error if invalid).
pub fn profile(toml: &str) -> Profile {
    Profile::from_toml(toml, "test", "test").unwrap_or_else(|e| panic!("{e}"))
}

pub async fn next_end(rx: &mut mpsc::Receiver<Event>) -> SessionEnd {
    tokio::time::timeout(LIMIT, async {
        loop {
            match rx.recv().await {
                Some(Event::SessionEnd(end)) => return *end,
                Some(_) => {}
                None => panic!("event stream closed"),
            }
        }
    })
    .await
    .expect("a session ended in time")
}

/// Every event until the next session end, inclusive.
pub async fn events_until_end(rx: &mut mpsc::Receiver<Event>) -> Vec<Event> {
    tokio::time::timeout(LIMIT, async {
        let mut out = Vec::new();
        loop {
            match rx.recv().await {
                Some(e @ Event::SessionEnd(_)) => {
                    out.push(e);
                    return out;
                }
                Some(e) => out.push(e),
                None => panic!("event stream closed"),
            }
        }
    })
    .await
    .expect("a session ended in time")
}

/// Bytes seen by a tap between the proxy and the real server.
#[derive(Default, Debug)]
pub struct Recorded {
    /// Proxy → server.
    pub up: Vec<u8>,
    /// Server → proxy.
    pub down: Vec<u8>,
}

/// A dumb forwarder in front of `upstream` that records both directions of
/// every connection (appended in order; tests use one connection at a time).
pub async fn tap(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Recorded>>) {
    let listener = TcpListener::bind(loopback()).await.expect("tap bind");
    let addr = listener.local_addr().expect("tap addr");
    let rec = Arc::new(Mutex::new(Recorded::default()));
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(upstream).await else { continue };
            let r = r.clone();
            tokio::spawn(async move {
                let (mut ir, mut iw) = inbound.into_split();
                let (mut or, mut ow) = outbound.into_split();
                let r2 = r.clone();
                let up = async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = ir.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        r.lock().unwrap().up.extend_from_slice(&buf[..n]);
                        if ow.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = ow.shutdown().await;
                };
                let down = async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = or.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        r2.lock().unwrap().down.extend_from_slice(&buf[..n]);
                        if iw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = iw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, rec)
}

/// What the tap saw of one conversation whose client received `received`
/// bytes: waits until the tap has relayed them all, then takes the record.
pub async fn take_recorded(rec: &Mutex<Recorded>, received: usize) -> Recorded {
    tokio::time::timeout(LIMIT, async {
        while rec.lock().unwrap().down.len() < received {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the tap relayed everything in time");
    std::mem::take(&mut *rec.lock().unwrap())
}

/// Writes `script` to `addr` (all at once: pipelined), half-closes if asked,
/// and reads everything until EOF. Returns what was received.
pub async fn converse(addr: SocketAddr, script: &[u8]) -> Vec<u8> {
    tokio::time::timeout(LIMIT, async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(script).await.expect("send");
        };
        let mut got = Vec::new();
        let recv = r.read_to_end(&mut got);
        let (_, n) = tokio::join!(send, recv);
        n.expect("read to end");
        got
    })
    .await
    .expect("conversation finished in time")
}

/// A scripted server on 127.0.0.1 port 0: `greeting`, then for each line
/// the client sends, `answer` given the connection's lines so far (trimmed,
/// the newest last) says what to write back. The connection is closed
/// after the answer to `QUIT`, or when the client closes.
pub async fn line_server<F>(greeting: String, answer: F) -> SocketAddr
where
    F: Fn(&[String]) -> String + Send + Sync + 'static,
{
    let l = TcpListener::bind(loopback()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (answer, greeting) = (answer.clone(), greeting.clone());
            tokio::spawn(async move {
                let _ = s.write_all(greeting.as_bytes()).await;
                let (mut lines, mut pending, mut buf) = (Vec::new(), Vec::new(), vec![0u8; 4096]);
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
                        let _ = s.write_all(answer(&lines).as_bytes()).await;
                        if lines.last().is_some_and(|l| l.eq_ignore_ascii_case("QUIT")) {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

pub fn sha256(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}
pub mod clients;
pub mod dovecot;
pub mod mailutils;
pub mod proc;

/// Base64 (RFC 4648), to look for encoded secrets in output.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}
