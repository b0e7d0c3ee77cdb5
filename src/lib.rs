//! wxmp: a WeChat Official Account (微信公众号) message server.
//!
//! One push, end to end: [`server::routes`] turns the HTTP request into a query, the body bytes
//! and the arrival instant, and hands them to [`server::pipeline::Pipeline::handle_message`],
//! which runs verify ([`protocol::verify`]) → open the safe-mode envelope
//! ([`protocol::envelope`], safe/compatible mode only) → parse ([`protocol::message`]) → the
//! retry store ([`server::store`]) → pick a reply ([`rules`]) → render ([`protocol::reply`]) →
//! seal (safe mode). It returns the answer or a typed `Rejection`, which `routes` maps to an
//! HTTP status in one place, together with an `Outcome` record of what happened.
//!
//! The layers, with dependencies pointing one way (a test in `tests/it/architecture.rs` keeps
//! them so):
//! - [`protocol`]: WeChat's protocol, pure: bytes, strings and values in and out (the time and
//!   the random bytes included); nothing here knows HTTP, the clock or the OS random source.
//! - [`rules`]: the keyword rules file and the decision; imports only `protocol`.
//! - [`server`]: routes → pipeline → retry store, built from an `Account`.
//! - [`send`]: the simulator (`wxmp send`); imports only `protocol`, `net` and `usage`.
//! - [`api`]: the WeChat API client (access_token, menu, customer-service messages); imports
//!   only `protocol` and `net`. [`api_cmd`]: `wxmp menu`, `wxmp kf` and `wxmp token` on top
//!   of it (and the rules file, for `menu check --rules`).
//! - [`fake_api`]: `wxmp fake-api`, a stand-in for `api.weixin.qq.com`; imports only `api`,
//!   `protocol` and `usage`.
//! - [`tail`]: the live view's client (`wxmp tail`); imports only `protocol`, `net` and
//!   `usage`, and meets the server only over HTTP.
//! - [`net`]: why an outgoing HTTP call got no answer, told the same way by every client above
//!   (the simulator, the forwarder, the API client, `wxmp tail`); it imports nothing of the
//!   crate. [`usage`]: every command's settings, declared once each, their parser and help, and
//!   the one usage error; it imports only `protocol` (to build safe mode from a key).
//!   [`text`]: untrusted text and URLs shown safely (escaped, passwords hidden); it imports
//!   nothing of the crate.
//! - [`config`]: the server's settings validated into the parts [`server::build`] takes; it
//!   never imports `server`. [`cli`], [`log`] and `main.rs`: the command line and the process.
//!
//! Every request also ends in one access-log record ([`server::access`]), is counted in the
//! Prometheus metrics ([`server::metrics`], served with the live view's buffer
//! ([`server::recent`]) by [`server::monitor`] on `--metrics-addr`). Your own code's API calls
//! can go through [`server::gateway`] (`--api-proxy`), which adds the token of the server's one
//! API client.
#![forbid(unsafe_code)]

pub mod api;
pub mod api_cmd;
pub mod cli;
pub mod config;
pub mod fake_api;
pub mod log;
pub mod net;
pub mod protocol;
pub mod rules;
pub mod secrets;
pub mod send;
pub mod server;
pub mod tail;
pub mod text;
pub mod usage;
