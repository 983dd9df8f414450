//! Parsers of option values: each refuses a bad value with what was expected.

use super::KafkaOptions;

pub(super) fn kafka_options(raw: &str) -> Result<KafkaOptions, String> {
    split_properties(raw)
        .into_iter()
        .map(key_value)
        .collect::<Result<_, _>>()
        .map(KafkaOptions)
}

/// Splits `k=v,k2=v2` where a comma is followed by a property name (letters,
/// digits, `.`, `_`, `-`) and `=`; any other comma belongs to the value before it.
pub fn split_properties(raw: &str) -> Vec<&str> {
    let starts_property = |rest: &str| {
        rest.split_once('=').is_some_and(|(name, _)| {
            let name = name.trim();
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
    };
    let mut pieces = Vec::new();
    let mut start = 0;
    for (at, _) in raw.match_indices(',') {
        if starts_property(&raw[at + 1..]) {
            pieces.push(&raw[start..at]);
            start = at + 1;
        }
    }
    pieces.push(&raw[start..]);
    pieces
}

/// An http:// or https:// URL.
pub(super) fn http_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.starts_with("http://") || raw.starts_with("https://") {
        Ok(raw.to_string())
    } else {
        Err("expected an http:// or https:// URL, e.g. http://otel-collector:4318".into())
    }
}

/// A database URL Parley can open: PostgreSQL or a SQLite file.
pub(super) fn database_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if ["postgres://", "postgresql://", "sqlite:"]
        .iter()
        .any(|scheme| raw.starts_with(scheme))
    {
        return Ok(raw.to_string());
    }
    let scheme = raw.split_once("://").map_or("none", |(scheme, _)| scheme);
    Err(format!(
        "expected postgres://user:password@host:5432/db or sqlite://file.db (scheme: {scheme})"
    ))
}

pub(super) fn key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::KafkaArgs;
    use clap::Parser;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        kafka_options(raw).expect("valid options").0
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn kafka_options_split_where_a_property_name_follows_a_comma() {
        assert_eq!(
            pairs("security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512"),
            [
                pair("security.protocol", "SASL_SSL"),
                pair("sasl.mechanism", "SCRAM-SHA-512")
            ]
        );
        // Lists and passwords keep their commas.
        assert_eq!(
            pairs("ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384,linger.ms=5"),
            [
                pair(
                    "ssl.cipher.suites",
                    "ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384"
                ),
                pair("linger.ms", "5")
            ]
        );
        assert_eq!(
            pairs("sasl.password=a,b c, acks = all"),
            [pair("sasl.password", "a,b c"), pair("acks", "all")]
        );
        assert_eq!(
            pairs("fetch.wait.max.ms=5"),
            [pair("fetch.wait.max.ms", "5")]
        );
    }

    #[test]
    fn a_kafka_option_without_a_value_is_refused() {
        let err = kafka_options("linger.ms").unwrap_err();
        assert!(err.contains("expected key=value"), "{err}");
        assert!(kafka_options("=5").is_err());
    }

    #[test]
    fn every_kafka_option_flag_is_split_the_same_way() {
        #[derive(clap::Parser)]
        struct Probe {
            #[command(flatten)]
            kafka: KafkaArgs,
        }
        let flags = Probe::try_parse_from([
            "probe",
            "--kafka-option",
            "ssl.cipher.suites=A,B",
            "--kafka-option",
            "acks=all,linger.ms=1",
        ])
        .expect("flags parse");
        let got: Vec<_> = flags.kafka.options().cloned().collect();
        assert_eq!(
            got,
            [
                pair("ssl.cipher.suites", "A,B"),
                pair("acks", "all"),
                pair("linger.ms", "1")
            ]
        );
    }
}
