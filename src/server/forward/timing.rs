//! WeChat's deadline, in one place.
//!
//! WeChat's passive-reply documentation (消息管理 → 被动回复用户消息,
//! <https://developers.weixin.qq.com/doc/service/en/Message_Management/Passive_user_reply_message.html>):
//! "假如服务器无法保证在五秒内处理并回复，…微信服务器在五秒内收不到响应会断掉连接，并且重新发起请求，
//! 总共重试三次" — the server has 5 seconds; WeChat then drops the connection and sends the same
//! push again, three tries in all. Observed in the wild: the attempts arrive about 5 s apart
//! (see ../shared/wechat-api.md §1.1).

use std::time::Duration;

/// How long WeChat waits for one attempt's answer.
pub const WECHAT_WAIT: Duration = Duration::from_secs(5);

/// How many times WeChat sends a push in all (the first try and two retries).
pub const ATTEMPTS: u32 = 3;

/// An attempt that must answer (the last under `stretch`, the first under `kf`) answers this
/// long before its 5 s are up, to allow for the network and for the answer's own write.
pub const MARGIN: Duration = Duration::from_millis(500);

/// An attempt that must not answer early (the first and second under `stretch`) is held this
/// long past WeChat's 5 s, so WeChat has certainly dropped it before its thread is released:
/// WeChat counts from its own send, a little before the push reaches wxmp.
pub const SLACK: Duration = Duration::from_millis(500);

/// From a push's first arrival, until when its answer can still reach WeChat under `stretch`:
/// the last attempt arrives about `(ATTEMPTS - 1) × WECHAT_WAIT` later and answers by its own
/// `WECHAT_WAIT - MARGIN`. The call to the user's code gets this long, plus `SLACK` for a late
/// retry.
pub const STRETCH_LIMIT: Duration = Duration::from_secs(5 * ATTEMPTS as u64);
