//! Any bytes as a stream of WebSocket frames, for both roles and split at
//! a fuzzer-chosen point (the first byte): never a panic, never more
//! consumed than given, and the same outcome whether the bytes arrive whole
//! or in two parts.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::ws_decoder(data));
