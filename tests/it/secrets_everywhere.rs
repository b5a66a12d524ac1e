//! Credentials of every kind (USER/PASS, APOP, AUTH PLAIN, AUTH LOGIN,
//! CRAM-MD5 and XOAUTH2, with initial responses and continuations) go
//! through the proxy and
//! appear in none of: logs at trace level, the events file, the rendered
//! dashboard, the summary.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use popfault::aggregate::Aggregator;
use popfault::client::{Pop3Client, apop_digest, apop_timestamp};
use popfault::control::Control;
use popfault::dashboard::{Dashboard, Header, UiState, shared_model};
use popfault::faults::Profile;
use popfault::relay::{self, ProxyConfig};
use popfault::server::{self, Maildrop, ServerConfig};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;

const SECRET: &str = "Quokka-Saffron-9931";
/// Secrets in lines the parser cannot know are secrets.
const ALONE: &str = "Pelican-Umber-2718";
const TABBED: &str = "Walrus-Indigo-1618";
const SPACED: [&str; 2] = ["Yk3Vb8", "Hq5Rn"];
const KEYWORD: &str = "Xv9Tm4Ld";
const LOGIN_USER: &str = "loginuser";
/// A CRAM-MD5 response's digest and an XOAUTH2 bearer token.
const DIGEST: &str = "5f3c9a0d2b7e41c8a6d9e0f1b2c3d4e5";
const TOKEN: &str = "ya29.Heron-Cobalt-4142";

/// Log lines, captured at trace level for the whole process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server that speaks AUTH LOGIN (the embedded one does PLAIN only):
/// `AUTH LOGIN [user]`, `+ VXNlcm5hbWU6`, `+ UGFzc3dvcmQ6`, `+OK`.
async fn login_server() -> std::net::SocketAddr {
    line_server("+OK login server\r\n".into(), |lines| {
        let text = lines.last().unwrap().as_str();
        let reply = if text == "AUTH CRAM-MD5" {
            "+ PDEyMzRAdGVzdD4=\r\n"
        } else if text == "AUTH LOGIN" {
            "+ VXNlcm5hbWU6\r\n"
        } else if text.starts_with("AUTH LOGIN ") || lines.len() >= 2 && lines[lines.len() - 2] == "AUTH LOGIN" {
            "+ UGFzc3dvcmQ6\r\n"
        } else if text == "QUIT" {
            "+OK bye\r\n"
        } else {
            "+OK logged in\r\n"
        };
        reply.into()
    })
    .await
}

async fn auth_login(addr: std::net::SocketAddr, initial: bool) {
    let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
    if initial {
        c.send_raw(format!("AUTH LOGIN {}\r\n", b64(LOGIN_USER.as_bytes())).as_bytes()).await.unwrap();
    } else {
        c.send_raw(b"AUTH LOGIN\r\n").await.unwrap();
        assert!(c.read_line().await.unwrap().starts_with("+ "));
        c.send_raw(format!("{}\r\n", b64(LOGIN_USER.as_bytes())).as_bytes()).await.unwrap();
    }
    assert!(c.read_line().await.unwrap().starts_with("+ "));
    c.send_raw(format!("{}\r\n", b64(SECRET.as_bytes())).as_bytes()).await.unwrap();
    assert!(c.read_line().await.unwrap().starts_with("+OK"));
    c.quit().await.unwrap();
}

/// CRAM-MD5 (after the challenge) and XOAUTH2 (initial response): the
/// proxy learns the user from each, and nothing else of it.
async fn cram_and_xoauth2(addr: std::net::SocketAddr) {
    let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
    c.send_raw(b"AUTH CRAM-MD5\r\n").await.unwrap();
    assert!(c.read_line().await.unwrap().starts_with("+ "));
    c.send_raw(format!("{}\r\n", b64(format!("cramuser {DIGEST}").as_bytes())).as_bytes()).await.unwrap();
    assert!(c.read_line().await.unwrap().starts_with("+OK"));
    c.quit().await.unwrap();
    let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
    let xoauth = b64(format!("user=xoauthuser\x01auth=Bearer {TOKEN}\x01\x01").as_bytes());
    c.send_raw(format!("AUTH XOAUTH2 {xoauth}\r\n").as_bytes()).await.unwrap();
    assert!(c.read_line().await.unwrap().starts_with("+OK"));
    c.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_log_event_dashboard_or_summary() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let dir = std::env::temp_dir().join(format!("popfault-secrets-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let cfg = ServerConfig { users: 3, messages: 2, size: 600, password: SECRET.into() };
    let srv = server::spawn(loopback(), Maildrop::new(&cfg)).await.unwrap();
    let login_srv = login_server().await;
    let model = shared_model();
    let started = Instant::now();
    let agg = Aggregator::with_model(Some(&events), Some((model.clone(), started)), false).unwrap();
    let control = Arc::new(Control::new(Arc::new(Profile::passthrough()), 5));
    let to_embedded =
        relay::start(ProxyConfig::new(loopback(), srv.addr.to_string()), control.clone(), agg.sink()).await.unwrap();
    let to_login =
        relay::start(ProxyConfig::new(loopback(), login_srv.to_string()), control.clone(), agg.sink()).await.unwrap();

    let mut needles = vec![
        SECRET.to_string(),
        b64(SECRET.as_bytes()),
        b64(format!("\0user1\0{SECRET}").as_bytes()),
        b64(format!("\0user3\0{SECRET}").as_bytes()),
    ];
    tokio::time::timeout(Duration::from_secs(30), async {
        let addr = to_embedded.local_addr;
        let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
        c.login("user1", SECRET).await.unwrap();
        c.retr(1).await.unwrap();
        c.quit().await.unwrap();
        let (mut c, greeting) = Pop3Client::connect(addr).await.unwrap();
        needles.push(apop_digest(apop_timestamp(&greeting).unwrap(), SECRET));
        c.apop("user2", SECRET).await.unwrap();
        c.quit().await.unwrap();
        for initial in [true, false] {
            let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
            c.auth_plain("user3", SECRET, initial).await.unwrap();
            c.quit().await.unwrap();
        }
        auth_login(to_login.local_addr, true).await;
        auth_login(to_login.local_addr, false).await;
        cram_and_xoauth2(to_login.local_addr).await;
        needles.extend([
            DIGEST.to_string(),
            b64(format!("cramuser {DIGEST}").as_bytes()),
            TOKEN.to_string(),
            b64(format!("user=xoauthuser\x01auth=Bearer {TOKEN}\x01\x01").as_bytes()),
        ]);
        // A password on a line of its own, PASS with a tab, a user name
        // with spaces, an unknown keyword that is a password.
        let scripts = [
            vec!["USER user1".to_string(), ALONE.into()],
            vec!["USER user1".into(), format!("PASS\t{TABBED}")],
            vec![format!("USER user1 {} {}", SPACED[0], SPACED[1])],
            vec![format!("{KEYWORD} {SECRET}")],
        ];
        for script in scripts {
            let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
            for line in script {
                c.send_raw(format!("{line}\r\n").as_bytes()).await.unwrap();
                let _ = c.read_line().await.unwrap();
            }
            c.quit().await.unwrap();
        }
    })
    .await
    .expect("sessions in time");
    to_embedded.shutdown().await;
    to_login.shutdown().await;
    let summary = agg.finish(5, "passthrough", Some(&events)).await.unwrap();

    // The dashboard, as a person would see it, wide enough for every column.
    let snapshot = model.lock().unwrap().clone();
    let header = Header { listen: "127.0.0.1:1110".into(), upstream: "x:110".into(), seed: 5, started };
    let ui = UiState::default();
    let dash = Dashboard {
        model: &snapshot,
        header: &header,
        ui: &ui,
        profile: "passthrough",
        paused: false,
        uptime: started.elapsed(),
    };
    let area = Rect::new(0, 0, 200, 60);
    let mut buf = Buffer::empty(area);
    (&dash).render(area, &mut buf);
    let screen: String = (0..area.height)
        .map(|y| (0..area.width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>() + "\n")
        .collect();

    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let events_text = std::fs::read_to_string(&events).unwrap();
    let summary_text = summary.to_table() + &serde_json::to_string(&summary).unwrap();
    assert!(log_text.contains("session ended"), "trace logging was captured");
    assert!(screen.contains("user1") && screen.contains("user2"), "the dashboard shows the sessions:\n{screen}");
    // The user names of the SASL logins, and nothing else of them.
    for user in ["user3", LOGIN_USER, "cramuser", "xoauthuser"] {
        assert!(screen.contains(user), "the dashboard names the SASL user {user}:\n{screen}");
    }
    assert_eq!(summary.sessions, 12);
    for s in [ALONE, TABBED, SPACED[0], SPACED[1], KEYWORD] {
        needles.extend([s.to_string(), b64(s.as_bytes()), b64(format!("\0user1\0{s}").as_bytes())]);
    }
    for (what, text) in
        [("trace log", &log_text), ("events file", &events_text), ("dashboard", &screen), ("summary", &summary_text)]
    {
        // In any case: an unknown keyword used to be kept upper-cased.
        let text = text.to_ascii_lowercase();
        for n in &needles {
            assert!(!text.contains(&n.to_ascii_lowercase()), "the {what} contains a secret ({n})");
        }
    }
    assert!(summary.latency_us.keys().all(|k| popfault::codec::command::is_label(k)), "{:?}", summary.latency_us);
    let _ = std::fs::remove_dir_all(&dir);
}
