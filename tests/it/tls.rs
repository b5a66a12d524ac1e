//! popfault's own TLS (docs/TLS.md) with real software: a private Dovecot
//! serving POP3S and STLS behind popfault, fetched with curl and Python's
//! poplib trusting popfault's CA (made in the test). Downloads are
//! byte-identical to direct ones; a cut inside TLS is reported as it is
//! in plaintext, against the server's own count; a client that does not
//! trust the CA, and an upstream popfault must not trust, end with a clear
//! reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use popfault::control::Control;
use popfault::events::{EventSink, SessionEnd};
use popfault::relay::{self, ClientTls, ProxyConfig, ProxyHandle, TlsConfig, UpstreamTls};
use popfault::tls::{self, Ca, Leaves, UpstreamTrust};
use popfault::{Outcome, Profile};
use tokio::sync::mpsc;

use crate::support::dovecot::{Dovecot, temp_root, which};
use crate::support::proc::Proc;
use crate::support::{builtin, loopback, next_end, sha256};

/// A fresh CA for popfault in a directory of its own.
fn fresh_ca() -> (PathBuf, Arc<Ca>) {
    let dir = temp_root().join(format!("ca-{}-{}", std::process::id(), rand_suffix()));
    let (ca, created) = Ca::load_or_create(&dir).expect("make a CA");
    assert!(created);
    (dir, Arc::new(ca))
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// popfault's TLS set-up: `client` with the CA's leaves, `upstream`
/// verified per `trust`, expecting `name`.
fn tls_config(ca: &Arc<Ca>, client: ClientTls, upstream: UpstreamTls, trust: UpstreamTrust, name: &str) -> TlsConfig {
    TlsConfig {
        client,
        leaves: Some(Arc::new(Leaves::new(ca.clone(), None))),
        upstream,
        connector: Some(tls::client_config(&trust, None).expect("client config")),
        upstream_name: Some(tls::upstream_name(&format!("{name}:0")).expect("a name")),
        fallback_names: vec!["127.0.0.1".into()],
        handshake_timeout: Duration::from_secs(10),
    }
}

async fn tls_proxy(
    upstream: SocketAddr,
    cfg: TlsConfig,
    profile: Profile,
) -> (ProxyHandle, mpsc::Receiver<popfault::events::Event>) {
    let (sink, rx) = EventSink::channel(100_000);
    let control = Arc::new(Control::new(Arc::new(profile), 3));
    let mut pc = ProxyConfig::new(loopback(), upstream.to_string());
    pc.tls = Some(Arc::new(cfg));
    (relay::start(pc, control, sink).await.expect("proxy"), rx)
}

/// Dovecot's own certificate: the upstream trust for these tests.
fn dovecot_trust(d: &Dovecot) -> UpstreamTrust {
    UpstreamTrust::File(d.cert_path())
}

/// curl's output, or its failure (`Err(stderr)`); `None` (skipped) if curl
/// is missing and Dovecot is not required.
fn curl(args: &[String]) -> Option<Result<Vec<u8>, String>> {
    if which("curl").is_none() {
        let required = std::env::var("POPFAULT_REQUIRE_DOVECOT").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "POPFAULT_REQUIRE_DOVECOT is set but curl is not installed");
        eprintln!("SKIPPED: curl not installed");
        return None;
    }
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    Some(if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) })
}

async fn curl_async(args: Vec<String>) -> Option<Result<Vec<u8>, String>> {
    tokio::task::spawn_blocking(move || curl(&args)).await.expect("curl thread")
}

fn user_arg(d: &Dovecot) -> String {
    format!("{}:{}", d.user, d.password)
}

fn s(x: impl AsRef<str>) -> String {
    x.as_ref().to_string()
}

/// curl over POP3S (popfault's listener implicit) and over STLS (popfault
/// answering it), both against Dovecot with TLS (implicit and STLS), and
/// a plaintext client to a POP3S server: byte-identical to a direct
/// download; sessions read whole (not `encrypted`), counted.
#[tokio::test]
async fn curl_over_pop3s_and_stls_through_popfault_matches_a_direct_download() {
    let Some(d) = Dovecot::start_tls(3) else { return };
    let pop3s = d.pop3s.expect("a POP3S listener");
    let (_dir, ca) = fresh_ca();
    let ca_file = ca.cert_path().display().to_string();
    let dovecot_ca = d.cert_path().display().to_string();
    let mut direct = Vec::new();
    for n in 1..=3 {
        let args = vec![s("--cacert"), dovecot_ca.clone(), s("--user"), user_arg(&d), format!("pop3s://{pop3s}/{n}")];
        let Some(got) = curl_async(args).await else { return };
        let got = got.unwrap_or_else(|e| panic!("direct curl: {e}"));
        assert!(String::from_utf8_lossy(&got).contains(&Dovecot::message_id(n)));
        direct.push(got);
    }
    // (client side, upstream side, upstream address, curl URL scheme and flags)
    let cases: [(ClientTls, UpstreamTls, SocketAddr, &str, &[&str]); 4] = [
        (ClientTls::Implicit, UpstreamTls::Implicit, pop3s, "pop3s", &[]),
        (ClientTls::Stls, UpstreamTls::Stls, d.addr, "pop3", &["--ssl-reqd"]),
        (ClientTls::Stls, UpstreamTls::Implicit, pop3s, "pop3", &["--ssl-reqd"]),
        (ClientTls::None, UpstreamTls::Implicit, pop3s, "pop3", &[]),
    ];
    for (client, upstream, addr, scheme, flags) in cases {
        let cfg = tls_config(&ca, client, upstream, dovecot_trust(&d), "localhost");
        let (proxy, mut events) = tls_proxy(addr, cfg, Profile::passthrough()).await;
        for n in 1..=3 {
            let mut args = vec![s("--cacert"), ca_file.clone(), s("--user"), user_arg(&d)];
            args.extend(flags.iter().map(s));
            args.push(format!("{scheme}://{}/{n}", proxy.local_addr));
            let got = curl_async(args).await.expect("curl ran once");
            let got = got.unwrap_or_else(|e| panic!("{client:?}/{upstream:?}: curl through popfault: {e}"));
            assert_eq!(sha256(&got), sha256(&direct[n - 1]), "{client:?}/{upstream:?}: message {n} byte-identical");
            let end = next_end(&mut events).await;
            assert!(!end.encrypted, "{client:?}/{upstream:?}: popfault read the session inside TLS");
            assert_eq!((end.outcome, end.downloaded), (Outcome::CleanQuit, 1), "{client:?}/{upstream:?}: {end:?}");
            assert_eq!(end.user.as_deref(), Some(d.user.as_str()));
            let tls = end.tls.as_deref().unwrap_or_default();
            assert_eq!(tls.contains("client TLS 1."), client != ClientTls::None, "{client:?}: {tls}");
            assert!(tls.contains("upstream TLS 1."), "{upstream:?}: {tls}");
        }
        proxy.shutdown().await;
    }
}

/// Python's poplib, over POP3S and over STLS, downloading and deleting
/// each message; popfault's `lost-carrier` cuts the third RETR halfway
/// inside TLS. popfault reports a rollback of the two messages marked,
/// and Dovecot still has all four.
#[tokio::test]
async fn a_lost_carrier_inside_tls_is_rolled_back_as_the_server_counts() {
    if which("python3").is_none() {
        let required = std::env::var("POPFAULT_REQUIRE_DOVECOT").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "POPFAULT_REQUIRE_DOVECOT is set but python3 is not installed");
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    for stls in [false, true] {
        let Some(d) = Dovecot::start_tls(4) else { return };
        let (_dir, ca) = fresh_ca();
        let (client, upstream, addr) = match stls {
            false => (ClientTls::Implicit, UpstreamTls::Implicit, d.pop3s.expect("POP3S")),
            true => (ClientTls::Stls, UpstreamTls::Stls, d.addr),
        };
        let mut profile = builtin("lost-carrier");
        // Every session, not half of them.
        profile.rules[0].sessions.probability = None;
        let cfg = tls_config(&ca, client, upstream, dovecot_trust(&d), "localhost");
        let (proxy, mut events) = tls_proxy(addr, cfg, profile).await;
        let out = poplib(&proxy.local_addr, stls, &ca.cert_path(), &d, 4).await;
        assert!(out.contains("got 1") && out.contains("got 2"), "two messages came whole: {out}");
        assert!(!out.contains("got 3") && !out.contains("QUIT OK"), "the third was cut: {out}");
        let end = next_end(&mut events).await;
        let what = if stls { "STLS" } else { "POP3S" };
        assert!(!end.encrypted, "{what}: read inside TLS");
        assert_eq!(end.outcome, Outcome::RolledBack, "{what}: {end:?}");
        assert_eq!((end.downloaded, end.marked, end.at_risk), (2, 2, 2), "{what}: {end:?}");
        assert_eq!(end.faults, vec!["carrier-lost-mid-retr".to_string()], "{what}");
        d.wait_idle().await;
        assert_eq!(d.remaining(), 4, "{what}: Dovecot deleted nothing, as popfault says");
        proxy.shutdown().await;
    }
}

/// Runs a poplib client: POP3_SSL, or POP3 + stls(), trusting `ca`,
/// RETR + DELE of messages 1..=n, then QUIT. Prints what it got.
async fn poplib(addr: &SocketAddr, stls: bool, ca: &Path, d: &Dovecot, n: usize) -> String {
    let script = format!(
        r#"
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
try:
    if {stls}:
        p = poplib.POP3("127.0.0.1", {port}, timeout=20)
        p.stls(context=ctx)
    else:
        p = poplib.POP3_SSL("127.0.0.1", {port}, context=ctx, timeout=20)
    p.user({user:?})
    p.pass_({password:?})
    for i in range(1, {n} + 1):
        resp, lines, octets = p.retr(i)
        print("got", i, octets, flush=True)
        p.dele(i)
    p.quit()
    print("QUIT OK", flush=True)
except Exception as e:
    print("error:", type(e).__name__, flush=True)
"#,
        ca = ca.display().to_string(),
        stls = if stls { "True" } else { "False" },
        port = addr.port(),
        user = d.user,
        password = d.password,
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg("-c").arg(script).stdin(Stdio::null()).output().expect("run python3")
    })
    .await
    .expect("python thread");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(&d.password), "poplib printed no password");
    text
}

/// A client that does not trust popfault's CA fails the handshake, and the
/// session says why; so does an upstream whose certificate popfault does
/// not trust or whose name is not the one expected, unless insecure.
#[tokio::test]
async fn untrusted_peers_end_with_a_clear_reason() {
    let Some(d) = Dovecot::start_tls(1) else { return };
    let pop3s = d.pop3s.expect("POP3S");
    let (_dir, ca) = fresh_ca();
    let user = user_arg(&d);

    // The client does not trust popfault's CA (curl's system store).
    let cfg = tls_config(&ca, ClientTls::Implicit, UpstreamTls::Implicit, dovecot_trust(&d), "localhost");
    let (proxy, mut events) = tls_proxy(pop3s, cfg, Profile::passthrough()).await;
    let Some(r) = curl_async(vec![s("--user"), user.clone(), format!("pop3s://{}/1", proxy.local_addr)]).await else {
        return;
    };
    let err = r.expect_err("curl must not trust popfault's CA by default");
    assert!(err.contains("certificate"), "curl says why: {err}");
    let end = next_end(&mut events).await;
    assert_eq!(end.outcome, Outcome::Refused, "{end:?}");
    assert!(
        end.ended_by.contains("TLS with the client failed") && end.ended_by.contains("popfault's CA"),
        "the reason names the handshake and the CA: {}",
        end.ended_by
    );
    proxy.shutdown().await;

    // The upstream: not trusted (system roots), the wrong name, then insecure.
    let ca_file = ca.cert_path().display().to_string();
    let cases: [(UpstreamTrust, &str, Option<&str>); 3] = [
        (UpstreamTrust::System, "localhost", Some("not trusted")),
        (dovecot_trust(&d), "mail.example.org", Some("mail.example.org")),
        (UpstreamTrust::Insecure, "mail.example.org", None),
    ];
    for (trust, name, why) in cases {
        let cfg = tls_config(&ca, ClientTls::Implicit, UpstreamTls::Implicit, trust, name);
        let (proxy, mut events) = tls_proxy(pop3s, cfg, Profile::passthrough()).await;
        let args =
            vec![s("--cacert"), ca_file.clone(), s("--user"), user.clone(), format!("pop3s://{}/1", proxy.local_addr)];
        let r = curl_async(args).await.expect("curl ran once");
        let end: SessionEnd = next_end(&mut events).await;
        match why {
            Some(why) => {
                assert!(r.is_err(), "{name}: the client got nothing");
                assert_eq!(end.outcome, Outcome::Refused, "{end:?}");
                assert!(
                    end.ended_by.contains("TLS with the upstream failed") && end.ended_by.contains(why),
                    "{name}: the reason says {why:?}: {}",
                    end.ended_by
                );
            }
            None => {
                let got = r.unwrap_or_else(|e| panic!("insecure upstream: {e}"));
                assert!(String::from_utf8_lossy(&got).contains(&Dovecot::message_id(1)));
                assert_eq!(end.outcome, Outcome::CleanQuit, "{end:?}");
            }
        }
        proxy.shutdown().await;
    }
}

/// The real binary with its TLS options: curl over POP3S through
/// `popfault proxy --client-tls implicit --upstream-tls stls`, with a key
/// log and -vvv. The download is byte-identical; the key log holds NSS
/// lines (mode 0600); the password shows nowhere: not in stderr at -vvv,
/// not in the events, not in the summary.
#[tokio::test]
async fn the_binary_speaks_tls_both_ways_and_keeps_secrets() {
    let Some(d) = Dovecot::start_tls(1) else { return };
    let dir = temp_root().join(format!("tls-cli-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("test dir");
    let (ca_dir, keylog, events) = (dir.join("ca"), dir.join("keys.log"), dir.join("events.jsonl"));
    let upstream_ca = d.cert_path().display().to_string();
    let (ca_dir_s, keylog_s, events_s) =
        (ca_dir.display().to_string(), keylog.display().to_string(), events.display().to_string());
    let transcripts = dir.join("transcripts");
    let transcripts_s = transcripts.display().to_string();
    let extra = [
        "-vvv",
        "--client-tls",
        "implicit",
        "--upstream-tls",
        "stls",
        "--ca",
        &ca_dir_s,
        "--upstream-ca",
        &upstream_ca,
        "--upstream-name",
        "localhost",
        "--keylog",
        &keylog_s,
        "--events",
        &events_s,
        "--transcripts",
        &transcripts_s,
    ];
    let (p, addr) = Proc::proxy(d.addr, &extra);
    let ca = Ca::load(&ca_dir).expect("popfault made its CA in --ca");
    let args = vec![
        s("--cacert"),
        ca.cert_path().display().to_string(),
        s("--user"),
        user_arg(&d),
        format!("pop3s://{addr}/1"),
    ];
    let Some(got) = curl_async(args).await else { return };
    let got = got.unwrap_or_else(|e| panic!("curl through the binary: {e}"));
    assert!(String::from_utf8_lossy(&got).contains(&Dovecot::message_id(1)));
    p.signal("TERM");
    let ended = p.wait(Duration::from_secs(20));
    assert_eq!(ended.code, Some(0), "{ended:?}");
    assert!(ended.stderr.contains("--keylog"), "the key log is warned about: {}", ended.stderr);
    let keys = std::fs::read_to_string(&keylog).expect("the key log");
    assert!(keys.lines().any(|l| l.starts_with("CLIENT_TRAFFIC_SECRET_0 ") || l.starts_with("CLIENT_RANDOM ")));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&keylog).expect("key log").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key log is private");
    let events = std::fs::read_to_string(&events).expect("events");
    let end = events.lines().find(|l| l.contains("\"session_end\"")).expect("a session end");
    let end: serde_json::Value = serde_json::from_str(end).expect("json");
    assert_eq!(end["outcome"], "clean-quit", "{end}");
    assert_eq!(end["encrypted"], false);
    let b64 = crate::support::b64(d.password.as_bytes());
    let transcript = std::fs::read_to_string(transcripts.join("session-000001.txt")).expect("a transcript");
    assert!(transcript.contains("(TLS with the client: TLS 1."), "the handshakes are noted: {transcript}");
    assert!(transcript.contains("(TLS with the upstream: TLS 1."), "{transcript}");
    for (what, text) in
        [("stderr", &ended.stderr), ("stdout", &ended.stdout), ("events", &events), ("transcript", &transcript)]
    {
        assert!(!text.contains(&d.password) && !text.contains(&b64), "no password in {what}");
        assert!(!text.contains("TRAFFIC_SECRET"), "no key in {what}");
    }
}

/// How a client's conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A clean end of stream (inside TLS: close_notify, then FIN).
    Eof,
    /// A TCP reset.
    Reset,
    /// Nothing more came and the line stayed open (`silent`).
    Silence,
    /// TLS only: a FIN with no close_notify before it (a plain close, as
    /// TLS sees it).
    Truncated,
}

/// Writes `script` at once and reads until the stream ends or stays
/// silent for 2 s.
async fn talk<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S, script: &[u8]) -> (Vec<u8>, Ending) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut r, mut w) = tokio::io::split(stream);
    let _ = w.write_all(script).await;
    let _ = w.flush().await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ending = loop {
        match tokio::time::timeout(Duration::from_secs(2), r.read(&mut buf)).await {
            Err(_) => break Ending::Silence,
            Ok(Ok(0)) => break Ending::Eof,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ending::Reset,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ending::Truncated,
            Ok(Err(e)) => panic!("read failed: {e}"),
        }
    };
    (got, ending)
}

/// One session of `script` through a proxy running `profile` (seed 7) to
/// the embedded server: plain, or with POP3S between the client and
/// popfault (the client trusting popfault's CA).
async fn one_session(profile: &Profile, tls: Option<&Arc<Ca>>, script: &[u8]) -> (Vec<u8>, Ending, SessionEnd) {
    use popfault::server::{self, Maildrop, ServerConfig};
    let cfg = ServerConfig { users: 1, messages: 3, size: 1500, password: "secret".into() };
    let server = server::spawn(loopback(), Maildrop::new(&cfg)).await.expect("server");
    let (sink, mut events) = EventSink::channel(100_000);
    let control = Arc::new(Control::new(Arc::new(profile.clone()), 7));
    let mut pc = ProxyConfig::new(loopback(), server.addr.to_string());
    if let Some(ca) = tls {
        let mut t = tls_config(ca, ClientTls::Implicit, UpstreamTls::None, UpstreamTrust::Insecure, "localhost");
        t.connector = None;
        t.upstream_name = None;
        pc.tls = Some(Arc::new(t));
    }
    let proxy = relay::start(pc, control, sink).await.expect("proxy");
    let tcp = tokio::net::TcpStream::connect(proxy.local_addr).await.expect("connect");
    let (got, ending) = match tls {
        None => talk(tcp, script).await,
        Some(ca) => {
            let config = tls::client_config(&UpstreamTrust::File(ca.cert_path()), None).expect("client config");
            let name = tls::upstream_name("127.0.0.1:0").expect("name");
            let connector = tls::tokio_rustls::TlsConnector::from(config);
            match connector.connect(name, tcp).await {
                Ok(s) => talk(s, script).await,
                // Refused before any TLS (`refuse` rst, a cut at accept).
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => (Vec::new(), Ending::Reset),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => (Vec::new(), Ending::Eof),
                Err(e) => panic!("TLS with popfault: {e}"),
            }
        }
    };
    let end = next_end(&mut events).await;
    proxy.shutdown().await;
    (got, ending, end)
}

/// Every built-in profile (but the time-window and hang ones), and a cut of
/// each kind, does inside popfault's TLS exactly what it does in
/// plaintext: the same bytes reach the client, the line ends the same way
/// (rst: a reset with no close_notify; fin: close_notify, then FIN;
/// silent: nothing), and the session's record is the same.
#[tokio::test]
async fn every_fault_does_inside_tls_what_it_does_in_plaintext() {
    let (_dir, ca) = fresh_ca();
    let script =
        b"USER user1\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nRETR 2\r\nDELE 2\r\nRETR 3\r\nDELE 3\r\nQUIT\r\n";
    let cut = |how: &str| {
        crate::support::profile(&format!(
            "[[rule]]\nname = \"cut-{how}\"\nwhen = \"body\"\ncommand = \"RETR\"\nnth = 2\noffset = 700\n\
             actions = [{{ do = \"disconnect\", how = \"{how}\" }}]\n"
        ))
    };
    // Without QUIT, the server keeps its side open: a silent line stays silent.
    let no_quit = &script[..script.len() - b"QUIT\r\n".len()];
    let mut cases: Vec<(String, Profile, &[u8])> = [
        "passthrough",
        "lost-carrier",
        "lost-carrier-at-quit",
        "call-waiting",
        "busy-mailbox",
        "server-down",
        "server-down-err",
        "flaky-line",
        "modem-28k8",
    ]
    .iter()
    .map(|n| (n.to_string(), builtin(n), &script[..]))
    .collect();
    for how in ["rst", "fin", "silent"] {
        cases.push((format!("disconnect {how}"), cut(how), no_quit));
    }
    let mut endings = Vec::new();
    for (name, profile, script) in &cases {
        let (plain, plain_ending, plain_end) = one_session(profile, None, script).await;
        let (tls, tls_ending, tls_end) = one_session(profile, Some(&ca), script).await;
        // Each server's greeting has its own APOP timestamp: the rest must match.
        let after_greeting = |b: &[u8]| b.iter().position(|&c| c == b'\n').map_or(Vec::new(), |i| b[i + 1..].to_vec());
        let (t, p) = (after_greeting(&tls), after_greeting(&plain));
        assert_eq!(t.len(), p.len(), "{name}: the client got as many bytes");
        assert_eq!(
            sha256(&after_greeting(&tls)),
            sha256(&after_greeting(&plain)),
            "{name}: the client got the same bytes"
        );
        assert_eq!(tls_ending, plain_ending, "{name}: the line ended the same way");
        // bytes_down counts the greeting: without it, the same.
        let key = |e: &SessionEnd, greeting: usize| {
            let down = e.bytes_down - greeting as u64;
            (e.outcome, e.state, e.downloaded, e.marked, e.at_risk, e.bytes_up, down, e.faults.clone())
        };
        let (tg, pg) = (tls.len() - t.len(), plain.len() - p.len());
        assert_eq!(key(&tls_end, tg), key(&plain_end, pg), "{name}: the same record");
        assert!(tls_end.tls.is_some() || tls_end.outcome == Outcome::Refused, "{name}: {tls_end:?}");
        endings.push((name.clone(), tls_ending));
    }
    let of = |n: &str| endings.iter().find(|(name, _)| name == n).map(|(_, e)| *e);
    assert_eq!(of("disconnect rst"), Some(Ending::Reset));
    assert_eq!(of("disconnect fin"), Some(Ending::Eof));
    assert_eq!(of("disconnect silent"), Some(Ending::Silence));
}

/// mpop and fetchmail (where installed), over POP3S and over STLS, each
/// trusting only the certificate it is given and checking the name: run
/// once directly against Dovecot (trusting Dovecot's certificate) and once
/// through popfault (trusting popfault's CA), each against a fresh server.
/// They store the same messages, delete them all, and popfault reads the
/// sessions inside TLS: committed, every message downloaded and marked.
/// Then `lost-carrier` cuts the third RETR halfway inside TLS: popfault
/// reports a rollback (two downloaded, at risk, one cut midway) and
/// Dovecot still has all three.
#[tokio::test]
async fn mpop_and_fetchmail_over_tls_store_through_popfault_what_they_store_directly() {
    use crate::support::clients::{Account, Client, Kind};
    let (_dir, ca) = fresh_ca();
    // fetchmail with `fetchall`: RETR (as installed it reads with TOP, which
    // the lost-carrier rule does not name).
    for kind in [Kind::Mpop, Kind::FetchmailAll] {
        for implicit in [true, false] {
            let what = format!("{} over {}", kind.name(), if implicit { "POP3S" } else { "STLS" });
            // Directly.
            let Some(d) = Dovecot::start_tls(3) else { return };
            let Some(client) = Client::new(kind) else { return };
            let mut client = client.with_tls(implicit, &d.cert_path());
            let addr = if implicit { d.pop3s.expect("POP3S") } else { d.addr };
            let account = Account { addr, user: d.user.clone(), password: d.password.clone() };
            let direct = client.run(&account, 3).await;
            assert_eq!(direct.delivered.len(), 3, "{what} directly: {}", direct.log);
            // Through popfault.
            let Some(d) = Dovecot::start_tls(3) else { return };
            let Some(client) = Client::new(kind) else { return };
            let mut client = client.with_tls(implicit, &ca.cert_path());
            let (side, up, addr) = match implicit {
                true => (ClientTls::Implicit, UpstreamTls::Implicit, d.pop3s.expect("POP3S")),
                false => (ClientTls::Stls, UpstreamTls::Stls, d.addr),
            };
            let cfg = tls_config(&ca, side, up, dovecot_trust(&d), "localhost");
            let (proxy, mut events) = tls_proxy(addr, cfg, Profile::passthrough()).await;
            let account = Account { addr: proxy.local_addr, user: d.user.clone(), password: d.password.clone() };
            let proxied = client.run(&account, 3).await;
            assert_eq!(proxied.delivered.len(), 3, "{what} through popfault: {}", proxied.log);
            let body = |b: &[u8]| {
                // fetchmail's own Received: header names the time and port.
                let text = String::from_utf8_lossy(b).into_owned();
                match text.find("\nReturn-Path").or_else(|| text.find("\nMessage-ID")) {
                    Some(i) if kind == Kind::FetchmailAll => text[i + 1..].to_string(),
                    _ => text,
                }
            };
            for (n, (a, b)) in direct.delivered.iter().zip(&proxied.delivered).enumerate() {
                assert_eq!(body(&a.bytes), body(&b.bytes), "{what}: message {} the same", n + 1);
            }
            let end = next_end(&mut events).await;
            assert!(!end.encrypted && end.tls.is_some(), "{what}: read inside TLS: {end:?}");
            assert_eq!((end.outcome, end.downloaded, end.marked), (Outcome::Committed, 3, 3), "{what}: {end:?}");
            d.wait_idle().await;
            assert_eq!(d.remaining(), 0, "{what}: Dovecot deleted all three, as popfault says");
            proxy.shutdown().await;

            // The line drops halfway through the third message, inside TLS.
            let Some(d) = Dovecot::start_tls(3) else { return };
            let Some(client) = Client::new(kind) else { return };
            let mut client = client.with_tls(implicit, &ca.cert_path());
            let addr = if implicit { d.pop3s.expect("POP3S") } else { d.addr };
            let cfg = tls_config(&ca, side, up, dovecot_trust(&d), "localhost");
            let mut profile = builtin("lost-carrier");
            profile.rules[0].sessions.probability = None;
            let (proxy, mut events) = tls_proxy(addr, cfg, profile).await;
            let account = Account { addr: proxy.local_addr, user: d.user.clone(), password: d.password.clone() };
            let cut = client.run(&account, 3).await;
            let end = next_end(&mut events).await;
            assert_eq!(end.faults, vec!["carrier-lost-mid-retr".to_string()], "{what}: {end:?}");
            assert_eq!(end.outcome, Outcome::RolledBack, "{what}: {end:?}");
            assert_eq!((end.downloaded, end.at_risk, end.delivery.cut_midway), (2, 2, 1), "{what}: {end:?}");
            // The two before the cut were stored whole; a client that stores
            // a third stored the part that came (mpop hands its MDA the
            // message as it arrives).
            assert!(cut.delivered.len() >= 2, "{what}: {}", cut.log);
            for (n, (a, b)) in direct.delivered.iter().zip(&cut.delivered).take(2).enumerate() {
                assert_eq!(body(&a.bytes), body(&b.bytes), "{what}: message {} stored whole", n + 1);
            }
            if let Some(third) = cut.delivered.get(2) {
                assert!(third.bytes.len() < direct.delivered[2].bytes.len(), "{what}: the third is cut short");
                eprintln!("{what}: stored the part of message 3 that came ({} bytes)", third.bytes.len());
            }
            d.wait_idle().await;
            assert_eq!(d.remaining(), 3, "{what}: Dovecot deleted nothing, as popfault says");
            proxy.shutdown().await;
        }
    }
}

/// Faults at the handshake: with POP3S on the client side, `accept` rules
/// act before it. A stall holds the handshake (the server's answer to the
/// ClientHello comes late); a reset cuts the line before any TLS.
#[tokio::test]
async fn accept_rules_stall_or_cut_the_handshake() {
    let (_dir, ca) = fresh_ca();
    let script = b"USER user1\r\nPASS secret\r\nQUIT\r\n";
    let stall = crate::support::profile(
        "[[rule]]\nname = \"slow-hello\"\nwhen = \"accept\"\nactions = [{ do = \"stall\", ms = 600 }]\n",
    );
    let started = std::time::Instant::now();
    let (got, ending, end) = one_session(&stall, Some(&ca), script).await;
    assert!(started.elapsed() >= Duration::from_millis(600), "the handshake waited for the stall");
    assert!(got.starts_with(b"+OK"), "greeted inside TLS: {got:?}");
    assert_eq!((ending, end.outcome), (Ending::Eof, Outcome::CleanQuit), "{end:?}");
    assert_eq!(end.faults, vec!["slow-hello".to_string()]);

    let cut = crate::support::profile(
        "[[rule]]\nname = \"no-hello\"\nwhen = \"accept\"\nactions = [{ do = \"disconnect\", how = \"rst\" }]\n",
    );
    let (got, ending, end) = one_session(&cut, Some(&ca), script).await;
    assert_eq!((got.len(), ending), (0, Ending::Reset), "reset before any TLS");
    assert_eq!(end.outcome, Outcome::Refused, "{end:?}");
    assert_eq!(end.tls, None, "no TLS was spoken");
    assert_eq!(end.faults, vec!["no-hello".to_string()]);
}

/// With `--upstream-tls stls`, a server that greets with `-ERR` (or
/// anyone on the path who says it does) never gets a plaintext session:
/// the client's password would go in clear. The session is refused and
/// says why; the client gets nothing to answer.
#[tokio::test]
async fn upstream_stls_never_falls_back_to_plaintext() {
    let (_dir, ca) = fresh_ca();
    let up = crate::support::line_server("-ERR [SYS/TEMP] busy\r\n".into(), |_| "+OK\r\n".into()).await;
    let cfg = tls_config(&ca, ClientTls::None, UpstreamTls::Stls, UpstreamTrust::Insecure, "localhost");
    let (proxy, mut events) = tls_proxy(up, cfg, Profile::passthrough()).await;
    // The client speaks first here; unread, its bytes make the close a reset.
    let tcp = tokio::net::TcpStream::connect(proxy.local_addr).await.expect("connect");
    let (got, _) = talk(tcp, b"USER a\r\nPASS secret\r\n").await;
    assert!(got.is_empty(), "nothing for the client to answer: {:?}", String::from_utf8_lossy(&got));
    let end = next_end(&mut events).await;
    assert_eq!(end.outcome, Outcome::Refused, "{end:?}");
    assert!(end.ended_by.contains("greeted without +OK before STLS: -ERR [SYS/TEMP] busy"), "{}", end.ended_by);
    assert_eq!(end.bytes_up, 0, "not a byte of the client's went upstream");
}
