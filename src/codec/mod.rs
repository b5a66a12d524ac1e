//! The POP3 codec: pure framing and parsing of both directions. No I/O.

pub mod command;

pub use command::Command;
