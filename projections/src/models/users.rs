//! Users: who is who (username, display name), for joining names into other views.
//!
//! A user aggregate holds one event, `UserRegistered`; inserting it is idempotent by
//! the primary key, so replays and duplicate deliveries change nothing.

use std::collections::HashMap;

use async_trait::async_trait;
use parley_domain::user::UserEvent;
use parley_event_log::EventEnvelope;
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool, Row};
use uuid::Uuid;

use super::Model;
use super::{parse_uuid, placeholders, IN_CHUNK};
use crate::projection::{decode, ApplyError, Projection};
use crate::projection::{padded, padded_len};
use crate::store::micros;

/// The users read model; `suffix` names a second set of tables for rebuilds.
pub struct Users {
    users: String,
}

impl Model for Users {
    const NAME: &'static str = "users";

    fn with_suffix(suffix: &str) -> Self {
        Self {
            users: format!("users{suffix}"),
        }
    }
}

#[async_trait]
impl Projection for Users {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(&["user"])
    }

    fn schema(&self) -> Vec<String> {
        let u = &self.users;
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {u} (
                user_id       TEXT   PRIMARY KEY,
                username      TEXT   NOT NULL,
                display_name  TEXT   NOT NULL,
                registered_at BIGINT NOT NULL
            )"
        )]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<(), ApplyError> {
        if !self.consumes(&event.aggregate_type) {
            return Ok(());
        }
        let decoded: UserEvent = decode(event)?;
        match decoded {
            UserEvent::UserRegistered(e) => {
                sqlx::query(&format!(
                    "INSERT INTO {} (user_id, username, display_name, registered_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (user_id) DO NOTHING",
                    self.users
                ))
                .bind(e.user_id.to_string())
                .bind(e.username.as_str().to_string())
                .bind(e.display_name.as_str().to_string())
                .bind(micros(&e.registered_at))
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// A user as other views show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    pub user_id: Uuid,
    pub username: String,
    pub display_name: String,
}

/// The known users among `ids` (unknown ids are absent from the map).
pub async fn lookup(pool: &AnyPool, ids: &[Uuid]) -> Result<HashMap<Uuid, UserView>, sqlx::Error> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IN_CHUNK) {
        let sql = format!(
            "SELECT user_id, username, display_name FROM users WHERE user_id IN ({})",
            placeholders(1, padded_len(chunk.len()))
        );
        let mut query = sqlx::query(&sql);
        for id in padded(chunk) {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(pool).await? {
            let user = UserView {
                user_id: parse_uuid(&row.try_get::<String, _>("user_id")?)?,
                username: row.try_get("username")?,
                display_name: row.try_get("display_name")?,
            };
            found.insert(user.user_id, user);
        }
    }
    Ok(found)
}
