//! The server.
pub mod pipeline;
pub mod reload;
pub mod routes;
pub mod store;
