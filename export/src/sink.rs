//! Output formats: JSON Lines (one envelope per line) and Parquet (one column per
//! envelope field, plus typed columns for common payload fields).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parley_event_log::EventEnvelope;

use crate::event::ExportEvent;
use crate::parquet_sink::ParquetSink;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines: the event envelope, one per line, as on the wire.
    Jsonl,
    /// Apache Parquet (snappy-compressed).
    Parquet,
}

impl Format {
    /// The format a file name implies (`.jsonl`, `.ndjson`, `.json`, `.parquet`, `.pq`).
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// `jsonl` or `parquet`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Jsonl => "jsonl",
            Self::Parquet => "parquet",
        }
    }
}

/// A writer that counts the bytes that went through it.
pub struct Counting<W> {
    inner: W,
    count: Arc<AtomicU64>,
}

impl<W: Write> Counting<W> {
    /// Wraps `inner`; the returned counter reads the bytes written so far.
    pub fn new(inner: W) -> (Self, Arc<AtomicU64>) {
        let count = Arc::new(AtomicU64::new(0));
        (
            Self {
                inner,
                count: count.clone(),
            },
            count,
        )
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where shaped events go.
pub enum Sink {
    Jsonl(JsonlSink),
    Parquet(Box<ParquetSink>),
}

/// Any byte destination: a file, stdout, a buffer.
pub type Output = Box<dyn Write + Send>;

impl Sink {
    /// A sink of `format` writing to `out`.
    pub fn new(format: Format, out: Output) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Jsonl => Sink::Jsonl(JsonlSink::new(out)),
            Format::Parquet => Sink::Parquet(Box::new(ParquetSink::new(out)?)),
        })
    }

    /// Writes one event.
    pub fn write(&mut self, event: &EventEnvelope) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(s) => s.write(event),
            Sink::Parquet(s) => s.write(event, &event.payload.to_string()),
        }
    }

    /// Writes one event whose payload is JSON text.
    pub fn write_event(&mut self, event: &ExportEvent) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(s) => s.write_event(event),
            Sink::Parquet(s) => s.write(&event.envelope, &event.payload),
        }
    }

    /// Makes everything written so far durable in the output (JSON Lines: whole
    /// lines; Parquet: nothing until `finish`, which writes the footer).
    pub fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(s) => s.flush(),
            Sink::Parquet(_) => Ok(()),
        }
    }

    /// Completes the output (Parquet footer), flushes it, and returns the bytes written.
    pub fn finish(self) -> anyhow::Result<u64> {
        match self {
            Sink::Jsonl(s) => s.finish(),
            Sink::Parquet(s) => s.finish(),
        }
    }
}

/// JSON Lines through a buffer: one envelope per line (see [`crate::jsonl`]).
pub struct JsonlSink {
    out: std::io::BufWriter<Counting<Output>>,
    bytes: Arc<AtomicU64>,
    line: Vec<u8>,
}

impl JsonlSink {
    pub fn new(out: Output) -> Self {
        let (counting, bytes) = Counting::new(out);
        Self {
            out: std::io::BufWriter::with_capacity(1 << 20, counting),
            bytes,
            line: Vec::with_capacity(1024),
        }
    }

    pub fn write(&mut self, event: &EventEnvelope) -> anyhow::Result<()> {
        self.write_line(event, &event.payload.to_string())
    }

    /// An event whose payload is JSON text (the envelope's own payload is unused).
    pub fn write_event(&mut self, event: &ExportEvent) -> anyhow::Result<()> {
        self.write_line(&event.envelope, &event.payload)
    }

    fn write_line(&mut self, envelope: &EventEnvelope, payload: &str) -> anyhow::Result<()> {
        // Whole lines only reach the buffer, so a crash mid-event never leaves
        // half a line behind a complete one.
        self.line.clear();
        crate::jsonl::write_envelope(&mut self.line, envelope, payload);
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.out.flush()?;
        Ok(self.bytes.load(Ordering::Relaxed))
    }
}
