use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::{AppendedEvent, Cursor};

/// Names a write so that a later query can wait until the read models have it
/// (invariant 6). Opaque to clients: `v1.` then base64url of the fields.
///
/// It carries both the log cursor (for projectors tailing the log) and the
/// aggregate and sequence (for projectors fed by Kafka, which know per aggregate
/// what they applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub cursor: Cursor,
    pub aggregate_id: Uuid,
    pub sequence: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed consistency token")]
pub struct TokenError;

impl ConsistencyToken {
    /// The token of the last event a command appended.
    pub fn after(event: &AppendedEvent) -> Self {
        Self {
            cursor: event.cursor(),
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
        }
    }

    pub fn encode(&self) -> String {
        let raw = format!(
            "{}:{}:{}:{}",
            self.cursor.tx_id, self.cursor.position, self.aggregate_id, self.sequence
        );
        format!("v1.{}", URL_SAFE_NO_PAD.encode(raw))
    }

    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let body = token.strip_prefix("v1.").ok_or(TokenError)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError)?;
        let raw = String::from_utf8(raw).map_err(|_| TokenError)?;
        let mut parts = raw.split(':');
        let mut next = || parts.next().ok_or(TokenError);
        let tx_id = next()?.parse().map_err(|_| TokenError)?;
        let position = next()?.parse().map_err(|_| TokenError)?;
        let aggregate_id = next()?.parse().map_err(|_| TokenError)?;
        let sequence = next()?.parse().map_err(|_| TokenError)?;
        if parts.next().is_some() {
            return Err(TokenError);
        }
        Ok(Self {
            cursor: Cursor { tx_id, position },
            aggregate_id,
            sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let token = ConsistencyToken {
            cursor: Cursor {
                tx_id: 7812,
                position: 42,
            },
            aggregate_id: Uuid::now_v7(),
            sequence: 3,
        };
        assert_eq!(ConsistencyToken::decode(&token.encode()), Ok(token));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "v1.", "v2.abc", "v1.!!!", "v1.MTox", "hello"] {
            assert_eq!(ConsistencyToken::decode(bad), Err(TokenError), "{bad}");
        }
    }
}
