//! Configuration mistakes stop start-up with a message naming the setting, and
//! `parley config` shows the layers (defaults < file < environment < flags).
//! No services needed: every mistake here is caught before anything is opened.

use std::process::Output;

const SECRET: &str = "config-test-secret-0123456789abcdef01234567";

/// Runs `parley args` with only `env` in its environment.
fn parley(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run parley")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn a_missing_database_url_is_named() {
    let out = parley(&["command-api"], &[("PARLEY_JWT_SECRET", SECRET)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("missing setting PARLEY_DATABASE_URL"), "{err}");
    assert!(err.contains("`database_url`"), "{err}");
}

#[test]
fn a_bad_port_in_the_environment_is_named_with_its_source() {
    let out = parley(
        &["command-api"],
        &[
            ("PARLEY_JWT_SECRET", SECRET),
            (
                "PARLEY_DATABASE_URL",
                "postgres://parley@127.0.0.1:1/parley",
            ),
            ("PARLEY_LISTEN", "127.0.0.1:99999"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("setting PARLEY_LISTEN"), "{err}");
    assert!(err.contains("127.0.0.1:99999"), "{err}");
    assert!(err.contains("PARLEY_LISTEN in the environment"), "{err}");
}

#[test]
fn a_bad_port_in_the_file_names_the_key_and_the_file() {
    let file = config_file("listen = \"0.0.0.0:http\"\n");
    let path = file.path().to_str().unwrap();
    let out = parley(
        &["--config", path, "read-api"],
        &[
            ("PARLEY_JWT_SECRET", SECRET),
            (
                "PARLEY_READ_DATABASE_URL",
                "postgres://parley@127.0.0.1:1/read",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("setting PARLEY_LISTEN"), "{err}");
    assert!(err.contains(&format!("`listen` in {path}")), "{err}");
}

#[test]
fn a_malformed_jwt_key_is_named() {
    let out = parley(
        &["command-api"],
        &[
            ("PARLEY_JWT_SECRET", "too-short"),
            (
                "PARLEY_DATABASE_URL",
                "postgres://parley@127.0.0.1:1/parley",
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("PARLEY_JWT_SECRET"), "{err}");
    assert!(
        !err.contains("too-short"),
        "the secret is not echoed: {err}"
    );
}

#[test]
fn a_malformed_kafka_option_is_named() {
    let out = parley(
        &["relay", "--kafka-option", "acks"],
        &[(
            "PARLEY_DATABASE_URL",
            "postgres://parley@127.0.0.1:1/parley",
        )],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("setting PARLEY_KAFKA_OPTIONS"), "{err}");
    assert!(err.contains("--kafka-option"), "{err}");
    assert!(err.contains("key=value"), "{err}");
}

#[test]
fn a_malformed_item_of_a_list_in_the_environment_is_traced_to_it() {
    let out = parley(
        &["relay"],
        &[
            (
                "PARLEY_DATABASE_URL",
                "postgres://parley@127.0.0.1:1/parley",
            ),
            // (After `acks=all`, `linger` would read as part of its value:
            // values may hold commas.)
            ("PARLEY_KAFKA_OPTIONS", "linger,acks=all"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("\"linger\""), "{err}");
    assert!(
        err.contains("PARLEY_KAFKA_OPTIONS in the environment"),
        "{err}"
    );
}

#[test]
fn a_database_url_of_another_kind_is_named_without_its_password() {
    let out = parley(
        &["command-api"],
        &[
            ("PARLEY_JWT_SECRET", SECRET),
            ("PARLEY_DATABASE_URL", "mysql://app:hunter2@db/parley"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("setting PARLEY_DATABASE_URL"), "{err}");
    assert!(err.contains("postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_shutdown_delay_longer_than_the_timeout_is_named() {
    let out = parley(
        &["command-api"],
        &[
            ("PARLEY_JWT_SECRET", SECRET),
            (
                "PARLEY_DATABASE_URL",
                "postgres://parley@127.0.0.1:1/parley",
            ),
            ("PARLEY_SHUTDOWN_DELAY_SECS", "30"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("PARLEY_SHUTDOWN_DELAY_SECS"), "{err}");
    assert!(err.contains("PARLEY_SHUTDOWN_TIMEOUT_SECS"), "{err}");
}

#[test]
fn an_unknown_or_malformed_file_is_refused_with_where() {
    let file = config_file("database_url = \"postgres://x/y\"\ndatabse_pool = 3\n");
    let out = parley(&["--config", file.path().to_str().unwrap(), "dev"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown setting `databse_pool`"),
        "{}",
        stderr(&out)
    );

    let file = config_file("listen = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n");
    let out = parley(&["--config", file.path().to_str().unwrap(), "dev"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));

    let out = parley(&["--config", "/nonexistent/parley.toml", "dev"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/parley.toml"),
        "{}",
        stderr(&out)
    );
}

/// Finds the line of `key` in `parley config` output.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn config_shows_each_layer_and_hides_secrets() {
    let file = config_file(
        "listen = \"0.0.0.0:7000\"\ndb_pool_size = 3\nrate_limit_burst = 5\n\
         database_url = \"postgres://app:hunter2@db:5432/parley\"\n",
    );
    let path = file.path().to_str().unwrap();
    let out = parley(
        &[
            "config",
            "command-api",
            "--listen",
            "127.0.0.1:9000",
            "--config",
            path,
        ],
        &[("PARLEY_DB_POOL_SIZE", "7"), ("PARLEY_JWT_SECRET", SECRET)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // A flag beats the file.
    assert_eq!(
        line(&text, "listen"),
        "listen = \"127.0.0.1:9000\"  # --listen"
    );
    // The environment beats the file.
    assert_eq!(
        line(&text, "db_pool_size"),
        "db_pool_size = \"7\"  # PARLEY_DB_POOL_SIZE in the environment"
    );
    // The file beats the default.
    assert_eq!(
        line(&text, "rate_limit_burst"),
        format!("rate_limit_burst = \"5\"  # `rate_limit_burst` in {path}")
    );
    assert_eq!(
        line(&text, "rate_limit_per_sec"),
        "rate_limit_per_sec = \"50\"  # default"
    );
    assert!(line(&text, "database_url").contains("postgres://app:***@db:5432/parley"));
    assert!(line(&text, "jwt_secret").contains("<redacted>"));
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn config_names_what_a_service_is_missing() {
    let out = parley(&["config", "relay"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("database_url = ?  # REQUIRED"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("PARLEY_DATABASE_URL"),
        "{}",
        stderr(&out)
    );
}

/// Every JWT secret written out in deploy/ (`PARLEY_JWT_SECRET=...` or
/// `PARLEY_JWT_SECRET: ...`), as the examples an operator might copy.
fn secrets_in_deploy() -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                let line = line.trim().trim_start_matches("- ");
                let value = line
                    .strip_prefix("PARLEY_JWT_SECRET=")
                    .or_else(|| line.strip_prefix("PARLEY_JWT_SECRET: "));
                if let Some(value) = value.map(|v| v.trim().trim_matches('"')) {
                    if !value.is_empty() && !value.contains('$') {
                        found.push(value.to_string());
                    }
                }
            }
        }
    }
    found
}

/// Attack (issue 21, item 14). Fails before: a service started with an
/// example secret from deploy/ signed tokens that anyone could forge.
#[test]
fn an_example_secret_from_deploy_is_refused_outside_dev() {
    let secrets = secrets_in_deploy();
    assert!(secrets.len() >= 2, "found {secrets:?}");
    for secret in &secrets {
        for service in [vec!["command-api"], vec!["read-api"]] {
            let out = parley(
                &service,
                &[
                    ("PARLEY_JWT_SECRET", secret.as_str()),
                    (
                        "PARLEY_DATABASE_URL",
                        "postgres://parley@127.0.0.1:1/parley",
                    ),
                    (
                        "PARLEY_READ_DATABASE_URL",
                        "postgres://parley@127.0.0.1:1/read",
                    ),
                ],
            );
            assert!(!out.status.success(), "{service:?} started with {secret}");
            let err = stderr(&out);
            assert!(err.contains("example value from deploy/"), "{err}");
        }
    }
    // Allowed explicitly (a throwaway cluster), it goes on to the database.
    let out = parley(
        &["command-api"],
        &[
            ("PARLEY_JWT_SECRET", secrets[0].as_str()),
            ("PARLEY_ALLOW_PLACEHOLDER_SECRET", "true"),
            (
                "PARLEY_DATABASE_URL",
                "postgres://parley@127.0.0.1:1/parley",
            ),
        ],
    );
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("example value"), "{}", stderr(&out));
}
