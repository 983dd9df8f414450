//! `--resume` for JSON Lines: continue a file after its last complete line.
//!
//! A JSON Lines export can be cut anywhere (a crash, a full disk, Ctrl-C of an
//! older release): whatever follows the last newline is a partial line. Resuming
//! drops that partial line, reads the position of the last complete one, and
//! appends from the next position on, so the resumed file is byte for byte the
//! file one uninterrupted export would have written (with the same filters).
//!
//! Parquet files cannot be appended to (the footer is written last): a Parquet
//! export is resumed into a new part file with `--from-position` set to one past
//! the summary's "covered up to" (readers such as DuckDB read `part-*.parquet` as
//! one table). See docs/analysts.md.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How far back from the end a last line is looked for.
const MAX_LINE: u64 = 16 << 20;

/// Where a JSON Lines file stands before resuming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// The position of the last complete line, or `None` for an empty file.
    pub last_position: Option<i64>,
    /// Bytes of a partial last line that were cut off.
    pub truncated: u64,
}

/// Truncates a partial last line (if any) and returns the last complete line's
/// position. A missing file is an empty one.
pub fn prepare_jsonl(path: &Path) -> anyhow::Result<ResumePoint> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ResumePoint {
                last_position: None,
                truncated: 0,
            })
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "--resume: cannot open {}: {e}",
                path.display()
            ))
        }
    };
    let len = file.metadata()?.len();
    let window = len.min(MAX_LINE);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(window as usize);
    file.read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|b| *b == b'\n') else {
        if window < len {
            anyhow::bail!(
                "--resume: no complete line in the last 16 MiB of {}",
                path.display()
            );
        }
        // Not one complete line: start over.
        file.set_len(0)?;
        return Ok(ResumePoint {
            last_position: None,
            truncated: len,
        });
    };
    let keep = len - window + end as u64 + 1;
    let start = tail[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    if start == 0 && window < len {
        anyhow::bail!(
            "--resume: the last line of {} is over 16 MiB",
            path.display()
        );
    }
    let line = &tail[start..end];
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
        anyhow::anyhow!(
            "--resume: the last line of {} is not an exported event ({e}); \
             is it a JSON Lines export?",
            path.display()
        )
    })?;
    let position = value["position"].as_i64().ok_or_else(|| {
        anyhow::anyhow!(
            "--resume: the last line of {} has no position",
            path.display()
        )
    })?;
    let truncated = len - keep;
    if truncated > 0 {
        file.set_len(keep)?;
    }
    Ok(ResumePoint {
        last_position: Some(position),
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_a_partial_line_and_reads_the_last_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"position\":1}\n{\"position\":7}\n{\"posi").unwrap();
        let point = prepare_jsonl(&path).unwrap();
        assert_eq!(point.last_position, Some(7));
        assert_eq!(point.truncated, 6);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"position\":1}\n{\"position\":7}\n"
        );
        // Already clean: nothing cut.
        assert_eq!(prepare_jsonl(&path).unwrap().truncated, 0);
    }

    #[test]
    fn empty_missing_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.jsonl");
        assert_eq!(prepare_jsonl(&path).unwrap().last_position, None);
        std::fs::write(&path, "{\"posit").unwrap();
        assert_eq!(prepare_jsonl(&path).unwrap().last_position, None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::write(&path, "PAR1 binary\n").unwrap();
        assert!(prepare_jsonl(&path)
            .unwrap_err()
            .to_string()
            .contains("not an exported event"));
    }
}
