//! `--config FILE` (TOML) and `--print-config`: every setting of [`Cli`] as a config key.
//!
//! The keys are not listed anywhere: they are the ids of the `clap` arguments (the field names,
//! e.g. `idle_timeout`, `allowed_roots`, `claude_hooks`), so a flag added to [`Cli`] is a
//! config key at once. A file value is applied by handing it to clap as if it had been typed
//! (`--flag=value`, once per array element), but only for a setting that neither the command
//! line nor its environment variable set: precedence is flag > env > file > default, and every
//! value goes through the flag's own parser (types, enums, conflicts). A key that names no
//! setting is an error naming it.
//!
//! `--print-config` prints the effective configuration as TOML (a file `--config` accepts),
//! with secrets redacted: the value of every argument that hides its environment value
//! (`hide_env_values`: the token, the database URL's password, …) and the values of
//! `claude_env` entries whose name looks secret.

use std::any::TypeId;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::Cli;

/// Arguments that are not settings: they never come from (or go to) a config file.
const NOT_SETTINGS: &[&str] = &["help", "version", "config", "print_config"];

/// What `--print-config` prints instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that make a `claude_env` variable's value a secret.
const SECRET_WORDS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"];

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags (or `--help` / `--version`): clap's own error, printed by [`clap::Error::exit`].
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// The config file cannot be read or is not TOML.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The parsed flags and where each value came from.
#[derive(Debug)]
pub struct Loaded {
    /// The settings.
    pub cli: Cli,
    matches: ArgMatches,
    file: Option<PathBuf>,
}

/// Parses the process's arguments, environment and `--config` file.
pub fn load() -> Result<Loaded, ConfigError> {
    load_from(std::env::args_os())
}

/// Parses `args` (the first is the program name), the environment and the `--config` file.
pub fn load_from<I, T>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = Cli::command();
    let first = command.clone().try_get_matches_from(&args)?;
    let Some(path) = first.get_one::<PathBuf>("config").cloned() else {
        let cli = Cli::from_arg_matches(&first)?;
        return Ok(Loaded {
            cli,
            matches: first,
            file: None,
        });
    };
    let file_error = |reason: String| ConfigError::File {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().replace('\n', "\n  ")))?;
    // The file's values, as flags, for the settings neither a flag nor the environment set.
    let mut injected: Vec<OsString> = Vec::new();
    let mut from_file: Vec<(String, String)> = Vec::new();
    for (key, value) in &table {
        let arg = settings(&command)
            .find(|arg| arg.get_id().as_str() == key)
            .ok_or_else(|| file_error(unknown_key(&command, key)))?;
        let source = first.value_source(key);
        if !matches!(source, None | Some(ValueSource::DefaultValue)) {
            continue;
        }
        let long = arg
            .get_long()
            .ok_or_else(|| file_error(format!("`{key}` cannot be set from a file")))?;
        from_file.push((format!("--{long}"), key.clone()));
        for token in
            flag_tokens(arg, long, value).map_err(|e| file_error(format!("`{key}`: {e}")))?
        {
            injected.push(token.into());
        }
    }
    let mut all = Vec::with_capacity(args.len() + injected.len());
    all.extend(args.first().cloned());
    all.extend(injected);
    all.extend(args.iter().skip(1).cloned());
    let matches = command.try_get_matches_from(&all).map_err(|err| {
        // Name the key when clap refused a value that came from the file.
        let rendered = err.to_string();
        match from_file.iter().find(|(flag, _)| {
            rendered.contains(&format!("{flag} "))
                || rendered.contains(&format!("{flag}="))
                || rendered.contains(&format!("'{flag}'"))
        }) {
            Some((_, key)) => file_error(format!(
                "`{key}`: {}",
                rendered.trim_start_matches("error: ").trim_end()
            )),
            None => ConfigError::Flags(err),
        }
    })?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Loaded {
        cli,
        matches,
        file: Some(path),
    })
}

/// Every argument that is a setting (all but help, version, `--config`, `--print-config`).
fn settings(command: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    command
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()))
}

/// Every config key, in `--help` order.
pub fn keys() -> Vec<String> {
    settings(&Cli::command())
        .map(|arg| arg.get_id().to_string())
        .collect()
}

fn unknown_key(command: &clap::Command, key: &str) -> String {
    let snake = key.replace('-', "_");
    let hint = settings(command)
        .find(|arg| {
            let id = arg.get_id().as_str();
            id == snake || arg.get_long().is_some_and(|long| long == key)
        })
        .map(|arg| format!(" (did you mean `{}`?)", arg.get_id()))
        .unwrap_or_default();
    format!("unknown key `{key}`{hint}; keys are the flag names with `_` (see --print-config)")
}

/// Whether the argument takes a list (repeatable, or split on a delimiter).
fn is_list(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some()
}

fn is_switch(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

/// The command-line tokens that set `arg` to `value`.
fn flag_tokens(arg: &clap::Arg, long: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    if is_switch(arg) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{long}")]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!(
                "expected true or false, found {}",
                other.type_str()
            )),
        };
    }
    let scalar = |value: &toml::Value| -> Result<String, String> {
        match value {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!(
                "expected a string, number or boolean, found {}",
                other.type_str()
            )),
        }
    };
    match value {
        toml::Value::Array(items) if is_list(arg) => items
            .iter()
            .map(|item| scalar(item).map(|v| format!("--{long}={v}")))
            .collect(),
        toml::Value::Array(_) => Err("expected one value, found an array".into()),
        other => Ok(vec![format!("--{long}={}", scalar(other)?)]),
    }
}

impl Loaded {
    /// The config file, when one was given.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The effective configuration as TOML, secrets redacted: every setting, unset ones as
    /// comments.
    pub fn effective_toml(&self) -> String {
        let command = Cli::command();
        let mut out = String::from(
            "# agent-webkit-server: effective configuration (flag > environment > file > default)\n",
        );
        if let Some(file) = &self.file {
            out.push_str(&format!("# config file: {}\n", file.display()));
        }
        let mut heading = None;
        for arg in settings(&command) {
            if arg.get_help_heading() != heading {
                heading = arg.get_help_heading();
                out.push_str(&format!("\n# {}\n", heading.unwrap_or("Server")));
            }
            let key = arg.get_id().as_str();
            let source = match self.matches.value_source(key) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "environment",
                Some(ValueSource::DefaultValue) => "default",
                _ => "",
            };
            match self.value(arg) {
                Some(value) => out.push_str(&format!("{key} = {value}  # {source}\n")),
                None => out.push_str(&format!("# {key} =  (not set)\n")),
            }
        }
        out
    }

    /// The setting's value as TOML (`None` when unset), secrets redacted.
    fn value(&self, arg: &clap::Arg) -> Option<toml::Value> {
        let key = arg.get_id().as_str();
        if is_switch(arg) {
            return Some(toml::Value::Boolean(
                self.matches.get_one::<bool>(key).copied().unwrap_or(false),
            ));
        }
        let raw: Vec<String> = self
            .matches
            .get_raw(key)?
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let secret = arg.is_hide_env_values_set();
        let typed = |raw: &str| -> toml::Value {
            if secret {
                return toml::Value::String(redact(raw));
            }
            if key == "claude_env" {
                return toml::Value::String(redact_env_entry(raw));
            }
            let ty = arg.get_value_parser().type_id();
            let integer = [
                TypeId::of::<u16>(),
                TypeId::of::<u32>(),
                TypeId::of::<u64>(),
                TypeId::of::<usize>(),
                TypeId::of::<i64>(),
            ]
            .iter()
            .any(|t| ty == *t);
            if integer {
                if let Ok(n) = raw.parse::<i64>() {
                    return toml::Value::Integer(n);
                }
            } else if ty == TypeId::of::<f64>() {
                if let Ok(f) = raw.parse::<f64>() {
                    return toml::Value::Float(f);
                }
            }
            toml::Value::String(raw.to_owned())
        };
        if is_list(arg) {
            Some(toml::Value::Array(raw.iter().map(|r| typed(r)).collect()))
        } else {
            raw.first().map(|r| typed(r))
        }
    }
}

/// A secret with what is safe to show kept: a URL's (or `key=value` DSN's) password is
/// replaced, anything else entirely.
pub fn redact(value: &str) -> String {
    // scheme://user:password@host/…
    if let Some((scheme, rest)) = value.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            return match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:{REDACTED}{}", &rest[at..]),
                None => value.to_owned(),
            };
        }
        return value.to_owned();
    }
    // host=… password=… (libpq key/value form)
    if value.contains('=') && value.contains(' ') {
        return value
            .split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                    format!("{k}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    REDACTED.to_owned()
}

/// `KEY=VALUE` with VALUE redacted when KEY looks secret.
fn redact_env_entry(entry: &str) -> String {
    match entry.split_once('=') {
        Some((k, _))
            if SECRET_WORDS
                .iter()
                .any(|w| k.to_ascii_uppercase().contains(w)) =>
        {
            format!("{k}={REDACTED}")
        }
        _ => entry.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_setting_is_a_key_and_printed() {
        let loaded = load_from(["agent-webkit-server"]).unwrap();
        let printed = loaded.effective_toml();
        let keys = keys();
        assert!(keys.len() > 40, "{keys:?}");
        for key in &keys {
            assert!(
                printed.contains(&format!("\n{key} = "))
                    || printed.contains(&format!("\n# {key} = ")),
                "{key} missing from --print-config:\n{printed}"
            );
        }
    }

    /// A flag holding a secret must hide its environment value, which is also what redacts it
    /// from `--print-config`.
    #[test]
    fn secret_looking_settings_are_redacted() {
        let command = Cli::command();
        for arg in settings(&command) {
            let id = arg.get_id().as_str();
            let secret = ["token", "secret", "password", "database_url", "api_key"]
                .iter()
                .any(|w| id.contains(w));
            if secret {
                assert!(
                    arg.is_hide_env_values_set(),
                    "`{id}` looks like a secret: give it `hide_env_values = true` (redacted by --print-config)"
                );
            }
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("s3cret"), REDACTED);
        assert_eq!(
            redact("postgres://aw:pa:ss@db:5432/aw?sslmode=require"),
            format!("postgres://aw:{REDACTED}@db:5432/aw?sslmode=require")
        );
        assert_eq!(redact("postgres://db/aw"), "postgres://db/aw");
        assert_eq!(
            redact("host=db password=x user=aw"),
            format!("host=db password={REDACTED} user=aw")
        );
        assert_eq!(
            redact_env_entry("ANTHROPIC_API_KEY=sk-1"),
            format!("ANTHROPIC_API_KEY={REDACTED}")
        );
        assert_eq!(redact_env_entry("LANG=C"), "LANG=C");
    }
}
