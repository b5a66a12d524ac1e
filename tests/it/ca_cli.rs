//! `popfault ca`, the real binary: the CA is made once and shown the same
//! way after; the key is 0600 and never printed; openssl agrees with the
//! fingerprint it prints.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::proc::{Ended, Proc};

/// A fresh, not yet existing directory for a CA; its parent is removed on drop.
struct CaDir(PathBuf);

impl CaDir {
    fn new(tag: &str) -> CaDir {
        let parent = std::env::temp_dir().join(format!("popfault-ca-cli-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        fs::create_dir_all(&parent).expect("temp dir");
        CaDir(parent)
    }
    fn ca(&self) -> PathBuf {
        self.0.join("ca")
    }
}

impl Drop for CaDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Ended {
    Proc::spawn_with(args, env, None).wait(Duration::from_secs(20))
}

/// The value after `SHA-256 fingerprint: ` in the output.
fn printed_fingerprint(out: &str) -> String {
    let line =
        out.lines().find(|l| l.contains("SHA-256 fingerprint:")).unwrap_or_else(|| panic!("no fingerprint in:\n{out}"));
    line.rsplit(' ').next().unwrap().trim().to_string()
}

/// The full base64 lines of the key file (the private scalar is in the
/// first two): none may appear in any output.
fn key_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("ca-key.pem"))
        .expect("ca-key.pem")
        .lines()
        // Whole lines only: a short last line (the public key's tail) may
        // occur in the certificate by chance.
        .filter(|l| !l.starts_with("-----") && l.len() == 64)
        .map(str::to_string)
        .collect()
}

fn assert_no_key(end: &Ended, dir: &Path) {
    let lines = key_lines(dir);
    assert!(lines.len() >= 2, "the key file has its private scalar in whole lines: {lines:?}");
    for text in [&end.stdout, &end.stderr] {
        assert!(!text.contains("PRIVATE KEY"), "key material printed:\n{text}");
        for line in &lines {
            assert!(!text.contains(line.as_str()), "a line of the key was printed:\n{text}");
        }
    }
}

#[test]
fn popfault_ca_creates_once_and_openssl_agrees_on_the_fingerprint() {
    let tmp = CaDir::new("once");
    let dir = tmp.ca();
    let dir_arg = dir.to_str().unwrap();
    let cert = dir.join("ca.pem");

    let first = run(&["ca", "--ca", dir_arg], &[]);
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(first.stdout.contains("created a new CA"), "{}", first.stdout);
    assert!(first.stdout.contains(&cert.display().to_string()), "{}", first.stdout);
    let fingerprint = printed_fingerprint(&first.stdout);
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");

    let key = dir.join("ca-key.pem");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_no_key(&first, &dir);
    // How to trust it, per client.
    for hint in ["--cacert", "cafile=", "sslcertfile", "tls_trust_file", "update-ca-certificates"] {
        assert!(first.stdout.contains(hint), "no {hint:?} in:\n{}", first.stdout);
    }

    let second = run(&["ca", "--ca", dir_arg, "--show-pem"], &[]);
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(second.stdout.contains("using existing CA"), "{}", second.stdout);
    assert!(second.stdout.contains(&cert.display().to_string()));
    assert_eq!(printed_fingerprint(&second.stdout), fingerprint);
    assert!(second.stdout.contains(fs::read_to_string(&cert).unwrap().trim()), "--show-pem prints the certificate");
    assert_no_key(&second, &dir);

    // openssl reads the certificate and agrees.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .expect("run openssl (CI installs it)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs = text.trim().rsplit('=').next().unwrap().to_string();
    assert_eq!(theirs, fingerprint, "openssl says {text}");
}

#[test]
fn popfault_ca_uses_popfault_ca_dir_and_refuses_a_readable_key() {
    let tmp = CaDir::new("env");
    let dir = tmp.ca();
    let first = run(&["ca"], &[("POPFAULT_CA_DIR", dir.to_str().unwrap())]);
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(first.stdout.contains(&dir.join("ca.pem").display().to_string()), "{}", first.stdout);

    let key = dir.join("ca-key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run(&["ca", "--ca", dir.to_str().unwrap()], &[]);
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("chmod 600") && refused.stderr.contains(&key.display().to_string()),
        "{}",
        refused.stderr
    );
    assert_no_key(&refused, &dir);
}
