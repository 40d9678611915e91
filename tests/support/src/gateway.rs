//! esgate in this process: its configuration from flags, and a gateway in front of upstreams.

use crate::upstream::Upstream;

/// The configuration of an in-process gateway: loopback port 0, one worker, the given extra flags,
/// and an empty environment.
///
/// The environment is given to `Config::load_with`, not read from this process, so that no
/// `ESGATE_*` variable (or `RUST_LOG`) of the developer's shell reaches a test, as with
/// [`crate::Binary`]. A test that needs a setting passes its flag.
pub fn config(extra: &[&str]) -> esgate::Config {
    let mut args = vec!["esgate", "--listen=127.0.0.1:0", "--workers=1"];
    args.extend_from_slice(extra);
    match esgate::Config::load_with(args, &|_| None) {
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
