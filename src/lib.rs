//! wxmp: a WeChat Official Account (微信公众号) message server.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod log;
pub mod protocol;
pub mod rules;
pub mod send;
pub mod server;
