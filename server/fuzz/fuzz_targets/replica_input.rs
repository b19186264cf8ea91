//! What replica mode decodes from Redis (pub/sub payloads and stored
//! history entries), and what it does with them: see `harness::replica_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::replica_input(data));
