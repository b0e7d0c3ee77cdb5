//! What every command's command line shares (`wxmp` serve, `send`, `tail`, `fake-api`,
//! `menu`/`kf`/`token`): each setting is declared once, as a [`Setting`] in its command's table,
//! and from that table come the parser ([`parse`]), the environment lookup ([`Args::get`]), the
//! range check ([`Args::number`]), the `--help` lines ([`help`]) and the README's configuration
//! table ([`readme_table`]). A mistake is a [`UsageError`] (exit 2), whichever command made it.

use std::fmt;

use lexopt::prelude::*;

use crate::protocol::crypto::AesKey;
use crate::protocol::envelope::SafeMode;

/// A usage or configuration error (exit 2). `main` prints it as `wxmp: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

/// Looks an environment variable up (`std::env::var` in the binary, a table in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The whole numbers a numeric setting accepts, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
    /// Why the bounds are where they are, added to the error (may be empty).
    pub why: &'static str,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.max == u64::MAX {
            write!(f, "at least {}", self.min)
        } else {
            write!(f, "{} to {}", self.min, self.max)
        }
    }
}

/// One setting of one command, everything said about it in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The flag without its dashes: `cache-ttl`.
    pub long: &'static str,
    /// The variable read when the flag is absent: `WXMP_CACHE_TTL`.
    pub env: Option<&'static str>,
    /// The value's name in help (`SECS`); `None`: a switch (`--quiet`, or `--quiet=0`).
    pub value: Option<&'static str>,
    /// The default as the user reads it; empty: none.
    pub default: &'static str,
    /// For numbers: what is accepted.
    pub range: Option<Range>,
    /// One line: what it does.
    pub doc: &'static str,
    /// Its value is a secret: never shown by `Debug`.
    pub secret: bool,
}

impl Setting {
    /// A setting that takes a value named `value` in help.
    pub const fn value(long: &'static str, value: &'static str, doc: &'static str) -> Setting {
        Setting {
            long,
            env: None,
            value: Some(value),
            default: "",
            range: None,
            doc,
            secret: false,
        }
    }

    /// A switch: on when given alone; `--name=0` turns it off against the variable.
    pub const fn switch(long: &'static str, doc: &'static str) -> Setting {
        Setting {
            value: None,
            ..Setting::value(long, "", doc)
        }
    }

    pub const fn env(self, var: &'static str) -> Setting {
        Setting {
            env: Some(var),
            ..self
        }
    }

    pub const fn default(self, default: &'static str) -> Setting {
        Setting { default, ..self }
    }

    pub const fn range(self, min: u64, max: u64, why: &'static str) -> Setting {
        Setting {
            range: Some(Range { min, max, why }),
            ..self
        }
    }

    pub const fn secret(self) -> Setting {
        Setting {
            secret: true,
            ..self
        }
    }

    /// How errors name it: `--port / WXMP_PORT`, or `--repeat`.
    pub fn names(&self) -> String {
        match self.env {
            Some(var) => format!("--{} / {var}", self.long),
            None => format!("--{}", self.long),
        }
    }

    /// `--port PORT`, `--quiet`.
    fn usage(&self) -> String {
        match self.value {
            Some(v) => format!("--{} {v}", self.long),
            None => format!("--{}", self.long),
        }
    }
}

/// A command's command line: its settings, and what else it accepts.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// How its messages send the reader to help: `wxmp send --help`.
    pub help: &'static str,
    pub settings: &'static [Setting],
    /// Free-form named values kept in order for the command to read (a message's `--lat`).
    pub fields: &'static [&'static str],
    /// Whether it takes words (`wxmp send text hello`); otherwise a word is an error.
    pub words: bool,
}

/// What the command line said: values by name, in order, and the words.
#[derive(Clone, Default)]
pub struct Args {
    settings: &'static [Setting],
    fields: &'static [&'static str],
    given: Vec<(&'static str, String)>,
    from_env: Vec<(&'static str, String)>,
    pub words: Vec<String>,
}

/// `Debug` shows what was given, with secrets hidden.
impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |list: &[(&'static str, String)]| -> Vec<String> {
            list.iter()
                .map(|(name, v)| match self.setting(name) {
                    Some(s) if s.secret => format!("{name}=***"),
                    _ => format!("{name}={v:?}"),
                })
                .collect()
        };
        f.debug_struct("Args")
            .field("given", &shown(&self.given))
            .field("from_env", &shown(&self.from_env))
            .field("words", &self.words)
            .finish()
    }
}

/// `Help`: `-h` or `--help` was given.
#[derive(Debug)]
pub enum Parsed {
    Help,
    Args(Args),
}

/// Reads the options after a command's name, as `spec` declares them.
pub fn parse(mut parser: lexopt::Parser, spec: &Spec) -> Result<Parsed, UsageError> {
    let see = spec.help;
    let mut args = Args {
        settings: spec.settings,
        fields: spec.fields,
        ..Args::default()
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long(name) => {
                if let Some(s) = spec.settings.iter().find(|s| s.long == name) {
                    let v = match s.value {
                        Some(_) => value(&mut parser, s.long)?,
                        None => match parser.optional_value() {
                            Some(v) => v.string()?,
                            None => "1".to_owned(),
                        },
                    };
                    args.given.push((s.long, v));
                } else if let Some(f) = spec.fields.iter().find(|f| **f == name) {
                    let v = value(&mut parser, f)?;
                    args.given.push((f, v));
                } else {
                    return Err(UsageError(format!("unknown option --{name} (see {see})")));
                }
            }
            Value(v) if spec.words => args.words.push(v.string()?),
            other => return Err(UsageError(format!("{} (see {see})", other.unexpected()))),
        }
    }
    Ok(Parsed::Args(args))
}

/// The value of `--name`, the option the parser has just read.
pub fn value(parser: &mut lexopt::Parser, name: &str) -> Result<String, UsageError> {
    let v = parser
        .value()
        .map_err(|_| UsageError(format!("--{name} needs a value")))?;
    Ok(v.string()?)
}

impl Args {
    /// Fills in, from `env`, each declared variable whose flag was not given.
    pub fn with_env(mut self, env: Env<'_>) -> Args {
        for s in self.settings {
            if let Some(var) = s.env {
                if !self.given.iter().any(|(n, _)| *n == s.long) {
                    if let Some(v) = env(var) {
                        self.from_env.push((s.long, v));
                    }
                }
            }
        }
        self
    }

    fn setting(&self, name: &str) -> Option<&'static Setting> {
        self.settings.iter().find(|s| s.long == name)
    }

    /// How errors name `name`: `--port / WXMP_PORT`.
    pub fn names(&self, name: &str) -> String {
        self.setting(name)
            .map_or_else(|| format!("--{name}"), Setting::names)
    }

    /// Whether the command declares `name`. Asked only in debug builds, where a misspelt name
    /// in a command's code fails its tests instead of reading as "not given".
    fn declares(&self, name: &str) -> bool {
        self.setting(name).is_some() || self.fields.contains(&name)
    }

    /// The flag's last value, else its variable's; an empty value counts as not given.
    pub fn get(&self, name: &str) -> Option<String> {
        debug_assert!(self.declares(name), "--{name} is not declared");
        let last = |list: &[(&'static str, String)]| {
            list.iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        last(&self.given)
            .or_else(|| last(&self.from_env))
            .filter(|v| !v.is_empty())
    }

    /// Every value the flag was given, in order (a repeatable flag).
    pub fn all(&self, name: &str) -> Vec<String> {
        debug_assert!(self.declares(name), "--{name} is not declared");
        self.given
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A whole number within the declared range, or `default` when not given.
    pub fn number<T>(&self, name: &str, default: T) -> Result<T, UsageError>
    where
        T: TryFrom<u64>,
    {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        let range = self.setting(name).and_then(|s| s.range).unwrap_or(Range {
            min: 0,
            max: u64::MAX,
            why: "",
        });
        let bad = || {
            let mut msg = format!(
                "invalid value {v:?} for {}: expected a whole number",
                self.names(name)
            );
            match (range.min, range.max) {
                (0, u64::MAX) => {}
                (_, u64::MAX) => msg.push_str(&format!(", {range}")),
                _ => msg.push_str(&format!(" from {range}")),
            }
            if !range.why.is_empty() {
                msg.push_str(&format!(" ({})", range.why));
            }
            UsageError(msg)
        };
        let n: u64 = v.trim().parse().map_err(|_| bad())?;
        if n < range.min || n > range.max {
            return Err(bad());
        }
        T::try_from(n).map_err(|_| bad())
    }

    /// A switch: `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`; off when not given.
    pub fn switch(&self, name: &str) -> Result<bool, UsageError> {
        let Some(v) = self.get(name) else {
            return Ok(false);
        };
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(UsageError(format!(
                "invalid value {v:?} for {}: expected 1 or 0 (true/false, yes/no, on/off)",
                self.names(name)
            ))),
        }
    }

    /// One of `choices`, or the first when not given.
    pub fn choice(&self, name: &str, choices: &[&'static str]) -> Result<&'static str, UsageError> {
        match self.get(name) {
            None => Ok(choices[0]),
            Some(v) => choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
                UsageError(format!(
                    "invalid value {v:?} for {}: expected {}",
                    self.names(name),
                    choices.join(" or ")
                ))
            }),
        }
    }
}

/// Safe mode from an EncodingAESKey and an AppID as given: none without a key; a key needs the
/// AppID, because safe mode checks and signs with both.
pub fn safe_mode(
    key: Option<String>,
    app_id: Option<String>,
) -> Result<Option<SafeMode>, UsageError> {
    match (key, app_id) {
        (None, _) => Ok(None),
        (Some(_), None) => Err(UsageError(
            "an AES key needs an AppID: pass --appid or set WXMP_APPID (safe mode checks and signs with both)".into(),
        )),
        (Some(key), Some(app_id)) => Ok(Some(SafeMode {
            key: AesKey::from_encoding_aes_key(key.trim())
                .map_err(|e| UsageError(format!("invalid AES key (--aes-key / WXMP_AES_KEY): {e}")))?,
            app_id,
        })),
    }
}

/// The widest `--help` line that keeps a setting on one line; wider tables put the variable,
/// default and range on a second line, under the doc.
const HELP_WIDTH: usize = 100;

/// The `--help` lines of `settings`: flag, what it does, then its variable, default and range.
pub fn help(settings: &[Setting]) -> String {
    let width = settings.iter().map(|s| s.usage().len()).max().unwrap_or(0);
    let doc_width = settings
        .iter()
        .map(|s| s.doc.chars().count())
        .max()
        .unwrap_or(0);
    let notes: Vec<String> = settings.iter().map(help_notes).collect();
    let widest = notes.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let two_lines = 2 + width + 2 + doc_width + 2 + widest > HELP_WIDTH;
    let mut out = String::new();
    for (s, notes) in settings.iter().zip(&notes) {
        let line = if two_lines {
            format!(
                "  {:<width$}  {}\n  {:<width$}  {notes}",
                s.usage(),
                s.doc,
                ""
            )
        } else {
            let pad = " ".repeat(doc_width - s.doc.chars().count());
            format!("  {:<width$}  {}{pad}  {notes}", s.usage(), s.doc)
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `WXMP_PORT [default: 80; 0 to 65535]`: where else the setting comes from, and what it takes.
fn help_notes(s: &Setting) -> String {
    let mut notes = Vec::new();
    if let Some(var) = s.env {
        notes.push(var.to_owned());
    }
    let mut bracket = Vec::new();
    if !s.default.is_empty() {
        bracket.push(format!("default: {}", s.default));
    }
    if let Some(r) = s.range {
        bracket.push(r.to_string());
    }
    if !bracket.is_empty() {
        notes.push(format!("[{}]", bracket.join("; ")));
    }
    notes.join(" ")
}

/// The README's table of `settings`, one row each, as Markdown.
pub fn readme_table(settings: &[Setting]) -> Vec<String> {
    let mut rows = vec![
        "| flag | environment | default | range | meaning |".to_owned(),
        "| --- | --- | --- | --- | --- |".to_owned(),
    ];
    let code = |s: &str| {
        if s.is_empty() {
            "—".to_owned()
        } else {
            format!("`{s}`")
        }
    };
    for s in settings {
        rows.push(format!(
            "| {} | {} | {} | {} | {} |",
            code(&s.usage()),
            code(s.env.unwrap_or("")),
            code(s.default),
            s.range.map_or("—".to_owned(), |r| r.to_string()),
            s.doc
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Setting] = &[
        Setting::value("port", "PORT", "port")
            .env("WXMP_PORT")
            .default("80")
            .range(0, 65535, ""),
        Setting::value("ttl", "SECS", "ttl").env("WXMP_TTL").range(
            30,
            u64::MAX,
            "WeChat retries for 15 s",
        ),
        Setting::value("secret", "S", "secret")
            .env("WXMP_SECRET")
            .secret(),
        Setting::switch("quiet", "quiet").env("WXMP_QUIET"),
    ];
    const SPEC: Spec = Spec {
        help: "wxmp x --help",
        settings: TABLE,
        fields: &["lat"],
        words: false,
    };

    fn args(a: &[&str], env: &[(&'static str, &'static str)]) -> Result<Args, UsageError> {
        let p = lexopt::Parser::from_args(a.iter().copied());
        let env = env.to_vec();
        match parse(p, &SPEC)? {
            Parsed::Args(a) => Ok(a.with_env(&move |k| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })),
            Parsed::Help => Err(UsageError("help".into())),
        }
    }

    #[test]
    fn a_flag_wins_over_its_variable_and_an_empty_value_is_none() {
        let a = args(
            &["--port", "81"],
            &[("WXMP_PORT", "82"), ("WXMP_TTL", "40")],
        )
        .unwrap();
        assert_eq!(a.number::<u16>("port", 80), Ok(81));
        assert_eq!(a.number::<u64>("ttl", 60), Ok(40));
        let a = args(&["--port="], &[("WXMP_PORT", "82")]).unwrap();
        assert_eq!(a.get("port"), None);
        let a = args(&["--quiet", "--lat", "1.5"], &[]).unwrap();
        assert_eq!(
            (a.switch("quiet"), a.get("lat")),
            (Ok(true), Some("1.5".into()))
        );
        let a = args(&["--quiet=0"], &[("WXMP_QUIET", "yes")]).unwrap();
        assert_eq!(a.switch("quiet"), Ok(false));
    }

    #[test]
    fn mistakes_name_the_flag_the_variable_and_the_range() {
        assert_eq!(
            args(&["--port"], &[]).unwrap_err(),
            UsageError("--port needs a value".into())
        );
        assert_eq!(
            args(&["--bogus"], &[]).unwrap_err(),
            UsageError("unknown option --bogus (see wxmp x --help)".into())
        );
        assert!(args(&["word"], &[])
            .unwrap_err()
            .0
            .contains("wxmp x --help"));
        let a = args(&["--port", "eighty"], &[("WXMP_TTL", "10")]).unwrap();
        assert_eq!(
            a.number::<u16>("port", 80).unwrap_err().0,
            "invalid value \"eighty\" for --port / WXMP_PORT: expected a whole number from 0 to 65535"
        );
        assert_eq!(
            a.number::<u64>("ttl", 60).unwrap_err().0,
            "invalid value \"10\" for --ttl / WXMP_TTL: expected a whole number, at least 30 (WeChat retries for 15 s)"
        );
        let a = args(&[], &[("WXMP_QUIET", "maybe")]).unwrap();
        assert!(a
            .switch("quiet")
            .unwrap_err()
            .0
            .contains("--quiet / WXMP_QUIET"));
    }

    /// A command's code asking for a setting it never declared is a bug its tests catch.
    #[test]
    #[should_panic(expected = "--prot is not declared")]
    fn a_misspelt_name_fails_in_tests() {
        let _ = args(&[], &[]).unwrap().get("prot");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let a = args(&["--secret", "s3cr3t"], &[("WXMP_SECRET", "envs3cr3t")]).unwrap();
        assert_eq!(a.get("secret").as_deref(), Some("s3cr3t"));
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn help_and_the_readme_come_from_the_table() {
        let help = help(TABLE);
        assert_eq!(
            help,
            "  --port PORT  port    WXMP_PORT [default: 80; 0 to 65535]\n\
             \x20 --ttl SECS   ttl     WXMP_TTL [at least 30]\n\
             \x20 --secret S   secret  WXMP_SECRET\n\
             \x20 --quiet      quiet   WXMP_QUIET\n"
        );
        let rows = readme_table(TABLE);
        assert_eq!(
            rows[2],
            "| `--port PORT` | `WXMP_PORT` | `80` | 0 to 65535 | port |"
        );
        assert_eq!(rows[4], "| `--secret S` | `WXMP_SECRET` | — | — | secret |");
    }

    #[test]
    fn an_aes_key_needs_an_appid() {
        assert!(matches!(safe_mode(None, Some("wx1".into())), Ok(None)));
        let Err(e) = safe_mode(Some("k".into()), None) else {
            panic!("a key alone is refused");
        };
        assert!(e.0.contains("--appid"), "{e}");
        let Err(e) = safe_mode(Some("short".into()), Some("wx1".into())) else {
            panic!("a short key is refused");
        };
        assert!(e.0.contains("--aes-key / WXMP_AES_KEY"), "{e}");
    }
}
