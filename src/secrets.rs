//! wxmp's secrets in the process environment: read once at start, then gone from it.
//!
//! The token, the EncodingAESKey, the AppSecret and the forward secret may come from
//! `WXMP_TOKEN` etc., or from a file named by `WXMP_TOKEN_FILE` etc. (Docker and Kubernetes
//! secrets are files). [`Environment::take`] reads them all before any thread exists, removes
//! the variables, and answers later look-ups from its own copy.
//!
//! Removing a variable changes the environment that later programs inherit, not what
//! `/proc/PID/environ` shows: that is the block the process was started with, readable by every
//! process of the same user, including the programs `reply.command` runs. So a server that found
//! a secret in its environment starts itself again ([`Environment::restart_clean`]), on the same
//! PID with the same arguments, with the secrets removed from the environment and handed over on
//! a pipe as its stdin (which the server never reads otherwise).
//!
//! The same holds for the variables an accounts file names in its `<key>_env` keys: the server
//! reads them at start ([`Environment::take`]'s `named`), removes them and hands them over the
//! same way, and its reloads read the copy ([`crate::config::accounts::EnvVars`]).
//!
//! Flags are not covered: `--token` and the like are in `/proc/PID/cmdline`, which `ps` shows to
//! every local user. The README says so and recommends the variables or the files.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;

/// The variables that hold secrets: those of the settings marked secret in
/// [`crate::config::SERVE`] (`WXMP_TOKEN`, `WXMP_AES_KEY`, `WXMP_FORWARD_SECRET`,
/// `WXMP_SECRET`). Each also has a `_FILE` form.
pub fn secret_vars() -> impl Iterator<Item = &'static str> {
    crate::config::SERVE
        .iter()
        .filter(|s| s.secret)
        .filter_map(|s| s.env)
}

/// Set on the restarted server: its secrets are on stdin.
const HANDED_OVER: &str = "WXMP_SECRETS_ON_STDIN";
/// No secret is longer (an AppSecret is 32 characters); a bigger file is not a secret.
const MAX_SECRET: u64 = 4096;

/// Why the secrets could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError(pub String);

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SecretError {}

/// The secrets taken from the environment, and the environment for everything else.
#[derive(Default)]
pub struct Environment {
    secrets: Vec<(String, String)>,
    /// A secret was a variable's value, so it is in `/proc/PID/environ`.
    in_environ: bool,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.secrets.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Environment")
            .field("secrets", &names)
            .finish_non_exhaustive()
    }
}

impl Environment {
    /// Reads the secrets (from a handed-over stdin, the variables or their files) and removes
    /// every one of those variables from the process environment, and so the variables in
    /// `named` (an accounts file's `<key>_env`). Call it before any thread is started: changing
    /// the environment is not thread-safe.
    pub fn take(named: &[String]) -> Result<Environment, SecretError> {
        let mut env = Environment::default();
        if std::env::var_os(HANDED_OVER).is_some() {
            std::env::remove_var(HANDED_OVER);
            let mut raw = Vec::new();
            let count = secret_vars().count() + named.len();
            std::io::stdin()
                .take(MAX_SECRET * count as u64 * 2)
                .read_to_end(&mut raw)
                .map_err(|e| SecretError(format!("cannot read the handed-over secrets: {e}")))?;
            env.secrets = decode(&raw, named);
        }
        for var in named.iter().filter(|v| valid_name(v)) {
            let Some(value) = std::env::var_os(var) else {
                continue;
            };
            std::env::remove_var(var);
            env.in_environ = true;
            env.secrets.retain(|(n, _)| n != var);
            env.secrets
                .push((var.clone(), value.to_string_lossy().into_owned()));
        }
        for var in secret_vars() {
            let file_var = format!("{var}_FILE");
            let direct = std::env::var(var).ok().filter(|v| !v.is_empty());
            let file = std::env::var_os(&file_var).filter(|v| !v.is_empty());
            std::env::remove_var(var);
            std::env::remove_var(&file_var);
            let value = match (direct, file) {
                (Some(_), Some(_)) => {
                    return Err(SecretError(format!(
                        "both {var} and {file_var} are set: use one"
                    )))
                }
                (Some(v), None) => {
                    env.in_environ = true;
                    v
                }
                (None, Some(path)) => read_file(&file_var, Path::new(&path))?,
                (None, None) => continue,
            };
            env.secrets.retain(|(n, _)| n != var);
            env.secrets.push((var.to_owned(), value));
        }
        Ok(env)
    }

    /// A variable's value: a secret from the copy, anything else from the environment.
    pub fn var(&self, name: &str) -> Option<String> {
        match self.secrets.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => Some(v.clone()),
            None if secret_vars().any(|v| v == name) => None,
            None => std::env::var(name).ok(),
        }
    }

    /// When a secret came from a variable, starts this program again in place (same PID, same
    /// arguments), without the secrets in its environment, handing them over on stdin. Returns
    /// only when there is nothing to do, or when the restart failed (the reason: the server then
    /// runs as it is, with the secrets still in `/proc/PID/environ`).
    pub fn restart_clean(&self) -> Result<(), String> {
        if !self.in_environ {
            return Ok(());
        }
        let (reader, mut writer) = std::io::pipe().map_err(|e| e.to_string())?;
        // A pipe holds 64 KiB; the secrets are at most a few KiB, so this cannot block.
        writer
            .write_all(&encode(&self.secrets))
            .map_err(|e| e.to_string())?;
        drop(writer);
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| OsString::from("wxmp"));
        // The executable's own path, not /proc/self/exe, so the process keeps its name in
        // `ps` and `top`.
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let err = std::process::Command::new(exe)
            .arg0(arg0)
            .args(args)
            .env(HANDED_OVER, "1")
            .stdin(reader)
            .exec();
        Err(err.to_string())
    }
}

/// A secret from a file: its first line, trimmed (files made with `echo` end in a newline).
fn read_file(var: &str, path: &Path) -> Result<String, SecretError> {
    let mut raw = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET + 1).read_to_string(&mut raw))
        .map_err(|e| SecretError(format!("cannot read {var} {}: {e}", path.display())))?;
    if raw.len() as u64 > MAX_SECRET {
        return Err(SecretError(format!(
            "{var} {} is larger than {MAX_SECRET} bytes: not a secret",
            path.display()
        )));
    }
    let value = raw.lines().next().unwrap_or("").trim().to_owned();
    if value.is_empty() {
        return Err(SecretError(format!("{var} {} is empty", path.display())));
    }
    Ok(value)
}

/// `NAME\0VALUE\0` for each secret (values never hold NUL: they come from the environment or
/// a line of text).
fn encode(secrets: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in secrets {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// The handed-over secrets whose names are wxmp's own or in `named`.
fn decode(raw: &[u8], named: &[String]) -> Vec<(String, String)> {
    let mut parts = raw.split(|&b| b == 0);
    let mut out = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        let known = secret_vars().any(|v| v.as_bytes() == name)
            || named.iter().any(|v| v.as_bytes() == name);
        if let (true, Ok(name), Ok(value)) =
            (known, std::str::from_utf8(name), std::str::from_utf8(value))
        {
            out.push((name.to_owned(), value.to_owned()));
        }
    }
    out
}

/// A name `remove_var` accepts: not empty, no `=` and no NUL (it panics on those).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['=', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_setting_has_its_variable_taken() {
        let vars: Vec<&str> = secret_vars().collect();
        for v in [
            "WXMP_TOKEN",
            "WXMP_AES_KEY",
            "WXMP_SECRET",
            "WXMP_FORWARD_SECRET",
        ] {
            assert!(vars.contains(&v), "{vars:?}");
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_handover_round_trips_and_ignores_unknown_names() {
        let secrets = pairs(&[("WXMP_TOKEN", "tok123"), ("WXMP_SECRET", "s=2")]);
        assert_eq!(decode(&encode(&secrets), &[]), secrets);
        assert_eq!(
            decode(b"PATH\0/bin\0WXMP_TOKEN\0t\0", &[]),
            pairs(&[("WXMP_TOKEN", "t")])
        );
        assert_eq!(decode(b"WXMP_TOKEN", &[]), vec![]);
        // An accounts file's `_env` variables are handed over too, and only those it names.
        let named = ["SHOP_TOKEN".to_owned()];
        let both = pairs(&[("SHOP_TOKEN", "shoptok1"), ("OTHER", "x")]);
        assert_eq!(
            decode(&encode(&both), &named),
            pairs(&[("SHOP_TOKEN", "shoptok1")])
        );
    }

    #[test]
    fn names_remove_var_would_panic_on_are_skipped() {
        assert!(valid_name("SHOP_TOKEN"));
        for bad in ["", "A=B", "A\0B"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_file_gives_its_first_line_trimmed() {
        let dir = std::env::temp_dir().join(format!("wxmp-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "tok123\n").unwrap();
        assert_eq!(read_file("WXMP_TOKEN_FILE", &file).unwrap(), "tok123");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_file("WXMP_TOKEN_FILE", &file)
            .unwrap_err()
            .0
            .contains("is empty"));
        std::fs::write(&file, vec![b'a'; 5000]).unwrap();
        assert!(read_file("WXMP_TOKEN_FILE", &file)
            .unwrap_err()
            .0
            .contains("larger than"));
        let e = read_file("WXMP_TOKEN_FILE", &dir.join("missing")).unwrap_err();
        assert!(e.0.starts_with("cannot read WXMP_TOKEN_FILE "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secrets_are_answered_from_the_copy_and_never_shown() {
        let env = Environment {
            secrets: pairs(&[("WXMP_TOKEN", "tok123")]),
            in_environ: false,
        };
        assert_eq!(env.var("WXMP_TOKEN").as_deref(), Some("tok123"));
        assert_eq!(env.var("WXMP_SECRET"), None);
        assert!(!format!("{env:?}").contains("tok123"));
    }
}
