//! popfault: a fault-injecting, POP3-aware man-in-the-middle proxy.
#![forbid(unsafe_code)]

pub mod codec;
pub mod client;
pub mod server;
