//! The CA on disk, real rustls handshakes over in-memory pipes, the
//! upstream's trust, the key log and the handshake reasons.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ca::default_dir_from;
use super::leaf::MAX_LEAVES;
use super::*;

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "popfault-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A CA in a new temp dir (the `ca` subdirectory, made by `load_or_create`).
fn new_ca() -> (TempDir, Arc<Ca>) {
    let tmp = TempDir::new();
    let (ca, created) = Ca::load_or_create(&tmp.path().join("ca")).unwrap();
    assert!(created);
    (tmp, Arc::new(ca))
}

/// A client config that trusts exactly `ca`.
fn trusting(ca: &Ca) -> Arc<rustls::ClientConfig> {
    client_config(&UpstreamTrust::File(ca.cert_path()), None).unwrap()
}

/// What each side of one handshake ended with.
struct Outcome {
    server: io::Result<()>,
    client: io::Result<Vec<CertificateDer<'static>>>,
}

/// Runs one handshake over an in-memory pipe and a byte each way.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Outcome {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let serve = async move {
        let mut s = tokio_rustls::TlsAcceptor::from(server).accept(a).await?;
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await?;
        s.write_all(b"+").await?;
        s.flush().await?;
        Ok(())
    };
    let connect = async move {
        let mut c = tokio_rustls::TlsConnector::from(client).connect(name, b).await?;
        c.write_all(b"?").await?;
        c.flush().await?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await?;
        let chain = c.get_ref().1.peer_certificates().unwrap_or_default().to_vec();
        Ok(chain)
    };
    let limit = Duration::from_secs(10);
    let (server, client) = tokio::time::timeout(limit, async { tokio::join!(serve, connect) }).await.unwrap();
    Outcome { server, client }
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap()
}

// === the CA on disk ===

#[test]
fn the_ca_is_created_once_then_reloaded_identical() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("nested").join("ca");
    let (first, created) = Ca::load_or_create(&dir).unwrap();
    assert!(created);
    let (again, created) = Ca::load_or_create(&dir).unwrap();
    assert!(!created);
    let loaded = Ca::load(&dir).unwrap();
    assert_eq!(first.cert_pem(), again.cert_pem());
    assert_eq!(first.cert_pem(), loaded.cert_pem());
    assert_eq!(first.fingerprint(), loaded.fingerprint());
    assert_eq!(first.cert_path(), dir.join("ca.pem"));
    assert_eq!(fs::read_to_string(first.cert_path()).unwrap(), first.cert_pem());
    // 32 upper-case hex pairs.
    let fp = first.fingerprint();
    assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
    assert!(fp.split(':').all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())));
    // No temp file is left behind, and Debug shows no key.
    let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!format!("{first:?}").contains("PRIVATE"));
}

#[test]
fn racing_creators_end_with_one_ca() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("ca");
    let made: Vec<(String, bool)> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (ca, created) = Ca::load_or_create(&dir).unwrap();
                    (ca.fingerprint(), created)
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(made.iter().all(|(fp, _)| *fp == made[0].0), "{made:?}");
    assert_eq!(made.iter().filter(|(_, created)| *created).count(), 1, "{made:?}");
    assert_eq!(Ca::load(&dir).unwrap().fingerprint(), made[0].0);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "no temporary file is left");
}

#[test]
fn the_key_is_0600_and_a_new_dir_0700() {
    let (tmp, ca) = new_ca();
    let dir = tmp.path().join("ca");
    assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&ca.cert_path()), 0o644);
    assert!(fs::read_to_string(dir.join("ca-key.pem")).unwrap().contains("PRIVATE KEY"));
    assert!(!ca.cert_pem().contains("PRIVATE"));
}

#[test]
fn a_key_others_can_read_is_refused() {
    let (tmp, _ca) = new_ca();
    let dir = tmp.path().join("ca");
    let key = dir.join("ca-key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let e = Ca::load(&dir).unwrap_err();
    assert!(matches!(e, TlsError::KeyPermissions { mode: 0o644, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&key.display().to_string()) && msg.contains("chmod 600"), "{msg}");
    let e = Ca::load_or_create(&dir).unwrap_err();
    assert!(matches!(e, TlsError::KeyPermissions { .. }), "{e:?}");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(Ca::load(&dir), Err(TlsError::KeyPermissions { .. })));
}

#[test]
fn half_a_ca_or_garbage_is_refused_naming_the_file() {
    let (tmp, _ca) = new_ca();
    let dir = tmp.path().join("ca");
    let key = dir.join("ca-key.pem");
    let cert = dir.join("ca.pem");
    let saved = fs::read(&key).unwrap();

    fs::remove_file(&key).unwrap();
    let msg = Ca::load(&dir).unwrap_err().to_string();
    assert!(msg.contains(&key.display().to_string()) && msg.contains("missing"), "{msg}");

    fs::write(&key, &saved).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&cert, "not a certificate\n").unwrap();
    let msg = Ca::load(&dir).unwrap_err().to_string();
    assert!(msg.contains(&cert.display().to_string()) && msg.contains("no PEM certificate"), "{msg}");

    // Another CA's certificate beside this key.
    let (_other_tmp, other) = new_ca();
    fs::write(&cert, other.cert_pem()).unwrap();
    let msg = Ca::load(&dir).unwrap_err().to_string();
    assert!(msg.contains("does not match"), "{msg}");

    fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let msg = Ca::load(&dir).unwrap_err().to_string();
    assert!(msg.contains(&key.display().to_string()) && msg.contains("not a PEM private key"), "{msg}");

    let empty = TempDir::new();
    let msg = Ca::load(empty.path()).unwrap_err().to_string();
    assert!(msg.contains("popfault ca"), "{msg}");
}

#[test]
fn the_default_dir_follows_the_environment() {
    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }
    let all = [("POPFAULT_CA_DIR", "/x/ca"), ("XDG_CONFIG_HOME", "/cfg"), ("HOME", "/home/u")];
    assert_eq!(default_dir_from(env(&all)).unwrap(), PathBuf::from("/x/ca"));
    assert_eq!(default_dir_from(env(&all[1..])).unwrap(), PathBuf::from("/cfg/popfault/ca"));
    assert_eq!(default_dir_from(env(&all[2..])).unwrap(), PathBuf::from("/home/u/.config/popfault/ca"));
    let relative = [("XDG_CONFIG_HOME", "cfg"), ("HOME", "/home/u")];
    assert_eq!(default_dir_from(env(&relative)).unwrap(), PathBuf::from("/home/u/.config/popfault/ca"));
    let empty = [("POPFAULT_CA_DIR", ""), ("HOME", "/h")];
    assert_eq!(default_dir_from(env(&empty)).unwrap(), PathBuf::from("/h/.config/popfault/ca"));
    assert!(matches!(default_dir_from(env(&[])), Err(TlsError::NoConfigDir)));
}

// === leaves, through real handshakes ===

#[tokio::test]
async fn a_leaf_for_the_sni_name_verifies_against_the_ca() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);
    let server = leaves.server_config(&["127.0.0.1".into()]);
    let out = handshake(server, trusting(&ca), dns("pop.example.test")).await;
    let chain = out.client.unwrap();
    out.server.unwrap();
    assert_eq!(chain.len(), 2, "chain is [leaf, CA]");
    assert_eq!(chain[1], *ca.cert_der());
    assert_eq!(leaves.cached(), 1);
    // The same name again is the cached leaf.
    let out = handshake(leaves.server_config(&["127.0.0.1".into()]), trusting(&ca), dns("pop.example.test")).await;
    assert_eq!(out.client.unwrap()[0], chain[0]);
    assert_eq!(leaves.cached(), 1);
}

#[tokio::test]
async fn without_sni_the_leaf_names_an_ip_fallback() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);
    let server = leaves.server_config(&["pop.example.test".into(), "127.0.0.1".into()]);
    // rustls sends no SNI for an IP address.
    let ip = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let out = handshake(server, trusting(&ca), ip).await;
    out.client.unwrap();
    out.server.unwrap();
    // IPv6, in brackets as the relay may pass it.
    let server = leaves.server_config(&["[::1]".into()]);
    let ip6 = ServerName::IpAddress(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST).into());
    let out = handshake(server, trusting(&ca), ip6).await;
    out.client.unwrap();
}

#[tokio::test]
async fn without_sni_the_leaf_names_a_dns_fallback() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);
    let mut client = (*trusting(&ca)).clone();
    client.enable_sni = false;
    let client = Arc::new(client);
    let server = leaves.server_config(&["Upstream.Example.Test".into(), "127.0.0.1".into()]);
    let out = handshake(server.clone(), client.clone(), dns("upstream.example.test")).await;
    out.client.unwrap();
    out.server.unwrap();
    // A name the fallback does not carry is refused by the client.
    let out = handshake(server, client, dns("other.example.test")).await;
    let e = out.client.unwrap_err();
    let why = describe_handshake_error(&e, Side::Upstream);
    assert!(why.starts_with("upstream certificate is not valid for other.example.test"), "{why}");
}

#[tokio::test]
async fn tls_1_2_clients_are_served_too() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let out = handshake(leaves.server_config(&[]), Arc::new(client), dns("pop.example.test")).await;
    out.client.unwrap();
    out.server.unwrap();
}

#[test]
fn the_leaf_cache_is_bounded_and_evicts_the_oldest_made() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca, None);
    let first = leaves.certified_key(&["n0.example.test".into()]).unwrap();
    assert!(Arc::ptr_eq(&first, &leaves.certified_key(&["N0.example.test".into()]).unwrap()));
    for i in 1..MAX_LEAVES + 5 {
        leaves.certified_key(&[format!("n{i}.example.test")]).unwrap();
    }
    assert_eq!(leaves.cached(), MAX_LEAVES);
    let remade = leaves.certified_key(&["n0.example.test".into()]).unwrap();
    assert!(!Arc::ptr_eq(&first, &remade), "the oldest leaf was evicted");
    assert_eq!(leaves.cached(), MAX_LEAVES);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_with_a_reason() {
    let (_tmp, ca) = new_ca();
    let (_other_tmp, other) = new_ca();
    let leaves = Leaves::new(ca, None);
    let out = handshake(leaves.server_config(&[]), trusting(&other), dns("pop.example.test")).await;
    let client_view = describe_handshake_error(&out.client.unwrap_err(), Side::Upstream);
    assert!(
        client_view.starts_with("upstream certificate not trusted: UnknownIssuer (--upstream-ca FILE"),
        "{client_view}"
    );
    let server_view = describe_handshake_error(&out.server.unwrap_err(), Side::Client);
    assert_eq!(
        server_view,
        "client rejected popfault's certificate (alert: unknown CA) — does it trust popfault's CA? see `popfault ca`"
    );
}

#[test]
fn io_errors_are_described_plainly() {
    let d = |kind, side| describe_handshake_error(&io::Error::from(kind), side);
    assert_eq!(d(io::ErrorKind::TimedOut, Side::Client), "handshake timed out");
    assert_eq!(d(io::ErrorKind::UnexpectedEof, Side::Client), "client closed during handshake");
    assert_eq!(d(io::ErrorKind::UnexpectedEof, Side::Upstream), "upstream closed during handshake");
    assert_eq!(d(io::ErrorKind::ConnectionReset, Side::Upstream), "upstream reset the connection during handshake");
    let wrapped = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
    );
    assert_eq!(
        describe_handshake_error(&wrapped, Side::Client),
        "client did not speak TLS (plain POP3 on a TLS port?)"
    );
}

// === the upstream side ===

#[test]
fn upstream_names_are_parsed() {
    let ok = |s: &str| upstream_name(s).unwrap();
    assert_eq!(ok("pop.example.net:995"), dns("pop.example.net"));
    assert_eq!(ok("127.0.0.1:110"), ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into()));
    assert_eq!(ok("[::1]:995"), ServerName::IpAddress(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST).into()));
    assert_eq!(ok("localhost:1110"), dns("localhost"));
    for bad in ["pop.example.net", "::1:995", "[::1]995", "[pop]:995", "host:99999", "host:", "exa mple:1", ":995"] {
        let e = upstream_name(bad).unwrap_err();
        assert!(matches!(e, TlsError::UpstreamName { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains(bad), "{e}");
    }
}

#[test]
fn an_upstream_ca_file_must_hold_certificates() {
    let (tmp, ca) = new_ca();
    assert!(client_config(&UpstreamTrust::File(ca.cert_path()), None).is_ok());

    let garbage = tmp.path().join("garbage.pem");
    fs::write(&garbage, "hello\nworld\n").unwrap();
    let msg = client_config(&UpstreamTrust::File(garbage.clone()), None).unwrap_err().to_string();
    assert!(msg.contains(&garbage.display().to_string()) && msg.contains("no PEM certificate"), "{msg}");

    let broken = tmp.path().join("broken.pem");
    fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n").unwrap();
    let msg = client_config(&UpstreamTrust::File(broken.clone()), None).unwrap_err().to_string();
    assert!(msg.contains(&broken.display().to_string()), "{msg}");

    let not_der = tmp.path().join("not-der.pem");
    fs::write(&not_der, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let msg = client_config(&UpstreamTrust::File(not_der.clone()), None).unwrap_err().to_string();
    assert!(msg.contains(&not_der.display().to_string()) && msg.contains("certificate 1"), "{msg}");

    let missing = tmp.path().join("missing.pem");
    let msg = client_config(&UpstreamTrust::File(missing.clone()), None).unwrap_err().to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

/// A server presenting a self-signed certificate for `name`.
fn self_signed_server(name: &str) -> Arc<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

#[tokio::test]
async fn insecure_accepts_a_self_signed_certificate_for_any_name() {
    let server = self_signed_server("test-server.invalid");
    let insecure = client_config(&UpstreamTrust::Insecure, None).unwrap();
    let out = handshake(server.clone(), insecure, dns("pop.example.test")).await;
    assert_eq!(out.client.unwrap().len(), 1);
    out.server.unwrap();

    // Verified trust refuses the same server.
    let (_tmp, ca) = new_ca();
    let out = handshake(server, trusting(&ca), dns("test-server.invalid")).await;
    let why = describe_handshake_error(&out.client.unwrap_err(), Side::Upstream);
    assert!(why.contains("not trusted") && why.contains("--upstream-insecure"), "{why}");
}

#[test]
fn the_system_store_loads_or_says_what_to_do() {
    // Machines differ: either roots were found, or the error says where
    // it looked and what to do instead.
    match client_config(&UpstreamTrust::System, None) {
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("system store") && msg.contains("--upstream-ca"), "{msg}");
        }
    }
}

// === the key log ===

#[tokio::test]
async fn the_key_log_gets_nss_lines_in_a_0600_file() {
    let (tmp, ca) = new_ca();
    let path = tmp.path().join("keys.log");
    let keylog = Arc::new(KeyLogFile::create(&path).unwrap());
    assert_eq!(mode(&path), 0o600);
    let leaves = Leaves::new(ca.clone(), Some(keylog.clone()));
    let out = handshake(leaves.server_config(&[]), trusting(&ca), dns("pop.example.test")).await;
    out.client.unwrap();
    out.server.unwrap();

    // TLS 1.3: the server logs four secrets per handshake.
    let deadline = Instant::now() + Duration::from_secs(10);
    while keylog.written() < 4 {
        assert!(Instant::now() < deadline, "the key log writer wrote {} lines", keylog.written());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = fs::read_to_string(&path).unwrap();
    let mut labels = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(parts[0].chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()), "{line}");
        assert_eq!(parts[1].len(), 64, "client random is 32 bytes: {line}");
        assert!(parts[1..].iter().all(|h| h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
        labels.push(parts[0]);
    }
    assert!(labels.contains(&"CLIENT_HANDSHAKE_TRAFFIC_SECRET"), "{labels:?}");
    assert!(labels.contains(&"SERVER_TRAFFIC_SECRET_0"), "{labels:?}");
    assert_eq!(keylog.errors(), 0);
    assert!(!format!("{keylog:?}").contains(labels[0]));

    // An existing file is appended to, and made 0600.
    let old = tmp.path().join("old.log");
    fs::write(&old, "# kept\n").unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
    let _k = KeyLogFile::create(&old).unwrap();
    assert_eq!(mode(&old), 0o600);
    assert_eq!(fs::read_to_string(&old).unwrap(), "# kept\n");
}

// === more of the surface ===

#[test]
fn the_shared_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Ca>();
    send_sync::<Leaves>();
    send_sync::<KeyLogFile>();
    send_sync::<TlsError>();
}

#[test]
fn a_leaf_is_valid_from_a_day_ago_for_397_days() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::UnixTime;
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);
    let key = leaves.certified_key(&["pop.example.test".into(), "10.1.2.3".into()]).unwrap();
    assert_eq!(key.cert.len(), 2);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let day = Duration::from_secs(86_400);
    let at = |t: Duration, name: ServerName<'static>| {
        verifier.verify_server_cert(&key.cert[0], &[], &name, &[], UnixTime::since_unix_epoch(t))
    };
    let ip = ServerName::IpAddress(std::net::IpAddr::from([10, 1, 2, 3]).into());
    assert!(at(now, dns("pop.example.test")).is_ok());
    assert!(at(now, ip.clone()).is_ok(), "the IP is a SAN too");
    assert!(at(now - day + Duration::from_secs(60), ip.clone()).is_ok(), "valid a day back");
    assert!(at(now + 396 * day, ip.clone()).is_ok());
    let expired = at(now + 398 * day, ip.clone()).unwrap_err();
    assert!(matches!(expired, rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. })));
    assert!(at(now - 2 * day, ip).is_err(), "not valid before");
    assert!(at(now, dns("other.example.test")).is_err());
}

#[tokio::test]
async fn plain_pop3_on_a_tls_port_is_described_from_both_sides() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);

    // A plain client talking to popfault's TLS listener.
    let (a, mut b) = tokio::io::duplex(4096);
    let accept = tokio_rustls::TlsAcceptor::from(leaves.server_config(&[])).accept(a);
    let (server, _) = tokio::join!(accept, async { b.write_all(b"USER alice\r\n").await });
    let why = describe_handshake_error(&server.expect_err("not TLS"), Side::Client);
    assert_eq!(why, "client did not speak TLS (plain POP3 on a TLS port?)");

    // A plain server behind popfault's upstream TLS.
    let (a, mut b) = tokio::io::duplex(4096);
    let connect = tokio_rustls::TlsConnector::from(trusting(&ca)).connect(dns("pop.example.test"), a);
    let (client, _) = tokio::join!(connect, async { b.write_all(b"+OK POP3 server ready\r\n").await });
    let why = describe_handshake_error(&client.expect_err("not TLS"), Side::Upstream);
    assert_eq!(why, "upstream did not speak TLS (plain POP3 on a TLS port?)");
}

#[tokio::test]
async fn a_peer_that_closes_mid_handshake_is_described() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);
    let (a, b) = tokio::io::duplex(4096);
    drop(b);
    let e = tokio_rustls::TlsAcceptor::from(leaves.server_config(&[])).accept(a).await.expect_err("closed");
    assert_eq!(describe_handshake_error(&e, Side::Client), "client closed during handshake");

    let (a, b) = tokio::io::duplex(4096);
    drop(b);
    let e = tokio_rustls::TlsConnector::from(trusting(&ca)).connect(dns("x.test"), a).await.expect_err("closed");
    let why = describe_handshake_error(&e, Side::Upstream);
    // A pipe whose far end is gone fails the ClientHello's write.
    assert_eq!(why, "upstream reset the connection during handshake");
}

#[tokio::test]
async fn no_sni_and_no_fallback_is_described() {
    let (_tmp, ca) = new_ca();
    let leaves = Leaves::new(ca.clone(), None);
    let mut client = (*trusting(&ca)).clone();
    client.enable_sni = false;
    let out = handshake(leaves.server_config(&["not a name!".into()]), Arc::new(client), dns("x.test")).await;
    let why = describe_handshake_error(&out.server.unwrap_err(), Side::Client);
    assert!(why.starts_with("popfault had no certificate to present"), "{why}");
    assert!(out.client.is_err());
}
