//! Hop-by-hop header removal (RFC 9110 §7.6.1), and the framing checks of a request before it is
//! forwarded ([`framing_error`]).
//!
//! A proxy must not forward the headers that describe one connection: `Connection` and every header
//! it names, plus `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and `Upgrade`.
//! Everything else is end-to-end and passes unchanged, in order.
//!
//! `Trailer` is end-to-end (RFC 9110 §6.6.2 and the list in §7.6.1 leave it out) and is kept on
//! purpose: it declares the trailer fields of a chunked body, and hyper writes only the declared
//! ones, so removing it would silently drop every trailer.

use http::header::{HeaderMap, HeaderName, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Version};

/// The fixed hop-by-hop names; `Connection` may name more.
const FIXED: [HeaderName; 6] = [
    CONNECTION,
    crate::headers::KEEP_ALIVE,
    crate::headers::PROXY_CONNECTION,
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

/// Why a request is answered 400 by esgate instead of being forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramingError {
    /// The `reason` of the Elasticsearch error answered.
    pub reason: String,
    /// The `reason` label of `esgate_client_errors_total`.
    pub label: &'static str,
    /// The request's framing cannot be trusted (nor what follows it on the connection): the
    /// connection is closed after the answer.
    pub close: bool,
}

/// The longest piece of a header value quoted in a reason.
const QUOTE_MAX: usize = 128;

/// Checks what hyper leaves to the application, before anything of the request is forwarded:
///
/// * `CONNECT` is not proxied: esgate is a reverse proxy and opens no tunnels.
/// * `Transfer-Encoding` (RFC 9112 §6.1, §6.3): none on HTTP/1.0, and otherwise exactly one
///   coding, `chunked` (case-insensitive), over all its fields together. `identity, chunked`,
///   `gzip, chunked`, `chunked, chunked` and two `Transfer-Encoding: chunked` fields are refused:
///   hyper accepts them (it looks only at the last coding), a peer in front of esgate may frame
///   them differently, and esgate could not re-apply the other codings anyway.
/// * `Host` (RFC 9112 §3.2): more than one field, or a value that is a list.
///
/// `None` for a request that may be forwarded. Hyper itself answers (with a bare 400, before any
/// service sees the request) `Transfer-Encoding` on HTTP/1.0 and a `Transfer-Encoding` whose last
/// coding is not `chunked`; the checks here cover those too, so that they hold whoever parsed.
pub fn framing_error(method: &Method, version: Version, headers: &HeaderMap) -> Option<FramingError> {
    if method == Method::CONNECT {
        return Some(FramingError {
            reason: "CONNECT is not supported: esgate forwards requests to Elasticsearch and opens no tunnels".into(),
            label: "connect",
            close: true,
        });
    }
    if let Some(error) = transfer_encoding_error(version, headers) {
        return Some(error);
    }
    let mut hosts = headers.get_all(HOST).iter();
    if let Some(host) = hosts.next() {
        let more = hosts.count();
        if more > 0 {
            return Some(FramingError {
                reason: format!("request has {} Host header fields; exactly one is allowed", more + 1),
                label: "host_repeated",
                close: false,
            });
        }
        if host.as_bytes().contains(&b',') {
            return Some(FramingError {
                reason: format!("Host [{}] names more than one host", quote(&[host.as_bytes()])),
                label: "host_repeated",
                close: false,
            });
        }
    }
    None
}

fn transfer_encoding_error(version: Version, headers: &HeaderMap) -> Option<FramingError> {
    let values: Vec<&[u8]> = headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if values.is_empty() {
        return None;
    }
    if version < Version::HTTP_11 {
        return Some(FramingError {
            reason: format!(
                "Transfer-Encoding [{}] is not allowed in an HTTP/1.0 request",
                quote(&values)
            ),
            label: "transfer_encoding_http10",
            close: true,
        });
    }
    let codings = || {
        values
            .iter()
            .flat_map(|v| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
    };
    let chunked = codings().filter(|c| c.eq_ignore_ascii_case(b"chunked")).count();
    if chunked > 1 {
        return Some(FramingError {
            reason: format!(
                "Transfer-Encoding [{}] applies [chunked] more than once",
                quote(&values)
            ),
            label: "transfer_encoding_repeated_chunked",
            close: true,
        });
    }
    if chunked == 1 && codings().count() == 1 {
        return None;
    }
    Some(FramingError {
        reason: format!(
            "Transfer-Encoding [{}] is not supported: only [chunked] is accepted",
            quote(&values)
        ),
        label: "transfer_encoding",
        close: true,
    })
}

/// The values joined with `, `, as text, cut at [`QUOTE_MAX`] bytes.
fn quote(values: &[&[u8]]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&String::from_utf8_lossy(v));
    }
    if out.len() > QUOTE_MAX {
        let mut end = QUOTE_MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
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

    fn check(method: Method, version: Version, pairs: &[(&'static str, &'static str)]) -> Option<FramingError> {
        framing_error(&method, version, &map(pairs))
    }

    fn label(method: Method, version: Version, pairs: &[(&'static str, &'static str)]) -> Option<&'static str> {
        check(method, version, pairs).map(|e| e.label)
    }

    #[test]
    fn ordinary_requests_pass() {
        let v11 = Version::HTTP_11;
        assert_eq!(check(Method::GET, v11, &[("host", "es")]), None);
        assert_eq!(check(Method::GET, v11, &[]), None);
        assert_eq!(check(Method::GET, Version::HTTP_10, &[("host", "es")]), None);
        assert_eq!(
            check(Method::POST, v11, &[("host", "es"), ("transfer-encoding", "chunked")]),
            None
        );
        assert_eq!(check(Method::POST, v11, &[("transfer-encoding", " Chunked ")]), None);
        assert_eq!(
            check(Method::PUT, v11, &[("host", "[::1]:9200"), ("content-length", "2")]),
            None
        );
    }

    #[test]
    fn transfer_encoding_must_be_a_single_chunked() {
        let v11 = Version::HTTP_11;
        for te in [
            "identity, chunked",
            "gzip, chunked",
            "gzip",
            "identity",
            "chunked, gzip",
            ",chunked",
            "chunked,",
            "",
        ] {
            let pairs = [("host", "es"), ("transfer-encoding", te)];
            let error = check(Method::POST, v11, &pairs).unwrap_or_else(|| panic!("{te:?} passed"));
            assert_eq!(error.label, "transfer_encoding", "{te:?}");
            assert!(error.close);
            assert!(error.reason.contains(&format!("[{te}]")), "{}", error.reason);
        }
        let two = [("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")];
        assert_eq!(label(Method::POST, v11, &two), Some("transfer_encoding"));
    }

    #[test]
    fn chunked_twice_is_refused() {
        let v11 = Version::HTTP_11;
        let one_field = [("transfer-encoding", "chunked, chunked")];
        let two_fields = [("transfer-encoding", "chunked"), ("transfer-encoding", "CHUNKED")];
        for pairs in [&one_field[..], &two_fields[..]] {
            let error = check(Method::POST, v11, pairs).expect("refused");
            assert_eq!(error.label, "transfer_encoding_repeated_chunked");
            assert!(error.close);
        }
        let error = check(Method::POST, v11, &two_fields).expect("refused");
        assert_eq!(
            error.reason,
            "Transfer-Encoding [chunked, CHUNKED] applies [chunked] more than once"
        );
    }

    #[test]
    fn transfer_encoding_on_http10_is_refused() {
        let error = check(Method::POST, Version::HTTP_10, &[("transfer-encoding", "chunked")]).expect("refused");
        assert_eq!(error.label, "transfer_encoding_http10");
        assert!(error.close);
        assert_eq!(
            label(Method::POST, Version::HTTP_09, &[("transfer-encoding", "chunked")]),
            Some("transfer_encoding_http10")
        );
    }

    #[test]
    fn several_hosts_are_refused() {
        let v11 = Version::HTTP_11;
        let error = check(Method::GET, v11, &[("host", "a"), ("host", "a")]).expect("refused");
        assert_eq!(error.label, "host_repeated");
        assert_eq!(error.reason, "request has 2 Host header fields; exactly one is allowed");
        assert!(!error.close);
        assert_eq!(label(Method::GET, v11, &[("host", "a, b")]), Some("host_repeated"));
    }

    #[test]
    fn connect_is_refused() {
        let error = check(Method::CONNECT, Version::HTTP_11, &[("host", "es:443")]).expect("refused");
        assert_eq!(error.label, "connect");
        assert!(error.close);
        // Methods are case-sensitive: `connect` is an extension method, forwarded like any other.
        let lower = Method::from_bytes(b"connect").expect("method");
        assert_eq!(check(lower, Version::HTTP_11, &[("host", "es")]), None);
    }

    #[test]
    fn long_values_are_cut_in_the_reason() {
        let long: &'static str = Box::leak("x".repeat(1000).into_boxed_str());
        let error = check(Method::POST, Version::HTTP_11, &[("transfer-encoding", long)]).expect("refused");
        assert!(error.reason.len() < 250, "{}", error.reason);
        assert!(error.reason.contains("x..."));
    }
}
