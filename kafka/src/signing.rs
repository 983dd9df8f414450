//! Records signed by the relay, so the projector group can tell them from what
//! any other producer writes to the topic.
//!
//! Topic ACLs are the first defence (only the relay's principal may write:
//! `docs/operations.md`). The signature is the second: with keys set, the
//! relay adds `parley_signature` (`v1=` and the hex HMAC-SHA256 of the record's
//! value) to every record, and a member parks a record whose signature is
//! missing or wrong instead of applying it. Several keys may be given: the
//! first signs, any verifies, so a key is rotated by adding the new one first
//! on every member, then on the relay, then removing the old one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying a record's signature.
pub const SIGNATURE_HEADER: &str = "parley_signature";
/// The shortest key taken, in bytes: an HMAC key as strong as its hash.
pub const MIN_KEY_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// The keys records are signed and checked with.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for TopicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TopicKeys({} keys, redacted)", self.keys.len())
    }
}

impl TopicKeys {
    /// Comma-separated keys, each at least [`MIN_KEY_BYTES`] long.
    pub fn parse(list: &str) -> Result<Self, String> {
        let keys: Vec<Vec<u8>> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            return Err("no key given".into());
        }
        if let Some(short) = keys.iter().position(|k| k.len() < MIN_KEY_BYTES) {
            return Err(format!(
                "key {} is {} bytes; each needs at least {MIN_KEY_BYTES}",
                short + 1,
                keys[short].len()
            ));
        }
        Ok(Self { keys })
    }

    /// The signature header's value for a record holding `value`.
    pub fn sign(&self, value: &[u8]) -> String {
        let mut mac = mac(&self.keys[0]);
        mac.update(value);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether the relay signed `record` (its value, by its
    /// [`SIGNATURE_HEADER`]); why not otherwise.
    pub fn verify_record<M: rdkafka::Message>(&self, record: &M) -> Result<(), String> {
        use rdkafka::message::Headers;
        let signature = record.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == SIGNATURE_HEADER)
                .and_then(|h| h.value)
        });
        self.verify(record.payload().unwrap_or_default(), signature)
    }

    /// Whether `signature` (the header's value, if any) signs `value` under
    /// one of the keys; why not otherwise.
    pub fn verify(&self, value: &[u8], signature: Option<&[u8]>) -> Result<(), String> {
        let Some(signature) = signature else {
            return Err(format!("no {SIGNATURE_HEADER} header"));
        };
        let digest = signature
            .strip_prefix(b"v1=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| format!("{SIGNATURE_HEADER} is not v1=<hex>"))?;
        let signed = self.keys.iter().any(|key| {
            let mut mac = mac(key);
            mac.update(value);
            // Constant time: `verify_slice` compares without an early exit.
            mac.verify_slice(&digest).is_ok()
        });
        if signed {
            Ok(())
        } else {
            Err(format!("{SIGNATURE_HEADER} does not match any key"))
        }
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "an-old-key-of-at-least-thirty-two-bytes!";
    const NEW: &str = "a-new-key-of-at-least-thirty-two-bytes!!";

    #[test]
    fn a_signed_value_verifies_and_any_change_does_not() {
        let keys = TopicKeys::parse(NEW).unwrap();
        let signature = keys.sign(b"{\"event\":1}");
        assert_eq!(
            keys.verify(b"{\"event\":1}", Some(signature.as_bytes())),
            Ok(())
        );
        assert!(keys
            .verify(b"{\"event\":2}", Some(signature.as_bytes()))
            .is_err());
        assert!(keys.verify(b"{\"event\":1}", None).is_err());
        assert!(keys.verify(b"{\"event\":1}", Some(b"v1=zz")).is_err());
    }

    #[test]
    fn during_a_rotation_both_keys_verify_and_the_first_signs() {
        let relay = TopicKeys::parse(NEW).unwrap();
        let old_relay = TopicKeys::parse(OLD).unwrap();
        let member = TopicKeys::parse(&format!("{NEW},{OLD}")).unwrap();
        for relay in [&relay, &old_relay] {
            let s = relay.sign(b"v");
            assert_eq!(member.verify(b"v", Some(s.as_bytes())), Ok(()));
        }
        assert_eq!(member.sign(b"v"), relay.sign(b"v"));
        let stranger = TopicKeys::parse("a-stranger-s-key-of-thirty-two-bytes-and-more").unwrap();
        let forged = stranger.sign(b"v");
        assert!(member.verify(b"v", Some(forged.as_bytes())).is_err());
    }

    #[test]
    fn short_or_missing_keys_are_refused_and_never_printed() {
        assert!(TopicKeys::parse("").is_err());
        assert!(TopicKeys::parse("short")
            .unwrap_err()
            .contains("at least 32"));
        let keys = TopicKeys::parse(NEW).unwrap();
        assert!(!format!("{keys:?}").contains("new-key"));
    }
}
