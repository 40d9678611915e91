//! Request bodies with `Content-Encoding`, decoded as Elasticsearch's HTTP layer decodes them
//! (Netty's `HttpContentDecompressor`: gzip and x-gzip, deflate and x-deflate, zlib-wrapped or
//! raw), with a cap on the decoded size so a small compressed body cannot expand without bound.

use std::io::Read;

use bytes::Bytes;
use http::header::{GetAll, HeaderValue};

use super::budget::{Budget, Held, Reservation, Tripped};

/// The body as Elasticsearch's handler would see it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// No encoding: the bytes as received.
    Identity,
    /// Decoded bytes.
    Plain(Bytes),
    /// More than the limit once decoded.
    TooLarge,
    /// An encoding Elasticsearch does not decode the same way here, or a body that does not
    /// decode: esgate cannot tell what Elasticsearch answers, so the request goes on unchanged.
    Unchecked(&'static str),
}

#[cfg(feature = "server")]
/// Decodes `raw` according to the request's `Content-Encoding` values.
pub(crate) fn decode_body(encodings: GetAll<'_, HeaderValue>, raw: &[u8], limit: usize) -> Decoded {
    let Ok(reservation) = Budget::unshared(usize::MAX).reserve(0) else {
        return Decoded::TooLarge;
    };
    match decode_into(encodings, raw, limit, reservation) {
        Ok(decoded) => decoded,
        // An unbounded budget does not trip.
        Err(_) => Decoded::TooLarge,
    }
}

/// As [`decode_body`], with the decoded buffer paid for by `budget` as it grows: a body whose
/// decoded form would pass the budget stops decoding there, with the trip. The decoded bytes
/// give their reservation back when dropped.
pub(super) fn decode_budgeted(
    encodings: GetAll<'_, HeaderValue>,
    raw: &[u8],
    limit: usize,
    budget: &Budget,
) -> Result<Decoded, Tripped> {
    decode_into(encodings, raw, limit, budget.reserve(0)?)
}

/// The first allocation of a decoded body.
const FIRST_CHUNK: usize = 64 * 1024;

fn decode_into(
    encodings: GetAll<'_, HeaderValue>,
    raw: &[u8],
    limit: usize,
    mut reservation: Reservation,
) -> Result<Decoded, Tripped> {
    let mut values = encodings.iter();
    let Some(value) = values.next() else {
        return Ok(Decoded::Identity);
    };
    if values.next().is_some() {
        return Ok(Decoded::Unchecked("several Content-Encoding headers"));
    }
    let Ok(value) = value.to_str() else {
        return Ok(Decoded::Unchecked("an unreadable Content-Encoding header"));
    };
    let encoding = value.trim();
    let mut reader: Box<dyn Read + '_> =
        if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
            Box::new(flate2::read::GzDecoder::new(raw))
        } else if encoding.eq_ignore_ascii_case("deflate") || encoding.eq_ignore_ascii_case("x-deflate") {
            if looks_like_zlib(raw) {
                Box::new(flate2::read::ZlibDecoder::new(raw))
            } else {
                Box::new(flate2::read::DeflateDecoder::new(raw))
            }
        } else if encoding.eq_ignore_ascii_case("identity") || encoding.is_empty() {
            return Ok(Decoded::Identity);
        } else {
            return Ok(Decoded::Unchecked("a Content-Encoding that esgate does not decode"));
        };
    if raw.is_empty() {
        return Ok(Decoded::Plain(Bytes::new()));
    }
    // One byte over the limit is enough to know the body is too large.
    let most = limit.saturating_add(1);
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() >= most {
            return Ok(Decoded::TooLarge);
        }
        if out.len() == out.capacity() {
            // A full buffer grows only when there is more to come.
            let mut probe = [0u8; 64];
            let n = match reader.read(&mut probe) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => return Ok(Decoded::Unchecked("a body that does not decompress")),
            };
            // Doubling when the budget allows it; else in steps, until the budget says no.
            let cap = out.capacity();
            let preferred = cap.saturating_mul(2).max(FIRST_CHUNK).min(most);
            let step = (cap + FIRST_CHUNK.max(cap / 8)).min(most);
            let grown = match reservation.try_grow(preferred - cap) {
                Ok(()) => preferred,
                Err(_) => {
                    reservation.grow(step - cap)?;
                    step
                }
            };
            out.reserve_exact(grown - out.len());
            out.extend_from_slice(&probe[..n.min(grown - out.len())]);
            if out.len() >= most {
                return Ok(Decoded::TooLarge);
            }
        }
        // Reads no more than the room left, so the buffer never grows behind the budget.
        let room = (out.capacity() - out.len()) as u64;
        match (&mut reader).take(room).read_to_end(&mut out) {
            Ok(n) if (n as u64) < room => break,
            Ok(_) => {}
            Err(_) => return Ok(Decoded::Unchecked("a body that does not decompress")),
        }
    }
    if out.len() > limit {
        return Ok(Decoded::TooLarge);
    }
    if out.capacity() - out.len() > 64 * 1024 {
        out.shrink_to_fit();
    }
    Ok(Decoded::Plain(Held::new(out, reservation).into_bytes()))
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

    fn h_gzip() -> http::HeaderMap {
        header("gzip")
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
            Decoded::Unchecked(_)
        ));
        let h = header("br");
        assert!(matches!(
            decode_body(h.get_all("content-encoding"), b"x", 100),
            Decoded::Unchecked(_)
        ));
        let budget = Budget::unshared(1 << 20);
        let big = vec![b'x'; 200_000];
        match decode_budgeted(h_gzip().get_all("content-encoding"), &gzip(&big), 1 << 30, &budget) {
            Ok(Decoded::Plain(bytes)) => {
                assert_eq!(&bytes[..], &big[..]);
                assert!(budget.held() >= big.len() as u64);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(budget.held(), 0, "the decoded body gave its bytes back");
        let small = Budget::unshared(100_000);
        let tripped = decode_budgeted(h_gzip().get_all("content-encoding"), &gzip(&big), 1 << 30, &small)
            .expect_err("over the budget");
        assert!(tripped.wanted > 100_000 && tripped.limit == 100_000);
        assert_eq!(small.held(), 0);
        let none = http::HeaderMap::new();
        assert_eq!(
            decode_body(none.get_all("content-encoding"), b"x", 100),
            Decoded::Identity
        );
    }
}
