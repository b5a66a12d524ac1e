//! Both directions interleaved: records of (direction, read) through both
//! decoders and the tracker, checking `outcome()` / `at_risk()` after every
//! read (see ../harness.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod harness {
    include!("../harness.rs");
}

fuzz_target!(|data: &[u8]| harness::run(harness::Target::Session, data, harness::TOLERATED));
