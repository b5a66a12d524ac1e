//! Leaf certificates made on the fly for the name a client asks for, and
//! the server configs that present them.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::ca::{Ca, now, random_serial};
use super::{KeyLogFile, TlsError, VERSIONS, provider};

/// At most this many leaves are kept; the oldest made goes first.
pub const MAX_LEAVES: usize = 1024;
/// At most this many server configs (one per fallback list) are kept.
const MAX_CONFIGS: usize = 256;
/// A leaf is valid from a day ago (clients with a slow clock) for 397
/// days, the longest lifetime browsers accept.
const LEAF_BACKDATE_DAYS: i64 = 1;
const LEAF_LIFETIME_DAYS: i64 = 397;
/// X.520's upper bound for a common name; a longer name goes in the SAN only.
const MAX_COMMON_NAME: usize = 64;

/// A signed leaf.
pub(super) struct Leaf {
    pub(super) der: CertificateDer<'static>,
    pub(super) key: KeyPair,
}

/// Makes a leaf for `names` (DNS names or IP literals), signed by `ca`.
pub(super) fn make_leaf(ca: &Ca, names: &[String]) -> Result<Leaf, TlsError> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    let mut dn = DistinguishedName::new();
    if let Some(first) = names.first().filter(|n| n.len() <= MAX_COMMON_NAME) {
        dn.push(DnType::CommonName, first.as_str());
    }
    dn.push(DnType::OrganizationName, "popfault");
    params.distinguished_name = dn;
    let now = now();
    params.not_before = now - time::Duration::days(LEAF_BACKDATE_DAYS);
    params.not_after = now + time::Duration::days(LEAF_LIFETIME_DAYS);
    params.serial_number = Some(random_serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let (issuer, issuer_key) = ca.signer();
    let cert = params.signed_by(&key, issuer, issuer_key)?;
    Ok(Leaf { der: cert.der().clone(), key })
}

/// The names a leaf is made for: lower-case, brackets off IPv6 literals,
/// without duplicates or names no certificate can carry.
fn normalize(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let n = n.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        let usable =
            n.parse::<IpAddr>().is_ok() || (!n.is_empty() && rustls::pki_types::DnsName::try_from(n.as_str()).is_ok());
        if usable && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// The leaves made so far, bounded.
#[derive(Default)]
struct Cache {
    leaves: HashMap<Vec<String>, Arc<CertifiedKey>>,
    /// In the order they were made: the front is evicted first.
    order: VecDeque<Vec<String>>,
}

/// What every config of one [`Leaves`] shares.
struct Shared {
    ca: Arc<Ca>,
    cache: Mutex<Cache>,
}

impl Shared {
    /// The leaf for `names` (normalized), from the cache or made now.
    fn leaf(&self, names: Vec<String>) -> Option<Arc<CertifiedKey>> {
        if names.is_empty() {
            tracing::warn!("TLS client sent no server name and there is no fallback name: no certificate to present");
            return None;
        }
        if let Some(hit) = lock(&self.cache).leaves.get(&names) {
            return Some(hit.clone());
        }
        // Signing happens outside the lock: handshakes for other names go on.
        let made = match make_leaf(&self.ca, &names).and_then(|leaf| {
            let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
            let signer = provider().key_provider.load_private_key(pkcs8)?;
            Ok(Arc::new(CertifiedKey::new(vec![leaf.der, self.ca.cert_der().clone()], signer)))
        }) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("cannot make a certificate for {names:?}: {e}");
                return None;
            }
        };
        let mut cache = lock(&self.cache);
        if let Some(raced) = cache.leaves.get(&names) {
            return Some(raced.clone());
        }
        while cache.order.len() >= MAX_LEAVES {
            if let Some(old) = cache.order.pop_front() {
                cache.leaves.remove(&old);
            }
        }
        cache.order.push_back(names.clone());
        cache.leaves.insert(names, made.clone());
        Some(made)
    }
}

/// A poisoned lock only means a panic elsewhere; the cache stays usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Picks the leaf for one connection: the SNI name, else the fallback names.
struct Resolver {
    shared: Arc<Shared>,
    fallback: Vec<String>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("fallback", &self.fallback).finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let names = match hello.server_name() {
            Some(sni) => normalize(&[sni.to_string()]),
            None => self.fallback.clone(),
        };
        self.shared.leaf(names)
    }
}

/// Builds rustls `ServerConfig`s that present leaves signed by the CA,
/// made on the fly for the SNI name the client asks for; with no SNI, for
/// the `fallback` names (host names and/or IP literals: the relay passes
/// the upstream host and the local IP the client reached). Leaves are
/// cached (at most [`MAX_LEAVES`] names, the least recently made evicted),
/// valid from 1 day ago for 397 days, with the right SANs (DNS or IP), EKU
/// serverAuth, and a chain `[leaf, CA]`.
pub struct Leaves {
    shared: Arc<Shared>,
    keylog: Option<Arc<KeyLogFile>>,
    configs: Mutex<HashMap<Vec<String>, Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for Leaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaves").field("ca", &self.shared.ca).field("leaves", &self.cached()).finish_non_exhaustive()
    }
}

impl Leaves {
    /// Leaves signed by `ca`; every config logs its secrets to `keylog`.
    pub fn new(ca: Arc<Ca>, keylog: Option<Arc<KeyLogFile>>) -> Leaves {
        Leaves {
            shared: Arc::new(Shared { ca, cache: Mutex::new(Cache::default()) }),
            keylog,
            configs: Mutex::new(HashMap::new()),
        }
    }

    /// A config for a connection whose client may send no SNI: then the
    /// leaf names `fallback`. Cached per fallback list. No ALPN; TLS 1.2
    /// and 1.3.
    pub fn server_config(&self, fallback: &[String]) -> Arc<rustls::ServerConfig> {
        let fallback = normalize(fallback);
        let mut configs = lock(&self.configs);
        if let Some(c) = configs.get(&fallback) {
            return c.clone();
        }
        if configs.len() >= MAX_CONFIGS {
            configs.clear();
        }
        let resolver = Arc::new(Resolver { shared: self.shared.clone(), fallback: fallback.clone() });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .expect("ring's provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        if let Some(k) = &self.keylog {
            config.key_log = k.clone();
        }
        let config = Arc::new(config);
        configs.insert(fallback, config.clone());
        config
    }

    /// How many leaves are cached now.
    pub fn cached(&self) -> usize {
        lock(&self.shared.cache).leaves.len()
    }

    /// The leaf (chain) that would be presented for `names`; for tests and
    /// warming the cache at start.
    pub fn certified_key(&self, names: &[String]) -> Option<Arc<CertifiedKey>> {
        self.shared.leaf(normalize(names))
    }
}
