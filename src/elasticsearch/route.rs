//! Which requests are `PUT /_connector/<connector_id>/_error`, and which connector id they name
//! (`docs/connector-error.md`, "Route").
//!
//! Elasticsearch routes on the raw, undecoded path (`PathTrie`): the literal segments must appear
//! exactly as written (`%5Fconnector` is another path), the path is split like Java's
//! `String.split("/")` (so trailing slashes vanish and an empty interior segment is an empty id),
//! and only the wildcard segment is percent-decoded (`RestUtils.decodeComponent`). Matching the
//! same way keeps esgate from intercepting a request Elasticsearch would send elsewhere, or letting
//! through one it would refuse.
//!
//! Netty hands Elasticsearch the request line one byte per Java `char` (ISO-8859-1), so the
//! decoders here work on bytes and give back the Java string Elasticsearch would hold.

/// What a raw path is, for the intercepted API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Any other path: not intercepted.
    Other,
    /// `/_connector/<id>/_error`, with its id.
    UpdateError(ConnectorId),
}

/// The `connector_id` path parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorId {
    /// The decoded id, as Elasticsearch's Java string (possibly empty).
    Decoded(String),
    /// The id segment has a malformed `%` escape. Elasticsearch answers 405 from inside its route
    /// lookup; the caller forwards such requests and lets it.
    BadEscape,
}

/// Matches a raw (undecoded) request path. Called for every `PUT`, so it allocates nothing
/// unless the path is the route's.
pub fn match_path(raw_path: &str) -> Route {
    match three_segments(raw_path.as_bytes()) {
        Some([connector, id, error]) if connector == b"_connector" && error == b"_error" => {
            Route::UpdateError(match decode_component(id, false) {
                Ok(id) => ConnectorId::Decoded(id),
                Err(_) => ConnectorId::BadEscape,
            })
        }
        _ => Route::Other,
    }
}

/// The segments of `path` when there are exactly three, as `PathTrie` sees them: Java's
/// `split("/")` (trailing empty strings dropped), then one leading empty segment skipped.
/// `the_segments_are_java_s` checks it against [`java_split`](super::java::java_split).
fn three_segments(path: &[u8]) -> Option<[&[u8]; 3]> {
    let end = path.iter().rposition(|b| *b != b'/')? + 1;
    let path = &path[..end];
    let path = path.strip_prefix(b"/").unwrap_or(path);
    let mut parts = path.splitn(4, |b| *b == b'/');
    let segments = [parts.next()?, parts.next()?, parts.next()?];
    parts.next().is_none().then_some(segments)
}

/// `RestUtils.decodeComponent`: `%XX` escapes and `%%` decoded, the bytes read as UTF-8 (malformed
/// sequences become U+FFFD, as Java's decoder does), `+` a space only when `plus_as_space` (query
/// strings; paths keep it). Without any `%` (or `+` when it counts) the input comes back as is,
/// one Java `char` per byte. The error is the `IllegalArgumentException` message.
pub fn decode_component(s: &[u8], plus_as_space: bool) -> Result<String, String> {
    if !s.iter().any(|&c| c == b'%' || (plus_as_space && c == b'+')) {
        return Ok(latin1(s));
    }
    let size = s.len();
    let mut buf = Vec::with_capacity(size);
    let mut i = 0;
    while i < size {
        match s[i] {
            b'+' => buf.push(if plus_as_space { b' ' } else { b'+' }),
            b'%' => {
                if i == size - 1 {
                    return Err(format!("unterminated escape sequence at end of string: {}", latin1(s)));
                }
                i += 1;
                if s[i] == b'%' {
                    buf.push(b'%');
                } else if i == size - 1 {
                    return Err(format!("partial escape sequence at end of string: {}", latin1(s)));
                } else {
                    i += 1;
                    match (hex_nibble(s[i - 1]), hex_nibble(s[i])) {
                        (Some(high), Some(low)) => buf.push(high * 16 + low),
                        _ => {
                            return Err(format!(
                                "invalid escape sequence `%{}{}' at index {} of: {}",
                                char::from(s[i - 1]),
                                char::from(s[i]),
                                i - 2,
                                latin1(s)
                            ))
                        }
                    }
                }
            }
            c => buf.push(c),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The Java string Netty makes of raw header or request-line bytes: one `char` per byte
/// (ISO-8859-1). ASCII, what connector ids nearly always are, reads the same in UTF-8 and is
/// copied as it is instead of char by char.
pub fn latin1(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(ascii) if ascii.is_ascii() => ascii.to_owned(),
        _ => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::java::java_split;
    use super::*;

    fn id(s: &str) -> Route {
        Route::UpdateError(ConnectorId::Decoded(s.to_owned()))
    }

    #[test]
    fn the_route_and_its_id() {
        assert_eq!(match_path("/_connector/my-connector/_error"), id("my-connector"));
        // Trailing empty segments are dropped by Java's split.
        assert_eq!(match_path("/_connector/x/_error/"), id("x"));
        assert_eq!(match_path("/_connector/x/_error//"), id("x"));
        // An empty interior segment is the empty id (row V1).
        assert_eq!(match_path("/_connector//_error"), id(""));
    }

    #[test]
    fn other_paths_are_not_this_route() {
        assert_eq!(match_path("/_connector/_error"), Route::Other);
        assert_eq!(match_path("/_connector/x/_error/y"), Route::Other);
        assert_eq!(match_path("/%5Fconnector/x/_error"), Route::Other);
        assert_eq!(match_path("/_connector/x/%5Ferror"), Route::Other);
        assert_eq!(match_path("/_Connector/x/_error"), Route::Other);
        assert_eq!(match_path("//_connector/x/_error"), Route::Other);
        assert_eq!(match_path("/_connector/x"), Route::Other);
        assert_eq!(match_path("/"), Route::Other);
        assert_eq!(match_path("*"), Route::Other);
    }

    #[test]
    fn the_id_is_decoded_like_a_path_component() {
        assert_eq!(match_path("/_connector/a%2Fb/_error"), id("a/b"));
        assert_eq!(match_path("/_connector/a+b/_error"), id("a+b"));
        assert_eq!(match_path("/_connector/100%%/_error"), id("100%"));
        assert_eq!(match_path("/_connector/%C3%A9/_error"), id("é"));
        assert_eq!(match_path("/_connector/%e2%82%ac/_error"), id("€"));
        // Invalid UTF-8 after decoding becomes U+FFFD.
        assert_eq!(match_path("/_connector/%FF/_error"), id("\u{FFFD}"));
        // Without an escape, raw bytes are ISO-8859-1 chars, as Netty reads them.
        assert_eq!(match_path("/_connector/é/_error"), id("Ã©"));
        // With one, the raw bytes are decoded together with the escaped ones.
        assert_eq!(match_path("/_connector/é%21/_error"), id("é!"));
    }

    #[test]
    fn bad_escapes() {
        for path in [
            "/_connector/%ZZ/_error",
            "/_connector/%/_error",
            "/_connector/a%4/_error",
            "/_connector/%4g/_error",
        ] {
            assert_eq!(match_path(path), Route::UpdateError(ConnectorId::BadEscape), "{path}");
        }
    }

    #[test]
    fn decode_error_texts_are_java_s() {
        assert_eq!(
            decode_component(b"%ZZ", false),
            Err("invalid escape sequence `%ZZ' at index 0 of: %ZZ".to_owned())
        );
        assert_eq!(
            decode_component(b"ab%1x", false),
            Err("invalid escape sequence `%1x' at index 2 of: ab%1x".to_owned())
        );
        assert_eq!(
            decode_component(b"%4", false),
            Err("partial escape sequence at end of string: %4".to_owned())
        );
        assert_eq!(
            decode_component(b"a%", false),
            Err("unterminated escape sequence at end of string: a%".to_owned())
        );
        assert_eq!(decode_component(b"a+b%20c", true), Ok("a b c".to_owned()));
        assert_eq!(decode_component(b"a+b", true), Ok("a b".to_owned()));
        assert_eq!(decode_component(b"a+b", false), Ok("a+b".to_owned()));
    }

    #[test]
    fn the_segments_are_java_s() {
        fn reference(path: &[u8]) -> Option<[&[u8]; 3]> {
            let segments = java_split(path, b'/');
            let segments = match segments.split_first() {
                Some(([], rest)) => rest.to_vec(),
                _ => segments,
            };
            <[&[u8]; 3]>::try_from(segments).ok()
        }
        let pieces = ["", "/", "//", "a", "_connector", "_error", "%2F", "é"];
        let mut paths = vec![Vec::new()];
        for _ in 0..4 {
            let mut longer = Vec::new();
            for path in &paths {
                for piece in pieces {
                    longer.push([path.as_slice(), piece.as_bytes()].concat());
                }
            }
            paths.extend(longer);
        }
        paths.sort();
        paths.dedup();
        assert!(paths.len() > 1000, "{}", paths.len());
        for path in &paths {
            assert_eq!(
                three_segments(path),
                reference(path),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn split_like_java() {
        assert_eq!(java_split(b"/a//b//", b'/'), [&b""[..], b"a", b"", b"b"]);
        assert_eq!(java_split(b"//", b'/'), Vec::<&[u8]>::new());
        assert_eq!(java_split(b"", b'/'), [&b""[..]]);
        assert_eq!(java_split(b"abc", b'/'), [&b"abc"[..]]);
    }
}
