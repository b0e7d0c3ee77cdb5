//! WeChat's protocol, pure.
pub mod crypto;
pub mod envelope;
pub mod message;
pub mod query;
pub mod reply;
pub mod verify;
pub mod xml;
