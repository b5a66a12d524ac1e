//! Embedded POP3 server (placeholder; being written).
