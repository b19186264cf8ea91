//! Any text as a client's chat frame: an accepted message or a refusal
//! with a code, never a panic; accepted messages respect the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::chat_input(data));
