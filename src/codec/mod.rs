//! The POP3 codec: pure framing and parsing of both directions. No I/O,
//! no clock: bytes in, events out.

pub mod command;
pub mod framer;
pub mod status;

pub use command::Command;
pub use framer::{ClientEvent, MAX_COMMAND_LINE, MAX_STATUS_LINE, Pop3Codec, ServerEvent, Step};
pub use status::Status;
