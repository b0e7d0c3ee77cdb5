//! The server: HTTP in ([`routes`]), the pipeline in the middle ([`pipeline`]), the retry store
//! beside it ([`store`]; on a Redis shared by several instances, [`redis_store`] over [`shared`]), built from an [`account::Account`] with an injected clock and random
//! source ([`mod@env`]); [`build`] wires it from a [`crate::config::Config`] and [`Server::run`]
//! owns the process's life ([`run`]), while [`reload`] watches the rules file.
//! Seeing what it does: one [`access`] record per request (logged and counted in [`metrics`]),
//! and the live view's buffer ([`recent`], fed by the pipeline's content [`sample`]s), both
//! served by [`monitor`] on the metrics listener. The API [`gateway`] (`--api-proxy`) is a third
//! listener, for the owner's code to call WeChat with the server's token.
//!
//! Only `routes`, `run`, `monitor` and `gateway` name rouille. Dependencies point down: `run → routes →
//! access, recent → pipeline → store, sample`, and everything here → `rules` → `protocol`.

pub mod access;
pub mod account;
pub mod announce;
pub mod env;
pub mod forward;
pub mod gate;
pub mod gateway;
pub mod http_log;
pub mod listener;
pub mod live;
pub mod media;
pub mod metrics;
pub mod monitor;
pub mod pipeline;
pub mod recent;
pub mod redis_store;
pub mod redis_token;
pub mod reload;
pub mod replay;
pub mod router;
pub mod routes;
pub mod run;
pub mod sample;
pub mod shared;
pub mod store;

pub use run::{build, BuildError, ServeError, Server};
