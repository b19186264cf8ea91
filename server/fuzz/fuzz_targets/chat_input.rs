//! Any text as a client's chat frame: an accepted message or a refusal
//! with a code, never a panic; accepted messages respect the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_server::chat::protocol::parse_chat;

fuzz_target!(|text: &str| {
    match parse_chat(text, "Anonymous", 64) {
        Ok(m) => {
            assert!(!m.message.is_empty() && m.message.len() <= 64);
            assert!(!m.username.is_empty());
            assert!(m.client_id.as_deref().is_none_or(websocket_server::chat::protocol::valid_client_id));
        }
        Err(r) => assert!(!r.code.is_empty()),
    }
});
