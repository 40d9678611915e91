//! The invariants every verdict of `check_body` must hold, whatever the body: shared by the fuzz
//! target (`fuzz_targets/check_body.rs`) and the corpus replay test (`tests/fuzz_corpus.rs`).
//!
//! Cheap on purpose: the fuzzer runs them on every input. Whether a verdict is *right* is the
//! differential test's job (`tests/oracle/main.rs`).

use esgate::elasticsearch::{check_body, BodyVerdict};
use serde_json::Value;

/// Checks `body` and panics, naming the broken invariant, if the verdict breaks one.
pub fn check(body: &[u8]) {
    match check_body(body, esgate::elasticsearch::Dialect::NEWEST) {
        BodyVerdict::Accept { literal } => {
            let ok = &literal[..] == b"null"
                || (literal.len() >= 2 && literal.starts_with(b"\"") && literal.ends_with(b"\""));
            assert!(
                ok,
                "Accept literal is neither null nor a string: {:?}",
                String::from_utf8_lossy(&literal)
            );
            let canonical = BodyVerdict::canonical_body(&literal);
            match parse(&canonical) {
                Ok(Value::Object(fields)) if fields.len() == 1 && fields.contains_key("error") => {}
                other => panic!(
                    "canonical body {:?} is not {{\"error\":…}}: {other:?}",
                    String::from_utf8_lossy(&canonical)
                ),
            }
        }
        BodyVerdict::Reject(e) => {
            assert!(!e.chain.is_empty(), "a 400 without an exception");
            let compact = e.to_compact();
            let text = String::from_utf8_lossy(&compact);
            assert!(std::str::from_utf8(&compact).is_ok(), "400 body is not UTF-8: {text}");
            let json = match parse(&compact) {
                Ok(json) => json,
                Err(err) => panic!("400 body is not JSON ({err}): {text}"),
            };
            assert_eq!(e.status, 400, "body errors are 400s: {text}");
            assert_eq!(json["status"], Value::from(e.status), "status field: {text}");
            assert_eq!(
                json["error"]["type"],
                Value::from(e.top().error_type),
                "top-level type: {text}"
            );
            let root = &e.chain[e.root.min(e.chain.len() - 1)];
            assert_eq!(
                json["error"]["root_cause"][0]["type"],
                Value::from(root.error_type),
                "root cause: {text}"
            );
            assert!(json["error"]["reason"].is_string(), "reason: {text}");
        }
        BodyVerdict::Unchecked(reason) => assert!(!reason.is_empty(), "Unchecked without a reason"),
    }
}

/// Parses JSON with serde_json, after turning every surrogate escape (`\uD800`..`\uDFFF`) into
/// `\u0020`: Elasticsearch writes lone surrogates that way, and serde_json refuses them.
fn parse(json: &[u8]) -> serde_json::Result<Value> {
    let mut out = Vec::with_capacity(json.len());
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' && i + 1 < json.len() {
            let escape = &json[i..(i + 6).min(json.len())];
            let surrogate = escape.len() == 6
                && escape[1] == b'u'
                && escape[2].eq_ignore_ascii_case(&b'd')
                && matches!(escape[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
                && escape[4..].iter().all(u8::is_ascii_hexdigit);
            if surrogate {
                out.extend_from_slice(b"\\u0020");
                i += 6;
            } else {
                out.extend_from_slice(&json[i..i + 2]);
                i += 2;
            }
        } else {
            out.push(json[i]);
            i += 1;
        }
    }
    serde_json::from_slice(&out)
}
