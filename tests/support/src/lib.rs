//! Test support for esgate's integration tests (`tests/*.rs`), one module per role:
//!
//! - `wire`: the client side — [`Client`], [`request`], [`Reader`] and [`Message`] for raw
//!   HTTP/1.1, [`within`] and [`LIMIT`] bounding every await, deterministic bodies;
//! - `upstream`: [`Upstream`], a recording HTTP/1.1 server on loopback, and its [`Reply`]s;
//! - `gateway`: esgate in this process, [`config`] (in an empty environment) and [`gateway()`];
//! - `binary`: the real esgate binary as a child process, [`Binary`].
//!
//! A crate of its own (a dev-dependency of esgate) rather than a `mod common;` compiled into
//! every test binary: it is built once, and a helper one test does not use is not dead code.

mod binary;
mod fake_es;
mod gateway;
mod upstream;
mod wire;

pub use binary::{binary_path, Binary};
pub use fake_es::{Fake, FakeNode};
pub use gateway::{config, gateway};
pub use upstream::{is_version_probe, Reply, Seen, Upstream};
pub use wire::{digest, metric, random_bytes, request, within, Client, Message, Reader, LIMIT};
