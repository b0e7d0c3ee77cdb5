//! The server: HTTP in ([`routes`]), the pipeline in the middle ([`pipeline`]), the retry store
//! beside it ([`store`]), built from an [`account::Account`] with an injected clock and random
//! source ([`mod@env`]); [`run`] owns the process's life and [`reload`] watches the rules file.
//!
//! Only `routes` and `run` name rouille. Dependencies point down: `run → routes → pipeline →
//! store`, and everything here → `rules` → `protocol`.

pub mod account;
pub mod env;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod routes;
pub mod run;
pub mod store;
