//! The upstream side: which certificates popfault trusts, and the name it
//! checks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{KeyLogFile, TlsError, VERSIONS, provider};

/// Which certificates the upstream may present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTrust {
    /// The operating system's roots (rustls-native-certs).
    System,
    /// The certificates of a PEM bundle (`--upstream-ca FILE`).
    File(PathBuf),
    /// Any certificate (`--upstream-insecure`): the handshake's signatures
    /// are still checked, the chain and the name are not.
    Insecure,
}

/// A rustls `ClientConfig` for talking to the upstream, trusting `trust`.
pub fn client_config(
    trust: &UpstreamTrust,
    keylog: Option<Arc<KeyLogFile>>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let mut config = match trust {
        UpstreamTrust::System => builder.with_root_certificates(system_roots()?).with_no_client_auth(),
        UpstreamTrust::File(path) => builder.with_root_certificates(file_roots(path)?).with_no_client_auth(),
        UpstreamTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider: provider() }))
            .with_no_client_auth(),
    };
    if let Some(k) = keylog {
        config.key_log = k;
    }
    Ok(Arc::new(config))
}

/// The roots of the system store; an error when there are none.
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let mut where_ = String::from(
            "the system store (SSL_CERT_FILE and SSL_CERT_DIR when set, else OpenSSL's default places such as /etc/ssl/certs)",
        );
        if let Some(e) = found.errors.first() {
            where_.push_str(&format!(": {e}"));
        }
        return Err(TlsError::NoRoots(format!(
            "no trusted root certificate found in {where_}; install the ca-certificates package, or name the upstream's CA with --upstream-ca FILE"
        )));
    }
    Ok(roots)
}

/// The certificates of a PEM bundle; an error naming the file when it is
/// unreadable, holds garbage or no certificate.
fn file_roots(path: &PathBuf) -> Result<RootCertStore, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io { what: "read", path: path.clone(), source })?;
    let bad = |why: String| TlsError::File { path: path.clone(), why };
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| bad(format!("certificate {} is not valid PEM ({e})", i + 1)))?;
        roots.add(cert).map_err(|e| bad(format!("certificate {} cannot be used as a root ({e})", i + 1)))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----); --upstream-ca wants a PEM bundle".into()
        ));
    }
    Ok(roots)
}

/// The rustls `ServerName` for an upstream `host:port` (IPv4, `[IPv6]:port`
/// or a DNS name): the name its certificate must carry.
pub fn upstream_name(upstream: &str) -> Result<ServerName<'static>, TlsError> {
    let err = |why: &str| TlsError::UpstreamName { upstream: upstream.to_string(), why: why.to_string() };
    let (host, port) = if let Some(rest) = upstream.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(|| err("expected [IPv6]:PORT"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(err("the part in brackets is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = upstream.rsplit_once(':').ok_or_else(|| err("expected HOST:PORT"))?;
        if host.contains(':') {
            return Err(err("an IPv6 address goes in brackets: [ADDRESS]:PORT"));
        }
        (host, port)
    };
    if port.parse::<u16>().is_err() {
        return Err(err("the port is not a number from 0 to 65535"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|_| err("the host is neither an IP address nor a valid DNS name"))
}

/// Accepts any certificate chain for any name, but checks the handshake's
/// signatures with the provider's algorithms: the peer must still hold the
/// key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
