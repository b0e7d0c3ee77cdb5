//! A subcommand's usage error (exit 2), and reading a flag's value, shared by `wxmp send`,
//! `wxmp tail`, `wxmp fake-api` and `wxmp menu`/`kf`/`token`, so they word a missing value alike.

use std::fmt;

use lexopt::ValueExt;

/// A usage error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

/// The value of `--name`, the option the parser has just read.
pub fn value(parser: &mut lexopt::Parser, name: &str) -> Result<String, UsageError> {
    let v = parser
        .value()
        .map_err(|_| UsageError(format!("--{name} needs a value")))?;
    Ok(v.string()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_value(args: &[&str]) -> Result<String, UsageError> {
        let mut p = lexopt::Parser::from_args(args.iter().copied());
        match p.next()? {
            Some(lexopt::Arg::Long(_)) => value(&mut p, "port"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flag_without_its_value_is_named() {
        assert_eq!(first_value(&["--port", "80"]), Ok("80".to_owned()));
        assert_eq!(first_value(&["--port=81"]), Ok("81".to_owned()));
        assert_eq!(
            first_value(&["--port"]),
            Err(UsageError("--port needs a value".into()))
        );
    }
}
