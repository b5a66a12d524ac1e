//! The profile parser: any text parses into a profile or is refused with an
//! error located inside it (file, line, column); never a panic
//! (see ../harness.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod harness {
    include!("../harness.rs");
}

fuzz_target!(|data: &[u8]| harness::run(harness::Target::Profile, data, harness::TOLERATED));
