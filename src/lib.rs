//! wxmp: a WeChat Official Account (微信公众号) message server.
//!
//! One push, end to end: `routes` turns the HTTP request into a [`query::Query`] and body bytes and
//! hands them to [`app::App::handle_message`], which runs the pipeline
//! verify ([`verify`]) → decrypt ([`crypto`], safe/compatible mode only) → parse ([`message`]) →
//! de-duplicate retries ([`dedup`]) → pick a reply ([`rules`]) → render ([`reply`]) →
//! encrypt and sign (safe mode). Failures come back as an [`app::Rejection`], which `routes` maps
//! to an HTTP status in one place.
//!
//! The leaves (`verify`, `crypto`, `message`, `reply`, `rules`, `dedup`, `xmlutil`, `query`) are
//! pure: they take bytes, strings and values (the time and random bytes included) and know nothing
//! of HTTP, the clock or the OS random source.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dedup;
pub mod http_log;
pub mod log;
pub mod message;
pub mod query;
pub mod reload;
pub mod reply;
pub mod routes;
pub mod rules;
pub mod send;
pub mod verify;
pub mod xmlutil;
