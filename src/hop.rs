//! Hop-by-hop header removal (RFC 9110 §7.6.1).
//!
//! A proxy must not forward the headers that describe one connection: `Connection` and every header
//! it names, plus `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade`.
//! Everything else is end-to-end and passes unchanged, in order.
//!
//! `Trailer` is end-to-end (RFC 9110 §6.6.2 and the list in §7.6.1 leave it out) and is kept on
//! purpose: it declares the trailer fields of a chunked body, and hyper writes only the declared
//! ones, so removing it would silently drop every trailer.

use http::header::{HeaderMap, HeaderName, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};

/// The fixed hop-by-hop names; `Connection` may name more.
const FIXED: [HeaderName; 6] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Removes every hop-by-hop header from `headers`, keeping the order of the others.
///
/// The common case (none present) is one pass over the names, comparing without hashing, and no
/// allocation. Otherwise the map is rebuilt, because `HeaderMap::remove` moves the last header
/// into the removed one's place.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| FIXED.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let old = std::mem::take(headers);
    headers.reserve(old.len());
    let mut current: Option<(HeaderName, bool)> = None;
    for (name, value) in old {
        if let Some(name) = name {
            let hop = FIXED.contains(&name) || named.contains(&name);
            current = Some((name, !hop));
        }
        if let Some((name, true)) = &current {
            headers.append(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn removes_fixed_and_named_headers_and_keeps_the_rest_in_order() {
        let mut h = map(&[
            ("host", "es"),
            ("connection", "keep-alive, X-Private"),
            ("connection", "x-other"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("authorization", "ApiKey abc"),
            ("x-opaque-id", "42"),
        ]);
        strip_hop_by_hop(&mut h);
        let kept: Vec<_> = h.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("?"))).collect();
        assert_eq!(
            kept,
            [
                ("host", "es"),
                ("trailer", "x-checksum"),
                ("authorization", "ApiKey abc"),
                ("x-opaque-id", "42")
            ]
        );
    }

    #[test]
    fn keeps_repeated_values_and_order_when_nothing_is_removed() {
        let mut h = map(&[("b", "1"), ("a", "2"), ("b", "3"), ("c", "4")]);
        strip_hop_by_hop(&mut h);
        let kept: Vec<_> = h.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("?"))).collect();
        assert_eq!(kept, [("b", "1"), ("b", "3"), ("a", "2"), ("c", "4")]);
    }

    #[test]
    fn ignores_unparsable_connection_tokens() {
        let mut h = map(&[("connection", "close, bad header name, "), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }
}
