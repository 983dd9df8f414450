use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::{AppendedEvent, Cursor};

/// Names a write so that a later query can wait until the read models have it
/// (invariant 6). Opaque to clients: `v2.` then base64url of the fields.
///
/// It carries both the log cursor of the write's last event (for projectors
/// tailing the log, which apply in log order) and the last sequence of every
/// stream the write appended to (for projectors fed by Kafka, where each
/// aggregate's partition advances on its own: a command that wrote two
/// aggregates is visible only once both are applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyToken {
    pub cursor: Cursor,
    /// Each written stream once, with its last sequence; never empty.
    pub streams: Vec<StreamHead>,
}

/// How far one stream was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHead {
    pub aggregate_id: Uuid,
    pub sequence: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed consistency token")]
pub struct TokenError;

/// Streams a token may name: far more than any command writes, small enough
/// that a forged token cannot make a query do much work.
const MAX_STREAMS: usize = 16;

impl ConsistencyToken {
    /// The token of one event.
    pub fn after(event: &AppendedEvent) -> Self {
        Self::after_all(std::slice::from_ref(event)).expect("one event")
    }

    /// The token of everything a command appended (`None` when nothing).
    pub fn after_all(events: &[AppendedEvent]) -> Option<Self> {
        let cursor = events.iter().map(AppendedEvent::cursor).max()?;
        let mut streams: Vec<StreamHead> = Vec::new();
        for event in events {
            match streams
                .iter_mut()
                .find(|s| s.aggregate_id == event.aggregate_id)
            {
                Some(head) => head.sequence = head.sequence.max(event.sequence),
                None => streams.push(StreamHead {
                    aggregate_id: event.aggregate_id,
                    sequence: event.sequence,
                }),
            }
        }
        Some(Self { cursor, streams })
    }

    pub fn encode(&self) -> String {
        let mut raw = format!("{}:{}", self.cursor.tx_id, self.cursor.position);
        for s in &self.streams {
            raw.push_str(&format!(";{}:{}", s.aggregate_id, s.sequence));
        }
        format!("v2.{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// Decodes a token made by [`encode`](Self::encode), or a `v1.` token of an
    /// earlier release (one stream), so tokens survive a rolling upgrade.
    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let (version, body) = token.split_once('.').ok_or(TokenError)?;
        let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| TokenError)?;
        let raw = String::from_utf8(raw).map_err(|_| TokenError)?;
        let parse = |s: &str| s.parse::<i64>().map_err(|_| TokenError);
        let head = |s: &str| -> Result<StreamHead, TokenError> {
            let (id, seq) = s.split_once(':').ok_or(TokenError)?;
            Ok(StreamHead {
                aggregate_id: id.parse().map_err(|_| TokenError)?,
                sequence: parse(seq)?,
            })
        };
        let cursor = |s: &str| -> Result<Cursor, TokenError> {
            let (tx, position) = s.split_once(':').ok_or(TokenError)?;
            Ok(Cursor {
                tx_id: parse(tx)?,
                position: parse(position)?,
            })
        };
        let (cursor, streams) = match version {
            "v1" => {
                // tx:position:aggregate:sequence
                let mut parts = raw.splitn(3, ':');
                let tx = parts.next().ok_or(TokenError)?;
                let position = parts.next().ok_or(TokenError)?;
                let rest = parts.next().ok_or(TokenError)?;
                (cursor(&format!("{tx}:{position}"))?, vec![head(rest)?])
            }
            "v2" => {
                let mut parts = raw.split(';');
                let at = cursor(parts.next().ok_or(TokenError)?)?;
                let streams = parts.map(head).collect::<Result<Vec<_>, _>>()?;
                (at, streams)
            }
            _ => return Err(TokenError),
        };
        if streams.is_empty() || streams.len() > MAX_STREAMS {
            return Err(TokenError);
        }
        Ok(Self { cursor, streams })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(aggregate_id: Uuid, sequence: i64, position: i64) -> AppendedEvent {
        AppendedEvent {
            event_id: Uuid::now_v7(),
            aggregate_id,
            sequence,
            position,
            tx_id: 7812,
        }
    }

    #[test]
    fn round_trips() {
        let token = ConsistencyToken::after(&event(Uuid::now_v7(), 3, 42));
        assert_eq!(ConsistencyToken::decode(&token.encode()), Ok(token));
    }

    #[test]
    fn names_every_stream_of_a_command_once_with_its_last_sequence() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let token =
            ConsistencyToken::after_all(&[event(a, 1, 10), event(b, 4, 11), event(a, 2, 12)])
                .unwrap();
        assert_eq!(token.cursor.position, 12);
        assert_eq!(
            token.streams,
            vec![
                StreamHead {
                    aggregate_id: a,
                    sequence: 2
                },
                StreamHead {
                    aggregate_id: b,
                    sequence: 4
                }
            ]
        );
        assert_eq!(ConsistencyToken::decode(&token.encode()), Ok(token));
        assert_eq!(ConsistencyToken::after_all(&[]), None);
    }

    #[test]
    fn reads_tokens_of_the_previous_release() {
        let id = Uuid::now_v7();
        let v1 = format!("v1.{}", URL_SAFE_NO_PAD.encode(format!("7812:42:{id}:3")));
        let token = ConsistencyToken::decode(&v1).unwrap();
        assert_eq!(
            token.cursor,
            Cursor {
                tx_id: 7812,
                position: 42
            }
        );
        assert_eq!(
            token.streams,
            vec![StreamHead {
                aggregate_id: id,
                sequence: 3
            }]
        );
    }

    #[test]
    fn rejects_garbage() {
        let too_many: String = (0..=MAX_STREAMS)
            .map(|i| format!(";{}:{i}", Uuid::nil()))
            .collect();
        let too_many = format!("v2.{}", URL_SAFE_NO_PAD.encode(format!("1:2{too_many}")));
        let no_streams = format!("v2.{}", URL_SAFE_NO_PAD.encode("1:2"));
        for bad in [
            "",
            "v1.",
            "v2.abc",
            "v1.!!!",
            "v1.MTox",
            "hello",
            "v3.MTox",
            &too_many,
            &no_streams,
        ] {
            assert_eq!(ConsistencyToken::decode(bad), Err(TokenError), "{bad}");
        }
    }
}
