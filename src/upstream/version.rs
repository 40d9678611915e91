//! Version probes: which Elasticsearch version each node runs, learned with nothing to configure.
//!
//! Each node gets `GET /` on a fresh connection, with esgate's own credentials when configured
//! (`upstream.username`/`password` or `upstream.api_key`); its `version.number` gives the
//! dialects ([`Knowledge::for_version`]), a `build_flavor` of `serverless` the newest one. When
//! `GET /` is refused (403: credentials without the `monitor` privilege), the major comes from
//! Elasticsearch's REST compatibility check, which runs once the request is authenticated but
//! before any authorization: `GET /` with
//! `Accept: application/vnd.elasticsearch+json;compatible-with=99` gets a 400 whose reason reads
//! `Accept version must be either version N or M, but found 99.`, N being the node's major
//! ([`Knowledge::for_major`]). A secured cluster authenticates every request first
//! (`docs/dialects.md`, "Learning a node's version"), so without credentials it says nothing and
//! every dialect stays a candidate; a cluster without security, or with anonymous access, tells
//! its major to anyone.
//!
//! When: at start-up (of each configuration generation), when a node comes back (from dead, or
//! answering for the first time with no probe through yet), and every
//! `upstream.version_check_interval` to follow rolling upgrades. Always on the helper thread,
//! never on a client request's path. A probe that learns nothing leaves what was known: a failure
//! never narrows the knowledge, nor forgets a version learned before. Version probes never change
//! a node's health either; that is for the requests and the health probes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::sync::watch;

use super::body::UpstreamBody;
use super::health::join_all;
use super::nodes::Learned;
use super::pool;
use super::Upstream;
use crate::body::Body;
use crate::elasticsearch::{Dialect, DialectSet, Knowledge, Version};

/// The most of a `GET /` answer read (Elasticsearch's is about 550 bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// The `Accept` of the compatibility check: a version no release accepts.
const COMPAT_ACCEPT: &str = "application/vnd.elasticsearch+json;compatible-with=99";

/// What Elasticsearch's compatibility check says, up to the current major.
const COMPAT_REASON: &str = "Accept version must be either version ";

/// `User-Agent` of the version probes.
pub(crate) const USER_AGENT_VALUE: &str = concat!("esgate/", env!("CARGO_PKG_VERSION"), " (version probe)");

/// How one version probe of one node ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// The node told its version (or its major).
    Learned(Learned),
    /// The node answered, but neither answer said anything usable.
    Nothing,
    /// The node could not be reached, or did not answer in time.
    Unreachable(String),
    /// esgate itself could not open a connection (descriptors, memory, ports): says nothing of
    /// the node.
    Local(String),
}

/// Why one `GET /` got no answer.
enum Failed {
    Node(String),
    Local(String),
}

impl From<Failed> for Checked {
    fn from(f: Failed) -> Checked {
        match f {
            Failed::Node(why) => Checked::Unreachable(why),
            Failed::Local(why) => Checked::Local(why),
        }
    }
}

impl Upstream {
    /// Checks the version of every node now, then every `interval` (never again when zero), and of
    /// each node that comes back, until `shutdown` changes. Does nothing while a version is pinned
    /// (`connector_error.es_version`).
    pub async fn run_version_checks(&self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        if self.is_pinned() {
            let _ = shutdown.changed().await;
            return;
        }
        let nodes = &self.shared.nodes;
        // When every node is checked next; `None`: never again (interval zero).
        let mut next_all = Some(tokio::time::Instant::now());
        loop {
            let now = tokio::time::Instant::now();
            let everyone = next_all.is_some_and(|at| at <= now);
            if everyone {
                next_all = (!interval.is_zero()).then(|| now + interval);
            }
            // Every flag is taken, so a node that came back during a full round is not checked twice.
            let due: Vec<usize> = (0..nodes.len())
                .filter(|&i| nodes.take_recheck(i) || everyone)
                .collect();
            tokio::select! {
                () = self.check_versions(&due) => {}
                _ = shutdown.changed() => return,
            }
            let all_due = async {
                match next_all {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = all_due => {}
                () = nodes.revived() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Checks the version of each node of `indexes`, all at the same time, and records what they
    /// say.
    pub async fn check_versions(&self, indexes: &[usize]) {
        let checks = indexes
            .iter()
            .map(|&index| async move { (index, self.check_version(index).await) });
        for (index, checked) in join_all(checks).await {
            self.record(index, checked);
        }
    }

    fn record(&self, index: usize, checked: Checked) {
        let shared = &*self.shared;
        let node = &*shared.nodes.get(index).name;
        match checked {
            Checked::Learned(learned) => {
                shared.nodes.version_reached(index);
                let knowledge = learned.knowledge;
                let version = learned.version_label().to_owned();
                if shared.nodes.learn(index, learned, &shared.knowledge) {
                    let version = version.as_str();
                    tracing::info!(node, version, dialects = %knowledge, "upstream node's Elasticsearch version learned");
                    tracing::debug!(dialects = %shared.knowledge.load(), "dialects of all upstream nodes together");
                }
            }
            Checked::Nothing => {
                shared.nodes.version_reached(index);
                tracing::debug!(
                    node,
                    "upstream node's answers to GET / say nothing of its version; what was known stays"
                );
            }
            Checked::Unreachable(error) => {
                tracing::debug!(node, %error, "version probe got no answer; what was known stays");
            }
            Checked::Local(error) => {
                tracing::warn!(node, %error, "version probe could not open a connection (a local limit, not the node); what was known stays");
            }
        }
    }

    /// One version probe of node `index`: `GET /`, then the compatibility check when that says
    /// nothing.
    pub(crate) async fn check_version(&self, index: usize) -> Checked {
        match self.get_root(index, false).await {
            Err(failed) => return failed.into(),
            Ok((status, body)) if status.is_success() => {
                if let Some(learned) = parse_root(&body) {
                    return Checked::Learned(learned);
                }
            }
            Ok((status, _)) => {
                let node = &*self.shared.nodes.get(index).name;
                let credentials = self.shared.credentials.is_some();
                tracing::debug!(
                    node,
                    status = status.as_u16(),
                    credentials,
                    "GET / refused; asking the compatibility check for the major"
                );
            }
        }
        match self.get_root(index, true).await {
            Err(failed) => failed.into(),
            Ok((status, body)) => match (status == StatusCode::BAD_REQUEST)
                .then(|| compat_major(&body))
                .flatten()
            {
                Some(major) => Checked::Learned(Learned {
                    knowledge: Knowledge::for_major(major),
                    version: Some(Arc::from(format!("{major}.x"))),
                }),
                None => Checked::Nothing,
            },
        }
    }

    /// `GET /` on a new connection to node `index`: the status and at most [`MAX_ANSWER`] bytes of
    /// the body. `compat`: the compatibility check (its `Accept`).
    async fn get_root(&self, index: usize, compat: bool) -> Result<(StatusCode, Bytes), Failed> {
        let shared = &*self.shared;
        let node = shared.nodes.get(index);
        let limit = self.probe_limit();
        let attempt = async {
            let mut send = pool::connect(node, &shared.client, shared.connect_timeout, shared.tls.as_ref())
                .await
                .map_err(|e| match e.is_local() {
                    true => Failed::Local(e.to_string()),
                    false => Failed::Node(e.to_string()),
                })?;
            let mut req = Request::new(UpstreamBody::new(Body::Empty).0);
            *req.method_mut() = Method::GET;
            let headers = req.headers_mut();
            headers.insert(HOST, node.host_header.clone());
            headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
            let accept = if compat { COMPAT_ACCEPT } else { "application/json" };
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
            if let Some(credentials) = &shared.credentials {
                headers.insert(AUTHORIZATION, credentials.clone());
            }
            let response = send.send_request(req).await.map_err(|e| Failed::Node(e.to_string()))?;
            let status = response.status();
            // Too long an answer is no Elasticsearch `GET /`: read as empty, it says nothing.
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            Ok((status, body))
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Failed::Node(format!("no answer within {limit:?}"))),
        }
    }
}

/// What a `GET /` answer says of the node: `version.number`, or `version.build_flavor` of
/// `serverless`.
pub(crate) fn parse_root(body: &[u8]) -> Option<Learned> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let version = root.get("version")?;
    if version.get("build_flavor").and_then(Value::as_str) == Some("serverless") {
        return Some(Learned {
            knowledge: Knowledge::Dialects(DialectSet::one(Dialect::NEWEST)),
            version: Some(Arc::from("serverless")),
        });
    }
    let number = version.get("number")?.as_str()?.trim();
    let parsed = Version::parse(number)?;
    // The label as the node writes it (`8.19.0-SNAPSHOT`), unless absurdly long.
    let text = if number.len() <= 40 {
        number.to_owned()
    } else {
        parsed.to_string()
    };
    Some(Learned {
        knowledge: Knowledge::for_version(parsed),
        version: Some(Arc::from(text)),
    })
}

/// The major a compatibility-check answer names: the N of `Accept version must be either version
/// N or M, but found 99.`, wherever in the error it is (`caused_by.reason` in the releases seen).
pub(crate) fn compat_major(body: &[u8]) -> Option<u8> {
    let root: Value = serde_json::from_slice(body).ok()?;
    find_reason(&root, 0)
}

fn find_reason(value: &Value, depth: usize) -> Option<u8> {
    if depth > 8 {
        return None;
    }
    match value {
        Value::String(text) => {
            let at = text.find(COMPAT_REASON)?;
            let rest = &text[at + COMPAT_REASON.len()..];
            if !rest.contains("but found 99") {
                return None;
            }
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            rest[..digits].parse().ok()
        }
        Value::Array(items) => items.iter().find_map(|v| find_reason(v, depth + 1)),
        Value::Object(fields) => fields.values().find_map(|v| find_reason(v, depth + 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(learned: &Learned) -> (String, String) {
        (learned.version_label().to_owned(), learned.dialect_label())
    }

    #[test]
    fn the_root_answer_gives_the_version() {
        let body = br#"{"name":"es-1","cluster_name":"c","cluster_uuid":"u","version":{"number":"9.2.1","build_flavor":"default","build_type":"docker","build_hash":"x","build_date":"2025-11-06T22:07:39.673130621Z","build_snapshot":false,"lucene_version":"10.3.1","minimum_wire_compatibility_version":"8.19.0","minimum_index_compatibility_version":"8.0.0"},"tagline":"You Know, for Search"}"#;
        let learned = parse_root(body).expect("learned");
        assert_eq!(label(&learned), ("9.2.1".into(), "9-c-2.17".into()));
        let snapshot = parse_root(br#"{"version":{"number":"8.19.0-SNAPSHOT"}}"#).expect("learned");
        assert_eq!(label(&snapshot), ("8.19.0-SNAPSHOT".into(), "8-b-2.17".into()));
        let old = parse_root(br#"{"version":{"number":"7.17.9"}}"#).expect("learned");
        assert_eq!(label(&old), ("7.17.9".into(), "unmodelled".into()));
        let two = parse_root(br#"{"version":{"number":"9.3.5"}}"#).expect("learned");
        assert_eq!(two.dialect_label(), "9-c-2.17,9-c-2.18");
    }

    #[test]
    fn serverless_is_the_newest_dialect() {
        let body = br#"{"name":"serverless","cluster_name":"p","version":{"number":"8.11.0","build_flavor":"serverless","build_type":"docker"},"tagline":"You Know, for Search"}"#;
        let learned = parse_root(body).expect("learned");
        assert_eq!(learned.knowledge, Knowledge::Dialects(DialectSet::one(Dialect::NEWEST)));
        assert_eq!(learned.version_label(), "serverless");
    }

    #[test]
    fn answers_without_a_version_say_nothing() {
        for body in [
            &b""[..],
            b"{}",
            b"not json",
            br#"{"version":"9.2.1"}"#,
            br#"{"version":{"number":9}}"#,
            br#"{"version":{"number":"nine"}}"#,
            br#"{"error":{"type":"security_exception"},"status":401}"#,
        ] {
            assert_eq!(parse_root(body), None, "{}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"version":{{"number":"9.2.1-{}"}}}}"#, "x".repeat(100));
        assert_eq!(parse_root(long.as_bytes()).expect("learned").version_label(), "9.2.1");
    }

    #[test]
    fn the_compatibility_check_gives_the_major() {
        let nine = br#"{"error":{"root_cause":[{"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Accept]"}],"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Accept]","caused_by":{"type":"status_exception","reason":"Accept version must be either version 9 or 8, but found 99. Accept=application/vnd.elasticsearch+json;compatible-with=99"}},"status":400}"#;
        assert_eq!(compat_major(nine), Some(9));
        let eight = br#"{"error":{"type":"media_type_header_exception","caused_by":{"type":"status_exception","reason":"Accept version must be either version 8 or 7, but found 99. Accept=application/vnd.elasticsearch+json;compatible-with=99"}},"status":400}"#;
        assert_eq!(compat_major(eight), Some(8));
        for body in [
            &b"{}"[..],
            b"garbage",
            br#"{"error":{"reason":"Accept version must be either version x or 8, but found 99."}}"#,
            br#"{"error":{"reason":"Accept version must be either version 9 or 8, but found 7."}}"#,
            br#"{"error":{"reason":"Accept version must be either version 999 or 8, but found 99."}}"#,
        ] {
            assert_eq!(compat_major(body), None, "{}", String::from_utf8_lossy(body));
        }
    }
}
