//! WeChat's protocol, pure: signatures ([`verify`]), the query string ([`query`]), the safe XML
//! edge ([`xml`]), AES ([`crypto`]) and the envelope around it ([`envelope`]), pushes
//! ([`message`]) and passive replies ([`reply`]). Nothing here imports the rest of the crate.

pub mod crypto;
pub mod envelope;
pub mod message;
pub mod query;
pub mod reply;
pub mod verify;
pub mod xml;
