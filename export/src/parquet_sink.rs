//! The Parquet layout of an export: one column per envelope field, metadata
//! flattened, the payload as JSON text, and typed columns for the payload fields
//! most questions start from (null where an event has no such field).
//!
//! Rows are buffered in Arrow builders and handed to the writer every
//! [`BATCH_ROWS`]; the writer closes a row group every [`ROW_GROUP_ROWS`], so
//! memory stays flat however long the log is.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parley_event_log::EventEnvelope;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::Deserialize;

use crate::sink::{Counting, Output};

/// Rows per Arrow batch handed to the Parquet writer.
pub const BATCH_ROWS: usize = 8192;
/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// The columns of an export file, in order.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                text("event_id", false),
                text("event_type", false),
                Field::new("event_version", DataType::Int32, false),
                text("aggregate_type", false),
                text("aggregate_id", false),
                Field::new("sequence", DataType::Int64, false),
                Field::new("position", DataType::Int64, false),
                Field::new(
                    "recorded_at",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                // Metadata, flattened.
                text("actor_id", true),
                text("correlation_id", true),
                text("causation_id", true),
                text("idempotency_key", true),
                text("traceparent", true),
                text("request_id", true),
                // The payload as JSON text, then typed copies of common fields.
                text("payload", false),
                text("room_id", true),
                text("sender_id", true),
                text("user_id", true),
                text("message_id", true),
                Field::new("body_length", DataType::Int32, true),
            ]))
        })
        .clone()
}

/// The payload fields with typed columns: each is set when the payload is an
/// object holding it as a string, and null otherwise.
#[derive(Debug, Default, PartialEq, Deserialize)]
struct TypedFields<'a> {
    #[serde(borrow, default)]
    room_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sender_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    body: Option<Cow<'a, str>>,
}

impl<'a> TypedFields<'a> {
    /// Reads only these fields, borrowing their text (no `Value` is built). A
    /// payload this cannot read (not an object, a field that is not a string or
    /// null, a repeated key) takes the slow way, with the same result.
    fn parse(payload: &'a str) -> Self {
        if let Ok(fields) = serde_json::from_str(payload) {
            return fields;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
            return Self::default();
        };
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .map(|s| Cow::Owned(s.to_string()))
        };
        Self {
            room_id: field("room_id"),
            sender_id: field("sender_id"),
            user_id: field("user_id"),
            message_id: field("message_id"),
            body: field("body"),
        }
    }
}

/// Column builders for one batch.
struct Columns {
    event_id: StringBuilder,
    event_type: StringBuilder,
    event_version: Int32Builder,
    aggregate_type: StringBuilder,
    aggregate_id: StringBuilder,
    sequence: Int64Builder,
    position: Int64Builder,
    recorded_at: TimestampMicrosecondBuilder,
    actor_id: StringBuilder,
    correlation_id: StringBuilder,
    causation_id: StringBuilder,
    idempotency_key: StringBuilder,
    traceparent: StringBuilder,
    request_id: StringBuilder,
    payload: StringBuilder,
    room_id: StringBuilder,
    sender_id: StringBuilder,
    user_id: StringBuilder,
    message_id: StringBuilder,
    body_length: Int32Builder,
    rows: usize,
}

impl Columns {
    fn new() -> Self {
        let s = || StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 36);
        Self {
            event_id: s(),
            event_type: s(),
            event_version: Int32Builder::with_capacity(BATCH_ROWS),
            aggregate_type: s(),
            aggregate_id: s(),
            sequence: Int64Builder::with_capacity(BATCH_ROWS),
            position: Int64Builder::with_capacity(BATCH_ROWS),
            recorded_at: TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS)
                .with_timezone("UTC"),
            actor_id: s(),
            correlation_id: s(),
            causation_id: s(),
            idempotency_key: s(),
            traceparent: s(),
            request_id: s(),
            payload: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 512),
            room_id: s(),
            sender_id: s(),
            user_id: s(),
            message_id: s(),
            body_length: Int32Builder::with_capacity(BATCH_ROWS),
            rows: 0,
        }
    }

    /// Appends `e`, whose payload is the JSON text `payload` (`e.payload` is not read).
    fn push(&mut self, e: &EventEnvelope, payload: &str, uuid_buf: &mut [u8; 36]) {
        let mut uuid = |b: &mut StringBuilder, id: &uuid::Uuid| {
            b.append_value(id.hyphenated().encode_lower(uuid_buf));
        };
        uuid(&mut self.event_id, &e.event_id);
        self.event_type.append_value(&e.event_type);
        self.event_version.append_value(e.event_version);
        self.aggregate_type.append_value(&e.aggregate_type);
        uuid(&mut self.aggregate_id, &e.aggregate_id);
        self.sequence.append_value(e.sequence);
        self.position.append_value(e.position);
        self.recorded_at
            .append_value(e.recorded_at.timestamp_micros());
        let m = &e.metadata;
        match &m.actor_id {
            Some(id) => uuid(&mut self.actor_id, id),
            None => self.actor_id.append_null(),
        }
        self.correlation_id
            .append_option(m.correlation_id.as_deref());
        self.causation_id.append_option(m.causation_id.as_deref());
        self.idempotency_key
            .append_option(m.idempotency_key.as_deref());
        self.traceparent.append_option(m.traceparent.as_deref());
        self.request_id.append_option(m.request_id.as_deref());
        self.payload.append_value(payload);
        let typed = TypedFields::parse(payload);
        self.room_id.append_option(typed.room_id.as_deref());
        self.sender_id.append_option(typed.sender_id.as_deref());
        self.user_id.append_option(typed.user_id.as_deref());
        self.message_id.append_option(typed.message_id.as_deref());
        self.body_length.append_option(
            typed
                .body
                .map(|b| i32::try_from(b.chars().count()).unwrap_or(i32::MAX)),
        );
        self.rows += 1;
    }

    fn finish(&mut self) -> anyhow::Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.event_version.finish()),
            Arc::new(self.aggregate_type.finish()),
            Arc::new(self.aggregate_id.finish()),
            Arc::new(self.sequence.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.actor_id.finish()),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.causation_id.finish()),
            Arc::new(self.idempotency_key.finish()),
            Arc::new(self.traceparent.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.room_id.finish()),
            Arc::new(self.sender_id.finish()),
            Arc::new(self.user_id.finish()),
            Arc::new(self.message_id.finish()),
            Arc::new(self.body_length.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

/// Streams events into a Parquet file.
pub struct ParquetSink {
    writer: ArrowWriter<Counting<Output>>,
    columns: Columns,
    bytes: Arc<AtomicU64>,
    uuid_buf: [u8; 36],
}

impl ParquetSink {
    pub fn new(out: Output) -> anyhow::Result<Self> {
        let (counting, bytes) = Counting::new(out);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("parley-export {}", env!("CARGO_PKG_VERSION")));
        // A dictionary of values that never repeat is work thrown away (the writer
        // gives up on it only after it fills); min/max of payload text answer no
        // question.
        for column in ["event_id", "aggregate_id", "message_id", "payload"] {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        let props = props
            .set_column_statistics_enabled(ColumnPath::from("payload"), EnabledStatistics::None)
            .build();
        Ok(Self {
            writer: ArrowWriter::try_new(counting, schema(), Some(props))?,
            columns: Columns::new(),
            bytes,
            uuid_buf: [0; 36],
        })
    }

    /// Writes `event` with the payload JSON text `payload` (`event.payload` is not read).
    pub fn write(&mut self, event: &EventEnvelope, payload: &str) -> anyhow::Result<()> {
        self.columns.push(event, payload, &mut self.uuid_buf);
        if self.columns.rows >= BATCH_ROWS {
            let batch = self.columns.finish()?;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<u64> {
        if self.columns.rows > 0 {
            let batch = self.columns.finish()?;
            self.writer.write(&batch)?;
        }
        // Writes the footer and hands the output back.
        let mut out = self.writer.into_inner()?;
        std::io::Write::flush(&mut out)?;
        Ok(self.bytes.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_fields_are_the_string_fields_of_an_object_payload() {
        let fields = TypedFields::parse(
            r#"{"room_id":"r","body":"h\u00e9llo \"x\"","n":{"body":"nested"},"user_id":null}"#,
        );
        assert_eq!(fields.room_id.as_deref(), Some("r"));
        assert_eq!(fields.body.as_deref(), Some("héllo \"x\""));
        assert_eq!(fields.user_id, None);
        assert_eq!(fields.sender_id, None);
        // A field that is no string, or a payload that is no object: null columns.
        let fields = TypedFields::parse(r#"{"room_id":7,"sender_id":"s"}"#);
        assert_eq!(fields.room_id, None);
        assert_eq!(fields.sender_id.as_deref(), Some("s"));
        assert_eq!(
            TypedFields::parse(r#""not even an object""#),
            TypedFields::default()
        );
        // A repeated key: the last one counts, as in a `Value`.
        let fields = TypedFields::parse(r#"{"room_id":"a","room_id":"b"}"#);
        assert_eq!(fields.room_id.as_deref(), Some("b"));
    }
}
