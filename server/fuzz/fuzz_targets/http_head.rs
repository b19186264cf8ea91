//! Any bytes as an HTTP request head: never a panic; a complete head never
//! claims more bytes than it was given; routing inputs decode or refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::http_head(data));
