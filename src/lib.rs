//! popfault: a fault-injecting, POP3-aware man-in-the-middle proxy.
//!
//! As a library, for a Rust test suite that wants popfault in-process:
//! [`Proxy`] (start a proxy with a fault profile on a free port, read each
//! session's end, stop and get the [`Summary`]), [`Profile`] (fault
//! profiles: built-in or TOML, see docs/PROFILES.md), [`SessionEnd`] and
//! [`Outcome`] (what each fault did), and [`server`], an embedded RFC 1939
//! server to put behind it. See [`api`] for an example.
//!
//! The other modules are internal: public only so that popfault's own
//! integration tests, benchmark and fuzz targets can reach them, hidden
//! from these docs, with no stability promise. docs/ARCHITECTURE.md
//! describes them.
#![forbid(unsafe_code)]

pub mod api;
pub mod fleet;
pub mod rest;
pub mod server;

pub use api::{Builder, Error, Proxy};
pub use events::SessionEnd;
pub use faults::Profile;
pub use fleet::{Fleet, FleetError, ProxyInfo, ProxySpec, ProxyUpdate, ToxicSpec, ToxicUpdate};
pub use rest::ApiServer;
pub use session::Outcome;
pub use stats::Summary;

#[doc(hidden)]
pub mod aggregate;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod client;
#[doc(hidden)]
pub mod codec;
#[doc(hidden)]
pub mod control;
#[doc(hidden)]
pub mod dashboard;
#[doc(hidden)]
pub mod driver;
#[doc(hidden)]
pub mod events;
#[doc(hidden)]
pub mod faults;
#[doc(hidden)]
pub mod logging;
#[doc(hidden)]
pub mod relay;
#[doc(hidden)]
pub mod secret;
#[doc(hidden)]
pub mod session;
#[doc(hidden)]
pub mod stats;
#[doc(hidden)]
pub mod text;
#[doc(hidden)]
pub mod tls;
#[doc(hidden)]
pub mod transcripts;
