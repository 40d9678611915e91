//! The copy of a request kept to send it again, should the reused connection it went out on turn
//! out closed by the node before any answer (see the module docs of `upstream`).
//!
//! The copy is made for every replayable request sent on a reused connection (the usual case
//! for a `GET` or the intercepted `PUT`) and almost never used, so it is made to be cheap to take
//! and to drop rather than to use: the header fields are copied as bytes into one buffer (one
//! allocation, no per-value reference count to raise and lower again) and become a `HeaderMap`
//! only when the request is sent again. A clone of the `HeaderMap` cost about 1,100 instructions
//! per request (BENCHMARKS.md, "The replay copy").

use http::header::{HeaderName, HeaderValue};
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

use super::body::UpstreamBody;

/// What is needed to send a request again: its head, its header fields as bytes, its body.
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    /// Every field in the order the `HeaderMap` iterates them (names in insertion order, the
    /// values of one name together, as hyper writes them): a flag byte (1: sensitive), the
    /// name's and the value's lengths (u32, little-endian), the name, the value.
    fields: Vec<u8>,
    /// The number of fields in `fields`.
    count: usize,
    /// hyper's record of the client's header case, kept with `preserve_header_case`.
    extensions: Extensions,
    body: UpstreamBody,
}

/// Bytes in front of each field in [`Replay::fields`].
const FIELD_HEAD: usize = 9;

impl Replay {
    /// A copy of `req` for idempotent methods (RFC 9110 §9.2.2: sending one twice has the effect
    /// of sending it once) with a body that is complete in memory (none, or a buffer). `None`
    /// otherwise: a streamed body can be sent only once, and a POST may have been acted on.
    pub(crate) fn of(req: &Request<UpstreamBody>) -> Option<Replay> {
        let idempotent = matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        if !idempotent {
            return None;
        }
        let body = req.body().replayable()?;
        let headers = req.headers();
        // One pass over the fields, into a buffer sized for the usual ones (about 60 bytes with
        // their heads); a larger head grows it. Summing the sizes first was a second pass, with
        // a name lookup per field, on every request.
        let mut fields = Vec::with_capacity(headers.len() * (FIELD_HEAD + 56));
        for (name, value) in headers {
            let (name, value_bytes) = (name.as_str().as_bytes(), value.as_bytes());
            // Both fit: hyper bounds a head far below 4 GiB (`max_buf_size`).
            let (Ok(name_len), Ok(value_len)) = (u32::try_from(name.len()), u32::try_from(value_bytes.len())) else {
                return None;
            };
            fields.push(u8::from(value.is_sensitive()));
            fields.extend_from_slice(&name_len.to_le_bytes());
            fields.extend_from_slice(&value_len.to_le_bytes());
            fields.extend_from_slice(name);
            fields.extend_from_slice(value_bytes);
        }
        Some(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            fields,
            count: headers.len(),
            extensions: req.extensions().clone(),
            body,
        })
    }

    /// The request to send again. `None` only if a field does not read back, which cannot happen
    /// for fields taken from a `HeaderMap` (each was a valid name and value there); the caller
    /// then answers as for a request it may not send again.
    pub(crate) fn into_request(self) -> Option<Request<UpstreamBody>> {
        let mut headers = HeaderMap::with_capacity(self.count);
        let fields = bytes::Bytes::from(self.fields);
        let mut at = 0;
        while at < fields.len() {
            let head = fields.get(at..at + FIELD_HEAD)?;
            let sensitive = head[0] == 1;
            let name_len = u32::from_le_bytes(head[1..5].try_into().ok()?) as usize;
            let value_len = u32::from_le_bytes(head[5..9].try_into().ok()?) as usize;
            let name_at = at + FIELD_HEAD;
            let value_at = name_at + name_len;
            at = value_at + value_len;
            let name = HeaderName::from_bytes(fields.get(name_at..value_at)?).ok()?;
            fields.get(value_at..at)?;
            let mut value = HeaderValue::from_maybe_shared(fields.slice(value_at..at)).ok()?;
            value.set_sensitive(sensitive);
            headers.append(name, value);
        }
        let mut req = Request::new(self.body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = headers;
        *req.extensions_mut() = self.extensions;
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;
    use crate::body::Body;

    fn req(method: Method, body: Body) -> Request<UpstreamBody> {
        let mut req = Request::new(UpstreamBody::new(body).0);
        *req.method_mut() = method;
        req.headers_mut().insert("x-a", HeaderValue::from_static("1"));
        req
    }

    #[test]
    fn idempotent_requests_with_complete_bodies_are_replayable() {
        let copy = Replay::of(&req(Method::PUT, Body::full("{\"error\":null}")))
            .and_then(Replay::into_request)
            .expect("a PUT with a buffer");
        assert_eq!(copy.method(), Method::PUT);
        assert_eq!(copy.headers()["x-a"], "1");
        assert_eq!(http_body::Body::size_hint(copy.body()).exact(), Some(14));
        assert!(Replay::of(&req(Method::GET, Body::Empty)).is_some());
        assert!(Replay::of(&req(Method::DELETE, Body::Empty)).is_some());
        // Not idempotent, even with a buffer.
        assert!(Replay::of(&req(Method::POST, Body::full("{}"))).is_none());
        assert!(Replay::of(&req(Method::PATCH, Body::Empty)).is_none());
        // A streamed body can be sent only once.
        assert!(Replay::of(&req(Method::PUT, Body::boxed(Streamed))).is_none());
    }

    /// A field as hyper writes it: name, value, and whether the value is sensitive.
    type Field = (String, Vec<u8>, bool);

    /// What hyper writes of a head: the request line's parts and the fields in iteration order.
    fn head(req: &Request<UpstreamBody>) -> (Method, Uri, Version, Vec<Field>) {
        let fields = req
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec(), v.is_sensitive()))
            .collect();
        (req.method().clone(), req.uri().clone(), req.version(), fields)
    }

    #[test]
    fn the_copy_is_the_request_as_it_was_sent() {
        let mut original = req(Method::PUT, Body::full("{}"));
        *original.uri_mut() = Uri::from_static("/_connector/a%20b/_error?pretty&x=%2F");
        *original.version_mut() = Version::HTTP_11;
        let headers = original.headers_mut();
        headers.insert("host", HeaderValue::from_static("es:9200"));
        // Several values of one name, with a name in between: written grouped, as before.
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-a", HeaderValue::from_static(""));
        let mut secret = HeaderValue::from_static("ApiKey c2VjcmV0");
        secret.set_sensitive(true);
        headers.insert("authorization", secret);
        // Bytes beyond ASCII (obs-text) and a tab are valid in a value and kept as they are.
        let odd = HeaderValue::from_bytes(b"caf\xe9\tlatte").expect("obs-text and a tab are valid");
        headers.insert("x-odd", odd);
        // A name the http crate does not know, kept as bytes of its own.
        headers.insert(HeaderName::from_static("x-opaque-id"), HeaderValue::from_static("v"));
        original.extensions_mut().insert(7u8);
        let copy = Replay::of(&original)
            .and_then(Replay::into_request)
            .expect("replayable");
        assert_eq!(head(&copy), head(&original));
        assert_eq!(copy.extensions().get::<u8>(), Some(&7));
        assert_eq!(copy.headers().get_all("x-a").iter().count(), 3);
        assert!(copy.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn a_request_without_fields_copies_to_one_without_fields() {
        let mut original = Request::new(UpstreamBody::new(Body::Empty).0);
        *original.method_mut() = Method::HEAD;
        let copy = Replay::of(&original)
            .and_then(Replay::into_request)
            .expect("replayable");
        assert_eq!(head(&copy), head(&original));
        assert!(copy.headers().is_empty());
    }

    /// A body of unknown length, as a client's streamed one.
    struct Streamed;

    impl http_body::Body for Streamed {
        type Data = bytes::Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
            Poll::Ready(None)
        }
    }
}
