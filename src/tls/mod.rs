//! TLS for the man in the middle: popfault's local CA ([`Ca`], files in a
//! config directory), the leaf certificates it signs on the fly for the
//! names clients ask for ([`Leaves`]), the upstream side's trust
//! ([`client_config`], [`upstream_name`]), the NSS key log
//! ([`KeyLogFile`]) and short reasons for failed handshakes
//! ([`describe_handshake_error`]). docs/TLS.md describes the model.
//!
//! Every config is built with the ring provider passed explicitly, never a
//! process default: a library user (or a test) that installed another
//! provider does not change what popfault speaks.

mod ca;
mod describe;
mod keylog;
mod leaf;
mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

pub use rustls;
pub use tokio_rustls;

pub use ca::Ca;
pub use describe::{Side, describe_handshake_error};
pub use keylog::KeyLogFile;
pub use leaf::Leaves;
pub use upstream::{UpstreamTrust, client_config, upstream_name};

/// The crypto provider of every config popfault builds: ring, made once
/// and shared (it is a table of algorithms).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static RING: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> = std::sync::OnceLock::new();
    RING.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// The protocol versions popfault speaks on both sides.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What went wrong setting TLS up; each message names the file or the
/// option and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No directory for the CA could be worked out.
    #[error(
        "cannot work out where popfault's CA lives: neither POPFAULT_CA_DIR, XDG_CONFIG_HOME nor HOME is set; pass --ca DIR"
    )]
    NoConfigDir,
    /// A file or directory operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is there but unusable (unparsable, half a CA, not popfault's).
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
    /// The CA key can be read by other users.
    #[error(
        "{}: the CA key is readable by group or others (mode {mode:03o}); anyone who reads it can forge certificates your clients trust: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    /// The system store gave no root certificate.
    #[error("{0}")]
    NoRoots(String),
    /// An upstream address that is not `HOST:PORT`.
    #[error("upstream '{upstream}': {why}")]
    UpstreamName { upstream: String, why: String },
    /// Making a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

#[cfg(test)]
mod tests;
