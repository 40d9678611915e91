//! esgate in this process: its configuration from flags, and a gateway in front of upstreams.

use crate::upstream::Upstream;

/// Arguments for an in-process gateway: loopback port 0, one worker, the given extra flags.
///
/// Unlike [`crate::Binary`], this cannot keep the developer's shell out: `Config::load_from` reads
/// `ESGATE_*` variables from this process's environment, and a test must not change that
/// environment while others run in parallel. Run the tests without `ESGATE_*` set.
pub fn config(extra: &[&str]) -> esgate::Config {
    let mut args = vec!["esgate", "--listen=127.0.0.1:0", "--workers=1"];
    args.extend_from_slice(extra);
    match esgate::Config::load_from(args) {
        Ok((_, config)) => config,
        Err(e) => panic!("test configuration rejected: {e:?}"),
    }
}

/// Starts esgate in this process in front of `upstreams`.
pub fn gateway(upstreams: &[&Upstream], extra: &[&str]) -> esgate::Gateway {
    let flags: Vec<String> = upstreams.iter().map(|u| format!("--upstream={}", u.url())).collect();
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    esgate::Gateway::start(config(&all)).expect("gateway starts")
}
