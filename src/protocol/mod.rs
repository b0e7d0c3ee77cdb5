//! WeChat's protocol, pure: signatures ([`verify`]), the query string ([`query`]), the safe XML
//! edge ([`xml`]), AES ([`crypto`]) and the envelope around it ([`envelope`]), pushes
//! ([`message`]), passive replies ([`reply`]), and both in Cloud Hosting's JSON ([`json`]). Nothing here imports the rest of the crate.

pub mod crypto;
pub mod envelope;
pub mod json;
pub mod message;
pub mod query;
pub mod reply;
pub mod verify;
pub mod xml;
