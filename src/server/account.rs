//! One Official Account as the server sees it: where WeChat posts, how pushes are signed and
//! sealed, and the rules that answer them. The pipeline is built from an `Account`, so several
//! accounts can later share one process.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::AccountConfig;
use crate::protocol::envelope::SafeMode;
use crate::protocol::verify::Token;
use crate::rules::{RuleSet, SharedRules};

pub use crate::config::DEFAULT_PATH;

#[derive(Debug)]
pub struct Account {
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
            path: DEFAULT_PATH.to_owned(),
            token,
            safe: None,
            rules: Arc::new(SharedRules::new(RuleSet::builtin())),
            rules_file: None,
        }
    }

    /// The account `config` describes, answering with `rules` (loaded from `config.rules`).
    pub fn configured(config: AccountConfig, rules: RuleSet) -> Account {
        Account {
            path: config.path,
            token: config.token,
            safe: config.safe,
            rules: Arc::new(SharedRules::new(rules)),
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
