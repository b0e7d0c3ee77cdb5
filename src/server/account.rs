//! One Official Account as the server sees it: where WeChat posts, how pushes are signed and
//! sealed, and the rules that answer them. The pipeline is built from an `Account`; with an
//! accounts file, each account has its own pipeline ([`crate::server::router`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::AccountConfig;
use crate::protocol::envelope::SafeMode;
use crate::protocol::verify::Token;
use crate::rules::{RuleSet, SharedRules};

pub use crate::config::DEFAULT_PATH;

#[derive(Debug)]
pub struct Account {
    /// Its name in the accounts file; empty for the one account of the flags. The retry
    /// store's keys carry it, so two accounts never share an answer.
    pub name: Arc<str>,
    /// The message URL path configured in the WeChat console, e.g. `/weixin`.
    pub path: String,
    pub token: Token,
    /// Safe and compatible mode: the EncodingAESKey and AppID.
    pub safe: Option<SafeMode>,
    /// The rules in force; a reload swaps them (the watcher holds them too).
    pub rules: Arc<SharedRules>,
    /// The file the rules came from, when not the built-in ones (watched for changes).
    pub rules_file: Option<PathBuf>,
}

impl Account {
    /// An account at `/weixin` with the built-in rules and no safe mode.
    pub fn new(token: Token) -> Account {
        Account {
            name: Arc::from(""),
            path: DEFAULT_PATH.to_owned(),
            token,
            safe: None,
            rules: Arc::new(SharedRules::new(RuleSet::builtin())),
            rules_file: None,
        }
    }

    /// The account `config` describes, answering with `rules` (loaded from `config.rules`).
    pub fn configured(config: AccountConfig, rules: RuleSet) -> Account {
        Account::sharing("", config, Arc::new(SharedRules::new(rules)))
    }

    /// The account `name` that `config` describes, answering with `rules`, which other
    /// accounts naming the same rules file share (one compiled form, one watcher).
    pub fn sharing(name: &str, config: AccountConfig, rules: Arc<SharedRules>) -> Account {
        Account {
            name: Arc::from(name),
            path: config.path,
            token: config.token,
            safe: config.safe,
            rules,
            rules_file: config.rules,
        }
    }

    pub fn with_safe(mut self, safe: Option<SafeMode>) -> Account {
        self.safe = safe;
        self
    }

    pub fn with_rules(mut self, rules: RuleSet) -> Account {
        self.rules = Arc::new(SharedRules::new(rules));
        self
    }

    pub fn with_path(mut self, path: &str) -> Account {
        self.path = path.to_owned();
        self
    }
}
