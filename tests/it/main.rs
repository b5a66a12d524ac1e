//! popfault's integration tests, one binary (`cargo test --test it`), one
//! module per area, sharing one support module: the embedded server and
//! the proxy on port 0, the recording tap, the real binary as a child
//! process (`support::proc`), a private Dovecot (`support::dovecot`), a
//! private GNU Mailutils pop3d (`support::mailutils`) and real POP3 clients
//! (`support::clients`).
//!
//! Every test talks only to 127.0.0.1, on ports the kernel picks, with
//! bounded loops and timeouts. Run one area with `cargo test --test it
//! proxy::`, one test by its name.

mod support;

mod api;
mod architecture;
mod audit;
mod ca_cli;
mod check_profile;
mod cli;
mod client;
mod codec;
mod dashboard_render;
mod demo;
mod dovecot;
mod dovecot_proxy;
mod escapes;
mod events_schema;
mod faults;
mod fingerprint_memory;
mod fuzz_regressions;
mod hostile;
mod interop;
mod outcomes;
mod proxy;
mod rest;
mod secrets;
mod secrets_everywhere;
mod server;
mod shell;
mod tls;
mod tui_tmux;
