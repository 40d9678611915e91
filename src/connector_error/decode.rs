//! Request bodies with `Content-Encoding`, decoded as Elasticsearch's HTTP layer decodes them
//! (Netty's `HttpContentDecompressor`: gzip and x-gzip, deflate and x-deflate, zlib-wrapped or
//! raw), with a cap on the decoded size so a small compressed body cannot expand without bound.

use std::io::Read;

use bytes::Bytes;
use http::header::{GetAll, HeaderValue};

/// The body as Elasticsearch's handler would see it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// No encoding: the bytes as received.
    Identity,
    /// Decoded bytes.
    Plain(Bytes),
    /// More than the limit once decoded.
    TooLarge,
    /// An encoding Elasticsearch does not decode the same way here, or a body that does not
    /// decode: esgate cannot tell what Elasticsearch answers, so the request goes on unchanged.
    Unknown(&'static str),
}

/// Decodes `raw` according to the request's `Content-Encoding` values.
pub fn decode_body(encodings: GetAll<'_, HeaderValue>, raw: &[u8], limit: usize) -> Decoded {
    let mut values = encodings.iter();
    let Some(value) = values.next() else {
        return Decoded::Identity;
    };
    if values.next().is_some() {
        return Decoded::Unknown("several Content-Encoding headers");
    }
    let Ok(value) = value.to_str() else {
        return Decoded::Unknown("an unreadable Content-Encoding header");
    };
    let encoding = value.trim();
    let reader: Box<dyn Read + '_> = if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip")
    {
        Box::new(flate2::read::GzDecoder::new(raw))
    } else if encoding.eq_ignore_ascii_case("deflate") || encoding.eq_ignore_ascii_case("x-deflate") {
        if looks_like_zlib(raw) {
            Box::new(flate2::read::ZlibDecoder::new(raw))
        } else {
            Box::new(flate2::read::DeflateDecoder::new(raw))
        }
    } else if encoding.eq_ignore_ascii_case("identity") || encoding.is_empty() {
        return Decoded::Identity;
    } else {
        return Decoded::Unknown("a Content-Encoding that esgate does not decode");
    };
    if raw.is_empty() {
        return Decoded::Plain(Bytes::new());
    }
    let mut out = Vec::new();
    // One byte over the limit is enough to know the body is too large.
    match reader.take(limit as u64 + 1).read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Decoded::TooLarge,
        Ok(_) => Decoded::Plain(Bytes::from(out)),
        Err(_) => Decoded::Unknown("a body that does not decompress"),
    }
}

/// A zlib header: compression method 8 and a header checksum divisible by 31 (RFC 1950).
fn looks_like_zlib(raw: &[u8]) -> bool {
    match raw {
        [cmf, flg, ..] => cmf & 0x0F == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(v: &'static str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static(v));
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn gzip_deflate_and_zlib_decode() {
        let body = br#"{"error":"x"}"#;
        let h = header("GZIP");
        assert_eq!(
            decode_body(h.get_all("content-encoding"), &gzip(body), 1024),
            Decoded::Plain(Bytes::from_static(body))
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).expect("write");
        let zlib = z.finish().expect("finish");
        let h = header("deflate");
        assert_eq!(
            decode_body(h.get_all("content-encoding"), &zlib, 1024),
            Decoded::Plain(Bytes::from_static(body))
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(body).expect("write");
        let raw = d.finish().expect("finish");
        assert_eq!(
            decode_body(h.get_all("content-encoding"), &raw, 1024),
            Decoded::Plain(Bytes::from_static(body))
        );
    }

    #[test]
    fn limits_and_unknowns() {
        let big = vec![b' '; 10_000];
        let h = header("gzip");
        assert_eq!(
            decode_body(h.get_all("content-encoding"), &gzip(&big), 9_999),
            Decoded::TooLarge
        );
        assert!(matches!(
            decode_body(h.get_all("content-encoding"), b"not gzip", 100),
            Decoded::Unknown(_)
        ));
        let h = header("br");
        assert!(matches!(
            decode_body(h.get_all("content-encoding"), b"x", 100),
            Decoded::Unknown(_)
        ));
        let none = http::HeaderMap::new();
        assert_eq!(
            decode_body(none.get_all("content-encoding"), b"x", 100),
            Decoded::Identity
        );
    }
}
