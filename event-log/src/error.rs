use uuid::Uuid;

/// What can go wrong in the event log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A stream was not at the expected version: someone else appended first.
    #[error("concurrent write to aggregate {aggregate_id}")]
    Conflict { aggregate_id: Uuid },
    /// The stream exists under another aggregate type: an id never changes kind.
    #[error("aggregate {aggregate_id} belongs to another aggregate type")]
    AggregateTypeMismatch { aggregate_id: Uuid },
    /// The idempotency scope already holds a result (a concurrent retry won).
    #[error("idempotency key already used")]
    DuplicateCommand { scope: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Appends are queued past the log's bound for longer than it waits:
    /// nothing of the request was written.
    #[error("the event log is busy: the append queue stayed full")]
    Busy,
    #[error("the group committer has stopped")]
    CommitterGone,
    /// The database did not answer (down, restarting, failing over, out of
    /// connections): nothing of the request was written, or, when the link
    /// broke during the commit, the client's retry finds the first answer.
    #[error("the event log's database does not answer: {0}")]
    Unavailable(String),
}

impl LogError {
    /// Whether retrying the whole command (reload, decide, append) may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, LogError::Conflict { .. })
    }

    /// Whether the database did not answer, so the client should retry later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LogError::Unavailable(_) => true,
            LogError::Database(e) => database_unreachable(e),
            _ => false,
        }
    }
}

/// Whether `e` says the database is out of reach rather than that the request
/// was wrong: no connection (refused, broken, timed out waiting for one), or the
/// server refusing work while it stops, starts, or runs as a read-only standby.
/// Such a request can succeed later unchanged, so services answer 503.
pub fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: admin or crash shutdown, and
            // "the database system is starting up"; 53300: too many
            // connections; 25006: a read-only transaction (a standby not yet
            // promoted, or the old primary after a failover).
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300" | "25006")
        }),
        _ => false,
    }
}

/// The text the `events` trigger raises when a stream would change type.
const TYPE_MISMATCH: &str = "belongs to another aggregate type";

/// Maps a unique violation to the log's own errors; everything else stays a database error.
pub(crate) fn classify(err: sqlx::Error, request: &crate::AppendRequest) -> LogError {
    if let sqlx::Error::Database(db) = &err {
        // Raised by the migrations' trigger on `events` (both backends).
        if db.message().contains(TYPE_MISMATCH) {
            let named = request
                .streams
                .iter()
                .find(|s| db.message().contains(&s.aggregate_id.to_string()))
                .or(request.streams.first());
            if let Some(stream) = named {
                return LogError::AggregateTypeMismatch {
                    aggregate_id: stream.aggregate_id,
                };
            }
        }
        if db.is_unique_violation() {
            let constraint = db.constraint().unwrap_or_default().to_string();
            let message = db.message().to_string();
            let names_results = constraint.contains("command_results")
                || message.contains("command_results")
                || constraint.ends_with("_pkey") && message.contains("scope");
            if names_results {
                if let Some(idem) = &request.idempotency {
                    return LogError::DuplicateCommand {
                        scope: idem.scope.clone(),
                    };
                }
            }
            // A duplicate (aggregate_id, sequence): the first stream is reported; the
            // caller reloads every stream it touched anyway.
            if let Some(stream) = request.streams.first() {
                return LogError::Conflict {
                    aggregate_id: stream.aggregate_id,
                };
            }
        }
    }
    LogError::Database(err)
}
