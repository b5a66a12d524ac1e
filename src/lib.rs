//! popfault: a fault-injecting, POP3-aware man-in-the-middle proxy.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod cli;
pub mod client;
pub mod codec;
pub mod control;
pub mod dashboard;
pub mod driver;
pub mod events;
pub mod faults;
pub mod logging;
pub mod relay;
pub mod secret;
pub mod server;
pub mod session;
pub mod stats;
pub mod text;
