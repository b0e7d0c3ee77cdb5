//! The access_token on Redis ([`RedisTokens`]), for the instances sharing one `--store`: one
//! token per AppID that every instance reads, one refresher at a time, and one refresh when
//! several instances see the same rejection (the protocol is [`crate::api::token::Tokens`]'s;
//! this is its storage).
//!
//! Keys, under `--store-prefix`:
//! - `token:APPID`: the token as JSON (with its API base, so a fake's token is never handed to
//!   WeChat), expiring [`KEY_MARGIN`] before WeChat's expiry, so no instance reads a token
//!   WeChat is about to refuse;
//! - `token:APPID:lock`: the refresher's lock (`SET NX PX`), lapsing after the API timeout and
//!   a second if its holder dies mid-fetch.
//!
//! A write is announced on the store's channel, waking the instances waiting for it. When
//! Redis fails, the instance fetches and caches its own token (one line per outage, one when
//! sharing resumes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::token::{AccessToken, Held, SharedTokens, Unavailable};
use crate::api::TokenEndpoint;
use crate::log::Log;
use crate::server::shared::Shared;

/// The Redis copy expires this long before WeChat's expiry (or a quarter of a short-lived
/// token's life): instances refresh 5 minutes ahead anyway, and a copy that outlived the token
/// would be handed out and refused.
pub const KEY_MARGIN: u64 = 60;

/// Releases the lock only if it is still ours (it may have lapsed and been taken by another).
pub(crate) const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The token as Redis keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    fetched_at: u64,
    expires_at: u64,
    endpoint: String,
    api_base: String,
}

/// One AppID's token on the shared Redis.
pub struct RedisTokens {
    shared: Arc<Shared>,
    app_id: String,
    api_base: String,
    key: String,
    lock_key: String,
    /// This holder's lock value, so it releases only its own lock.
    me: String,
    /// How long the lock lives: a fetch's limit and a second.
    lease: Duration,
    /// Whether this holder is doing without Redis (logged once per outage).
    alone: AtomicBool,
    log: Log,
}

impl RedisTokens {
    /// The token of `app_id` (fetched from `api_base` with requests bounded by `timeout`).
    pub fn new(
        shared: Arc<Shared>,
        app_id: &str,
        api_base: &str,
        timeout: Duration,
        log: Log,
    ) -> RedisTokens {
        let mut id = [0u8; 8];
        let _ = getrandom::getrandom(&mut id);
        let key = format!("{}token:{app_id}", shared.prefix());
        RedisTokens {
            lock_key: format!("{key}:lock"),
            key,
            me: format!("{}:{}", shared.instance(), hex::encode(id)),
            shared,
            app_id: app_id.to_owned(),
            api_base: api_base.to_owned(),
            lease: timeout + Duration::from_secs(1),
            alone: AtomicBool::new(false),
            log,
        }
    }

    /// The Redis key of the token.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Notes that Redis answered (sharing resumes) or not (this instance fetches its own).
    fn outcome<T, E>(&self, r: Result<T, E>) -> Result<T, Unavailable> {
        match r {
            Ok(v) => {
                if self.alone.swap(false, Ordering::Relaxed) {
                    self.log.info(&format!(
                        "token: the access_token of {} is shared through the store again",
                        self.app_id
                    ));
                }
                Ok(v)
            }
            Err(_) => {
                if !self.alone.swap(true, Ordering::Relaxed) {
                    self.log.warn(&format!(
                        "token: the store is unavailable; this instance fetches and caches the access_token of {} itself until it answers (instances may then each fetch one)",
                        self.app_id
                    ));
                }
                Err(Unavailable)
            }
        }
    }
}

/// Seconds the Redis copy of `held` may live from `now`: until [`KEY_MARGIN`] (or a quarter
/// of its life) before it expires; 0: not worth storing.
pub fn key_ttl(held: &Held, now: u64) -> u64 {
    let life = held.expires_at.saturating_sub(held.fetched_at);
    let until = held.expires_at.saturating_sub(KEY_MARGIN.min(life / 4));
    until.saturating_sub(now)
}

impl SharedTokens for RedisTokens {
    fn read(&self) -> Result<Option<Held>, Unavailable> {
        let got = self
            .shared
            .run(|c| redis::cmd("GET").arg(&self.key).query::<Option<Vec<u8>>>(c));
        let bytes = self.outcome(got)?;
        let Some(stored) = bytes.and_then(|b| serde_json::from_slice::<Stored>(&b).ok()) else {
            return Ok(None);
        };
        if stored.api_base != self.api_base {
            return Ok(None);
        }
        Ok(Some(Held {
            token: AccessToken::new(stored.access_token),
            fetched_at: stored.fetched_at,
            expires_at: stored.expires_at,
            endpoint: match stored.endpoint.as_str() {
                "classic" => TokenEndpoint::Classic,
                _ => TokenEndpoint::Stable,
            },
            api_base: stored.api_base,
        }))
    }

    fn lock(&self) -> Result<bool, Unavailable> {
        let got = self.shared.run(|c| {
            redis::cmd("SET")
                .arg(&self.lock_key)
                .arg(&self.me)
                .arg("NX")
                .arg("PX")
                .arg(self.lease.as_millis() as u64)
                .query::<Option<String>>(c)
        });
        Ok(self.outcome(got)?.is_some())
    }

    fn unlock(&self) {
        let _ = self.shared.run(|c| {
            redis::cmd("EVAL")
                .arg(UNLOCK)
                .arg(1)
                .arg(&self.lock_key)
                .arg(&self.me)
                .query::<i64>(c)
        });
    }

    fn write(&self, held: &Held, now: u64) -> Result<(), Unavailable> {
        let ttl = key_ttl(held, now);
        if ttl == 0 {
            return Ok(());
        }
        let value = serde_json::to_vec(&Stored {
            access_token: held.token.expose().to_owned(),
            fetched_at: held.fetched_at,
            expires_at: held.expires_at,
            endpoint: held.endpoint.name().to_owned(),
            api_base: held.api_base.clone(),
        })
        .unwrap_or_default();
        let got = self.shared.run(|c| {
            redis::pipe()
                .cmd("SET")
                .arg(&self.key)
                .arg(&value)
                .arg("EX")
                .arg(ttl)
                .ignore()
                .cmd("PUBLISH")
                .arg(self.shared.channel())
                .arg(&self.key)
                .ignore()
                .query::<()>(c)
        });
        self.outcome(got)
    }

    fn events(&self) -> u64 {
        self.shared.events()
    }

    fn wait(&self, seen: u64, timeout: Duration) {
        self.shared.wait_event(seen, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(fetched_at: u64, life: u64) -> Held {
        Held {
            token: AccessToken::new("t"),
            fetched_at,
            expires_at: fetched_at + life,
            endpoint: TokenEndpoint::Stable,
            api_base: "https://api.weixin.qq.com".into(),
        }
    }

    #[test]
    fn the_redis_copy_expires_a_margin_before_wechat_does() {
        // A two-hour token: a minute before its expiry.
        assert_eq!(key_ttl(&held(1000, 7200), 1000), 7140);
        assert_eq!(key_ttl(&held(1000, 7200), 8000), 140);
        // A short-lived one: a quarter of its life before.
        assert_eq!(key_ttl(&held(1000, 40), 1000), 30);
        // Past that point it is not stored at all.
        assert_eq!(key_ttl(&held(1000, 7200), 8140), 0);
    }
}
