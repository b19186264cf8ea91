//! The chat page's files as the server sends them: content types, the
//! Content-Security-Policy on each, and an HTML that the policy allows
//! (same-origin files only, no inline script, style or event handler).
//! tools/browser/ drives the page itself in Chromium.

mod common;

use common::*;

/// The policy every page file carries (server/src/http/assets.rs).
const CSP: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// GETs `path`, checks 200, the content type and the page headers; returns the body.
fn get_asset(port: u16, path: &str, content_type: &str) -> String {
    let (status, head, body) = http_get(port, path);
    assert_eq!(status, 200, "{path}: {head}");
    assert!(head.contains(&format!("Content-Type: {content_type}\r\n")), "{path}: {head}");
    assert!(head.contains(&format!("{CSP}\r\n")), "{path} carries the CSP: {head}");
    assert!(head.contains("X-Content-Type-Options: nosniff"), "{path}: {head}");
    assert!(!body.is_empty(), "{path} has a body");
    body
}

/// The values of every `name="…"` attribute in `html`.
fn attribute_values<'h>(html: &'h str, name: &str) -> Vec<&'h str> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            &rest[..rest.find('"').expect("a closing quote")]
        })
        .collect()
}

#[test]
fn the_page_and_its_files_are_served_with_their_types_and_the_csp() {
    let server = Server::start(&[]);
    let port = server.port;
    let html = get_asset(port, "/", "text/html; charset=utf-8");
    assert_eq!(get_asset(port, "/index.html", "text/html; charset=utf-8"), html);
    // The page's own URL form: a query string still serves the page.
    assert_eq!(get_asset(port, "/?room=lobby&name=ana", "text/html; charset=utf-8"), html);
    let js = get_asset(port, "/app.js", "text/javascript; charset=utf-8");
    let css = get_asset(port, "/app.css", "text/css; charset=utf-8");
    let svg = get_asset(port, "/favicon.svg", "image/svg+xml");
    assert!(js.contains("new WebSocket("));
    assert!(css.contains(".msg"));
    assert!(svg.starts_with("<svg"));
    assert_eq!(http_get(port, "/app.jsx").0, 404);

    // HEAD: the same headers, no body.
    let (status, head, body) = http_raw(port, "HEAD /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(head.contains(&format!("Content-Length: {}\r\n", js.len())), "{head}");
}

#[test]
fn the_html_loads_only_same_origin_files_and_has_nothing_inline() {
    let server = Server::start(&[]);
    let html = get_asset(server.port, "/", "text/html; charset=utf-8");
    let lower = html.to_ascii_lowercase();

    // Every referenced file is a path on this server, and is served.
    let refs: Vec<&str> = attribute_values(&html, "src").into_iter().chain(attribute_values(&html, "href")).collect();
    for r in ["/app.js", "/app.css", "/favicon.svg"] {
        assert!(refs.contains(&r), "the page references {r}: {refs:?}");
    }
    for r in &refs {
        assert!(r.starts_with('/') && !r.starts_with("//"), "not a same-origin path: {r}");
        let path = r.split('?').next().unwrap();
        assert_eq!(http_get(server.port, path).0, 200, "{r} is served");
    }

    // Scripts only by src, each with an empty body; no style elements or
    // attributes; no inline event handlers; no javascript: URLs.
    let scripts: Vec<&str> = lower.split("<script").skip(1).collect();
    assert_eq!(scripts.len(), 1, "one script element");
    for s in scripts {
        let (tag, rest) = s.split_once('>').unwrap();
        assert!(tag.contains(" src=\"/"), "a script with a same-origin src: <script{tag}>");
        assert!(rest.starts_with("</script>"), "no inline script body: <script{tag}>{rest:.40}");
    }
    assert!(!lower.contains("<style"), "no <style> element");
    assert!(!lower.contains(" style="), "no style= attribute");
    assert!(!lower.contains("javascript:"), "no javascript: URL");
    for tag in lower.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap();
        for attr in tag.split_whitespace().skip(1) {
            assert!(!attr.starts_with("on"), "no inline event handler: <{tag}>");
        }
    }
}

#[test]
fn the_script_never_parses_strings_as_html_or_code() {
    let server = Server::start(&[]);
    let js = get_asset(server.port, "/app.js", "text/javascript; charset=utf-8");
    for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", ".style."]
    {
        assert!(!js.contains(banned), "app.js uses {banned}");
    }
    assert!(js.contains("textContent"));
}
