//! `popfault api` and the `Fleet` behind it, over real HTTP on 127.0.0.1:
//! Toxiproxy's endpoints, status codes and error bodies; the toxics as a
//! real POP3 client sees them; POP3 toxics and the sessions endpoint;
//! SSE; `/metrics` through a Prometheus text parser; concurrency; the
//! real binary; and an unmodified Toxiproxy client library
//! (toxiproxy-python, docs/API.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use popfault::server::{self, Maildrop, ServerConfig, ServerHandle};
use popfault::{ApiServer, Fleet};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::proc::Proc;
use crate::support::{LIMIT, loopback};

// === a minimal HTTP/1.1 client (the server under test is axum) ===

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: String,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts Toxiproxy's error body: `{"error": MESSAGE, "status": N}`.
    fn error(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["status"], status, "{}", self.body);
        assert!(v["error"].as_str().unwrap_or("").contains(message), "{message:?} not in {}", self.body);
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[i + 2 + size + 2..];
    }
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Resp {
    tokio::time::timeout(LIMIT, async {
        let mut s = TcpStream::connect(addr).await.expect("connect to the API");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
        let headers = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = headers[9..12].parse().unwrap();
        let rest = &raw[split + 4..];
        let body = if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_vec()
        };
        Resp { status, headers, body: String::from_utf8_lossy(&body).to_string() }
    })
    .await
    .expect("the API answered in time")
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    http(addr, "GET", path, "").await
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Resp {
    http(addr, "POST", path, &body.to_string()).await
}

// === a small sequential POP3 client ===

struct Pop {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Pop {
    async fn connect(addr: SocketAddr) -> std::io::Result<(Pop, String)> {
        let (r, w) = TcpStream::connect(addr).await?.into_split();
        let mut p = Pop { r: BufReader::new(r), w };
        let greeting = p.line().await?;
        Ok((p, greeting))
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        let n = tokio::time::timeout(LIMIT, self.r.read_line(&mut l)).await.expect("a line in time")?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l)
    }

    async fn cmd(&mut self, c: &str) -> std::io::Result<String> {
        self.w.write_all(format!("{c}\r\n").as_bytes()).await?;
        self.line().await
    }

    /// A whole multi-line answer to `c`.
    async fn multi(&mut self, c: &str) -> std::io::Result<String> {
        let mut all = self.cmd(c).await?;
        loop {
            let l = self.line().await?;
            all.push_str(&l);
            if l == ".\r\n" {
                return Ok(all);
            }
        }
    }

    /// Login, STAT, QUIT: how long it took.
    async fn session(addr: SocketAddr) -> std::io::Result<Duration> {
        let t = Instant::now();
        let (mut p, g) = Pop::connect(addr).await?;
        assert!(g.starts_with("+OK"), "{g}");
        p.cmd("USER user1").await?;
        p.cmd("PASS secret").await?;
        p.cmd("STAT").await?;
        p.cmd("QUIT").await?;
        Ok(t.elapsed())
    }
}

async fn pop_server() -> ServerHandle {
    let cfg = ServerConfig { users: 3, messages: 4, size: 2000, password: "secret".into() };
    server::spawn(loopback(), Maildrop::new(&cfg)).await.expect("the embedded server")
}

struct Api {
    /// The Rust API behind the HTTP one.
    fleet: Fleet,
    api: ApiServer,
    pop: ServerHandle,
}

impl Api {
    async fn start() -> Api {
        let fleet = Fleet::new(Some(1));
        let api = ApiServer::start(loopback(), fleet.clone()).await.expect("the API");
        Api { fleet, api, pop: pop_server().await }
    }

    fn addr(&self) -> SocketAddr {
        self.api.addr
    }

    /// Creates proxy `name` in front of the embedded server; its address.
    async fn proxy(&self, name: &str) -> SocketAddr {
        let r = post(
            self.addr(),
            "/proxies",
            json!({"name": name, "listen": "127.0.0.1:0", "upstream": self.pop.addr.to_string()}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["listen"].as_str().unwrap().parse().unwrap()
    }
}

/// The newest ended session of `proxy`, once `n` have ended.
async fn recent(addr: SocketAddr, proxy: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + LIMIT;
    loop {
        let r = get(addr, &format!("/proxies/{proxy}/sessions")).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let recent = v["recent"].as_array().unwrap().clone();
        if recent.len() >= n {
            return recent;
        }
        assert!(Instant::now() < until, "{n} session(s) did not end: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_toxiproxy_endpoint_answers_with_its_shapes_and_status_codes() {
    let t = Api::start().await;
    let a = t.addr();
    let up = t.pop.addr.to_string();

    let v = get(a, "/version").await;
    assert_eq!(v.status, 200);
    assert!(v.json()["version"].as_str().unwrap().starts_with("2."), "{}", v.body);

    // Create: 201, the real port for port 0, enabled by default, no toxics.
    let r = post(a, "/proxies", json!({"name": "pop", "listen": "127.0.0.1:0", "upstream": up})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let p = r.json();
    let listen: SocketAddr = p["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(listen.port(), 0);
    assert_eq!(p, json!({"name": "pop", "listen": listen.to_string(), "upstream": up, "enabled": true, "toxics": []}));
    Pop::session(listen).await.expect("a session through the proxy");

    // Errors: Toxiproxy's messages and codes, and nothing changes.
    post(a, "/proxies", json!({"name": "pop", "listen": "127.0.0.1:0", "upstream": up}))
        .await
        .error(409, "proxy already exists");
    post(a, "/proxies", json!({"name": "x", "listen": "127.0.0.1:0"}))
        .await
        .error(400, "missing required field: upstream");
    post(a, "/proxies", json!({"listen": "127.0.0.1:0", "upstream": up}))
        .await
        .error(400, "missing required field: name");
    http(a, "POST", "/proxies", "{not json").await.error(400, "bad request body");
    get(a, "/proxies/nope").await.error(404, "proxy not found");
    http(a, "DELETE", "/proxies/nope", "").await.error(404, "proxy not found");
    get(a, "/proxies/nope/toxics").await.error(404, "proxy not found");
    post(a, "/proxies/nope/toxics", json!({"type": "latency"})).await.error(404, "proxy not found");
    assert_eq!(get(a, "/proxies").await.json(), json!({"pop": p}));
    // The Rust API sees the same state.
    assert_eq!(serde_json::to_value(t.fleet.get("pop").await.unwrap()).unwrap(), p);
    assert_eq!(t.fleet.seed(), 1);

    // Toxics: defaults name TYPE_STREAM, downstream, toxicity 1; every attribute shown.
    let r = post(a, "/proxies/pop/toxics", json!({"type": "latency", "attributes": {"latency": 50}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let lat = json!({"name": "latency_downstream", "type": "latency", "stream": "downstream", "toxicity": 1.0,
        "attributes": {"latency": 50, "jitter": 0}});
    assert_eq!(r.json(), lat);
    post(a, "/proxies/pop/toxics", json!({"type": "latency"})).await.error(409, "toxic already exists");
    post(a, "/proxies/pop/toxics", json!({"type": "bogus"})).await.error(400, "invalid toxic type");
    post(a, "/proxies/pop/toxics", json!({"type": "latency", "stream": "sideways"}))
        .await
        .error(400, "stream was invalid, can be either upstream or downstream");
    post(a, "/proxies/pop/toxics", json!({"type": "latency", "name": "t", "attributes": {"latency": -5}}))
        .await
        .error(400, "bad request body");
    let r = post(a, "/proxies/pop/toxics", json!({"type": "bandwidth", "name": "slow", "stream": "upstream", "toxicity": 0.5, "attributes": {"rate": 100}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = get(a, "/proxies/pop/toxics").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json().as_array().unwrap().len(), 2);
    assert_eq!(get(a, "/proxies/pop/toxics/latency_downstream").await.json(), lat);
    get(a, "/proxies/pop/toxics/nope").await.error(404, "toxic not found");
    // Update (PATCH, and POST as older clients do): attributes merge.
    let r =
        http(a, "PATCH", "/proxies/pop/toxics/latency_downstream", &json!({"attributes": {"jitter": 5}}).to_string())
            .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["attributes"], json!({"latency": 50, "jitter": 5}));
    let r = post(a, "/proxies/pop/toxics/latency_downstream", json!({"toxicity": 0.25})).await;
    assert_eq!((r.status, r.json()["toxicity"].clone()), (200, json!(0.25)));
    post(a, "/proxies/pop/toxics/nope", json!({"toxicity": 0.25})).await.error(404, "toxic not found");
    let r = http(a, "DELETE", "/proxies/pop/toxics/slow", "").await;
    assert_eq!(r.status, 204);
    http(a, "DELETE", "/proxies/pop/toxics/slow", "").await.error(404, "toxic not found");
    let shown = get(a, "/proxies/pop").await.json();
    assert_eq!(shown["toxics"].as_array().unwrap().len(), 1);

    // Disable: the listener closes; enable: the same address again.
    let r = post(a, "/proxies/pop", json!({"enabled": false})).await;
    assert_eq!((r.status, r.json()["enabled"].clone()), (200, json!(false)));
    assert!(TcpStream::connect(listen).await.is_err(), "a disabled proxy still accepts");
    let r = http(a, "PATCH", "/proxies/pop", &json!({"enabled": true}).to_string()).await;
    assert_eq!((r.status, r.json()["listen"].clone()), (200, json!(listen.to_string())));
    Pop::session(listen).await.expect("enabled again on the same address");

    // Reset: every proxy enabled, every toxic gone.
    post(a, "/proxies/pop", json!({"enabled": false})).await;
    let r = post(a, "/reset", json!(null)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let shown = get(a, "/proxies/pop").await.json();
    assert_eq!((shown["enabled"].clone(), shown["toxics"].clone()), (json!(true), json!([])));

    // Populate: 201 with the proxies; an unchanged one is kept.
    let r = post(
        a,
        "/populate",
        json!([
            {"name": "pop", "listen": listen.to_string(), "upstream": up},
            {"name": "two", "listen": "127.0.0.1:0", "upstream": up, "enabled": false},
        ]),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let proxies = r.json()["proxies"].as_array().unwrap().clone();
    assert_eq!(proxies.len(), 2);
    assert_eq!(proxies[0]["listen"], json!(listen.to_string()));
    assert_eq!(proxies[1]["enabled"], json!(false));
    let r = post(a, "/populate", json!([{"name": "three", "upstream": up}, {"name": "three", "upstream": up}])).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(get(a, "/proxies").await.json().get("three").is_none(), "a refused populate changed something");

    // Delete: 204, and the listener is gone.
    assert_eq!(http(a, "DELETE", "/proxies/pop", "").await.status, 204);
    assert!(TcpStream::connect(listen).await.is_err(), "a deleted proxy still accepts");
    get(a, "/proxies/pop").await.error(404, "proxy not found");
    get(a, "/no/such/path").await.error(404, "not found");
    http(a, "PUT", "/proxies", "").await.error(405, "method not allowed");
    t.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_reset_peer_toxics_are_what_a_pop3_client_sees() {
    let t = Api::start().await;
    let (a, p) = (t.addr(), t.proxy("pop").await);
    let plain = Pop::session(p).await.unwrap();
    assert!(plain < Duration::from_millis(600), "{plain:?}");
    // Downstream latency: the greeting and each of 4 answers, 150 ms each.
    post(a, "/proxies/pop/toxics", json!({"type": "latency", "attributes": {"latency": 150}})).await;
    let slow = Pop::session(p).await.unwrap();
    assert!(slow >= Duration::from_millis(750), "{slow:?}");
    // Upstream latency: each of 4 commands.
    http(a, "DELETE", "/proxies/pop/toxics/latency_downstream", "").await;
    post(a, "/proxies/pop/toxics", json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 150}}))
        .await;
    let slow = Pop::session(p).await.unwrap();
    assert!(slow >= Duration::from_millis(600), "{slow:?}");
    http(a, "DELETE", "/proxies/pop/toxics/latency_upstream", "").await;
    // reset_peer: the connection is reset after 200 ms, nothing relayed.
    post(a, "/proxies/pop/toxics", json!({"type": "reset_peer", "attributes": {"timeout": 200}})).await;
    let start = Instant::now();
    let err = Pop::connect(p).await.err().expect("reset_peer let the greeting through");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(start.elapsed() >= Duration::from_millis(190), "{:?}", start.elapsed());
    let ends = recent(a, "pop", 4).await;
    assert_eq!(ends[3]["outcome"], "refused");
    // Two rules carry it out (hold, then reset): both are named after it.
    assert_eq!(ends[3]["faults"], json!(["reset_peer_downstream", "reset_peer_downstream"]));
    // Removed: a plain session again.
    http(a, "DELETE", "/proxies/pop/toxics/reset_peer_downstream", "").await;
    assert!(Pop::session(p).await.unwrap() < Duration::from_millis(600));
    t.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_timeout_and_slow_close_toxics() {
    let t = Api::start().await;
    let (a, p) = (t.addr(), t.proxy("pop").await);
    // limit_data downstream: exactly 10 bytes of the greeting, then EOF.
    post(a, "/proxies/pop/toxics", json!({"type": "limit_data", "attributes": {"bytes": 10}})).await;
    let mut s = TcpStream::connect(p).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, s.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got.len(), 10, "{:?}", String::from_utf8_lossy(&got));
    assert!(got.starts_with(b"+OK "), "{:?}", String::from_utf8_lossy(&got));
    post(a, "/reset", json!(null)).await;
    // timeout: nothing for 300 ms, then closed.
    post(a, "/proxies/pop/toxics", json!({"type": "timeout", "attributes": {"timeout": 300}})).await;
    let start = Instant::now();
    let mut s = TcpStream::connect(p).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut got)).await.unwrap();
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(start.elapsed() >= Duration::from_millis(290), "{:?}", start.elapsed());
    post(a, "/reset", json!(null)).await;
    // slow_close: QUIT answered, the close held 300 ms.
    post(a, "/proxies/pop/toxics", json!({"type": "slow_close", "attributes": {"delay": 300}})).await;
    let (mut c, _) = Pop::connect(p).await.unwrap();
    assert!(c.cmd("QUIT").await.unwrap().starts_with("+OK"));
    let start = Instant::now();
    assert!(c.line().await.is_err(), "EOF after QUIT");
    assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
    t.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop3_toxic_cuts_a_real_session_and_the_sessions_endpoint_reports_it() {
    let t = Api::start().await;
    let (a, p) = (t.addr(), t.proxy("pop").await);
    let rule = json!({"name": "mid-retr", "type": "pop3",
        "attributes": {"when": "body", "command": "RETR", "nth": 1, "offset": 100, "actions": [{"do": "disconnect"}]}});
    let r = post(a, "/proxies/pop/toxics", rule.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["attributes"], rule["attributes"]);
    let (mut c, _) = Pop::connect(p).await.unwrap();
    c.cmd("USER user1").await.unwrap();
    c.cmd("PASS secret").await.unwrap();
    assert!(c.cmd("DELE 2").await.unwrap().starts_with("+OK"));
    assert!(c.multi("RETR 1").await.is_err(), "the line was cut in RETR");
    let ends = recent(a, "pop", 1).await;
    let end = &ends[0];
    assert_eq!(end["outcome"], "rolled-back", "{end}");
    assert_eq!(end["at_risk"], 1, "{end}");
    assert_eq!(end["faults"], json!(["mid-retr"]), "{end}");
    let s = get(a, "/proxies/pop/summary").await.json();
    assert_eq!((s["sessions"].clone(), s["outcomes"]["rolled-back"].clone()), (json!(1), json!(1)), "{s}");
    assert_eq!(s["faults_fired"], json!({"mid-retr": 1}));
    // Live sessions are listed, and one can be cut by number.
    let (mut live, _) = Pop::connect(p).await.unwrap();
    live.cmd("USER user2").await.unwrap();
    let until = Instant::now() + LIMIT;
    let id = loop {
        let v = get(a, "/proxies/pop/sessions").await.json();
        if let Some(l) = v["live"].as_array().unwrap().first() {
            break l["session"].as_u64().unwrap();
        }
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(post(a, &format!("/proxies/pop/sessions/{id}/cut"), json!(null)).await.status, 204);
    assert!(live.cmd("PASS secret").await.is_err(), "the session was cut");
    let ends = recent(a, "pop", 2).await;
    assert_eq!((ends[1]["session"].clone(), ends[1]["faults"].clone()), (json!(id), json!(["manual"])));
    post(a, "/proxies/pop/sessions/999/cut", json!(null)).await.error(404, "session not found");
    // The password appears in none of the API's answers.
    for path in ["/proxies/pop/sessions", "/proxies/pop/summary", "/metrics", "/proxies"] {
        let body = get(a, path).await.body;
        assert!(!body.contains("secret"), "{path}: {body}");
    }
    // Summary reset: the next test's counts start at 0.
    assert_eq!(post(a, "/proxies/pop/summary/reset", json!(null)).await.status, 204);
    let s = get(a, "/proxies/pop/summary").await.json();
    assert_eq!(s["sessions"], 0, "{s}");
    assert!(get(a, "/proxies/pop/sessions").await.json()["recent"].as_array().unwrap().is_empty());
    t.api.stop().await;
}

/// The error `check-profile` prints for `toml`, with `origin` for the path.
fn check_profile_says(toml: &str, origin: &str) -> String {
    let dir = std::env::temp_dir().join(format!("popfault-rest-{}-{origin}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.toml");
    std::fs::write(&path, toml).unwrap();
    let end = Proc::spawn(&["check-profile", path.to_str().unwrap()]).wait(LIMIT);
    assert_eq!(end.code, Some(2), "{}", end.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    end.stderr.trim().trim_start_matches("popfault: ").replace(path.to_str().unwrap(), origin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pop3_toxics_and_profiles_get_check_profiles_located_messages() {
    let t = Api::start().await;
    let a = t.addr();
    t.proxy("pop").await;
    for attrs in [
        json!({"when": "status", "probability": 1.5, "actions": [{"do": "disconnect"}]}),
        json!({"when": "body", "command": "RETR", "actions": [{"do": "disconnect"}]}),
        json!({"when": "command", "command": "RETR", "actions": [{"do": "disconect"}]}),
        json!({"when": "greeting", "repet": true, "actions": [{"do": "stall", "ms": 10}]}),
    ] {
        let r = post(a, "/proxies/pop/toxics", json!({"name": "bad", "type": "pop3", "attributes": attrs})).await;
        assert_eq!(r.status, 400, "{}", r.body);
        let v = r.json();
        let expected = check_profile_says(v["toml"].as_str().unwrap(), "toxic bad");
        assert_eq!(v["error"].as_str().unwrap(), expected, "for {attrs}");
        assert!(v["field"].as_str().unwrap().starts_with("rule[1]"), "{v}");
    }
    // The same for a whole profile.
    let bad = "name = \"x\"\n[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\nfraction = 2.0\nactions = [{ do = \"disconnect\" }]\n";
    let r = http(a, "PUT", "/proxies/pop/profile", bad).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"].as_str().unwrap(), check_profile_says(bad, "profile"));
    assert_eq!(r.json()["line"], 5);
    // Nothing changed.
    assert_eq!(get(a, "/proxies/pop/toxics").await.json(), json!([]));
    assert_eq!(get(a, "/proxies/pop/profile").await.body, "");
    // A good one is taken; its rules come before the toxics'.
    let good = "name = \"quit-lost\"\n[[rule]]\nwhen = \"status\"\ncommand = \"QUIT\"\nactions = [{ do = \"disconnect\", side = \"client\" }]\n";
    let r = http(a, "PUT", "/proxies/pop/profile", good).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(a, "/proxies/pop/profile").await.body, good);
    t.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_by_proxy() {
    let t = Api::start().await;
    let a = t.addr();
    let (p1, p2) = (t.proxy("one").await, t.proxy("two-b").await);
    let _ = p2;
    post(
        a,
        "/proxies/one/toxics",
        json!({"name": "cut", "type": "pop3",
        "attributes": {"when": "command", "command": "QUIT", "actions": [{"do": "disconnect"}]}}),
    )
    .await;
    Pop::session(p1).await.expect_err("QUIT was cut");
    let (mut c, _) = Pop::connect(p1).await.unwrap();
    c.cmd("USER user1").await.unwrap();
    c.cmd("PASS secret").await.unwrap();
    c.multi("RETR 1").await.unwrap();
    assert!(c.cmd("QUIT").await.is_err());
    recent(a, "one", 2).await;
    let r = get(a, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("text/plain; version=0.0.4"), "{}", r.headers);
    let lines = r.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{}", r.body));
        match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(value("popfault_sessions_total", &[("proxy", "one"), ("outcome", "nothing-at-stake")]), 1.0);
    assert_eq!(value("popfault_sessions_total", &[("proxy", "one"), ("outcome", "rolled-back")]), 1.0);
    assert_eq!(value("popfault_sessions_total", &[("proxy", "two-b"), ("outcome", "committed")]), 0.0);
    assert_eq!(value("popfault_messages_downloaded_total", &[("proxy", "one")]), 1.0);
    assert_eq!(value("popfault_messages_at_risk_total", &[("proxy", "one")]), 1.0);
    assert_eq!(value("popfault_faults_total", &[("proxy", "one"), ("rule", "cut")]), 2.0);
    assert_eq!(value("popfault_live_sessions", &[("proxy", "one")]), 0.0);
    assert_eq!(value("popfault_proxy_enabled", &[("proxy", "one")]), 1.0);
    assert!(value("popfault_bytes_total", &[("proxy", "one"), ("direction", "down")]) > 2000.0);
    let h = scrape
        .samples
        .iter()
        .find(|s| s.metric == "popfault_command_latency_seconds" && s.labels.get("command") == Some("RETR"))
        .expect("a RETR latency histogram");
    let prometheus_parse::Value::Histogram(buckets) = &h.value else { panic!("{:?}", h.value) };
    assert!(buckets.iter().any(|b| b.less_than.is_infinite() && b.count == 1.0), "{buckets:?}");
    t.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_as_sse_filtered_by_proxy() {
    let t = Api::start().await;
    let a = t.addr();
    let (p1, p2) = (t.proxy("one").await, t.proxy("two").await);
    // A proxy that does not exist is a 404, not a quiet stream.
    get(a, "/events?proxy=nope").await.error(404, "proxy not found");
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /events?proxy=one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        tokio::time::timeout(LIMIT, r.read_line(&mut l)).await.unwrap().unwrap();
        head.push_str(&l);
        if l == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    // Give the subscription a moment to be in place before the sessions.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Pop::session(p2).await.unwrap();
    Pop::session(p1).await.unwrap();
    let mut data = Vec::new();
    let mut events = Vec::new();
    let until = Instant::now() + LIMIT;
    while !data.iter().any(|d: &Value| d["event"] == "session_end") {
        assert!(Instant::now() < until, "no session_end: {data:?}");
        let mut l = String::new();
        tokio::time::timeout(LIMIT, r.read_line(&mut l)).await.unwrap().unwrap();
        // Chunked transfer: size lines and SSE lines interleave.
        if let Some(e) = l.strip_prefix("event: ").or_else(|| l.strip_prefix("event:")) {
            events.push(e.trim().to_string());
        }
        if let Some(d) = l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")) {
            data.push(serde_json::from_str(d.trim()).unwrap());
        }
    }
    assert_eq!(events, ["session_start", "session_end"]);
    assert!(data.iter().all(|d| d["proxy"] == "one"), "{data:?}");
    assert_eq!(data[1]["outcome"], "clean-quit");
    assert_eq!(data[1]["user"], "user1");
    t.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_safe_and_none_waits_for_a_stuck_session() {
    // An upstream that greets and then never answers: sessions hang.
    let stuck = crate::support::line_server("+OK hello\r\n".into(), |_| String::new()).await;
    let t = Api::start().await;
    let a = t.addr();
    let r = post(a, "/proxies", json!({"name": "stuck", "listen": "127.0.0.1:0", "upstream": stuck.to_string()})).await;
    let p: SocketAddr = r.json()["listen"].as_str().unwrap().parse().unwrap();
    // A slow line too, so that writes toward the client wait.
    post(a, "/proxies/stuck/toxics", json!({"type": "bandwidth", "attributes": {"rate": 1}})).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let (mut c, _) = Pop::connect(p).await.unwrap();
        c.w.write_all(b"USER user1\r\n").await.unwrap();
        held.push(c);
    }
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let up = t.pop.addr.to_string();
        calls.spawn(async move {
            let name = format!("p{}", i % 8);
            match i % 5 {
                0 => post(a, "/proxies", json!({"name": name, "listen": "127.0.0.1:0", "upstream": up})).await.status,
                1 => {
                    post(a, &format!("/proxies/{name}/toxics"), json!({"type": "latency", "name": format!("l{i}")}))
                        .await
                        .status
                }
                2 => get(a, "/proxies").await.status,
                3 => http(a, "DELETE", &format!("/proxies/{name}"), "").await.status,
                _ => get(a, "/metrics").await.status,
            }
        });
    }
    while let Some(status) = calls.join_next().await {
        let status = status.unwrap();
        assert!([200, 201, 204, 404, 409].contains(&status), "{status}");
    }
    let r = get(a, "/proxies/stuck/sessions").await.json();
    assert_eq!(r["live"].as_array().unwrap().len(), 5, "{r}");
    // Disabling cuts the stuck sessions without waiting for them.
    let r = post(a, "/proxies/stuck", json!({"enabled": false})).await;
    assert_eq!(r.status, 200);
    assert!(start.elapsed() < Duration::from_secs(5), "the API waited: {:?}", start.elapsed());
    for mut c in held {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(LIMIT, c.r.read(&mut buf)).await.expect("cut in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    // Every proxy that exists is whole.
    for (_, p) in get(a, "/proxies").await.json().as_object().unwrap() {
        assert!(p["listen"].as_str().is_some() && p["toxics"].is_array(), "{p}");
    }
    t.api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_api_on_port_0_with_a_config_and_prints_each_summary() {
    let pop = pop_server().await;
    let dir = std::env::temp_dir().join(format!("popfault-rest-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json_cfg = dir.join("toxiproxy.json");
    let cfg = json!([{"name": "from_json", "listen": "127.0.0.1:0", "upstream": pop.addr.to_string()}]);
    std::fs::write(&json_cfg, cfg.to_string()).unwrap();
    let mut proc = Proc::spawn(&[
        "api",
        "--headless",
        "--listen",
        "127.0.0.1:0",
        "--seed",
        "5",
        "--config",
        json_cfg.to_str().unwrap(),
    ]);
    let a = proc.addr_after("popfault: api http://");
    let proxies = get(a, "/proxies").await.json();
    let p: SocketAddr = proxies["from_json"]["listen"].as_str().unwrap().parse().unwrap();
    Pop::session(p).await.unwrap();
    recent(a, "from_json", 1).await;
    let out = tokio::task::spawn_blocking(move || proc.stop()).await.unwrap();
    assert!(out.contains("== proxy from_json =="), "{out}");
    assert!(out.contains("clean-quit"), "{out}");
    assert!(!out.contains("secret"), "{out}");

    // popfault's TOML, with a profile.
    let toml_cfg = dir.join("proxies.toml");
    let text = format!(
        "[[proxy]]\nname = \"mine\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\nprofile = \"server-down\"\n",
        pop.addr
    );
    std::fs::write(&toml_cfg, text).unwrap();
    let mut proc =
        Proc::spawn(&["api", "--headless", "--listen", "127.0.0.1:0", "--config", toml_cfg.to_str().unwrap()]);
    let a = proc.addr_after("popfault: api http://");
    let p: SocketAddr = get(a, "/proxies/mine").await.json()["listen"].as_str().unwrap().parse().unwrap();
    assert!(Pop::connect(p).await.is_err(), "server-down refuses");
    let ends = recent(a, "mine", 1).await;
    assert_eq!(ends[0]["outcome"], "refused");
    drop(proc);
    let _ = std::fs::remove_dir_all(&dir);
}

const TOXIPROXY_PY: &str = r#"
import json, poplib, sys, time
from toxiproxy import Toxiproxy
port, upstream = int(sys.argv[1]), sys.argv[2]
def say(*a):
    print(*a, flush=True)
t = Toxiproxy()
t.update_api_consumer("127.0.0.1", port)
say("version", t.version().decode().strip())
p = t.create(upstream=upstream, name="pop3_mail")
say("created", p.name, p.upstream, p.enabled)
host, lport = p.listen.rsplit(":", 1)
def session():
    t0 = time.time()
    c = poplib.POP3(host, int(lport), timeout=10)
    c.user("user1"); c.pass_("secret"); n = c.stat()[0]; c.quit()
    return time.time() - t0, n
def result(label):
    try:
        took, n = session()
        say(label, "ok", n, "messages", "%.3f" % took)
    except Exception as e:
        say(label, "error", type(e).__name__)
result("plain")
p.add_toxic(type="latency", attributes={"latency": 200, "jitter": 0})
say("toxics", json.dumps({k: [v.type, v.stream, v.attributes] for k, v in p.toxics().items()}, sort_keys=True))
result("latency")
p.destroy_toxic("latency_downstream")
p.add_toxic(type="reset_peer", name="reset", attributes={"timeout": 0})
result("reset_peer")
p.destroy_toxic("reset")
result("removed")
p.add_toxic(type="latency", attributes={"latency": 500})
t.reset()
say("after reset", json.dumps(list(p.toxics())))
result("reset")
with p.down():
    result("down")
result("up")
say("proxies", sorted(t.proxies()))
p.destroy()
say("destroyed", sorted(t.proxies()))
"#;

/// toxiproxy-python from PyPI, unmodified (`.ci/run` installs it).
fn toxiproxy_client() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import toxiproxy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let what = "python3 with toxiproxy-python (pip install toxiproxy-python) is missing";
        if std::env::var("POPFAULT_REQUIRE_TOXIPROXY_CLIENT").is_ok_and(|v| v == "1") {
            panic!("POPFAULT_REQUIRE_TOXIPROXY_CLIENT is set but {what}");
        }
        eprintln!("SKIPPED: {what}: toxiproxy_python (set POPFAULT_REQUIRE_TOXIPROXY_CLIENT=1 to fail instead)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_toxiproxy_client_library_drives_popfault() {
    if !toxiproxy_client() {
        return;
    }
    let pop = pop_server().await;
    let mut proc = Proc::spawn(&["api", "--headless", "--listen", "127.0.0.1:0", "--seed", "3"]);
    let a = proc.addr_after("popfault: api http://");
    let up = pop.addr.to_string();
    let arg = up.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", TOXIPROXY_PY, &a.port().to_string(), &arg])
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- toxiproxy-python transcript ---\n{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = |label: &str| -> Vec<String> {
        let l =
            stdout.lines().find(|l| l.starts_with(&format!("{label} "))).unwrap_or_else(|| panic!("{label}: {stdout}"));
        l.split_whitespace().map(String::from).collect()
    };
    assert!(line("version").join(" ").contains("popfault"), "{stdout}");
    assert_eq!(line("created")[1..], ["pop3_mail".to_string(), up, "True".into()]);
    assert_eq!(line("plain")[1..4], ["ok", "4", "messages"]);
    let latency = line("latency");
    assert_eq!(latency[1], "ok");
    // Greeting, USER, PASS, STAT and QUIT answers, 200 ms each.
    assert!(latency[4].parse::<f64>().unwrap() >= 0.95, "{latency:?}");
    assert!(
        stdout.contains(r#"toxics {"latency_downstream": ["latency", "downstream", {"jitter": 0, "latency": 200}]}"#),
        "{stdout}"
    );
    assert_eq!(line("reset_peer")[1..], ["error", "ConnectionResetError"]);
    assert_eq!(line("removed")[1], "ok");
    assert!(line("removed")[4].parse::<f64>().unwrap() < 0.5);
    assert_eq!(line("after")[2..], ["[]"]);
    assert_eq!(line("reset")[1], "ok");
    assert_eq!(line("down")[1..], ["error", "ConnectionRefusedError"]);
    assert_eq!(line("up")[1], "ok");
    assert_eq!(line("destroyed")[1..], ["[]"]);
    let summary = tokio::task::spawn_blocking(move || proc.stop()).await.unwrap();
    assert!(!summary.contains("secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_api_does_the_same_without_http() {
    use popfault::{FleetError, ProxySpec, ToxicSpec, ToxicUpdate};
    let pop = pop_server().await;
    let fleet = Fleet::new(Some(9));
    let mut lines = fleet.subscribe();
    let p = fleet.create(ProxySpec::new("mail", "127.0.0.1:0", &pop.addr.to_string())).await.unwrap();
    assert_eq!(
        fleet.create(ProxySpec::new("mail", "127.0.0.1:0", &pop.addr.to_string())).await.unwrap_err(),
        FleetError::Conflict("proxy already exists")
    );
    let addr: SocketAddr = p.listen.parse().unwrap();
    let quit_lost = ToxicSpec::new("pop3")
        .name("quit-lost")
        .attribute("when", "status")
        .attribute("command", "QUIT")
        .attribute("actions", json!([{"do": "disconnect", "side": "client"}]));
    fleet.add_toxic("mail", quit_lost).await.unwrap();
    // A bad change is refused, and the toxic stays as it was.
    let bad = ToxicUpdate { attributes: Some(json!({"when": "nowhere"}).as_object().unwrap().clone()), toxicity: None };
    let e = fleet.update_toxic("mail", "quit-lost", bad).await.unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    assert_eq!(fleet.toxic("mail", "quit-lost").await.unwrap().attributes["when"], "status");
    let (mut c, _) = Pop::connect(addr).await.unwrap();
    c.cmd("USER user1").await.unwrap();
    c.cmd("PASS secret").await.unwrap();
    assert!(c.cmd("DELE 1").await.unwrap().starts_with("+OK"));
    assert!(c.cmd("QUIT").await.is_err(), "QUIT's answer was lost");
    let until = Instant::now() + LIMIT;
    while fleet.sessions("mail").unwrap().recent.is_empty() {
        assert!(Instant::now() < until);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fleet.sessions("mail").unwrap().recent[0]["outcome"], "in-doubt");
    let line = tokio::time::timeout(LIMIT, lines.recv()).await.unwrap().unwrap();
    assert_eq!((line.proxy.as_str(), line.event), ("mail", "session_start"));
    assert!(!fleet.metrics().contains("secret"));
    let summaries = fleet.shutdown().await;
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].1.outcomes["in-doubt"], 1);
    assert!(TcpStream::connect(addr).await.is_err(), "closed at shutdown");
}

/// The dashboard of `popfault api` over several proxies: its first view,
/// `*`, shows every proxy's sessions at once with a proxy column (session
/// numbers are unique across the fleet); `/beta` filters by proxy, and `k`
/// there cuts the selected session in the proxy it goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_proxy_with_a_proxy_column_and_cuts_from_it() {
    use crossterm::event::{Event as InputEvent, KeyCode, KeyEvent, KeyModifiers};
    use popfault::dashboard::{Input, run_panes_on};
    use popfault::{ProxySpec, fleet::Settings};
    use ratatui::{Terminal, backend::TestBackend};
    use std::collections::VecDeque;
    use tokio_util::sync::CancellationToken;

    struct Script(VecDeque<Option<InputEvent>>);
    impl Input for Script {
        fn next(&mut self, _: Duration) -> std::io::Result<Option<InputEvent>> {
            std::thread::sleep(Duration::from_millis(60));
            Ok(self.0.pop_front().unwrap_or(Some(InputEvent::Key(KeyEvent::from(KeyCode::Char('q'))))))
        }
    }
    let key = |c: char| Some(InputEvent::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)));
    fn screen(t: &Terminal<TestBackend>) -> String {
        let b = t.backend().buffer();
        (0..b.area.height)
            .map(|y| (0..b.area.width).map(|x| b[(x, y)].symbol().to_string()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    let pop = pop_server().await;
    let up = pop.addr.to_string();
    let fleet = Fleet::with_settings(Some(3), Settings { dashboard: true, ..Settings::default() });
    let a = fleet.create(ProxySpec::new("alpha", "127.0.0.1:0", &up)).await.unwrap();
    let b = fleet.create(ProxySpec::new("beta", "127.0.0.1:0", &up)).await.unwrap();
    // A finished session through alpha, a live one through beta.
    let (mut c, _) = Pop::connect(a.listen.parse().unwrap()).await.unwrap();
    c.cmd("USER user1").await.unwrap();
    c.cmd("PASS secret").await.unwrap();
    c.cmd("QUIT").await.unwrap();
    drop(c);
    let (mut live, _) = Pop::connect(b.listen.parse().unwrap()).await.unwrap();
    live.cmd("USER user2").await.unwrap();
    live.cmd("PASS secret").await.unwrap();
    let until = Instant::now() + LIMIT;
    while fleet.sessions("alpha").unwrap().recent.is_empty() || fleet.sessions("beta").unwrap().live.is_empty() {
        assert!(
            Instant::now() < until,
            "both sessions seen: {:?} {:?}",
            fleet.sessions("alpha").unwrap(),
            fleet.sessions("beta").unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let panes = fleet.panes();
    assert_eq!(panes.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["*", "alpha", "beta"]);

    let f = fleet.clone();
    let (all, filtered) = tokio::task::spawn_blocking(move || {
        let list = move || f.panes();
        let mut t = Terminal::new(TestBackend::new(110, 30)).unwrap();
        let mut script = Script(VecDeque::from([None, None, key('q')]));
        run_panes_on(&mut t, &mut script, &list, &[], &CancellationToken::new()).unwrap();
        let all = screen(&t);
        let mut script = Script(VecDeque::from([
            None,
            key('/'),
            key('b'),
            key('e'),
            key('t'),
            key('a'),
            Some(InputEvent::Key(KeyEvent::from(KeyCode::Enter))),
            Some(InputEvent::Key(KeyEvent::from(KeyCode::Up))),
            key('k'),
            None,
            None,
            key('q'),
        ]));
        run_panes_on(&mut t, &mut script, &list, &[], &CancellationToken::new()).unwrap();
        (all, screen(&t))
    })
    .await
    .unwrap();
    assert!(all.contains("[* 1/3] every proxy (2)"), "{all}");
    assert!(all.contains("proxy"), "a proxy column: {all}");
    let row = |s: &str, name: &str, user: &str| s.lines().any(|l| l.contains(name) && l.contains(user));
    assert!(row(&all, "alpha", "user1") && row(&all, "beta", "user2"), "both proxies' sessions: {all}");
    assert!(!row(&filtered, "alpha", "user1"), "/beta leaves alpha's out: {filtered}");
    assert!(filtered.contains("cut session #2"), "k cut beta's session from the view of every proxy: {filtered}");
    assert!(live.cmd("STAT").await.is_err(), "the live session was cut");
    let until = Instant::now() + LIMIT;
    while fleet.sessions("beta").unwrap().recent.is_empty() {
        assert!(Instant::now() < until, "beta's session ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fleet.sessions("beta").unwrap().recent[0]["faults"], json!(["manual"]));
    fleet.shutdown().await;
}
