//! Embedded POP3 client (placeholder; being written).
