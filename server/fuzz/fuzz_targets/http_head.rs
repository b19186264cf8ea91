//! Any bytes as an HTTP request head: never a panic; a complete head never
//! claims more bytes than it was given; routing inputs decode or refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_server::http::{query, request};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = request::parse_head(data, 8192) {
        assert!(head.len <= data.len());
        let _ = head.keep_alive();
        let _ = query::join_params(head.query);
        let _ = query::history_params(head.query);
    }
});
