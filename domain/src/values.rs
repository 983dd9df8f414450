//! Typed values: parsed once at the edge, valid everywhere after ("parse, don't validate").
//!
//! Each string value deserializes through its parser, so an event or a request body
//! holding an invalid value is refused at the boundary.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;

fn char_len(s: &str) -> usize {
    s.chars().count()
}

fn check_len(field: &str, s: &str, min: usize, max: usize) -> Result<(), DomainError> {
    let n = char_len(s);
    if n < min {
        return Err(if min == 1 {
            DomainError::validation(field, "must not be empty")
        } else {
            DomainError::validation(field, format!("must be at least {min} characters"))
        });
    }
    if n > max {
        return Err(DomainError::validation(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Declares a string newtype whose only constructor is `$parse`.
///
/// `parse` is what a client's value must pass: `client` (the shared text rules,
/// [`crate::text::clean`], for text fields) and then `rules`. Stored events
/// deserialize through `rules` alone, so tightening what clients may send never
/// makes an old event unreadable.
macro_rules! string_value {
    ($(#[$meta:meta])* $name:ident, field = $field:literal, client = $client:expr, parse = $parse:expr, schema = $schema:tt) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The JSON field name used in validation errors.
            pub const FIELD: &'static str = $field;

            /// Parses (and normalizes) a value a client sent.
            pub fn parse(raw: impl Into<String>) -> Result<Self, DomainError> {
                let client: fn(&str, String) -> Result<String, DomainError> = $client;
                Self::parse_stored(client(Self::FIELD, raw.into())?)
            }

            /// Parses a stored value (an event's): the value's own rules only.
            pub fn parse_stored(raw: impl Into<String>) -> Result<Self, DomainError> {
                let parse: fn(String) -> Result<String, DomainError> = $parse;
                parse(raw.into()).map(Self)
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as an owned string.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(raw: String) -> Result<Self, DomainError> {
                Self::parse_stored(raw)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = DomainError;
            fn try_from(raw: &str) -> Result<Self, DomainError> {
                Self::parse(raw)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(raw: &str) -> Result<Self, DomainError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

string_value!(
    /// A login name: 3..=32 of `a-z 0-9 _ . -`; input is trimmed and lowercased.
    #[derive(Debug)]
    Username,
    field = "username",
    client = |_, raw| Ok(raw),
    parse = |raw| {
        let s = raw.trim().to_lowercase();
        check_len(Username::FIELD, &s, 3, 32)?;
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
        {
            return Err(DomainError::validation(
                Username::FIELD,
                "may only contain letters a-z, digits, '_', '.' and '-'",
            ));
        }
        Ok(s)
    },
    schema = {"type": "string", "minLength": 3, "maxLength": 32, "pattern": "^[a-z0-9_.-]{3,32}$"}
);

string_value!(
    /// A plain-text password, 8..=128 characters; never printed (Debug shows `***`).
    Password,
    field = "password",
    // Kept byte for byte: the hash of an existing password must still match.
    client = |_, raw| Ok(raw),
    parse = |raw| {
        check_len(Password::FIELD, &raw, 8, 128)?;
        Ok(raw)
    },
    schema = {"type": "string", "minLength": 8, "maxLength": 128, "writeOnly": true}
);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

string_value!(
    /// A user's shown name: 1..=64 characters after trimming.
    #[derive(Debug)]
    DisplayName,
    field = "display_name",
    client = |field, raw| crate::text::clean_within(field, &raw, 64),
    parse = |raw| {
        let s = raw.trim().to_owned();
        check_len(DisplayName::FIELD, &s, 1, 64)?;
        Ok(s)
    },
    schema = {"type": "string", "minLength": 1, "maxLength": 64}
);

string_value!(
    /// A room's name: 1..=100 characters (not bytes) after trimming.
    #[derive(Debug)]
    RoomName,
    field = "name",
    client = |field, raw| crate::text::clean_within(field, &raw, 100),
    parse = |raw| {
        let s = raw.trim().to_owned();
        check_len(RoomName::FIELD, &s, 1, 100)?;
        Ok(s)
    },
    schema = {"type": "string", "minLength": 1, "maxLength": 100}
);

string_value!(
    /// A room's topic: 0..=500 characters after trimming.
    #[derive(Debug)]
    Topic,
    field = "topic",
    client = |field, raw| crate::text::clean_within(field, &raw, 500),
    parse = |raw| {
        let s = raw.trim().to_owned();
        check_len(Topic::FIELD, &s, 0, 500)?;
        Ok(s)
    },
    schema = {"type": "string", "maxLength": 500}
);

string_value!(
    /// A message's text: 1..=4000 characters, not only whitespace; kept as sent (no trim).
    #[derive(Debug)]
    MessageBody,
    field = "body",
    client = |field, raw| crate::text::clean_within(field, &raw, 4000),
    parse = |raw| {
        check_len(MessageBody::FIELD, &raw, 1, 4000)?;
        if raw.trim().is_empty() {
            return Err(DomainError::validation(MessageBody::FIELD, "must not be blank"));
        }
        Ok(raw)
    },
    schema = {"type": "string", "minLength": 1, "maxLength": 4000, "pattern": "\\S"}
);

string_value!(
    /// A reaction: 1..=32 characters with no whitespace (usually one emoji).
    #[derive(Debug)]
    Emoji,
    field = "emoji",
    client = |field, raw| {
        let s = crate::text::clean(field, &raw)?;
        if !crate::text::is_emoji(&s) {
            return Err(DomainError::validation(field, "must be an emoji"));
        }
        Ok(s)
    },
    parse = |raw| {
        check_len(Emoji::FIELD, &raw, 1, 32)?;
        if raw.chars().any(char::is_whitespace) {
            return Err(DomainError::validation(Emoji::FIELD, "must not contain whitespace"));
        }
        Ok(raw)
    },
    schema = {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^\\S+$"}
);

string_value!(
    /// A presence status line: 0..=140 characters after trimming.
    #[derive(Debug)]
    StatusMessage,
    field = "status_message",
    client = |field, raw| crate::text::clean_within(field, &raw, 140),
    parse = |raw| {
        let s = raw.trim().to_owned();
        check_len(StatusMessage::FIELD, &s, 0, 140)?;
        Ok(s)
    },
    schema = {"type": "string", "maxLength": 140}
);

/// Declares a lowercase string enum with `as_str`, `FromStr` and serde/schemars support.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, field = $field:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The JSON field name used in validation errors.
            pub const FIELD: &'static str = $field;

            /// The wire spelling.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(raw: &str) -> Result<Self, DomainError> {
                match raw.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(DomainError::validation(
                        $field,
                        concat!("must be one of: ", $($text, " "),+).trim_end(),
                    )),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(raw: String) -> Result<Self, DomainError> {
                raw.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Who may find and join a room.
    Visibility, field = "visibility", {
        /// Anyone may join.
        Public => "public",
        /// Only invited users may join.
        Private => "private",
    }
);

string_enum!(
    /// How a message body is meant to be rendered.
    MessageFormat, field = "format", {
        /// Plain text, shown as written.
        Plain => "plain",
        /// CommonMark, rendered by clients that can.
        Markdown => "markdown",
    }
);

/// Messages are plain text unless the sender says otherwise (and every message sent
/// before `MessageSent` v2 was).
impl Default for MessageFormat {
    fn default() -> Self {
        Self::Plain
    }
}

string_enum!(
    /// A member's role in a room.
    Role, field = "role", {
        /// Created the room; there is exactly one.
        Owner => "owner",
        /// May moderate.
        Admin => "admin",
        /// A plain member.
        Member => "member",
    }
);

impl Role {
    /// Owners and admins may kick, redact others' messages and invite into private rooms.
    pub fn can_moderate(&self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

string_enum!(
    /// A user's presence.
    PresenceStatus, field = "status", {
        /// Active now.
        Online => "online",
        /// Connected but idle.
        Away => "away",
        /// Not connected.
        Offline => "offline",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: DomainError) -> String {
        match err {
            DomainError::Validation { field, .. } => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn username_is_trimmed_and_lowercased() {
        assert_eq!(
            Username::parse("  Alice_1.x-Y ").unwrap().as_str(),
            "alice_1.x-y"
        );
    }

    #[test]
    fn username_length_limits() {
        assert!(Username::parse("ab").is_err());
        assert!(Username::parse("abc").is_ok());
        assert!(Username::parse("a".repeat(32)).is_ok());
        assert_eq!(
            field_of(Username::parse("a".repeat(33)).unwrap_err()),
            "username"
        );
    }

    #[test]
    fn username_rejects_other_characters() {
        for bad in ["al ice", "alice!", "élise", "al@ce", "ali\u{0}"] {
            assert!(Username::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn password_limits_and_debug_hides_it() {
        assert!(Password::parse("1234567").is_err());
        let p = Password::parse("12345678").unwrap();
        assert_eq!(format!("{p:?}"), "Password(***)");
        assert!(Password::parse("x".repeat(128)).is_ok());
        assert_eq!(
            field_of(Password::parse("x".repeat(129)).unwrap_err()),
            "password"
        );
    }

    #[test]
    fn display_name_limits() {
        assert_eq!(
            field_of(DisplayName::parse("   ").unwrap_err()),
            "display_name"
        );
        assert_eq!(DisplayName::parse(" Al ").unwrap().as_str(), "Al");
        assert!(DisplayName::parse("é".repeat(64)).is_ok());
        assert!(DisplayName::parse("é".repeat(65)).is_err());
    }

    #[test]
    fn room_name_limits_count_chars_not_bytes() {
        assert_eq!(field_of(RoomName::parse("").unwrap_err()), "name");
        assert!(RoomName::parse("r".repeat(100)).is_ok());
        assert!(RoomName::parse("r".repeat(101)).is_err());
        // 100 four-byte characters are 400 bytes but 100 characters.
        assert!(RoomName::parse("🦀".repeat(100)).is_ok());
        assert!(RoomName::parse("🦀".repeat(101)).is_err());
    }

    #[test]
    fn topic_limits() {
        assert_eq!(Topic::parse("").unwrap().as_str(), "");
        assert!(Topic::parse("t".repeat(500)).is_ok());
        assert_eq!(
            field_of(Topic::parse("t".repeat(501)).unwrap_err()),
            "topic"
        );
    }

    #[test]
    fn message_body_limits() {
        assert!(MessageBody::parse("x".repeat(4000)).is_ok());
        assert_eq!(
            field_of(MessageBody::parse("x".repeat(4001)).unwrap_err()),
            "body"
        );
        assert!(MessageBody::parse("ü".repeat(4000)).is_ok());
        assert!(MessageBody::parse("ü".repeat(4001)).is_err());
        assert!(MessageBody::parse("").is_err());
        assert!(MessageBody::parse(" \n\t ").is_err());
        assert_eq!(MessageBody::parse(" hi ").unwrap().as_str(), " hi ");
    }

    #[test]
    fn emoji_limits() {
        assert!(Emoji::parse("👍").is_ok());
        assert!(Emoji::parse(":thumbs_up:").is_err());
        assert!(Emoji::parse("").is_err());
        assert!(Emoji::parse("👍 👍").is_err());
        assert_eq!(
            field_of(Emoji::parse("👍".repeat(33)).unwrap_err()),
            "emoji"
        );
        // Reactions stored before the emoji rule stay readable.
        assert!(Emoji::parse_stored(":thumbs_up:").is_ok());
        assert!(serde_json::from_str::<Emoji>("\":thumbs_up:\"").is_ok());
    }

    #[test]
    fn client_text_is_cleaned_but_stored_text_stays_readable() {
        assert_eq!(field_of(MessageBody::parse("a\u{0}b").unwrap_err()), "body");
        assert_eq!(field_of(RoomName::parse("x\u{202E}y").unwrap_err()), "name");
        assert!(DisplayName::parse("bell\u{7}").is_err());
        assert!(Topic::parse("t\u{1b}").is_err());
        assert!(StatusMessage::parse("s\u{85}").is_err());
        assert_eq!(MessageBody::parse("e\u{301}").unwrap().as_str(), "\u{e9}");
        // An event written before these rules still deserializes.
        assert!(serde_json::from_str::<MessageBody>("\"a\\u0007b\"").is_ok());
    }

    #[test]
    fn status_message_limits() {
        assert!(StatusMessage::parse("").is_ok());
        assert!(StatusMessage::parse("s".repeat(140)).is_ok());
        assert_eq!(
            field_of(StatusMessage::parse("s".repeat(141)).unwrap_err()),
            "status_message"
        );
    }

    #[test]
    fn values_serialize_as_plain_strings_and_validate_on_the_way_in() {
        let name = RoomName::parse("general").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"general\"");
        assert_eq!(
            serde_json::from_str::<RoomName>("\"general\"").unwrap(),
            name
        );
        assert!(serde_json::from_str::<RoomName>("\"  \"").is_err());
    }

    #[test]
    fn enums_are_lowercase_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&Visibility::Private).unwrap(),
            "\"private\""
        );
        assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
        assert_eq!(
            serde_json::to_string(&PresenceStatus::Away).unwrap(),
            "\"away\""
        );
        assert_eq!("Public".parse::<Visibility>().unwrap(), Visibility::Public);
        assert_eq!(
            field_of("secret".parse::<Visibility>().unwrap_err()),
            "visibility"
        );
        assert_eq!(
            field_of("busy".parse::<PresenceStatus>().unwrap_err()),
            "status"
        );
    }

    #[test]
    fn only_owner_and_admin_moderate() {
        assert!(Role::Owner.can_moderate());
        assert!(Role::Admin.can_moderate());
        assert!(!Role::Member.can_moderate());
    }
}
