//! `popfault ca`: make (once) and show popfault's local CA, and how to make
//! clients trust it. Never prints the key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::common::{RunError, say};
use crate::tls::{Ca, TlsError};

/// Arguments of `popfault ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// The CA's directory (ca.pem, ca-key.pem) [default: $POPFAULT_CA_DIR,
    /// else $XDG_CONFIG_HOME/popfault/ca, else ~/.config/popfault/ca]
    #[arg(long, value_name = "DIR")]
    pub ca: Option<PathBuf>,
    /// Also print the certificate itself (PEM).
    #[arg(long)]
    pub show_pem: bool,
}

/// Creates the CA if there is none, then says where its certificate is,
/// its fingerprint and how each client trusts it.
pub fn run(args: CaArgs) -> Result<ExitCode, RunError> {
    let usage = |e: TlsError| RunError::Usage(e.to_string());
    let dir = match args.ca {
        Some(d) => d,
        None => Ca::default_dir().map_err(usage)?,
    };
    let (ca, created) = Ca::load_or_create(&dir).map_err(|e| match e {
        TlsError::Io { .. } => RunError::Failed(e.to_string()),
        e => usage(e),
    })?;
    let mut out = String::new();
    out.push_str(&text(&ca, created));
    if args.show_pem {
        out.push('\n');
        out.push_str(ca.cert_pem());
    }
    say(&out);
    Ok(ExitCode::SUCCESS)
}

/// What `popfault ca` prints.
fn text(ca: &Ca, created: bool) -> String {
    let cert = ca.cert_path();
    let path = cert.display();
    let key = cert.with_file_name("ca-key.pem");
    let verb = if created { "created a new CA" } else { "using existing CA" };
    format!(
        "popfault: {verb}
  certificate: {path}
  key:         {key} (mode 0600; never share it: whoever has it can forge certificates your clients trust)
  SHA-256 fingerprint: {fp}

popfault presents certificates signed by this CA to TLS clients. A client
must trust it, or its handshake fails (reported as \"client rejected
popfault's certificate\"). Per client:

  curl        curl --cacert {path} pop3s://HOST:PORT/
              curl --cacert {path} --ssl-reqd pop3://HOST:PORT/   (STLS)
  Python      ctx = ssl.create_default_context(cafile=\"{path}\")
              poplib.POP3_SSL(host, port, context=ctx)
              pop = poplib.POP3(host, port); pop.stls(context=ctx)
  fetchmail   ssl (POP3S) or sslproto TLS1.2+ (STLS), with
              sslcertck sslcertfile {path}
              (polling an IP address such as 127.0.0.1: also
              sslcommonname localhost; fetchmail checks names only)
  mpop        tls on
              tls_trust_file {path}
              (tls_starttls on for STLS, off for POP3S)
  system      Debian/Ubuntu, as root:
                cp {path} /usr/local/share/ca-certificates/popfault.crt
                update-ca-certificates
              to remove it again:
                rm /usr/local/share/ca-certificates/popfault.crt
                update-ca-certificates --fresh
              Trusting it system-wide lets whoever holds the key intercept
              any TLS connection on this machine: prefer the per-client ways.

Check the fingerprint with:
  openssl x509 -in {path} -noout -fingerprint -sha256
",
        key = key.display(),
        fp = ca.fingerprint(),
    )
}
