//! The dead-letter file: records a sink could not deliver, or cannot prove it delivered,
//! appended to a file so that nothing it took from the feed is dropped silently, and so that
//! `hotpath dlq resend FILE` can send them later. Both sinks write this one format, each to its
//! own file (`kinesis.dead_letter_path`, `redis.dead_letter_path`).
//!
//! # Format (version 2)
//!
//! JSON Lines in UTF-8: one record per line, each line one JSON object followed by a line feed
//! (`\n`). The writer writes the keys in the orders shown, without whitespace. A Kinesis record:
//!
//! ```text
//! {"v":2,"sink":"kinesis","stream":"market-sbe-trade","partition_key":"BTCUSDT","data":"AAF0cmFkZf7/","attempts":7,"first_attempt_ms":1763700000000,"dead_at_ms":1763700030000,"outcome":"failed","error":"ProvisionedThroughputExceededException: Rate exceeded for shard shardId-000000000000"}
//! ```
//!
//! A PostgreSQL row (a trade or a book; `hotpath dlq resend` does not send these yet: load
//! them with the `row` values, `INSERT ... ON CONFLICT DO NOTHING` keeps it exactly once):
//!
//! ```text
//! {"v":2,"sink":"postgres","table":"ticks","row":[["exchange","binance"],["symbol","BTCUSDT"],["trade_id","12345"],["price","69769.88"],["qty","0.001"],["side","buy"],["ts","2025-11-21T04:40:00.000000Z"],["event_time","2025-11-21T04:40:00.000123Z"]],"attempts":3,"first_attempt_ms":1763700000000,"dead_at_ms":1763700030000,"outcome":"unknown","error":"db error: ..."}
//! ```
//!
//! A Redis trade (one stream entry):
//!
//! ```text
//! {"v":2,"sink":"redis","key":"trades:{BTCUSDT}","id":"1763700000000-12345","fields":[["exchange","binance"],["pair","BTCUSDT"],["price","69769.88"],["qty","0.001"],["ts","2025-11-21T04:40:00.000000Z"],["side","buy"],["trade_id","12345"],["event_time_us","1763700000000123"],["trade_time_us","1763700000000000"]],"attempts":0,"first_attempt_ms":0,"dead_at_ms":1763700030000,"outcome":"failed","error":"redis.buffer_trades_max reached while Redis was unreachable"}
//! ```
//!
//! | key | JSON type | meaning |
//! |---|---|---|
//! | `v` | number | the format version, `2` |
//! | `sink` | string | `kinesis`, `redis` or `postgres`: which keys follow |
//! | `stream` | string | Kinesis: the stream the record was for |
//! | `partition_key` | string | Kinesis: the record's partition key |
//! | `data` | string | Kinesis: the record's data bytes in standard base64 (RFC 4648 section 4: `A-Z a-z 0-9 + /`) with `=` padding; `""` for empty data |
//! | `key` | string | Redis: the stream key, `trades:{SYMBOL}` (`trades:SYMBOL` with `redis.keys = "plain"`) |
//! | `id` | string | Redis: the entry id, `<trade time ms>-<trade id>` |
//! | `fields` | array | Redis: the entry's fields in order, each a `[name, value]` array of two strings (the `XADD` field list) |
//! | `table` | string | PostgreSQL: the table, `ticks` or `books` |
//! | `row` | array | PostgreSQL: the row's columns in order, each a `[name, value]` array of two strings (the value as PostgreSQL's text form; `""` for NULL) |
//! | `attempts` | number | how many requests (PutRecords calls, Redis pipelines) tried the record, 0 to 2^32 - 1 |
//! | `first_attempt_ms` | number | when the first attempt was made, Unix epoch milliseconds (signed 64-bit); 0 when none was |
//! | `dead_at_ms` | number | when the sink gave up on the record, Unix epoch milliseconds (signed 64-bit) |
//! | `outcome` | string | `failed`: no attempt can have delivered it (none was made, or each was refused explicitly); `unknown`: an attempt got no answer (timeout, connection lost, still in flight at the shutdown deadline), so it may have been delivered |
//! | `error` | string | the last error, for example `ProvisionedThroughputExceededException: ...` |
//!
//! Strings are JSON strings: `"`, `\` and control characters (line feeds included) are escaped,
//! so a record never spans lines; other characters are written as plain UTF-8.
//!
//! Version 1 lines (written before `sink` and `outcome` existed: the Kinesis keys and the common
//! ones, without those two) are still read, as Kinesis records with outcome `unknown`: the
//! version 1 writer did not tell a refused record from one whose answer was lost.
//!
//! Reading: keys may come in any order and with JSON whitespace between tokens. A line is
//! rejected if it is empty, is not a JSON object, has `v` other than 1 or 2, has a `sink` other
//! than `kinesis` or `redis`, lacks a key of its sink, has a key not listed for its sink, or has
//! `data` that is not canonical padded base64; the error names the file and the 1-based line
//! number. A file that ends with `\n` has no further line. A last line without `\n` is a record
//! if it is one (a crash between the record and its line feed), and otherwise a torn write,
//! reported as [`DeadLetters::torn_tail`] rather than as an error.
//!
//! Writing: one [`DeadLetterWriter`] appends to a file at a time, each record (its `\n`
//! included) in one `write` call. A write that fails or is short (ENOSPC, a file size limit) is
//! undone by cutting the file back to its length before it, so a record is in the file whole or
//! not at all and later records are never glued to a fragment; if even the cut fails, the next
//! append repairs the tail first. Opening a file whose last line is torn (a crash mid-write)
//! first repairs it: a complete record only lacking its `\n` gets one, anything else is cut off
//! (it is what was left of a record a crash lost), so that appended records start on a line of
//! their own. [`replace`] writes a whole file afresh (a temporary file renamed over it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The format version this module writes.
const VERSION: u32 = 2;
/// The older version this module still reads.
const VERSION_1: u32 = 1;
/// How often a [`Spool`] writes appended records through to the disk.
const SYNC_EVERY: Duration = Duration::from_millis(100);

/// Whether a dead record may have been delivered after all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// No attempt can have delivered it: none was made, or each was refused explicitly.
    Failed,
    /// An attempt got no answer: it may have been delivered.
    Unknown,
}

/// Where a dead record was going, and what it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Kinesis record.
    Kinesis {
        /// The stream the record was for.
        stream: String,
        /// The record's partition key.
        partition_key: String,
        /// The record's data.
        data: Vec<u8>,
    },
    /// A PostgreSQL row (`ticks` or `books`).
    Postgres {
        /// The table.
        table: String,
        /// The row's columns in order, values in PostgreSQL's text form (`""`: NULL).
        row: Vec<(String, String)>,
    },
    /// A Redis stream entry (a trade).
    Redis {
        /// The stream key, `trades:{SYMBOL}` (`trades:SYMBOL` with plain keys).
        key: String,
        /// The entry id, `<trade time ms>-<trade id>`.
        id: String,
        /// The entry's fields, in order.
        fields: Vec<(String, String)>,
    },
}

/// One record a sink gave up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadRecord {
    /// Where it was going and what it carries.
    pub target: Target,
    /// How many requests tried the record.
    pub attempts: u32,
    /// When the first attempt was made, Unix epoch milliseconds (0: none was).
    pub first_attempt_ms: i64,
    /// When the sink gave up on the record, Unix epoch milliseconds.
    pub dead_at_ms: i64,
    /// Whether it may have been delivered.
    pub outcome: Outcome,
    /// The last error.
    pub error: String,
}

/// A Kinesis line as written; the field order is the key order of the format.
#[derive(Serialize)]
struct KinesisOut<'a> {
    v: u32,
    sink: &'static str,
    stream: &'a str,
    partition_key: &'a str,
    data: String,
    attempts: u32,
    first_attempt_ms: i64,
    dead_at_ms: i64,
    outcome: Outcome,
    error: &'a str,
}

/// A Redis line as written; the field order is the key order of the format.
#[derive(Serialize)]
struct RedisOut<'a> {
    v: u32,
    sink: &'static str,
    key: &'a str,
    id: &'a str,
    fields: &'a [(String, String)],
    attempts: u32,
    first_attempt_ms: i64,
    dead_at_ms: i64,
    outcome: Outcome,
    error: &'a str,
}

/// A PostgreSQL line as written (and read: every key required, no other key allowed).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresLine {
    v: u32,
    sink: String,
    table: String,
    row: Vec<(String, String)>,
    attempts: u32,
    first_attempt_ms: i64,
    dead_at_ms: i64,
    outcome: Outcome,
    error: String,
}

/// Only the version and sink of a line, to choose how to read the rest.
#[derive(Deserialize)]
struct LineHead {
    v: u32,
    sink: Option<String>,
}

/// A version 1 line: every key required, no other key allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V1In {
    #[allow(dead_code)]
    v: u32,
    stream: String,
    partition_key: String,
    data: String,
    attempts: u32,
    first_attempt_ms: i64,
    dead_at_ms: i64,
    error: String,
}

/// A version 2 Kinesis line: every key required, no other key allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KinesisIn {
    #[allow(dead_code)]
    v: u32,
    #[allow(dead_code)]
    sink: String,
    stream: String,
    partition_key: String,
    data: String,
    attempts: u32,
    first_attempt_ms: i64,
    dead_at_ms: i64,
    outcome: Outcome,
    error: String,
}

/// A version 2 Redis line: every key required, no other key allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisIn {
    #[allow(dead_code)]
    v: u32,
    #[allow(dead_code)]
    sink: String,
    key: String,
    id: String,
    fields: Vec<(String, String)>,
    attempts: u32,
    first_attempt_ms: i64,
    dead_at_ms: i64,
    outcome: Outcome,
    error: String,
}

/// Appends records to the dead-letter file (created if missing, parent directories too), one
/// line each, each in one `write` call; `flush` fsyncs (sync_data).
///
/// Records appended but not flushed are in the OS's cache: a crash of the process keeps them, a
/// crash of the machine may not.
#[derive(Debug)]
pub struct DeadLetterWriter {
    /// The file's path, as given to `open`.
    path: PathBuf,
    /// The file, opened for appending.
    file: File,
    /// The file's length after the last whole record: a failed write is cut back to it.
    len: u64,
    /// A failed write could not be cut back: the tail is repaired before the next append.
    torn: bool,
    /// Scratch space for one encoded line, reused across appends.
    line: Vec<u8>,
}

impl DeadLetterWriter {
    /// Opens `path` for appending, creating it and its parent directories if missing, and
    /// repairs a torn last line (see the module documentation).
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let cut_bytes = repair_torn_tail(&mut file)?;
        if cut_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                cut_bytes,
                "dead-letter file ended in a torn record; cut it off"
            );
        }
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            torn: false,
            line: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as one line, in one `write` call. On error the file holds what it
    /// held before (the fragment a short write left is cut off).
    pub fn append(&mut self, record: &DeadRecord) -> io::Result<()> {
        if self.torn {
            repair_torn_tail(&mut self.file)?;
            self.len = self.file.metadata()?.len();
            self.torn = false;
        }
        self.line.clear();
        encode_line(record, &mut self.line)?;
        match write_once(&mut self.file, &self.line) {
            Ok(()) => {
                self.len += self.line.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.undo_failed_write();
                Err(e)
            }
        }
    }

    /// Cuts off what a failed write left after the last whole record; if that fails too, the
    /// next append repairs the tail first.
    fn undo_failed_write(&mut self) {
        if self.file.set_len(self.len).is_err() {
            self.torn = true;
        }
    }

    /// Waits until the file's data is on disk.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Writes `line` with one `write` call: a short write is an error (the caller undoes it).
fn write_once(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    let written = out.write(line)?;
    if written < line.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", line.len()),
        ));
    }
    Ok(())
}

/// Writes `records` to `path` afresh: into `PATH.tmp` first, fsynced, then renamed over `path`,
/// so `path` holds either its old content or all of `records`, never a mix or a fragment.
pub fn replace(path: &Path, records: &[DeadRecord]) -> io::Result<()> {
    let mut text = Vec::new();
    for record in records {
        encode_line(record, &mut text)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let mut file = File::create(&temp)?;
    file.write_all(&text)?;
    file.sync_data()?;
    drop(file);
    fs::rename(&temp, path)
}

/// A sink's dead-letter file, opened at the first record (a run that dead-letters nothing
/// creates no file) and written through to the disk at most every 100 ms and at the end.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    writer: Option<DeadLetterWriter>,
    unsynced: bool,
    next_sync: Option<Instant>,
}

impl Spool {
    /// A spool for `path`; nothing is opened yet.
    pub fn new(path: &Path) -> Spool {
        Spool {
            path: path.to_owned(),
            writer: None,
            unsynced: false,
            next_sync: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record`, opening the file first if needed. `Err` says why it could not be kept
    /// (the caller counts the record as dropped).
    pub fn append(&mut self, record: &DeadRecord) -> Result<(), String> {
        if self.writer.is_none() {
            let writer = DeadLetterWriter::open(&self.path)
                .map_err(|e| format!("cannot open the dead-letter file: {e}"))?;
            self.writer = Some(writer);
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err("no dead-letter file".into());
        };
        writer
            .append(record)
            .map_err(|e| format!("cannot append to the dead-letter file: {e}"))?;
        self.unsynced = true;
        Ok(())
    }

    /// Writes appended records through to the disk if some are waiting and the last sync was
    /// at least 100 ms ago.
    pub fn sync(&mut self, now: Instant) -> Result<(), String> {
        if !self.unsynced || self.next_sync.is_some_and(|t| now < t) {
            return Ok(());
        }
        self.next_sync = Some(now + SYNC_EVERY);
        self.finish()
    }

    /// Writes every appended record through to the disk now.
    pub fn finish(&mut self) -> Result<(), String> {
        self.unsynced = false;
        match self.writer.as_mut().map(DeadLetterWriter::flush) {
            Some(Err(e)) => Err(format!("cannot write the dead-letter file: {e}")),
            _ => Ok(()),
        }
    }
}

/// Appends `record` as one line, `\n` included, to `out`.
fn encode_line(record: &DeadRecord, out: &mut Vec<u8>) -> io::Result<()> {
    match &record.target {
        Target::Kinesis {
            stream,
            partition_key,
            data,
        } => serde_json::to_writer(
            &mut *out,
            &KinesisOut {
                v: VERSION,
                sink: "kinesis",
                stream,
                partition_key,
                data: base64_encode(data),
                attempts: record.attempts,
                first_attempt_ms: record.first_attempt_ms,
                dead_at_ms: record.dead_at_ms,
                outcome: record.outcome,
                error: &record.error,
            },
        )?,
        Target::Postgres { table, row } => serde_json::to_writer(
            &mut *out,
            &PostgresLine {
                v: VERSION,
                sink: "postgres".into(),
                table: table.clone(),
                row: row.clone(),
                attempts: record.attempts,
                first_attempt_ms: record.first_attempt_ms,
                dead_at_ms: record.dead_at_ms,
                outcome: record.outcome,
                error: record.error.clone(),
            },
        )?,
        Target::Redis { key, id, fields } => serde_json::to_writer(
            &mut *out,
            &RedisOut {
                v: VERSION,
                sink: "redis",
                key,
                id,
                fields,
                attempts: record.attempts,
                first_attempt_ms: record.first_attempt_ms,
                dead_at_ms: record.dead_at_ms,
                outcome: record.outcome,
                error: &record.error,
            },
        )?,
    }
    out.push(b'\n');
    Ok(())
}

/// If `file` does not end with `\n`, ends its last line with one when that line is a record and
/// cuts the line off otherwise. Returns how many bytes were cut.
fn repair_torn_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let start = last_line_start(file, len)?;
    if start == len {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let cut_bytes = if parse_line(&tail).is_ok() {
        file.write_all(b"\n")?;
        0
    } else {
        file.set_len(start)?;
        len - start
    };
    file.sync_data()?;
    Ok(cut_bytes)
}

/// Where the last line of the `len`-byte `file` starts: just after its last `\n` (so `len` when
/// the file ends with one), or 0 when it has none. Reads backwards in chunks.
fn last_line_start(file: &mut File, len: u64) -> io::Result<u64> {
    let mut chunk = [0u8; 8192];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buf)?;
        if let Some(i) = buf.iter().rposition(|&byte| byte == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// What a dead-letter file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetters {
    /// The records, in file order.
    pub records: Vec<DeadRecord>,
    /// The 1-based number of the last line when it lacks its `\n` and is not a record: what a
    /// crash in the middle of a write leaves.
    pub torn_tail: Option<usize>,
}

/// Reads a dead-letter file. A line that is not a valid record is an error naming the file and
/// line number (1-based); an empty trailing line is fine; a final line without a newline that
/// fails to parse (a torn write from a crash) is reported separately as
/// `torn_tail: Some(line_number)` rather than an error.
pub fn read(path: &Path) -> Result<DeadLetters, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut line = Vec::new();
    let mut line_number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{}: line {}: {e}", path.display(), line_number + 1))?;
        if read == 0 {
            return Ok(DeadLetters {
                records,
                torn_tail: None,
            });
        }
        line_number += 1;
        // Only the file's last line can lack its line feed.
        let (body, terminated) = match line.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (line.as_slice(), false),
        };
        match parse_line(body) {
            Ok(record) => records.push(record),
            Err(_) if !terminated => {
                return Ok(DeadLetters {
                    records,
                    torn_tail: Some(line_number),
                });
            }
            Err(why) => return Err(format!("{}: line {line_number}: {why}", path.display())),
        }
    }
}

/// Parses one line, without its `\n`, into a record.
fn parse_line(line: &[u8]) -> Result<DeadRecord, String> {
    if line.is_empty() {
        return Err("empty line".to_owned());
    }
    // serde would also read a struct from a JSON array; the format only has objects.
    if line.trim_ascii_start().first() != Some(&b'{') {
        return Err("not a JSON object".to_owned());
    }
    let head: LineHead = serde_json::from_slice(line).map_err(json_error)?;
    match (head.v, head.sink.as_deref()) {
        (VERSION_1, _) => parse_v1(line),
        (VERSION, Some("kinesis")) => parse_kinesis(line),
        (VERSION, Some("redis")) => parse_redis(line),
        (VERSION, Some("postgres")) => parse_postgres(line),
        (VERSION, Some(other)) => Err(format!(
            "unknown sink {other:?} (expected \"kinesis\", \"redis\" or \"postgres\")"
        )),
        (VERSION, None) => Err("missing field `sink`".to_owned()),
        (v, _) => Err(unsupported_version(v)),
    }
}

fn parse_v1(line: &[u8]) -> Result<DeadRecord, String> {
    let line: V1In = serde_json::from_slice(line).map_err(json_error)?;
    let data = base64_decode(&line.data).map_err(|why| format!("data: {why}"))?;
    Ok(DeadRecord {
        target: Target::Kinesis {
            stream: line.stream,
            partition_key: line.partition_key,
            data,
        },
        attempts: line.attempts,
        first_attempt_ms: line.first_attempt_ms,
        dead_at_ms: line.dead_at_ms,
        outcome: Outcome::Unknown,
        error: line.error,
    })
}

fn parse_kinesis(line: &[u8]) -> Result<DeadRecord, String> {
    let line: KinesisIn = serde_json::from_slice(line).map_err(json_error)?;
    let data = base64_decode(&line.data).map_err(|why| format!("data: {why}"))?;
    Ok(DeadRecord {
        target: Target::Kinesis {
            stream: line.stream,
            partition_key: line.partition_key,
            data,
        },
        attempts: line.attempts,
        first_attempt_ms: line.first_attempt_ms,
        dead_at_ms: line.dead_at_ms,
        outcome: line.outcome,
        error: line.error,
    })
}

fn parse_redis(line: &[u8]) -> Result<DeadRecord, String> {
    let line: RedisIn = serde_json::from_slice(line).map_err(json_error)?;
    Ok(DeadRecord {
        target: Target::Redis {
            key: line.key,
            id: line.id,
            fields: line.fields,
        },
        attempts: line.attempts,
        first_attempt_ms: line.first_attempt_ms,
        dead_at_ms: line.dead_at_ms,
        outcome: line.outcome,
        error: line.error,
    })
}

fn parse_postgres(line: &[u8]) -> Result<DeadRecord, String> {
    let line: PostgresLine = serde_json::from_slice(line).map_err(json_error)?;
    Ok(DeadRecord {
        target: Target::Postgres {
            table: line.table,
            row: line.row,
        },
        attempts: line.attempts,
        first_attempt_ms: line.first_attempt_ms,
        dead_at_ms: line.dead_at_ms,
        outcome: line.outcome,
        error: line.error,
    })
}

/// The error for a line of format version `v`.
fn unsupported_version(v: u32) -> String {
    format!("unsupported format version {v} (this hotpath reads versions 1 and {VERSION})")
}

/// serde_json's message with its position as a column only: its "line 1" would be confused with
/// the file's line number.
fn json_error(error: serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&position) {
        Some(message) => format!("{message} at column {}", error.column()),
        None => text,
    }
}

/// The standard base64 alphabet (RFC 4648 section 4).
const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `data` in standard base64 with `=` padding.
fn base64_encode(data: &[u8]) -> String {
    let mut text = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // One input byte gives 2 significant characters, two give 3, three give 4.
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (group >> (18 - 6 * i)) & 0x3F;
                text.push(char::from(BASE64_ALPHABET[sextet as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// Decodes standard base64 with `=` padding, strictly: the length is a multiple of 4, padding
/// only ends the text, no other character outside the alphabet, and the bits the padding drops
/// are zero (so each byte string has exactly one accepted text).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return Err(format!(
            "base64 length {} is not a multiple of 4",
            text.len()
        ));
    }
    let quads = text.len() / 4;
    let mut data = Vec::with_capacity(quads * 3);
    for (q, quad) in text.chunks_exact(4).enumerate() {
        let padding = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && q + 1 < quads) {
            return Err(format!(
                "misplaced base64 padding at character {}",
                4 * q + 1
            ));
        }
        let mut group = 0u32;
        for (i, &c) in quad[..4 - padding].iter().enumerate() {
            let sextet = base64_sextet(c).ok_or_else(|| {
                let at = 4 * q + i + 1;
                format!(
                    "invalid base64 character {:?} at character {at}",
                    char::from(c)
                )
            })?;
            group = (group << 6) | u32::from(sextet);
        }
        group <<= 6 * padding;
        let bytes = [(group >> 16) as u8, (group >> 8) as u8, group as u8];
        let kept = 3 - padding;
        if bytes[kept..].iter().any(|&byte| byte != 0) {
            return Err("non-canonical base64: the padded bits are not zero".to_owned());
        }
        data.extend_from_slice(&bytes[..kept]);
    }
    Ok(data)
}

/// The 6-bit value of base64 character `c`, if it is in the standard alphabet.
fn base64_sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A fresh, empty directory for one test.
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hotpath-dlq-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    }

    fn record(partition_key: &str, data: &[u8]) -> DeadRecord {
        DeadRecord {
            target: Target::Kinesis {
                stream: "market-sbe-trade".to_owned(),
                partition_key: partition_key.to_owned(),
                data: data.to_vec(),
            },
            attempts: 7,
            first_attempt_ms: 1_763_700_000_000,
            dead_at_ms: 1_763_700_030_000,
            outcome: Outcome::Failed,
            error: "ProvisionedThroughputExceededException: Rate exceeded".to_owned(),
        }
    }

    fn redis_record(id: &str) -> DeadRecord {
        let fields = [
            ("exchange", "binance"),
            ("pair", "BTCUSDT"),
            ("price", "69769.88"),
            ("qty", "0.001"),
            ("ts", "2025-11-21T04:40:00.000000Z"),
            ("side", "buy"),
            ("trade_id", "12345"),
            ("event_time_us", "1763700000000123"),
            ("trade_time_us", "1763700000000000"),
        ];
        DeadRecord {
            target: Target::Redis {
                key: "trades:{BTCUSDT}".to_owned(),
                id: id.to_owned(),
                fields: fields
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            },
            attempts: 0,
            first_attempt_ms: 0,
            dead_at_ms: 1_763_700_030_000,
            outcome: Outcome::Failed,
            error: "redis.buffer_trades_max reached while Redis was unreachable".to_owned(),
        }
    }

    fn write_all(path: &Path, records: &[DeadRecord]) {
        let mut writer = DeadLetterWriter::open(path).expect("open the dead-letter file");
        for record in records {
            writer.append(record).expect("append");
        }
        writer.flush().expect("flush");
    }

    fn line_of(record: &DeadRecord) -> String {
        let mut line = Vec::new();
        encode_line(record, &mut line).expect("encode");
        String::from_utf8(line).expect("lines are UTF-8")
    }

    #[test]
    fn postgres_rows_round_trip_in_the_documented_form() {
        let dead = DeadRecord {
            target: Target::Postgres {
                table: "ticks".to_owned(),
                row: vec![
                    ("exchange".to_owned(), "binance".to_owned()),
                    ("price".to_owned(), "69769.88".to_owned()),
                ],
            },
            attempts: 3,
            first_attempt_ms: 1_763_700_000_000,
            dead_at_ms: 1_763_700_030_000,
            outcome: Outcome::Unknown,
            error: "db error".to_owned(),
        };
        let line = line_of(&dead);
        assert_eq!(
            line,
            "{\"v\":2,\"sink\":\"postgres\",\"table\":\"ticks\",\"row\":[[\"exchange\",\"binance\"],\
             [\"price\",\"69769.88\"]],\"attempts\":3,\"first_attempt_ms\":1763700000000,\
             \"dead_at_ms\":1763700030000,\"outcome\":\"unknown\",\"error\":\"db error\"}\n"
        );
        assert_eq!(parse_line(line.trim_end().as_bytes()), Ok(dead));
        let extra = line.replace("\"table\"", "\"key\":\"x\",\"table\"");
        assert!(
            parse_line(extra.trim_end().as_bytes()).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn golden_line() {
        let dir = scratch("golden");
        let path = dir.join("dead.jsonl");
        let mut dead = record("BTCUSDT", b"\x00\x01trade\xFE\xFF");
        dead.error = "ProvisionedThroughputExceededException: Rate exceeded for shard \
                      shardId-000000000000"
            .to_owned();
        write_all(&path, &[dead]);
        let mut unknown = redis_record("1763700000000-12345");
        unknown.outcome = Outcome::Unknown;
        write_all(&path, &[redis_record("1763700000000-12345"), unknown]);
        let expected = concat!(
            r#"{"v":2,"sink":"kinesis","stream":"market-sbe-trade","partition_key":"BTCUSDT","#,
            r#""data":"AAF0cmFkZf7/","attempts":7,"first_attempt_ms":1763700000000,"#,
            r#""dead_at_ms":1763700030000,"outcome":"failed","#,
            r#""error":"ProvisionedThroughputExceededException: Rate exceeded for shard "#,
            r#"shardId-000000000000"}"#,
            "\n",
            r#"{"v":2,"sink":"redis","key":"trades:{BTCUSDT}","id":"1763700000000-12345","#,
            r#""fields":[["exchange","binance"],["pair","BTCUSDT"],["price","69769.88"],"#,
            r#"["qty","0.001"],["ts","2025-11-21T04:40:00.000000Z"],["side","buy"],"#,
            r#"["trade_id","12345"],["event_time_us","1763700000000123"],"#,
            r#"["trade_time_us","1763700000000000"]],"attempts":0,"first_attempt_ms":0,"#,
            r#""dead_at_ms":1763700030000,"outcome":"failed","#,
            r#""error":"redis.buffer_trades_max reached while Redis was unreachable"}"#,
            "\n",
        );
        let text = fs::read_to_string(&path).expect("read back");
        assert!(text.starts_with(expected), "{text}");
        assert!(text.ends_with("\"outcome\":\"unknown\",\"error\":\"redis.buffer_trades_max reached while Redis was unreachable\"}\n"));
        let read = read(&path).expect("a valid file");
        assert_eq!(read.records.len(), 3);
        assert_eq!(read.records[2].outcome, Outcome::Unknown);
    }

    #[test]
    fn version_1_lines_are_read_as_kinesis_records_of_unknown_outcome() {
        let dir = scratch("version-1");
        let path = dir.join("dead.jsonl");
        let v1 = concat!(
            r#"{"v":1,"stream":"market-sbe-trade","partition_key":"BTCUSDT","#,
            r#""data":"AAF0cmFkZf7/","attempts":7,"first_attempt_ms":1763700000000,"#,
            r#""dead_at_ms":1763700030000,"error":"Rate exceeded"}"#,
            "\n",
        );
        fs::write(&path, v1).expect("write");
        let mut expected = record("BTCUSDT", b"\x00\x01trade\xFE\xFF");
        expected.outcome = Outcome::Unknown;
        expected.error = "Rate exceeded".to_owned();
        assert_eq!(
            read(&path),
            Ok(DeadLetters {
                records: vec![expected],
                torn_tail: None
            })
        );
        // Appending goes on in version 2.
        write_all(&path, &[record("ETHUSDT", b"2")]);
        let records = read(&path).expect("a valid file").records;
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].outcome, Outcome::Failed);
    }

    #[test]
    fn records_round_trip_with_every_byte_value() {
        let dir = scratch("round-trip");
        // Parent directories are created.
        let path = dir.join("a").join("b").join("dead.jsonl");
        let all_bytes: Vec<u8> = (0..=255).collect();
        let mut awkward = record("ETHUSDT", b"");
        awkward.error = "line one\nline two \"quoted\" \\ tab\t \u{1F4A5} \u{0}".to_owned();
        awkward.attempts = u32::MAX;
        awkward.first_attempt_ms = i64::MIN;
        awkward.dead_at_ms = i64::MAX;
        let mut unknown = redis_record("1-1");
        unknown.outcome = Outcome::Unknown;
        if let Target::Redis { fields, .. } = &mut unknown.target {
            fields.push(("odd \"name\"\n".to_owned(), "\u{0}\u{1F4A5}".to_owned()));
        }
        let first = [record("BTCUSDT", &all_bytes), awkward, unknown];
        write_all(&path, &first);
        // Reopening appends after what is there.
        let more = [
            record("SOLUSDT", &all_bytes[..1]),
            record("SOLUSDT", &all_bytes[..2]),
        ];
        let mut writer = DeadLetterWriter::open(&path).expect("reopen");
        assert_eq!(writer.path(), path);
        for record in &more {
            writer.append(record).expect("append");
        }
        writer.flush().expect("flush");

        let text = fs::read_to_string(&path).expect("read back");
        assert_eq!(text.lines().count(), 5, "one line per record: {text}");
        let read = read(&path).expect("a valid file");
        assert_eq!(read.torn_tail, None);
        assert_eq!(read.records, [&first[..], &more[..]].concat());
    }

    #[test]
    fn an_empty_file_has_no_records() {
        let dir = scratch("empty");
        let path = dir.join("dead.jsonl");
        DeadLetterWriter::open(&path).expect("open creates the file");
        assert_eq!(
            read(&path),
            Ok(DeadLetters {
                records: vec![],
                torn_tail: None
            })
        );
    }

    #[test]
    fn a_corrupt_middle_line_is_an_error_naming_the_line() {
        let dir = scratch("corrupt");
        let path = dir.join("dead.jsonl");
        let good = line_of(&record("BTCUSDT", b"1"));
        fs::write(&path, format!("{good}{good}{{\"v\":1,\"stream\":\n{good}")).expect("write");
        let error = read(&path).expect_err("line 3 is not a record");
        assert!(
            error.starts_with(&format!("{}: line 3: ", path.display())),
            "{error}"
        );
    }

    #[test]
    fn invalid_lines_are_errors_that_say_why() {
        let dir = scratch("invalid");
        let path = dir.join("dead.jsonl");
        let good = line_of(&record("BTCUSDT", b"\xFF"));
        let cases = [
            (String::new(), "empty line"),
            (" [1]".to_owned(), "not a JSON object"),
            ("{}".to_owned(), "missing field"),
            (
                good.replace(r#""v":2"#, r#""v":3"#),
                "unsupported format version 3",
            ),
            (good.replace(r#""v":2,"#, ""), "missing field `v`"),
            (
                good.replace(r#""sink":"kinesis","#, ""),
                "missing field `sink`",
            ),
            (
                good.replace(r#""sink":"kinesis""#, r#""sink":"s3""#),
                "unknown sink \"s3\"",
            ),
            (
                good.replace(r#""sink":"kinesis""#, r#""sink":"redis""#),
                "unknown field `stream`",
            ),
            (
                good.replace(r#""outcome":"failed""#, r#""outcome":"lost""#),
                "unknown variant `lost`",
            ),
            (
                good.replace(r#","outcome":"failed""#, ""),
                "missing field `outcome`",
            ),
            (
                good.replace(r#","attempts":7"#, ""),
                "missing field `attempts`",
            ),
            (
                good.replace(r#""attempts":7"#, r#""attempts":-1"#),
                "invalid value",
            ),
            (
                good.replace(r#""v":2"#, r#""v":2,"extra":0"#),
                "unknown field `extra`",
            ),
            (good.replace(r#""/w==""#, r#""/w=""#), "base64 length 3"),
            (
                good.replace(r#""/w==""#, r#""/x==""#),
                "non-canonical base64",
            ),
            (
                good.replace(r#""/w==""#, r#""/w==AAAA""#),
                "misplaced base64 padding",
            ),
            (
                good.replace(r#""/w==""#, r#""/w-=""#),
                "invalid base64 character '-'",
            ),
        ];
        for (bad, why) in cases {
            let bad = bad.trim_end();
            fs::write(&path, format!("{good}{bad}\n{good}")).expect("write");
            let error = read(&path).expect_err(bad);
            let prefix = format!("{}: line 2: ", path.display());
            assert!(
                error.starts_with(&prefix) && error.contains(why),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_torn_tail_is_reported_not_an_error() {
        let dir = scratch("torn");
        let path = dir.join("dead.jsonl");
        let records = [record("BTCUSDT", b"1"), record("ETHUSDT", b"2")];
        let torn = line_of(&record("SOLUSDT", b"3"));
        let torn = &torn[..torn.len() / 2];
        let text = format!("{}{}{torn}", line_of(&records[0]), line_of(&records[1]));
        fs::write(&path, text).expect("write");
        let read = read(&path).expect("a torn tail is not an error");
        assert_eq!(
            read,
            DeadLetters {
                records: records.to_vec(),
                torn_tail: Some(3)
            }
        );
    }

    #[test]
    fn a_complete_last_record_without_its_line_feed_is_a_record() {
        let dir = scratch("unterminated");
        let path = dir.join("dead.jsonl");
        let records = [record("BTCUSDT", b"1"), record("ETHUSDT", b"2")];
        let last = line_of(&records[1]);
        fs::write(
            &path,
            format!("{}{}", line_of(&records[0]), last.trim_end()),
        )
        .expect("write");
        assert_eq!(
            read(&path),
            Ok(DeadLetters {
                records: records.to_vec(),
                torn_tail: None
            })
        );
    }

    #[test]
    fn open_cuts_a_torn_tail_so_appends_start_on_their_own_line() {
        let dir = scratch("repair-torn");
        let path = dir.join("dead.jsonl");
        let before = record("BTCUSDT", b"1");
        let torn = line_of(&record("SOLUSDT", b"lost"));
        fs::write(&path, format!("{}{}", line_of(&before), &torn[..10])).expect("write");
        let after = record("ETHUSDT", b"2");
        write_all(&path, std::slice::from_ref(&after));
        assert_eq!(
            read(&path),
            Ok(DeadLetters {
                records: vec![before, after],
                torn_tail: None
            })
        );
    }

    #[test]
    fn open_ends_a_complete_unterminated_record_with_a_line_feed() {
        let dir = scratch("repair-unterminated");
        let path = dir.join("dead.jsonl");
        // Longer than one 8 KiB backwards read, so the search for the line start spans chunks.
        let before = record("BTCUSDT", &[0x42; 20_000]);
        let line = line_of(&before);
        fs::write(&path, line.trim_end()).expect("write");
        let after = record("ETHUSDT", b"2");
        write_all(&path, std::slice::from_ref(&after));
        let text = fs::read_to_string(&path).expect("read back");
        assert_eq!(text, format!("{line}{}", line_of(&after)));
    }

    /// A writer that takes only half of what it is given, as a full disk does.
    struct HalfFull(Vec<u8>);

    impl Write for HalfFull {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let half = buf.len() / 2;
            self.0.extend_from_slice(&buf[..half]);
            Ok(half)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_short_write_is_an_error() {
        let mut out = HalfFull(Vec::new());
        let error = write_once(&mut out, b"0123456789\n").expect_err("short");
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
        assert_eq!(
            out.0.len(),
            5,
            "one write call, not a loop finishing it later"
        );
    }

    #[test]
    fn a_failed_append_leaves_no_fragment_for_the_next_record_to_glue_onto() {
        let dir = scratch("failed-append");
        let path = dir.join("dead.jsonl");
        let (a, b, c) = (
            record("BTCUSDT", b"1"),
            record("ETHUSDT", b"2"),
            record("SOLUSDT", b"3"),
        );
        let mut writer = DeadLetterWriter::open(&path).expect("open");
        writer.append(&a).expect("append");
        // What a short write (ENOSPC) leaves: half a record at the end of the file.
        let fragment = line_of(&record("XRPUSDT", b"lost"));
        let mut other = OpenOptions::new().append(true).open(&path).expect("open");
        other
            .write_all(&fragment.as_bytes()[..fragment.len() / 2])
            .expect("fragment");
        writer.undo_failed_write();
        writer.append(&b).expect("append after the failure");
        // The same when the cut failed: the next append repairs the tail first.
        other
            .write_all(&fragment.as_bytes()[..fragment.len() / 3])
            .expect("fragment");
        writer.torn = true;
        writer.append(&c).expect("append after a failed cut");
        writer.flush().expect("flush");
        assert_eq!(
            read(&path),
            Ok(DeadLetters {
                records: vec![a, b, c],
                torn_tail: None
            })
        );
    }

    #[test]
    fn a_truncated_last_line_keeps_every_record_before_it() {
        let dir = scratch("truncated-many");
        let path = dir.join("dead.jsonl");
        let records: Vec<DeadRecord> = (0..50)
            .map(|i| record("BTCUSDT", format!("{i}").as_bytes()))
            .collect();
        write_all(&path, &records);
        let torn = line_of(&redis_record("1763700000000-1"));
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&torn.as_bytes()[..torn.len() - 3])
            .expect("torn");
        assert_eq!(
            read(&path),
            Ok(DeadLetters {
                records,
                torn_tail: Some(51)
            })
        );
    }

    #[test]
    fn replace_writes_a_file_afresh() {
        let dir = scratch("replace");
        let path = dir.join("dead.jsonl.failed");
        write_all(&path, &[record("OLDUSDT", b"old")]);
        let fresh = [record("BTCUSDT", b"1"), redis_record("1763700000000-2")];
        replace(&path, &fresh).expect("replace");
        assert_eq!(
            read(&path),
            Ok(DeadLetters {
                records: fresh.to_vec(),
                torn_tail: None
            })
        );
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        assert!(
            !PathBuf::from(temp).exists(),
            "the temporary file is renamed"
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = scratch("missing");
        let path = dir.join("absent.jsonl");
        let error = read(&path).expect_err("no such file");
        assert!(
            error.starts_with(&format!("{}: ", path.display())),
            "{error}"
        );
    }

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (data, text) in vectors {
            assert_eq!(base64_encode(data), text);
            assert_eq!(base64_decode(text), Ok(data.to_vec()), "{text}");
        }
        assert_eq!(base64_encode(&[0xFB, 0xFF, 0xBF]), "+/+/");
    }

    proptest! {
        #[test]
        fn base64_round_trips(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(base64_decode(&base64_encode(&data)), Ok(data));
        }

        #[test]
        fn base64_accepts_only_canonical_text(text in "[A-Za-z0-9+/=*]{0,12}") {
            // Whatever decodes must encode back to the same text, and nothing panics.
            if let Ok(data) = base64_decode(&text) {
                prop_assert_eq!(base64_encode(&data), text);
            }
        }

        #[test]
        fn parse_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line(&line);
        }
    }
}
