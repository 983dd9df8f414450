//! The one error type of the domain; each variant maps to one HTTP status.

/// Why a command (or a value) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A value is malformed (HTTP 422); `field` is the JSON field name the client sent.
    #[error("invalid {field}: {message}")]
    Validation { field: String, message: String },
    /// A rule of the product is broken (HTTP 422).
    #[error("{message}")]
    Rule {
        field: Option<String>,
        message: String,
    },
    /// The actor may not do this (HTTP 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The target does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The command clashes with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
}

impl DomainError {
    /// A malformed value of the JSON field `field`.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// A broken product rule not tied to one field.
    pub fn rule(message: impl Into<String>) -> Self {
        Self::Rule {
            field: None,
            message: message.into(),
        }
    }

    /// A broken product rule about the JSON field `field`.
    pub fn rule_on(field: &str, message: impl Into<String>) -> Self {
        Self::Rule {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    /// The actor may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    /// The target does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// The command clashes with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }
}
