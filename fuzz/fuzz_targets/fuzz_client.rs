//! The client → server direction: arbitrary bytes, read in chunks whose
//! sizes the input's first bytes pick, through `decode_client`,
//! `forwarded` and `Tracker::on_client` (see ../harness.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod harness {
    include!("../harness.rs");
}

fuzz_target!(|data: &[u8]| harness::run(harness::Target::Client, data, harness::TOLERATED));
