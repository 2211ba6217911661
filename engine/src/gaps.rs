//! The gap ranges of a run, kept bounded: every range is counted per symbol, stream and cause,
//! the first [`FIRST_RANGES_MAX`] are kept as they were, and, when asked (`run.gaps_file`,
//! `--gaps-file`), every range is appended to a JSON-lines file as it is seen. The run summary
//! prints the counts of the [`STREAMS_LISTED_MAX`] streams that missed the most ids and the
//! first ranges, so its line stays a few kilobytes whatever happens (issue 11 saw a 200 KB
//! summary line with 200 symbols); the file has them all.
//!
//! Memory is bounded by the symbols ever subscribed x 4 streams x 2 causes (one count each),
//! plus the first ranges and the file's buffer. The owner (the sidecar, or the counting
//! consumer without one) records from its own thread, never the reader's.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Ranges kept as they were for the summary.
pub const FIRST_RANGES_MAX: usize = 10;
/// Streams the summary lists counts for (those that missed the most ids).
pub const STREAMS_LISTED_MAX: usize = 20;

/// One missing range.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GapRange {
    /// Symbol.
    pub symbol: String,
    /// Stream suffix.
    pub stream: &'static str,
    /// First missing id.
    pub from: i64,
    /// Last missing id.
    pub to: i64,
    /// `wire`, or `queue_full` for a consumer's full ring.
    pub cause: &'static str,
}

/// The ranges of one symbol's stream and cause.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StreamGaps {
    /// Symbol.
    pub symbol: String,
    /// Stream suffix.
    pub stream: &'static str,
    /// `wire` or `queue_full`.
    pub cause: &'static str,
    /// Ranges seen.
    pub ranges: u64,
    /// Ids in them.
    pub ids: u64,
}

/// What the summary prints of the ranges.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GapReport {
    /// Every range seen (wire gaps and queue drops).
    pub ranges_total: u64,
    /// Symbol streams (and causes) with at least one range.
    pub streams_total: u64,
    /// The first ranges, as they came (at most [`FIRST_RANGES_MAX`]).
    pub first: Vec<GapRange>,
    /// The streams that missed the most ids, most first (at most [`STREAMS_LISTED_MAX`]).
    pub by_stream: Vec<StreamGaps>,
    /// The file holding every range, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Why the file is incomplete, if writing it failed (the counts are still whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_error: Option<String>,
}

/// Counts per (symbol, stream, cause); see the module documentation.
pub struct GapLog {
    counts: HashMap<(String, &'static str, &'static str), (u64, u64)>,
    first: Vec<GapRange>,
    total: u64,
    file: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    file_error: Option<String>,
}

impl GapLog {
    /// A log writing every range to `file` (created, or truncated) when given.
    pub fn new(file: Option<&Path>) -> GapLog {
        let mut log = GapLog {
            counts: HashMap::new(),
            first: Vec::with_capacity(FIRST_RANGES_MAX),
            total: 0,
            file: None,
            file_error: None,
        };
        if let Some(path) = file {
            match std::fs::File::create(path) {
                Ok(f) => log.file = Some((path.to_path_buf(), std::io::BufWriter::new(f))),
                Err(e) => log.fail(path, &e),
            }
        }
        log
    }

    /// Records one range.
    pub fn record(&mut self, range: GapRange) {
        self.total += 1;
        let ids = range.to.saturating_sub(range.from).saturating_add(1).max(0) as u64;
        let key = (range.symbol.clone(), range.stream, range.cause);
        let count = self.counts.entry(key).or_insert((0, 0));
        count.0 += 1;
        count.1 = count.1.saturating_add(ids);
        if let Some((path, out)) = &mut self.file {
            let line = serde_json::to_string(&range).unwrap_or_default();
            if let Err(e) = writeln!(out, "{line}") {
                let path = path.clone();
                self.fail(&path, &e);
            }
        }
        if self.first.len() < FIRST_RANGES_MAX {
            self.first.push(range);
        }
    }

    fn fail(&mut self, path: &Path, error: &std::io::Error) {
        let message = format!("{}: {error}", path.display());
        tracing::warn!("gaps file: {message}; ranges are still counted");
        self.file = None;
        self.file_error = Some(message);
    }

    /// Flushes the file and says what the summary prints.
    pub fn finish(mut self) -> GapReport {
        let mut file = None;
        if let Some((path, mut out)) = self.file.take() {
            match out.flush() {
                Ok(()) => file = Some(path),
                Err(e) => self.fail(&path, &e),
            }
        }
        let mut by_stream: Vec<StreamGaps> = self
            .counts
            .iter()
            .map(|((symbol, stream, cause), &(ranges, ids))| StreamGaps {
                symbol: symbol.clone(),
                stream,
                cause,
                ranges,
                ids,
            })
            .collect();
        by_stream.sort_by(|a, b| {
            (b.ids, b.ranges)
                .cmp(&(a.ids, a.ranges))
                .then_with(|| (&a.symbol, a.stream, a.cause).cmp(&(&b.symbol, b.stream, b.cause)))
        });
        let streams_total = by_stream.len() as u64;
        by_stream.truncate(STREAMS_LISTED_MAX);
        GapReport {
            ranges_total: self.total,
            streams_total,
            first: self.first,
            by_stream,
            file,
            file_error: self.file_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(symbol: &str, stream: &'static str, from: i64, to: i64) -> GapRange {
        GapRange {
            symbol: symbol.into(),
            stream,
            from,
            to,
            cause: "queue_full",
        }
    }

    /// Regression (issue 11): with 200 symbols lagging, the summary listed every range, a
    /// 200 KB line. It now lists the first few and the streams that missed the most, with
    /// every range counted, and stays small however many ranges come.
    #[test]
    fn the_report_stays_small_however_many_ranges_come() {
        let mut log = GapLog::new(None);
        for s in 0..200 {
            for i in 0..100 {
                let symbol = format!("SYM{s}USDT");
                log.record(range(&symbol, "trade", i * 10, i * 10 + s));
            }
        }
        let report = log.finish();
        assert_eq!(report.ranges_total, 20_000);
        assert_eq!(report.streams_total, 200);
        assert_eq!(report.first.len(), FIRST_RANGES_MAX);
        assert_eq!(report.first[1], range("SYM0USDT", "trade", 10, 10));
        assert_eq!(report.by_stream.len(), STREAMS_LISTED_MAX);
        let top = &report.by_stream[0];
        assert_eq!(
            (top.symbol.as_str(), top.ranges, top.ids),
            ("SYM199USDT", 100, 20_000)
        );
        let line = serde_json::to_string(&report).expect("serializes");
        assert!(line.len() < 4096, "{} bytes", line.len());
    }

    /// Asked for, the file holds every range, one JSON object per line.
    #[test]
    fn the_file_holds_every_range() {
        let dir = std::env::temp_dir().join(format!("hotpath-gaps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("gaps.jsonl");
        let mut log = GapLog::new(Some(&path));
        for i in 0..50 {
            log.record(range("BTCUSDT", "depth", i, i + 1));
        }
        let report = log.finish();
        assert_eq!(report.file.as_deref(), Some(path.as_path()));
        let text = std::fs::read_to_string(&path).expect("written");
        let lines: Vec<GapRange> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                range(
                    v["symbol"].as_str().unwrap_or_default(),
                    "depth",
                    v["from"].as_i64().unwrap_or(-1),
                    v["to"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(lines.len(), 50);
        assert_eq!(lines[49], range("BTCUSDT", "depth", 49, 50));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file that cannot be written is said in the report; the counts are whole.
    #[test]
    fn a_file_that_cannot_be_written_is_reported() {
        let mut log = GapLog::new(Some(Path::new("/nonexistent-dir/gaps.jsonl")));
        log.record(range("BTCUSDT", "trade", 1, 3));
        let report = log.finish();
        assert_eq!(report.ranges_total, 1);
        assert_eq!(report.by_stream[0].ids, 3);
        assert!(report.file.is_none());
        assert!(
            report
                .file_error
                .as_deref()
                .is_some_and(|e| e.starts_with("/nonexistent-dir/gaps.jsonl"))
        );
    }
}
