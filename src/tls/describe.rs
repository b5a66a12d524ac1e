//! Short reasons for failed handshakes, for events and the dashboard.

use std::io;

use rustls::{AlertDescription, CertificateError, Error};

/// Which of popfault's two handshakes failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// With the client: popfault is the server, presenting a leaf.
    Client,
    /// With the upstream: popfault is the client, verifying its certificate.
    Upstream,
}

impl Side {
    fn peer(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// A short human reason for a handshake failure, from the `io::Error`
/// tokio-rustls returns (whose inner error may be a `rustls::Error`), or a
/// timeout the caller made (`ErrorKind::TimedOut`).
pub fn describe_handshake_error(e: &io::Error, side: Side) -> String {
    let peer = side.peer();
    if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        return describe_rustls(tls, side);
    }
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "handshake timed out".into(),
        io::ErrorKind::UnexpectedEof => format!("{peer} closed during handshake"),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
            format!("{peer} reset the connection during handshake")
        }
        _ => format!("handshake with the {peer} failed: {e}"),
    }
}

fn describe_rustls(e: &Error, side: Side) -> String {
    let peer = side.peer();
    match (e, side) {
        (Error::AlertReceived(alert), Side::Client) if rejects_certificate(*alert) => format!(
            "client rejected popfault's certificate (alert: {}) — does it trust popfault's CA? see `popfault ca`",
            alert_name(*alert)
        ),
        (Error::AlertReceived(alert), Side::Client) => {
            format!("client aborted the handshake (alert: {})", alert_name(*alert))
        }
        (Error::AlertReceived(alert), Side::Upstream) => {
            format!("upstream refused the handshake (alert: {})", alert_name(*alert))
        }
        (Error::InvalidCertificate(cert), Side::Upstream) => describe_upstream_certificate(cert),
        (Error::InvalidCertificate(cert), Side::Client) => format!("client certificate rejected: {cert:?}"),
        (Error::NoCertificatesPresented, Side::Upstream) => "upstream presented no certificate".into(),
        (Error::PeerIncompatible(why), _) => {
            format!("{peer} and popfault share no TLS version or cipher suite ({why:?})")
        }
        (Error::InvalidMessage(_) | Error::InappropriateMessage { .. }, _) => {
            format!("{peer} did not speak TLS (plain POP3 on a TLS port?)")
        }
        (Error::General(why), Side::Client) if why.contains("certificate") => {
            format!("popfault had no certificate to present: no usable SNI name nor fallback name ({why})")
        }
        _ => format!("TLS handshake with the {peer} failed: {e}"),
    }
}

/// Alerts a client sends when it does not accept the certificate.
fn rejects_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied
    )
}

fn alert_name(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::UnknownCA => "unknown CA".into(),
        AlertDescription::BadCertificate => "bad certificate".into(),
        AlertDescription::CertificateUnknown => "certificate unknown".into(),
        AlertDescription::UnsupportedCertificate => "unsupported certificate".into(),
        AlertDescription::CertificateExpired => "certificate expired".into(),
        AlertDescription::CertificateRevoked => "certificate revoked".into(),
        AlertDescription::AccessDenied => "access denied".into(),
        AlertDescription::HandshakeFailure => "handshake failure".into(),
        AlertDescription::ProtocolVersion => "protocol version".into(),
        AlertDescription::DecryptError => "decrypt error".into(),
        AlertDescription::InternalError => "internal error".into(),
        AlertDescription::UnrecognisedName => "unrecognised name".into(),
        AlertDescription::CloseNotify => "close notify".into(),
        other => format!("{other:?}"),
    }
}

fn describe_upstream_certificate(e: &CertificateError) -> String {
    const HINT: &str = "(--upstream-ca FILE, or --upstream-insecure for a test server)";
    match e {
        CertificateError::NotValidForNameContext { expected, presented } => {
            let shown = if presented.is_empty() { "none".to_string() } else { presented.join(", ") };
            format!("upstream certificate is not valid for {} (it names: {shown})", expected.to_str())
        }
        CertificateError::NotValidForName => "upstream certificate is not valid for the upstream's name".into(),
        CertificateError::UnknownIssuer => format!("upstream certificate not trusted: UnknownIssuer {HINT}"),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("upstream certificate has expired {HINT}")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("upstream certificate is not valid yet (check the clock) {HINT}")
        }
        other => format!("upstream certificate not trusted: {other:?} {HINT}"),
    }
}
