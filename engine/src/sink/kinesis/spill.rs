//! The Kinesis writer's overflow: records that do not fit in `kinesis.buffer_bytes_max` wait
//! in a file (`kinesis.spill_path`), first in first out, instead of memory, and go back to
//! their lanes as the backlog drains. A Kinesis outage of seconds at tens of thousands of
//! records per second is tens of MiB of records; held in memory they would be the process'
//! largest part. In the file they cost page cache, which the kernel can write out and reclaim.
//!
//! Order: once one record is in the file, every new record goes there too until the file is
//! empty again, so records leave in the order they came, per partition key and overall.
//!
//! Bound: the overflow holds `kinesis.spill_bytes_max` bytes on disk at most; a record beyond
//! goes to the dead-letter file, counted. The file is emptied (truncated) each time every record
//! in it went back to memory, and removed at the end of the run. A backlog that stands (records
//! leave as fast as they come, so the file is never read empty) does not fill the bound with
//! what was already read back: once the reader is past half the file, new records go to a new
//! file at the same path, the old one (unlinked) is read to its end and its space given back
//! when it closes. A standing backlog of a third of the bound therefore fits. It is the running writer's own: its format
//! (below) is not kept across versions, and a file left by a crash is truncated at start with a
//! warning (what it held is not sent; the dead-letter file is the durable record of what was
//! not delivered).
//!
//! Format of one record, little-endian: destination (u8), hash key (u128), partition key length
//! (u16), data length (u32), receive time (u64, monotonic ns), the instant it entered the writer
//! (i64 ns from the [`Spill`]'s creation, so the delivery deadline counts from its arrival, its
//! time in the file included), then the key and the data.
//!
//! One writer per file: it is locked while open, and a second process with the same
//! `kinesis.spill_path` is refused (its records are dead-lettered), not let truncate it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::lane::Entry;

/// Bytes of a record's fixed part.
const HEADER: usize = 1 + 16 + 2 + 4 + 8 + 8;
/// The write and read buffers.
const BUFFER: usize = 64 << 10;

/// A record read back: its destination, hash key and entry.
pub type Spilled = (usize, u128, Entry);

/// The overflow file. See the module documentation.
#[derive(Debug)]
pub struct Spill {
    path: PathBuf,
    bytes_max: u64,
    /// Opened at the first record.
    out: Option<BufWriter<File>>,
    input: Option<BufReader<File>>,
    /// Bytes written to the file at `path` since it was last emptied (its size once flushed).
    written: u64,
    /// Bytes of it read back.
    consumed: u64,
    /// Bytes of the previous file, unlinked and still being read (0: none); its space is given
    /// back once read to its end.
    old: u64,
    /// Records of the previous file not read back yet (read before the current file's).
    old_records: usize,
    /// Records in both files not read back yet.
    records: usize,
    /// This writer created and locked the file (so it removes it at the end).
    ours: bool,
    /// A write failed: no record is taken until the file has been read empty (what it holds
    /// is still read back; a record the failed write cut is not counted in it).
    broken: bool,
    /// Partition keys read back, shared by their records.
    keys: HashMap<Box<str>, Arc<str>>,
    /// What the records' arrival instants are written relative to.
    epoch: Instant,
}

impl Spill {
    /// An overflow at `path` of at most `bytes_max` bytes (0: none, every record beyond the
    /// memory budget goes to the dead-letter file). Nothing is created before the first record.
    pub fn new(path: &Path, bytes_max: u64) -> Spill {
        Spill {
            path: path.to_path_buf(),
            bytes_max,
            out: None,
            input: None,
            written: 0,
            consumed: 0,
            old: 0,
            old_records: 0,
            records: 0,
            ours: false,
            broken: false,
            keys: HashMap::new(),
            epoch: Instant::now(),
        }
    }

    /// Records waiting in the file.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record waits in the file.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The overflow's bytes on disk: the file's, and the previous file's while it is read to
    /// its end.
    pub fn bytes(&self) -> u64 {
        self.old + self.written
    }

    /// Appends a record. `Err` with the reason when it cannot be kept (the bound, a write
    /// error): the caller dead-letters it.
    pub fn push(&mut self, dest: usize, hash: u128, entry: &Entry) -> Result<(), String> {
        let size = (HEADER + entry.key.len() + entry.data.len()) as u64;
        if self.bytes_max == 0 {
            return Err("kinesis.buffer_bytes_max reached".into());
        }
        self.maybe_switch();
        if self.bytes() + size > self.bytes_max {
            return Err("kinesis.buffer_bytes_max and kinesis.spill_bytes_max reached".into());
        }
        if self.broken && self.records == 0 {
            // Read empty (or the failed write was its first record): started over.
            self.reset()
                .map_err(|e| format!("cannot truncate {}: {e}", self.path.display()))?;
        }
        if self.broken {
            return Err(format!(
                "{} failed a write; not used until read empty",
                self.path.display()
            ));
        }
        let (Ok(key_len), Ok(data_len), Ok(dest)) = (
            u16::try_from(entry.key.len()),
            u32::try_from(entry.data.len()),
            u8::try_from(dest),
        ) else {
            return Err("record too large to spill".into());
        };
        let enqueued = self.since_epoch(entry.enqueued);
        if let Err(e) = self.writer() {
            return Err(format!("cannot open {}: {e}", self.path.display()));
        }
        let mut header = [0u8; HEADER];
        header[0] = dest;
        header[1..17].copy_from_slice(&hash.to_le_bytes());
        header[17..19].copy_from_slice(&key_len.to_le_bytes());
        header[19..23].copy_from_slice(&data_len.to_le_bytes());
        header[23..31].copy_from_slice(&entry.recv_time_ns.to_le_bytes());
        header[31..39].copy_from_slice(&enqueued.to_le_bytes());
        let Some(out) = self.out.as_mut() else {
            return Err("no overflow file".into());
        };
        let wrote = out
            .write_all(&header)
            .and_then(|()| out.write_all(entry.key.as_bytes()))
            .and_then(|()| out.write_all(&entry.data));
        if let Err(e) = wrote {
            // The records before stay readable; a partial one after them is never read.
            self.broken = true;
            return Err(format!("cannot write {}: {e}", self.path.display()));
        }
        self.written += size;
        self.records += 1;
        Ok(())
    }

    /// Makes every record pushed so far readable (once per refill, not per record).
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    /// The oldest record, after [`Spill::flush`]; `None` when empty. `Err`: the file cannot be
    /// read; the records it held are lost (their count returned) and the file starts afresh.
    pub fn pop(&mut self) -> Result<Option<Spilled>, (usize, String)> {
        if self.records == 0 {
            return Ok(None);
        }
        match self.read_one() {
            Ok(record) => {
                self.records -= 1;
                let size = (HEADER + record.2.key.len() + record.2.data.len()) as u64;
                if self.old_records > 0 {
                    self.old_records -= 1;
                    if self.old_records == 0 {
                        // The previous file read to its end: closing it gives its space back;
                        // the next read opens the current one from its start.
                        self.input = None;
                        self.old = 0;
                    }
                } else {
                    self.consumed += size;
                }
                if self.records == 0 {
                    // Emptied: start the file over so it never grows beyond one backlog. If that
                    // fails, the next push starts it over (reopened, truncated); the record read
                    // is returned all the same.
                    if let Err(e) = self.reset() {
                        self.broken = true;
                        tracing::warn!("kinesis: cannot truncate {}: {e}", self.path.display());
                    }
                }
                Ok(Some(record))
            }
            Err(e) => {
                let lost = self.records;
                self.records = 0;
                // Neither end is resumed (the write buffer may still hold the lost records, the
                // read stopped mid-record): the file starts over, reopened and truncated.
                self.broken = true;
                let _ = self.reset();
                Err((lost, format!("cannot read {}: {e}", self.path.display())))
            }
        }
    }

    /// Removes the file at the end of the run (once empty).
    pub fn finish(&mut self) {
        self.out = None;
        self.input = None;
        if std::mem::take(&mut self.ours) && self.records == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Once the reader is past half the file, new records go to a new file at the same path
    /// (see the module documentation): the old one is complete (flushed), unlinked, and read
    /// to its end through the reader's handle. Not while an earlier one is still read, nor
    /// before the reader is an eighth of the bound in (switching often costs more than it
    /// frees).
    fn maybe_switch(&mut self) {
        let past_half = self.consumed.saturating_mul(2) >= self.written
            && self.consumed.saturating_mul(8) >= self.bytes_max;
        if self.broken || self.old_records > 0 || self.input.is_none() || !past_half {
            return;
        }
        if let Some(out) = &mut self.out
            && out.flush().is_err()
        {
            return;
        }
        if std::fs::remove_file(&self.path).is_err() {
            return;
        }
        // The next write creates (and locks) the new file.
        self.out = None;
        self.old = self.written;
        self.old_records = self.records;
        self.written = 0;
        self.consumed = 0;
    }

    fn read_one(&mut self) -> io::Result<Spilled> {
        let input = match &mut self.input {
            Some(input) => input,
            None => self
                .input
                .insert(BufReader::with_capacity(BUFFER, File::open(&self.path)?)),
        };
        let mut header = [0u8; HEADER];
        input.read_exact(&mut header)?;
        let field = |at: usize, n: usize| &header[at..at + n];
        let le8 = |at| u64::from_le_bytes(field(at, 8).try_into().unwrap_or_default());
        let hash = u128::from_le_bytes(field(1, 16).try_into().unwrap_or_default());
        let key_len = u16::from_le_bytes(field(17, 2).try_into().unwrap_or_default());
        let data_len = u32::from_le_bytes(field(19, 4).try_into().unwrap_or_default());
        let recv_time_ns = le8(23);
        let enqueued = i64::from_le_bytes(field(31, 8).try_into().unwrap_or_default());
        let mut key = vec![0u8; usize::from(key_len)];
        input.read_exact(&mut key)?;
        let mut data = vec![0u8; data_len as usize];
        input.read_exact(&mut data)?;
        let key = String::from_utf8(key)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a key not UTF-8"))?;
        let key = match self.keys.get(key.as_str()) {
            Some(k) => k.clone(),
            None => {
                let k: Arc<str> = key.as_str().into();
                self.keys.insert(key.into_boxed_str(), k.clone());
                k
            }
        };
        let entry = Entry {
            key,
            data: Bytes::from(data),
            recv_time_ns,
            enqueued: self.instant_at(enqueued),
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        };
        Ok((usize::from(header[0]), hash, entry))
    }

    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            match file.try_lock() {
                Ok(()) => self.ours = true,
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::other(
                        "in use by another process (the same kinesis.spill_path)",
                    ));
                }
                // A file system without locks: used unguarded.
                Err(std::fs::TryLockError::Error(e)) => {
                    self.ours = true;
                    tracing::warn!("kinesis: cannot lock {}: {e}", self.path.display());
                }
            }
            if file.metadata()?.len() > 0 {
                tracing::warn!(
                    "kinesis: truncating {}, left by an earlier run (its records are not sent)",
                    self.path.display()
                );
                file.set_len(0)?;
            }
            self.out = Some(BufWriter::with_capacity(BUFFER, file));
        }
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("no spill file"))
    }

    /// Fault injection for tests: the file's writes fail from now on (`fail`), as on a full
    /// disk, or work again; what the write buffer holds stays in it, at the same offset.
    #[cfg(test)]
    fn writes_fail(&mut self, fail: bool) -> io::Result<()> {
        let Some(out) = self.out.take() else {
            return Ok(());
        };
        let (mut file, buffered) = out.into_parts();
        let at = file.stream_position()?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(!fail)
            .open(&self.path)?;
        file.seek(SeekFrom::Start(at))?;
        let mut out = BufWriter::with_capacity(BUFFER, file);
        out.write_all(&buffered.map_err(|_| io::Error::other("panicked"))?)?;
        self.out = Some(out);
        Ok(())
    }

    /// `at` as signed nanoseconds from [`Spill::epoch`] (the file's form of an instant).
    fn since_epoch(&self, at: Instant) -> i64 {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(self.epoch) {
            Some(after) => ns(after),
            None => -ns(self.epoch.duration_since(at)),
        }
    }

    /// The instant [`Spill::since_epoch`] wrote (now if it cannot be one).
    fn instant_at(&self, signed: i64) -> Instant {
        let offset = Duration::from_nanos(signed.unsigned_abs());
        let at = if signed >= 0 {
            self.epoch.checked_add(offset)
        } else {
            self.epoch.checked_sub(offset)
        };
        at.unwrap_or_else(Instant::now)
    }

    /// Empties the file: both ends back to its start.
    fn reset(&mut self) -> io::Result<()> {
        (self.written, self.consumed, self.old, self.old_records) = (0, 0, 0, 0);
        if std::mem::take(&mut self.broken) {
            // The write buffer may hold what could not be written: dropped first (its last
            // flush lands before the truncation or fails), then the file emptied.
            self.out = None;
            self.input = None;
            return OpenOptions::new().write(true).open(&self.path)?.set_len(0);
        }
        if let Some(out) = &mut self.out {
            out.flush()?;
            out.get_ref().set_len(0)?;
            out.seek(SeekFrom::Start(0))?;
        }
        if let Some(input) = &mut self.input {
            input.seek(SeekFrom::Start(0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, data: &[u8], recv_time_ns: u64) -> Entry {
        Entry {
            key: key.into(),
            data: Bytes::copy_from_slice(data),
            recv_time_ns,
            enqueued: Instant::now(),
            first_attempt_ms: 0,
            attempts: 0,
            error: None,
            maybe_landed: false,
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hotpath-spill-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir
    }

    /// Records come back first in first out with their destination, hash key, key, data and
    /// receive time; pushes between reads queue behind; the file is emptied once read empty.
    #[test]
    fn records_come_back_in_order_and_whole_and_the_file_empties() {
        let dir = temp("order");
        let path = dir.join("spill");
        let mut spill = Spill::new(&path, 1 << 20);
        assert_eq!(spill.pop().ok().flatten().map(|r| r.0), None);
        assert!(!path.exists(), "nothing created before the first record");
        let mut expect = Vec::new();
        for i in 0..1000u32 {
            let key = format!("S{}USDT", i % 7);
            let data = vec![u8::try_from(i % 251).unwrap_or(0); (i % 300) as usize];
            let (dest, hash) = ((i % 5) as usize, u128::from(i) << 64 | 3);
            spill
                .push(dest, hash, &entry(&key, &data, u64::from(i) * 1000))
                .expect("kept");
            expect.push((dest, hash, key, data, u64::from(i) * 1000));
            if i % 3 == 0 {
                spill.flush().expect("flushed");
                let (d, h, e) = spill.pop().expect("readable").expect("a record");
                let (ed, eh, ek, edata, er) = expect.remove(0);
                assert_eq!(
                    (d, h, e.key.as_ref(), e.data.as_ref(), e.recv_time_ns),
                    (ed, eh, ek.as_str(), edata.as_slice(), er)
                );
            }
        }
        spill.flush().expect("flushed");
        assert_eq!(spill.len(), expect.len());
        for (ed, eh, ek, edata, er) in expect {
            let (d, h, e) = spill.pop().expect("readable").expect("a record");
            assert_eq!(
                (d, h, e.key.as_ref(), e.data.as_ref(), e.recv_time_ns),
                (ed, eh, ek.as_str(), edata.as_slice(), er)
            );
            assert_eq!(e.attempts, 0);
        }
        assert!(spill.is_empty());
        assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(0));
        // Used again after it emptied: from the start.
        spill.push(1, 9, &entry("K", b"again", 7)).expect("kept");
        spill.flush().expect("flushed");
        let (d, _, e) = spill.pop().expect("readable").expect("a record");
        assert_eq!((d, e.data.as_ref()), (1, b"again".as_slice()));
        spill.finish();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The bound counts the file's bytes; 0 means no overflow; a file left by an earlier run is
    /// truncated, not read.
    #[test]
    fn the_bound_refuses_and_a_leftover_file_is_truncated() {
        let dir = temp("bound");
        let path = dir.join("spill");
        std::fs::write(&path, b"left by a crash").expect("written");
        let mut none = Spill::new(&path, 0);
        assert_eq!(
            none.push(0, 0, &entry("K", b"x", 0)),
            Err("kinesis.buffer_bytes_max reached".into())
        );
        let one = (HEADER + 1 + 10) as u64;
        let mut spill = Spill::new(&path, 2 * one);
        for _ in 0..2 {
            spill.push(0, 0, &entry("K", &[1; 10], 0)).expect("fits");
        }
        assert_eq!(
            std::fs::metadata(&path).map(|m| m.len()).ok(),
            Some(0),
            "truncated, still buffered"
        );
        assert!(spill.push(0, 0, &entry("K", &[1; 10], 0)).is_err());
        assert_eq!((spill.len(), spill.bytes()), (2, 2 * one));
        spill.flush().expect("flushed");
        assert_eq!(
            std::fs::metadata(&path).map(|m| m.len()).ok(),
            Some(2 * one)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A time in the writer before the spill is kept, so the delivery deadline still counts
    /// from the record's arrival.
    #[test]
    fn the_time_waited_is_kept() {
        let dir = temp("waited");
        let mut spill = Spill::new(&dir.join("spill"), 1 << 20);
        let mut e = entry("K", b"x", 0);
        e.enqueued = Instant::now()
            .checked_sub(Duration::from_secs(30))
            .unwrap_or_else(Instant::now);
        spill.push(0, 0, &e).expect("kept");
        spill.flush().expect("flushed");
        let (_, _, back) = spill.pop().expect("readable").expect("a record");
        assert!(back.enqueued.elapsed() >= Duration::from_secs(30));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A write that fails (a full disk) while records wait in the write buffer: the read that
    /// misses them counts them lost, and once the disk has room again the file starts over: the
    /// next record read is the next one pushed, not a lost one read back late (sent after
    /// being counted lost) nor the middle of one.
    #[test]
    fn after_a_failed_write_and_read_the_file_starts_over() {
        let dir = temp("full");
        let path = dir.join("spill");
        let mut spill = Spill::new(&path, 1 << 20);
        for data in [b"A", b"B"] {
            spill.push(0, 0, &entry("K", data, 0)).expect("kept");
        }
        spill.flush().expect("flushed");
        let (_, _, a) = spill.pop().expect("readable").expect("A");
        assert_eq!(a.data.as_ref(), b"A");
        for data in [b"C", b"D"] {
            spill.push(0, 0, &entry("K", data, 0)).expect("buffered");
        }
        spill.writes_fail(true).expect("fault injected");
        assert!(spill.flush().is_err(), "the disk is full");
        let (_, _, b) = spill.pop().expect("readable").expect("B");
        assert_eq!(b.data.as_ref(), b"B");
        assert_eq!(
            spill.pop().err().map(|(lost, _)| lost),
            Some(2),
            "C and D lost"
        );
        assert!(spill.is_empty());
        spill.writes_fail(false).expect("room again");
        spill.push(0, 0, &entry("K", b"E", 0)).expect("kept");
        spill.flush().expect("flushed");
        let (_, _, e) = spill.pop().expect("readable").expect("a record");
        assert_eq!(e.data.as_ref(), b"E", "the record pushed, not a lost one");
        assert!(spill.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record whose write failed halfway (its header buffered, its data refused: a full
    /// disk) is not counted, and once the disk has room and that half lands in the file it is
    /// never read back as a record: nothing is taken until the file is read empty, then it
    /// starts over.
    #[test]
    fn a_half_written_record_is_never_read_back() {
        let dir = temp("half");
        let path = dir.join("spill");
        let mut spill = Spill::new(&path, 1 << 20);
        spill.push(0, 0, &entry("K", b"A", 0)).expect("kept");
        spill.flush().expect("flushed");
        spill.writes_fail(true).expect("fault injected");
        let big = vec![9u8; BUFFER + 1];
        assert!(
            spill.push(0, 0, &entry("K", &big, 0)).is_err(),
            "the disk is full"
        );
        spill.writes_fail(false).expect("room again");
        spill.flush().expect("the half record lands");
        assert!(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > (HEADER + 2) as u64);
        assert!(
            spill.push(0, 0, &entry("K", b"C", 0)).is_err(),
            "not behind the half"
        );
        assert_eq!(spill.len(), 1);
        let (_, _, a) = spill.pop().expect("readable").expect("A");
        assert_eq!(a.data.as_ref(), b"A");
        assert_eq!(spill.pop().ok().flatten().map(|r| r.0), None);
        spill.push(0, 0, &entry("K", b"D", 0)).expect("kept");
        spill.flush().expect("flushed");
        let (_, _, d) = spill.pop().expect("readable").expect("D");
        assert_eq!(d.data.as_ref(), b"D");
        assert!(spill.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A backlog that stays (records leave as fast as they come, the file never read empty)
    /// is bounded by what waits, not by everything that passed through: the bytes already
    /// read back are given back to the disk, and every record still comes back, in order.
    #[test]
    fn a_standing_backlog_does_not_fill_the_bound() {
        let dir = temp("standing");
        let path = dir.join("spill");
        let one = (HEADER + 1 + 8) as u64;
        let mut spill = Spill::new(&path, 12 * one);
        let mut next = 0u64;
        let mut expect = 0u64;
        for _ in 0..4 {
            spill
                .push(0, 0, &entry("K", &next.to_le_bytes(), next))
                .expect("kept");
            next += 1;
        }
        for _ in 0..200 {
            let pushed = spill.push(0, 0, &entry("K", &next.to_le_bytes(), next));
            assert_eq!(pushed, Ok(()), "record {next}, {} waiting", spill.len());
            next += 1;
            assert!(spill.bytes() <= 12 * one, "{}", spill.bytes());
            spill.flush().expect("flushed");
            let (_, _, e) = spill.pop().expect("readable").expect("a record");
            assert_eq!(e.recv_time_ns, expect);
            expect += 1;
            let on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(on_disk <= spill.bytes(), "{on_disk} > {}", spill.bytes());
        }
        while let Some((_, _, e)) = spill.pop().expect("readable") {
            assert_eq!(e.recv_time_ns, expect);
            expect += 1;
        }
        assert_eq!(expect, next);
        assert_eq!(spill.bytes(), 0);
        spill.finish();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A second writer with the same overflow path (another process with the same config) is
    /// refused: the first one's file is not truncated under it.
    #[test]
    fn a_file_in_use_is_not_taken_over() {
        let dir = temp("shared");
        let path = dir.join("spill");
        let mut first = Spill::new(&path, 1 << 20);
        first.push(0, 0, &entry("K", b"first", 0)).expect("kept");
        first.flush().expect("flushed");
        let mut second = Spill::new(&path, 1 << 20);
        let refused = second.push(0, 0, &entry("K", b"second", 0));
        assert!(
            refused.as_ref().is_err_and(|why| why.contains("in use")),
            "{refused:?}"
        );
        second.finish();
        assert!(path.exists(), "the refused writer leaves the file be");
        let (_, _, back) = first.pop().expect("readable").expect("a record");
        assert_eq!(back.data.as_ref(), b"first");
        first.finish();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The time in the file counts toward the delivery deadline: a record comes back with the
    /// instant it entered the writer, not that instant moved on by its stay in the file.
    #[test]
    fn the_time_in_the_file_counts() {
        let dir = temp("stay");
        let mut spill = Spill::new(&dir.join("spill"), 1 << 20);
        for e in [entry("K", b"now", 0), entry("K", b"before", 0)] {
            let mut e = e;
            if e.data.as_ref() == b"before" {
                e.enqueued = Instant::now()
                    .checked_sub(Duration::from_secs(30))
                    .unwrap_or_else(Instant::now);
            }
            let enqueued = e.enqueued;
            spill.push(0, 0, &e).expect("kept");
            spill.flush().expect("flushed");
            let (_, _, back) = spill.pop().expect("readable").expect("a record");
            assert_eq!(back.enqueued, enqueued);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
