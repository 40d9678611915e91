//! Fuzzes `esgate::elasticsearch::check_body` with any bytes: it must never panic, and its
//! verdicts must hold the invariants in `../invariants.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../invariants.rs"]
mod invariants;

fuzz_target!(|body: &[u8]| {
    invariants::check(body);
});
