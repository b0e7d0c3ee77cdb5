//! wxmp's integration tests: one binary, a module per topic. Most call the handler directly
//! through `rouille::Request::fake_http` (`helpers`); the rest run the real `wxmp` executable
//! through the shared test kit (`kit`).

mod accounts;
mod api;
mod architecture;
mod binary;
mod command;
mod docs;
mod fixtures;
mod forward;
mod gateway;
mod gateway_accounts;
mod helpers;
mod hostile;
mod http;
mod interop;
mod kit;
mod log_queue;
mod media_rules;
mod observability;
mod pool;
mod redis;
mod redis_api;
mod regressions;
mod replay;
mod rules;
mod safe_mode;
mod send;
mod slow;
