//! One Official Account as the server sees it: where WeChat posts, how pushes are signed and
//! sealed, and the rules that answer them. The pipeline is built from an `Account`, so several
//! accounts can later share one process.

use std::path::PathBuf;

use crate::protocol::envelope::SafeMode;
use crate::protocol::verify::Token;
use crate::rules::{RuleSet, SharedRules};

/// The path WeChat's samples and most tutorials use.
pub const DEFAULT_PATH: &str = "/weixin";

#[derive(Debug)]
pub struct Account {
    /// The message URL path configured in the WeChat console, e.g. `/weixin`.
    pub path: String,
    pub token: Token,
    /// Safe and compatible mode: the EncodingAESKey and AppID.
    pub safe: Option<SafeMode>,
    /// The rules in force; a reload swaps them.
    pub rules: SharedRules,
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
            rules: SharedRules::new(RuleSet::builtin()),
            rules_file: None,
        }
    }

    pub fn with_safe(mut self, safe: Option<SafeMode>) -> Account {
        self.safe = safe;
        self
    }

    pub fn with_rules(mut self, rules: RuleSet) -> Account {
        self.rules = SharedRules::new(rules);
        self
    }

    pub fn with_path(mut self, path: &str) -> Account {
        self.path = path.to_owned();
        self
    }
}
