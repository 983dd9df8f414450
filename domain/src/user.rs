//! Users and the reservation of their usernames.
//!
//! Registration touches two aggregates: the caller first claims the username on the
//! `username` aggregate (id = [`crate::ids::username_claim_id`]), whose per-aggregate
//! concurrency check makes usernames unique, then registers the user.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{event_enum, examples, Example};
use crate::error::DomainError;
use crate::values::{DisplayName, Username};

/// A user registered (version 2: without the password hash, which lives in the
/// command side's credentials store and never travels with events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub username: Username,
    pub display_name: DisplayName,
    pub registered_at: DateTime<Utc>,
}

impl Example for UserRegistered {
    fn example() -> Self {
        Self {
            user_id: examples::id(1),
            username: Username::parse("alice").unwrap(),
            display_name: DisplayName::parse("Alice").unwrap(),
            registered_at: examples::at(),
        }
    }
}

/// `UserRegistered` version 1, which carried the password hash: still read
/// (the hash is dropped on the way: the credentials store holds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "UserRegistered")]
pub struct UserRegisteredV1 {
    pub user_id: Uuid,
    pub username: Username,
    pub display_name: DisplayName,
    /// A PHC string (argon2).
    pub password_hash: String,
    pub registered_at: DateTime<Utc>,
}

impl From<UserRegisteredV1> for UserRegistered {
    fn from(old: UserRegisteredV1) -> Self {
        Self {
            user_id: old.user_id,
            username: old.username,
            display_name: old.display_name,
            registered_at: old.registered_at,
        }
    }
}

impl Example for UserRegisteredV1 {
    fn example() -> Self {
        Self {
            user_id: examples::id(1),
            username: Username::parse("alice").unwrap(),
            display_name: DisplayName::parse("Alice").unwrap(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
            registered_at: examples::at(),
        }
    }
}

event_enum! {
    /// Events of the `user` aggregate.
    pub enum UserEvent for "user";
    { UserRegistered = 2 }
    legacy { UserRegistered = 1 => UserRegisteredV1 }
}

/// Commands of the `user` aggregate.
#[derive(Debug, Clone)]
pub enum UserCommand {
    /// Register a new user (the caller stores the password's hash).
    RegisterUser {
        user_id: Uuid,
        username: Username,
        display_name: DisplayName,
        at: DateTime<Utc>,
    },
}

/// A registered user (id = user id).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct User {
    registered: Option<Registered>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    user_id: Uuid,
    username: Username,
    display_name: DisplayName,
}

impl User {
    /// Whether the user has registered.
    pub fn is_registered(&self) -> bool {
        self.registered.is_some()
    }

    /// The user's id, once registered.
    pub fn user_id(&self) -> Option<Uuid> {
        self.registered.as_ref().map(|r| r.user_id)
    }

    /// The username, once registered.
    pub fn username(&self) -> Option<&Username> {
        self.registered.as_ref().map(|r| &r.username)
    }

    /// The display name, once registered.
    pub fn display_name(&self) -> Option<&DisplayName> {
        self.registered.as_ref().map(|r| &r.display_name)
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, DomainError> {
        match command {
            UserCommand::RegisterUser {
                user_id,
                username,
                display_name,
                at,
            } => {
                if self.is_registered() {
                    return Err(DomainError::conflict("user already registered"));
                }
                Ok(vec![UserRegistered {
                    user_id,
                    username,
                    display_name,
                    registered_at: at,
                }
                .into()])
            }
        }
    }

    fn evolve(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserRegistered(e) => {
                self.registered = Some(Registered {
                    user_id: e.user_id,
                    username: e.username,
                    display_name: e.display_name,
                })
            }
        }
    }
}

impl_aggregate!(User, "user", UserCommand, UserEvent);

/// A username was reserved for a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsernameClaimed {
    pub username: Username,
    pub user_id: Uuid,
}

impl Example for UsernameClaimed {
    fn example() -> Self {
        Self {
            username: Username::parse("alice").unwrap(),
            user_id: examples::id(1),
        }
    }
}

event_enum! {
    /// Events of the `username` aggregate.
    pub enum UsernameClaimEvent for "username";
    { UsernameClaimed = 1 }
}

/// Commands of the `username` aggregate.
#[derive(Debug, Clone)]
pub enum UsernameClaimCommand {
    /// Reserve a username for a user.
    ClaimUsername { username: Username, user_id: Uuid },
}

/// The reservation of one username (id = [`crate::ids::username_claim_id`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsernameClaim {
    claimed_by: Option<Uuid>,
}

impl UsernameClaim {
    /// The user holding the username, if it is taken.
    pub fn claimed_by(&self) -> Option<Uuid> {
        self.claimed_by
    }

    /// Decides which events a command produces, without changing state.
    pub fn decide(
        &self,
        command: UsernameClaimCommand,
    ) -> Result<Vec<UsernameClaimEvent>, DomainError> {
        match command {
            UsernameClaimCommand::ClaimUsername { username, user_id } => {
                if self.claimed_by.is_some() {
                    return Err(DomainError::conflict("username is taken"));
                }
                Ok(vec![UsernameClaimed { username, user_id }.into()])
            }
        }
    }

    fn evolve(&mut self, event: UsernameClaimEvent) {
        match event {
            UsernameClaimEvent::UsernameClaimed(e) => self.claimed_by = Some(e.user_id),
        }
    }
}

impl_aggregate!(
    UsernameClaim,
    "username",
    UsernameClaimCommand,
    UsernameClaimEvent
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::EventCodec;
    use cqrs_es::test::TestFramework;

    fn register(user_id: Uuid) -> UserCommand {
        let e = UserRegistered::example();
        UserCommand::RegisterUser {
            user_id,
            username: e.username,
            display_name: e.display_name,
            at: e.registered_at,
        }
    }

    #[test]
    fn registers_a_new_user() {
        TestFramework::<User>::with(())
            .given_no_previous_events()
            .when(register(examples::id(1)))
            .then_expect_events(vec![UserRegistered::example().into()]);
    }

    #[test]
    fn cannot_register_twice() {
        TestFramework::<User>::with(())
            .given(vec![UserRegistered::example().into()])
            .when(register(examples::id(1)))
            .then_expect_error(DomainError::conflict("user already registered"));
    }

    #[test]
    fn state_exposes_the_registration() {
        let mut user = User::default();
        assert!(!user.is_registered());
        user.evolve(UserRegistered::example().into());
        assert!(user.is_registered());
        assert_eq!(user.username().unwrap().as_str(), "alice");
        assert_eq!(user.display_name().unwrap().as_str(), "Alice");
    }

    #[test]
    fn a_registration_of_version_1_is_read_without_its_password_hash() {
        let old = UserRegisteredV1::example();
        let payload = serde_json::to_value(&old).unwrap();
        let event = UserEvent::from_payload("UserRegistered", 1, &payload).unwrap();
        let UserEvent::UserRegistered(today) = event;
        assert_eq!(today.username, old.username);
        let written = serde_json::to_string(&today).unwrap();
        assert!(!written.contains("argon2"), "{written}");
    }

    #[test]
    fn claims_a_free_username() {
        TestFramework::<UsernameClaim>::with(())
            .given_no_previous_events()
            .when(UsernameClaimCommand::ClaimUsername {
                username: Username::parse("alice").unwrap(),
                user_id: examples::id(1),
            })
            .then_expect_events(vec![UsernameClaimed::example().into()]);
    }

    #[test]
    fn a_taken_username_cannot_be_claimed() {
        TestFramework::<UsernameClaim>::with(())
            .given(vec![UsernameClaimed::example().into()])
            .when(UsernameClaimCommand::ClaimUsername {
                username: Username::parse("alice").unwrap(),
                user_id: examples::id(2),
            })
            .then_expect_error(DomainError::conflict("username is taken"));
    }
}
