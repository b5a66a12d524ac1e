//! popfault's local CA: a certificate and key in two PEM files, made once
//! and reused, so a client told to trust it once keeps trusting it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::{TlsError, provider};

/// The certificate, readable by anyone (clients need it).
pub(super) const CERT_FILE: &str = "ca.pem";
/// The key, owner-only.
pub(super) const KEY_FILE: &str = "ca-key.pem";
/// The CA's subject: this, then an id drawn from its public key, so that
/// two popfault CAs never share a name (a client trusting another one
/// would see a bad signature rather than an unknown issuer). rcgen names a
/// leaf's issuer by re-encoding these parameters (it cannot read a name
/// back from DER without an X.509 parser), so the scheme must never
/// change: a CA named otherwise fails the self-check at load, with a
/// message, instead of signing leaves no client can chain.
const CA_COMMON_NAME: &str = "popfault local CA";
const CA_ORGANIZATION: &str = "popfault";
/// How long a new CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a load waits for a CA that another process is writing.
const CONCURRENT_CREATE_WAIT: Duration = Duration::from_secs(3);

/// A loaded CA: its certificate and key.
pub struct Ca {
    dir: PathBuf,
    der: CertificateDer<'static>,
    pem: String,
    key: KeyPair,
    /// The CA as rcgen knows it, re-made from [`issuer_params`] and the key:
    /// only its name and key identifier are used, to sign leaves.
    issuer: rcgen::Certificate,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ca").field("dir", &self.dir).field("fingerprint", &self.fingerprint()).finish()
    }
}

/// The parameters that define the CA's name and role, for its key.
fn issuer_params(key: &KeyPair) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let id = Sha256::digest(key.public_key_der());
    let id: String = id[..4].iter().map(|b| format!("{b:02X}")).collect();
    dn.push(DnType::CommonName, format!("{CA_COMMON_NAME} {id}"));
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    p.distinguished_name = dn;
    // Path length 0: it signs leaves only, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

/// A random positive serial (RFC 5280: unique per issuer, at most 20 octets).
pub(super) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Now, as the certificate library counts time.
pub(super) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// [`Ca::default_dir`] with the environment as a function (for tests:
/// changing the process environment is unsafe under threads).
pub(super) fn default_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf, TlsError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("POPFAULT_CA_DIR") {
        return Ok(dir);
    }
    // The XDG spec says a relative XDG_CONFIG_HOME is invalid: ignore it.
    if let Some(config) = var("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
        return Ok(config.join("popfault").join("ca"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".config").join("popfault").join("ca")),
        None => Err(TlsError::NoConfigDir),
    }
}

impl Ca {
    /// `$POPFAULT_CA_DIR` if set, else `$XDG_CONFIG_HOME/popfault/ca`, else
    /// `$HOME/.config/popfault/ca`.
    pub fn default_dir() -> Result<PathBuf, TlsError> {
        default_dir_from(|name| std::env::var_os(name))
    }
    /// Loads the CA in `dir`, creating it first if neither file is there.
    /// The bool says whether it was created now.
    pub fn load_or_create(dir: &Path) -> Result<(Ca, bool), TlsError> {
        // A path that is not a directory, or one we cannot list, is said
        // as such (not as a failure to write a new key into it).
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(TlsError::File {
                    path: dir.to_path_buf(),
                    why: "not a directory: the CA is the directory that holds ca.pem and ca-key.pem".into(),
                });
            }
            Ok(_) => {
                if let Err(source) = std::fs::read_dir(dir) {
                    return Err(TlsError::Io { what: "read", path: dir.to_path_buf(), source });
                }
            }
            Err(_) => {}
        }
        let deadline = std::time::Instant::now() + CONCURRENT_CREATE_WAIT;
        loop {
            let cert = dir.join(CERT_FILE).exists();
            let key = dir.join(KEY_FILE).exists();
            if cert && key {
                return Ca::load(dir).map(|ca| (ca, false));
            }
            if cert || key {
                // Another process may be between its two links (key first):
                // wait a little before calling the CA half-made.
                if std::time::Instant::now() >= deadline {
                    return Ca::load(dir).map(|ca| (ca, false));
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            if let Some(ca) = Ca::create(dir)? {
                return Ok((ca, true));
            }
            // Lost a race with another creator: load theirs.
        }
    }

    /// Loads the CA in `dir`; never creates it.
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let remake = format!(
            "remove {} to make a new CA with `popfault ca` (clients must then trust the new certificate)",
            dir.display()
        );
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {}
            (false, false) => {
                return Err(TlsError::File {
                    path: cert_path,
                    why: "no CA here: make one with `popfault ca --ca DIR`".into(),
                });
            }
            (true, false) => {
                return Err(TlsError::File {
                    path: key_path,
                    why: format!("missing, but {CERT_FILE} is there: restore the key, or {remake}"),
                });
            }
            (false, true) => {
                return Err(TlsError::File {
                    path: cert_path,
                    why: format!("missing, but {KEY_FILE} is there: restore the certificate, or {remake}"),
                });
            }
        }

        let meta =
            fs::metadata(&key_path).map_err(|source| TlsError::Io { what: "read", path: key_path.clone(), source })?;
        if !meta.is_file() {
            return Err(TlsError::File { path: key_path, why: "not a regular file".into() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyPermissions { path: key_path, mode });
        }
        let key_pem = fs::read_to_string(&key_path).map_err(|source| TlsError::Io {
            what: "read",
            path: key_path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::File {
            path: key_path.clone(),
            why: format!("not a PEM private key popfault can use ({e}); {remake}"),
        })?;

        let cert_bytes =
            fs::read(&cert_path).map_err(|source| TlsError::Io { what: "read", path: cert_path.clone(), source })?;
        let der = match CertificateDer::pem_slice_iter(&cert_bytes).next() {
            Some(Ok(der)) => der,
            Some(Err(e)) => {
                return Err(TlsError::File { path: cert_path, why: format!("not a PEM certificate ({e}); {remake}") });
            }
            None => {
                return Err(TlsError::File { path: cert_path, why: format!("holds no PEM certificate; {remake}") });
            }
        };
        // The SubjectPublicKeyInfo is copied verbatim into the certificate:
        // a cheap proof that the two files belong together.
        let spki = key.public_key_der();
        if !der.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(TlsError::File {
                path: cert_path,
                why: format!("does not match {KEY_FILE} (another CA's certificate?); {remake}"),
            });
        }
        let issuer = issuer_params(&key).self_signed(&key)?;
        let ca = Ca { dir: dir.to_path_buf(), pem: pem_encode(&der), der, key, issuer };
        ca.self_check().map_err(|why| TlsError::File {
            path: ca.cert_path(),
            why: format!(
                "leaves signed with this CA do not verify ({why}): it was not made by this popfault; {remake}"
            ),
        })?;
        Ok(ca)
    }

    /// Makes a new CA in `dir`; `None` when another process made one first.
    fn create(dir: &Path) -> Result<Option<Ca>, TlsError> {
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| TlsError::Io {
                what: "create the directory",
                path: dir.to_path_buf(),
                source,
            })?;
            // The mode above is filtered by the umask: set it outright.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| TlsError::Io {
                what: "set the mode of",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = issuer_params(&key);
        let now = now();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + CA_LIFETIME;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;

        let key_tmp = write_temp(dir, KEY_FILE, key.serialize_pem().as_bytes(), 0o600)?;
        let cert_tmp = match write_temp(dir, CERT_FILE, cert.pem().as_bytes(), 0o644) {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_file(&key_tmp);
                return Err(e);
            }
        };
        // Linking (not renaming) never replaces a file another process put
        // there meanwhile; the key goes first so a cert is never alone.
        let placed = place(&key_tmp, &dir.join(KEY_FILE))
            .and_then(|won| if won { place(&cert_tmp, &dir.join(CERT_FILE)) } else { Ok(false) });
        let _ = fs::remove_file(&key_tmp);
        let _ = fs::remove_file(&cert_tmp);
        if !placed? {
            return Ok(None);
        }
        // Make the new names durable before anyone is told to trust them.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ca::load(dir).map(Some)
    }

    /// Signs a throwaway leaf and verifies it as a client would.
    fn self_check(&self) -> Result<(), String> {
        let name = "self-check.popfault.invalid";
        let leaf = super::leaf::make_leaf(self, &[name.to_string()]).map_err(|e| e.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).map_err(|e| e.to_string())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
        let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &leaf.der,
            &[],
            &server_name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Where the certificate is (the file clients are told to trust).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// SHA-256 of the DER certificate, upper-case hex pairs joined by `:`
    /// (as `openssl x509 -fingerprint -sha256` prints it).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.der.as_ref());
        digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }

    /// What rcgen needs to sign a leaf.
    pub(super) fn signer(&self) -> (&rcgen::Certificate, &KeyPair) {
        (&self.issuer, &self.key)
    }
}

/// Writes `bytes` to a new temporary file in `dir` with `mode`, synced.
fn write_temp(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, TlsError> {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let path = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let io = |source| TlsError::Io { what: "write", path: path.clone(), source };
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).map_err(io)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        drop(f);
        let _ = fs::remove_file(&path);
        return Err(io(e));
    }
    Ok(path)
}

/// Puts `tmp` at `path` unless something is already there (false then).
fn place(tmp: &Path, path: &Path) -> Result<bool, TlsError> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // A file system without hard links: rename, checked first.
        Err(_) if !path.exists() => fs::rename(tmp, path).map(|()| true).map_err(|source| TlsError::Io {
            what: "write",
            path: path.to_path_buf(),
            source,
        }),
        Err(source) => Err(TlsError::Io { what: "write", path: path.to_path_buf(), source }),
    }
}

/// DER as a PEM `CERTIFICATE` block, 64 columns.
fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
