//! The server side of the opening handshake (RFC 6455 §4.2): check a
//! request that asks for a WebSocket, then build the `101` answer.
//! Each refusal is a complete response with the status the contract names.

use super::extensions::Agreement;
use super::header::trim;
use super::request::Head;
use super::response::Response;

/// Checks the handshake headers of `head`. `Ok` carries the
/// `Sec-WebSocket-Accept` value; `Err` the response to send instead.
pub fn check(head: &Head<'_>, allowed_origins: &[String]) -> Result<String, Response> {
    if head.method != "GET" {
        return Err(Response::text(405, "WebSocket upgrades use GET").header("Allow", "GET"));
    }
    if head.minor_version != 1 {
        return Err(Response::text(400, "WebSocket upgrades need HTTP/1.1"));
    }
    // "If this version does not match a version understood by the server, the
    //  server MUST abort the WebSocket handshake … and instead send an
    //  appropriate HTTP error code (such as 426 Upgrade Required) and a
    //  |Sec-WebSocket-Version| header field indicating the version(s) the
    //  server is capable of understanding." (§4.2.2)
    if head.ws_version.map(trim) != Some(b"13") {
        return Err(Response::text(426, "Sec-WebSocket-Version must be 13")
            .header("Sec-WebSocket-Version", "13")
            .header("Upgrade", "websocket"));
    }
    if !head.upgrade_websocket || !head.connection_upgrade {
        return Err(Response::text(400, "missing Upgrade: websocket or Connection: Upgrade"));
    }
    if head.host.is_none() {
        return Err(Response::text(400, "missing Host"));
    }
    let key = head
        .ws_key
        .map(trim)
        .filter(|k| valid_key(k))
        .ok_or_else(|| Response::text(400, "Sec-WebSocket-Key must be 16 bytes in base64"))?;
    if !allowed_origins.is_empty() {
        let origin = head.origin.map(trim).unwrap_or_default();
        // Browsers always send Origin; other clients may leave it out and are not browsers.
        if head.origin.is_some() && !allowed_origins.iter().any(|o| o.as_bytes() == origin) {
            return Err(Response::text(403, "origin not allowed"));
        }
    }
    Ok(tungstenite::handshake::derive_accept_key(key))
}

/// The `101 Switching Protocols` answer, with the extension agreed to (if
/// any), appended to `out`.
pub fn switching_protocols(accept: &str, deflate: Option<Agreement>, out: &mut Vec<u8>) {
    let mut resp = Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", accept.to_string());
    if let Some(agreement) = deflate {
        resp = resp.header("Sec-WebSocket-Extensions", agreement.response());
    }
    resp.write_to(true, false, out);
}

/// "The value of this header field MUST be a nonce consisting of a randomly
///  selected 16-byte value that has been base64-encoded" (§4.1): 22
/// characters of the base64 alphabet and `==`.
fn valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;

    fn check_raw(raw: &str, origins: &[&str]) -> Result<String, u16> {
        let head = parse_head(raw.as_bytes(), 8192).unwrap().unwrap();
        let origins: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        check(&head, &origins).map_err(|r| r.status())
    }

    fn request(extra: &str) -> String {
        format!("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n")
    }

    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn accepts_the_rfc_example_and_derives_its_accept_key() {
        let accept = check_raw(&request(&format!("{KEY}Sec-WebSocket-Version: 13\r\n")), &[]).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let answer = |deflate| {
            let mut out = Vec::new();
            switching_protocols(&accept, deflate, &mut out);
            String::from_utf8(out).unwrap()
        };
        let bytes = answer(None);
        assert_eq!(
            bytes,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let deflate = answer(Some(Agreement::default()));
        assert!(deflate.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ));
    }

    #[test]
    fn version_problems_are_426() {
        assert_eq!(check_raw(&request(KEY), &[]), Err(426));
        assert_eq!(check_raw(&request(&format!("{KEY}Sec-WebSocket-Version: 8\r\n")), &[]), Err(426));
    }

    #[test]
    fn header_problems_are_400() {
        let v = "Sec-WebSocket-Version: 13\r\n";
        assert_eq!(check_raw(&request(v), &[]), Err(400), "no key");
        assert_eq!(check_raw(&request(&format!("{v}Sec-WebSocket-Key: short\r\n")), &[]), Err(400));
        let no_host = format!("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{KEY}{v}\r\n");
        assert_eq!(check_raw(&no_host, &[]), Err(400));
        let no_conn = format!("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n{KEY}{v}\r\n");
        assert_eq!(check_raw(&no_conn, &[]), Err(400));
        let post = format!("POST /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{KEY}{v}\r\n");
        assert_eq!(check_raw(&post, &[]), Err(405));
    }

    #[test]
    fn origins_are_checked_only_when_configured() {
        let v = format!("{KEY}Sec-WebSocket-Version: 13\r\n");
        let evil = format!("{v}Origin: http://evil\r\n");
        assert!(check_raw(&request(&evil), &[]).is_ok());
        assert_eq!(check_raw(&request(&evil), &["http://good"]), Err(403));
        assert!(check_raw(&request(&format!("{v}Origin: http://good\r\n")), &["http://good"]).is_ok());
        assert!(check_raw(&request(&v), &["http://good"]).is_ok(), "no Origin: not a browser");
    }
}
