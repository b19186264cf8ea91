//! `Sec-WebSocket-Extensions` negotiation (RFC 6455 §9.1) for the one
//! extension the server speaks, permessage-deflate (RFC 7692 §5–7).
//!
//! The request parser feeds every `Sec-WebSocket-Extensions` header, in
//! order, to [`Offers::offer`]; offers across several headers count as one
//! comma-separated list. The first permessage-deflate offer the server can
//! accept wins; the upgrade answers it with [`Agreement::response`].
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1: a server may add both to any
//! offer): every message is compressed and inflated on its own, so the
//! compressor and inflater are shared per thread, never per connection.
//!
//! An offer is declined (§7.1: the next one is considered, and with none
//! left the connection runs uncompressed) when it has an unknown parameter,
//! a parameter twice, a value where none is allowed, a missing or invalid
//! window size (a decimal 8–15 without leading zeros, also as a quoted
//! string), or is not valid extension syntax. The handshake itself never
//! fails over the extension: declining is what the RFC asks of a server.

use super::header::trim;

/// What the server agreed to for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agreement {
    /// The client limited our LZ77 window (`server_max_window_bits`): the
    /// answer repeats it, and only messages short enough for any window
    /// are sent compressed (see `ws::deflate`).
    pub server_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub fn response(&self) -> String {
        let mut s = String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={bits}"));
        }
        s
    }

    /// Whether the client limited our window below the largest one.
    pub fn small_window(&self) -> bool {
        self.server_max_window_bits.is_some_and(|b| b < 15)
    }
}

/// The extension offers of one request, as far as the server cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offers {
    /// The first acceptable permessage-deflate offer.
    pub deflate: Option<Agreement>,
    /// permessage-deflate offers declined (malformed or unsupported).
    pub declined: u8,
}

impl Offers {
    /// Reads one `Sec-WebSocket-Extensions` header value.
    pub fn offer(&mut self, value: &[u8]) {
        for element in split_outside_quotes(value, b',') {
            let element = trim(element);
            if element.is_empty() {
                continue; // "#" lists allow empty elements
            }
            match parse_offer(element) {
                Offer::Other => {}
                Offer::Deflate(a) if self.deflate.is_none() => self.deflate = Some(a),
                Offer::Deflate(_) => {} // a later alternative: the first acceptable one is taken
                Offer::Declined => self.declined = self.declined.saturating_add(1),
            }
        }
    }
}

/// One element of the extension list.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// Another extension (ignored), or not a permessage-deflate offer at all.
    Other,
    /// An acceptable permessage-deflate offer and the server's answer to it.
    Deflate(Agreement),
    /// A permessage-deflate offer the server must decline.
    Declined,
}

/// Parameters of a permessage-deflate offer, each at most once.
const PARAMS: [&[u8]; 4] = [
    b"server_no_context_takeover",
    b"client_no_context_takeover",
    b"server_max_window_bits",
    b"client_max_window_bits",
];

fn parse_offer(element: &[u8]) -> Offer {
    let mut parts = split_outside_quotes(element, b';');
    let name = trim(parts.next().unwrap_or_default());
    if !name.eq_ignore_ascii_case(b"permessage-deflate") {
        return Offer::Other;
    }
    let mut seen = [false; PARAMS.len()];
    let mut agreement = Agreement::default();
    for param in parts {
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (trim(&param[..eq]), Some(trim(&param[eq + 1..]))),
            None => (trim(param), None),
        };
        let Some(i) = PARAMS.iter().position(|p| key.eq_ignore_ascii_case(p)) else {
            return Offer::Declined; // unknown (or empty) parameter
        };
        if std::mem::replace(&mut seen[i], true) {
            return Offer::Declined; // the same parameter twice
        }
        let value = match value.map(unquote) {
            None => None,
            Some(Some(v)) => Some(v),
            Some(None) => return Offer::Declined, // not a token or quoted-string
        };
        match (i, value) {
            (0 | 1, None) => {}
            (2, Some(v)) => match window_bits(&v) {
                Some(bits) => agreement.server_max_window_bits = Some(bits),
                None => return Offer::Declined,
            },
            (3, None) => {}
            (3, Some(v)) if window_bits(&v).is_some() => {}
            _ => return Offer::Declined,
        }
    }
    Offer::Deflate(agreement)
}

/// A window size: a decimal integer 8–15 without leading zeros (§7.1.2.1).
fn window_bits(v: &[u8]) -> Option<u8> {
    match v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// A parameter value: a token, or a quoted-string whose unescaped content
/// is a token (RFC 6455 §9.1). `None` when it is neither.
fn unquote(v: &[u8]) -> Option<Vec<u8>> {
    let out = match v {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut bytes = inner.iter();
            while let Some(&b) = bytes.next() {
                match b {
                    b'\\' => out.push(*bytes.next()?),
                    b'"' => return None,
                    _ => out.push(b),
                }
            }
            out
        }
        _ => v.to_vec(),
    };
    (!out.is_empty() && out.iter().all(|&b| is_tchar(b))).then_some(out)
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `value` at `sep` outside quoted strings (a backslash escapes
/// inside them).
fn split_outside_quotes(value: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let v = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, &b) in v.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == sep && !quoted => {
                    rest = Some(&v[i + 1..]);
                    return Some(&v[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(headers: &[&str]) -> Offers {
        let mut o = Offers::default();
        for h in headers {
            o.offer(h.as_bytes());
        }
        o
    }

    fn agreed(headers: &[&str]) -> Option<String> {
        negotiate(headers).deflate.map(|a| a.response())
    }

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn what_browsers_offer_is_accepted_with_no_context_takeover_both_ways() {
        // Chromium and Firefox.
        assert_eq!(agreed(&["permessage-deflate; client_max_window_bits"]).as_deref(), Some(BOTH));
        assert_eq!(agreed(&["permessage-deflate"]).as_deref(), Some(BOTH));
        assert_eq!(agreed(&["PerMessage-Deflate ;Client_Max_Window_Bits=15"]).as_deref(), Some(BOTH));
        assert_eq!(agreed(&[BOTH]).as_deref(), Some(BOTH));
        assert_eq!(agreed(&["x-webkit-deflate-frame"]), None);
        assert_eq!(agreed(&[]), None);
    }

    #[test]
    fn server_max_window_bits_is_repeated_in_the_answer() {
        for bits in 8..=15 {
            let a = negotiate(&[&format!("permessage-deflate; server_max_window_bits={bits}")]).deflate.unwrap();
            assert_eq!(a.server_max_window_bits, Some(bits));
            assert_eq!(a.response(), format!("{BOTH}; server_max_window_bits={bits}"));
            assert_eq!(a.small_window(), bits < 15);
        }
        let quoted = negotiate(&["permessage-deflate; server_max_window_bits=\"10\""]).deflate.unwrap();
        assert_eq!(quoted.server_max_window_bits, Some(10));
    }

    #[test]
    fn malformed_or_duplicate_parameters_decline_the_offer() {
        for bad in [
            "permessage-deflate; server_max_window_bits",       // value required
            "permessage-deflate; server_max_window_bits=7",     // out of range
            "permessage-deflate; server_max_window_bits=16",    // out of range
            "permessage-deflate; server_max_window_bits=09",    // leading zero
            "permessage-deflate; client_max_window_bits=0x9",   // not decimal
            "permessage-deflate; client_max_window_bits=\"\"",  // empty
            "permessage-deflate; server_no_context_takeover=1", // no value allowed
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover", // duplicate
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10", // duplicate
            "permessage-deflate; foo",                          // unknown
            "permessage-deflate; ;",                            // empty parameter
            "permessage-deflate; server_max_window_bits=\"1 0\"", // quoted, not a token
        ] {
            let o = negotiate(&[bad]);
            assert_eq!((o.deflate, o.declined), (None, 1), "{bad}");
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins_within_and_across_headers() {
        let o =
            negotiate(&["permessage-deflate; foo, permessage-deflate; server_max_window_bits=9, permessage-deflate"]);
        assert_eq!((o.deflate.unwrap().server_max_window_bits, o.declined), (Some(9), 1));
        let o = negotiate(&["foo, permessage-deflate; bar", "permessage-deflate; server_max_window_bits=12"]);
        assert_eq!((o.deflate.unwrap().server_max_window_bits, o.declined), (Some(12), 1));
        let o = negotiate(&["permessage-deflate", "permessage-deflate; server_max_window_bits=12"]);
        assert_eq!(o.deflate.unwrap().server_max_window_bits, None);
        // A comma inside a quoted value does not split the list.
        let o = negotiate(&["permessage-deflate; client_max_window_bits=\"1,0\", permessage-deflate"]);
        assert_eq!((o.deflate.is_some(), o.declined), (true, 1));
        // Empty list elements are allowed.
        assert!(negotiate(&[" , ,permessage-deflate,"]).deflate.is_some());
    }

    #[test]
    fn what_autobahn_offers_is_accepted() {
        // Autobahn 13.7: several offers, the first acceptable taken.
        let o = negotiate(&[
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=8, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits, \
             permessage-deflate; client_max_window_bits",
        ]);
        assert_eq!(o.deflate.unwrap().server_max_window_bits, Some(8));
    }
}
