//! `wxmp fake-api`: a stand-in for `api.weixin.qq.com` on this machine, for tests and for
//! users without a phone or an IP whitelist.
//!
//! It issues tokens (`stable_token` with WeChat's reuse rules, the classic `token` that
//! invalidates the previous one) for one configured AppID and AppSecret, keeps the menu it is
//! given (validated as WeChat would, with WeChat's errcodes), prints each customer-service
//! message and typing status it receives as one line, counts requests (`GET /fake/stats`), and
//! answers with any errcode on demand (`--fail`), so every error path of a client can be
//! exercised.
//!
//! [`args`] is the command line, [`platform`] the behaviour (pure: the time comes with each
//! request), [`run`] the HTTP edge. It imports only `api` and `protocol` types: it is a
//! simulator of WeChat, like `send`, not part of the server.

pub mod args;
pub mod multipart;
pub mod platform;
pub mod run;
