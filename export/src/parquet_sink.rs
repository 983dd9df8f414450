//! The Parquet layout of an export: one column per envelope field, metadata
//! flattened, the payload as JSON text, and typed columns for the payload fields
//! most questions start from (null where an event has no such field).
//!
//! Rows are buffered in Arrow builders and handed to the writer every
//! [`BATCH_ROWS`]; the writer closes a row group every [`ROW_GROUP_ROWS`], so
//! memory stays flat however long the log is.

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
use parquet::file::properties::WriterProperties;

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
            payload: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 256),
            room_id: s(),
            sender_id: s(),
            user_id: s(),
            message_id: s(),
            body_length: Int32Builder::with_capacity(BATCH_ROWS),
            rows: 0,
        }
    }

    fn push(&mut self, e: &EventEnvelope, uuid_buf: &mut [u8; 36]) {
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
        self.payload.append_value(e.payload.to_string());
        let field = |name: &str| e.payload.get(name).and_then(|v| v.as_str());
        self.room_id.append_option(field("room_id"));
        self.sender_id.append_option(field("sender_id"));
        self.user_id.append_option(field("user_id"));
        self.message_id.append_option(field("message_id"));
        self.body_length.append_option(
            field("body").map(|b| i32::try_from(b.chars().count()).unwrap_or(i32::MAX)),
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
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("parley-export {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            writer: ArrowWriter::try_new(counting, schema(), Some(props))?,
            columns: Columns::new(),
            bytes,
            uuid_buf: [0; 36],
        })
    }

    pub fn write(&mut self, event: &EventEnvelope) -> anyhow::Result<()> {
        self.columns.push(event, &mut self.uuid_buf);
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
