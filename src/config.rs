//! Where settings come from, lowest first: built-in defaults, an optional TOML
//! file (`--config FILE` or `PARLEY_CONFIG`), `PARLEY_*` environment variables,
//! command-line flags.
//!
//! The file uses each setting's environment name without the prefix, in lower
//! case: `PARLEY_DATABASE_URL` is `database_url`. It is read before the command
//! line is parsed and fills in the environment where the environment is silent,
//! so one parser (clap's) checks every value whatever its source, and every
//! error names the setting and where its value came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, Command, CommandFactory};

use crate::cli::{Cli, ConfigArgs};

const PREFIX: &str = "PARLEY_";

/// What the config file set (environment name to value), for telling where a
/// value came from.
#[derive(Debug, Default)]
pub struct Sources {
    file: Option<PathBuf>,
    from_file: BTreeMap<String, String>,
}

impl Sources {
    /// Where the value of the setting `env` came from, given that it was set
    /// through the environment or the file.
    fn origin(&self, env: &str) -> String {
        match (&self.file, self.from_file.contains_key(env)) {
            (Some(file), true) => format!("`{}` in {}", key_of(env), file.display()),
            _ => format!("{env} in the environment"),
        }
    }
}

/// The file's key for an environment name: `PARLEY_DATABASE_URL` → `database_url`.
fn key_of(env: &str) -> String {
    env.trim_start_matches(PREFIX).to_ascii_lowercase()
}

/// Every `PARLEY_*` setting any subcommand reads, with its long flag.
fn settings(cmd: &Command) -> BTreeMap<String, String> {
    fn walk(cmd: &Command, into: &mut BTreeMap<String, String>) {
        for arg in cmd.get_arguments() {
            if let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) {
                let env = env.to_string_lossy().into_owned();
                if env.starts_with(PREFIX) {
                    into.entry(env).or_insert_with(|| long.to_string());
                }
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, into);
        }
    }
    let mut all = BTreeMap::new();
    walk(cmd, &mut all);
    all
}

/// The file named by `--config FILE` / `--config=FILE` on the command line, or
/// else by `PARLEY_CONFIG`.
fn file_named(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("PARLEY_CONFIG").map(PathBuf::from)
}

/// Reads the config file, if one is named, and returns the settings it gives as
/// environment names and values. Errors name the file, and the key or line.
pub fn read_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

fn parse_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|span| format!("line {}: ", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        format!("{at}{}", e.message())
    })?;
    let known = settings(&Cli::command());
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let env = format!("{PREFIX}{}", key.to_ascii_uppercase().replace('-', "_"));
        if env == "PARLEY_CONFIG" || !known.contains_key(&env) {
            let suggestions: Vec<String> = known
                .keys()
                .map(|k| key_of(k))
                .filter(|k| k.contains(&key.to_ascii_lowercase()) || key.contains(k.as_str()))
                .collect();
            let hint = if suggestions.is_empty() {
                String::new()
            } else {
                format!(" (did you mean {}?)", suggestions.join(", "))
            };
            return Err(format!("unknown setting `{key}`{hint}"));
        }
        out.insert(env, scalar(&key, &value)?);
    }
    Ok(out)
}

/// A setting's value as its environment variable would hold it.
fn scalar(key: &str, value: &toml::Value) -> Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    Err(format!("`{key}`: a list holds plain values only"))
                }
                other => scalar(key, other),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Table(_) => {
            return Err(format!(
                "`{key}` is a table; settings are flat keys (e.g. kafka_brokers = \"...\")"
            ))
        }
    })
}

/// Loads the config file (if any) into the environment, below what the
/// environment already says. Call it before any other thread starts.
pub fn load(args: &[OsString]) -> Result<Sources, String> {
    let Some(file) = file_named(args) else {
        return Ok(Sources::default());
    };
    let mut from_file = read_file(&file)?;
    from_file.retain(|env, _| std::env::var_os(env).is_none());
    for (env, value) in &from_file {
        // Edition 2021, and no other thread runs yet (see `main`).
        std::env::set_var(env, value);
    }
    Ok(Sources {
        file: Some(file),
        from_file,
    })
}

/// Turns a parse error about a setting into a message that names it and where
/// its value came from; other errors (help, unknown flags) pass through.
pub fn explain(err: clap::Error, sources: &Sources) -> Result<String, clap::Error> {
    let cmd = Cli::command();
    let known = settings(&cmd);
    let long_to_env: BTreeMap<&str, &str> = known
        .iter()
        .map(|(env, long)| (long.as_str(), env.as_str()))
        .collect();
    let flag = |raw: &str| -> Option<String> {
        raw.trim_start_matches("--")
            .split([' ', '=', '<'])
            .next()
            .map(str::to_string)
    };
    match err.kind() {
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
                return Err(err);
            };
            let Some(long) = flag(arg) else {
                return Err(err);
            };
            let Some(&env) = long_to_env.get(long.as_str()) else {
                return Err(err);
            };
            let value = match err.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => v.clone(),
                _ => String::new(),
            };
            // A list setting's environment value is split at commas first.
            let from_env = std::env::var_os(env).is_some_and(|v| {
                let v = v.to_string_lossy();
                v == value || v.split(',').any(|part| part.trim() == value)
            });
            let origin = if from_env {
                sources.origin(env)
            } else {
                format!("--{long}")
            };
            let why = match (
                std::error::Error::source(&err),
                err.get(ContextKind::ValidValue),
            ) {
                (Some(source), _) => source.to_string(),
                (None, Some(ContextValue::Strings(valid))) => {
                    format!("expected one of {}", valid.join(", "))
                }
                _ => "not a valid value".to_string(),
            };
            let shown = redact(env, &value);
            Ok(format!(
                "setting {env} has a bad value {shown:?} (from {origin}): {why}"
            ))
        }
        ErrorKind::MissingRequiredArgument => {
            let Some(ContextValue::Strings(args)) = err.get(ContextKind::InvalidArg) else {
                return Err(err);
            };
            let mut lines = Vec::new();
            for arg in args {
                let Some(long) = flag(arg) else { continue };
                match long_to_env.get(long.as_str()) {
                    Some(&env) => lines.push(format!(
                        "missing setting {env}: set it in the environment, as `{}` in the \
                         config file, or with --{long}",
                        key_of(env)
                    )),
                    None => lines.push(format!("missing argument {arg}")),
                }
            }
            if lines.is_empty() {
                return Err(err);
            }
            Ok(lines.join("\n"))
        }
        _ => Err(err),
    }
}

/// Settings whose values are never printed whole.
fn is_secret(env: &str) -> bool {
    env.contains("SECRET") || env.contains("PASSWORD") || env.ends_with("DATABASE_URL")
}

/// A value fit to print: passwords in URLs and secret Kafka options hidden.
fn redact(env: &str, value: &str) -> String {
    if env.ends_with("DATABASE_URL") {
        return parley_event_log::redact_url(value);
    }
    if is_secret(env) {
        return "<redacted>".to_string();
    }
    if env == "PARLEY_KAFKA_OPTIONS" {
        return crate::cli::split_properties(value)
            .into_iter()
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if ["password", "secret", "jaas", "token"]
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s)) =>
                {
                    format!("{k}=<redacted>")
                }
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    value.to_string()
}

/// `parley config SERVICE [FLAGS]`: the service's effective settings, as a
/// config file would hold them, each with where it came from.
pub fn print(args: &ConfigArgs, sources: &Sources) -> anyhow::Result<()> {
    let service = args.service.name();
    let mut cmd = Cli::command();
    cmd.build();
    let sub = cmd
        .find_subcommand(service)
        .expect("every service is a subcommand")
        .clone()
        // Show what is missing instead of refusing to print.
        .mut_args(|a| a.required(false));
    let mut argv = vec![format!("parley {service}")];
    argv.extend(args.args.iter().cloned());
    let matches = sub.clone().try_get_matches_from(argv).map_err(|e| {
        anyhow::anyhow!("{}", explain(e, sources).unwrap_or_else(|e| e.to_string()))
    })?;
    println!("# parley {service}: effective configuration (secrets redacted)");
    if let Some(file) = &sources.file {
        println!("# config file: {}", file.display());
    }
    let mut missing = Vec::new();
    for arg in sub.get_arguments() {
        let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
            continue;
        };
        if env == "PARLEY_CONFIG" {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Option<Vec<String>> = matches.get_raw(id).map(|raw| {
            raw.map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        let key = key_of(&env);
        let Some(values) = values else {
            // Optional to the parser, needed to run (only `dev` makes its own).
            let secret_needed = env == "PARLEY_JWT_SECRET" && service != "dev";
            if required(&cmd, service, arg) || secret_needed {
                missing.push(env.clone());
                println!("# {key} = ?  # REQUIRED, not set ({env})");
            } else {
                println!("# {key} is not set ({env})");
            }
            continue;
        };
        let origin = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("--{}", arg.get_long().unwrap_or(id)),
            Some(ValueSource::EnvVariable) => sources.origin(&env),
            _ => "default".to_string(),
        };
        let value = redact(&env, &values.join(","));
        println!("{key} = {}  # {origin}", toml::Value::String(value));
    }
    if !missing.is_empty() {
        anyhow::bail!("missing setting(s): {}", missing.join(", "));
    }
    Ok(())
}

/// Whether the service requires `arg` (before `print` relaxed it).
fn required(cmd: &Command, service: &str, arg: &Arg) -> bool {
    cmd.find_subcommand(service)
        .and_then(|s| s.get_arguments().find(|a| a.get_id() == arg.get_id()))
        .is_some_and(|a| a.is_required_set())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gives_flat_keys_as_environment_names() {
        let got = parse_file(
            "listen = \"0.0.0.0:9000\"\ndb_pool_size = 4\nmigrate = true\n\
             kafka_options = [\"acks=all\", \"linger.ms=5\"]\n",
        )
        .unwrap();
        assert_eq!(got["PARLEY_LISTEN"], "0.0.0.0:9000");
        assert_eq!(got["PARLEY_DB_POOL_SIZE"], "4");
        assert_eq!(got["PARLEY_MIGRATE"], "true");
        assert_eq!(got["PARLEY_KAFKA_OPTIONS"], "acks=all,linger.ms=5");
    }

    #[test]
    fn an_unknown_key_is_named_with_a_suggestion() {
        let err = parse_file("databse_url = \"x\"\n").unwrap_err();
        assert!(err.contains("unknown setting `databse_url`"), "{err}");
        let err = parse_file("pool_size = 3\n").unwrap_err();
        assert!(err.contains("db_pool_size"), "{err}");
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let err = parse_file("listen = \"a\"\n\nport = = 3\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
    }

    #[test]
    fn tables_are_refused() {
        let err = parse_file("[kafka]\nbrokers = \"x\"\n").unwrap_err();
        assert!(err.contains("unknown setting `kafka`"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(redact("PARLEY_JWT_SECRET", "hunter2hunter2"), "<redacted>");
        let url = redact("PARLEY_DATABASE_URL", "postgres://app:hunter2@db/parley");
        assert!(!url.contains("hunter2"), "{url}");
        assert!(url.contains("db/parley"), "{url}");
        assert_eq!(
            redact(
                "PARLEY_KAFKA_OPTIONS",
                "security.protocol=SASL_SSL,sasl.password=hunter2"
            ),
            "security.protocol=SASL_SSL,sasl.password=<redacted>"
        );
        // A comma inside the password hides none of it.
        assert_eq!(
            redact("PARLEY_KAFKA_OPTIONS", "sasl.password=hun,ter2,acks=all"),
            "sasl.password=<redacted>,acks=all"
        );
        assert_eq!(redact("PARLEY_LISTEN", "0.0.0.0:1"), "0.0.0.0:1");
    }

    #[test]
    fn the_config_flag_is_found_before_parsing() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            file_named(&args(&["parley", "--config", "a.toml", "dev"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            file_named(&args(&["parley", "dev", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
    }
}
