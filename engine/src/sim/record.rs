//! Recording WebSocket frames to a file, reading them back, and replaying them as a WebSocket
//! server, so a capture of Binance (or of the simulator) can drive hotpath again, at the pace
//! it arrived or as fast as possible.
//!
//! The file format and its reader and writer are a pure core ([`RecordWriter`],
//! [`RecordReader`]); [`record`] and [`replay`] are the network shell around them.
//!
//! # File format (`HPREC001`)
//!
//! All integers are little-endian. A file is an 8-byte magic followed by zero or more records
//! back to back, with no padding, index or trailer, so a file cut short (a recorder killed
//! mid-write) still reads up to its last whole record, and the reader reports the rest as
//! truncated.
//!
//! | offset | bytes | field   |
//! |-------:|------:|---------|
//! | 0      | 8     | magic   |
//! | 8      | ...   | records |
//!
//! - magic: the ASCII bytes `HPREC001` (`48 50 52 45 43 30 30 31`); `001` is the version.
//!
//! Each record:
//!
//! | offset | bytes         | field          |
//! |-------:|--------------:|----------------|
//! | 0      | 8             | `recv_time_ns` |
//! | 8      | 4             | `payload_len`  |
//! | 12     | 1             | `kind`         |
//! | 13     | `payload_len` | payload        |
//!
//! - `recv_time_ns`: u64, the wall-clock time the frame was received, in nanoseconds since
//!   the Unix epoch. Records are in receive order; the time may step back if the clock is
//!   adjusted.
//! - `payload_len`: u32, at most [`FRAME_BYTES_MAX`] (4 MiB).
//! - `kind`: u8, 0 = binary frame, 1 = text frame (UTF-8); any other value is an error.
//! - payload: the frame's application data, without WebSocket framing.
//!
//! For example, the text frame `hi` received 1 ns after the epoch is the 15 bytes
//! `01 00 00 00 00 00 00 00` `02 00 00 00` `01` `68 69`. Only data frames are recorded: pings,
//! pongs and the close handshake are not.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{Connector, WebSocketStream};

use crate::constants::FRAME_BYTES_MAX;
use crate::tls;

/// The first 8 bytes of every recording.
pub const RECORD_MAGIC: [u8; 8] = *b"HPREC001";

/// Bytes of a record before its payload: time (8), length (4), kind (1).
pub const RECORD_HEADER_BYTES: usize = 13;

/// Frames the replayer queues with `feed` before one flush, when pacing is off.
const REPLAY_BATCH_FRAMES: usize = 256;

/// Buffer between the recorder and its file, so a frame rarely costs a system call.
const RECORD_BUFFER_BYTES: usize = 256 * 1024;

/// Longest wait for a TCP + TLS + WebSocket handshake, either side.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the peer's answer to our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The header Binance's SBE stream takes the API key in (PROTOCOL.md 3.3).
const API_KEY_HEADER: &str = "X-MBX-APIKEY";

const _: () = assert!(
    FRAME_BYTES_MAX <= u32::MAX as usize,
    "lengths are stored as u32"
);

// ---------------------------------------------------------------------------------------------
// The file format: pure core.

/// What kind of WebSocket data frame a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A binary frame (Binance SBE market data). Stored as 0.
    Binary,
    /// A text frame (JSON control replies, `serverShutdown`). Stored as 1; the payload is UTF-8.
    Text,
}

impl FrameKind {
    /// The byte this kind is stored as.
    pub const fn code(self) -> u8 {
        match self {
            FrameKind::Binary => 0,
            FrameKind::Text => 1,
        }
    }

    /// The kind stored as `code`, if any.
    pub const fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            0 => Some(FrameKind::Binary),
            1 => Some(FrameKind::Text),
            _ => None,
        }
    }
}

/// One recorded frame, borrowing its payload from the file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the frame was received, in nanoseconds since the Unix epoch.
    pub recv_time_ns: u64,
    /// Binary or text.
    pub kind: FrameKind,
    /// The frame's application data; at most [`FRAME_BYTES_MAX`] bytes. The reader does not
    /// check that a text payload is UTF-8.
    pub payload: &'a [u8],
}

/// Why a recording could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The file does not start with [`RECORD_MAGIC`] (or is shorter than it).
    BadMagic,
    /// The file ends inside a record's header or payload.
    TruncatedRecord {
        /// Bytes the header or payload needed.
        needed: usize,
        /// Bytes left in the file.
        got: usize,
    },
    /// A payload length above [`FRAME_BYTES_MAX`].
    PayloadTooLarge {
        /// The declared length.
        len: usize,
    },
    /// A kind byte other than 0 (binary) or 1 (text).
    UnknownKind(u8),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecordError::BadMagic => write!(f, "not a hotpath recording (no HPREC001 magic)"),
            RecordError::TruncatedRecord { needed, got } => {
                write!(
                    f,
                    "file ends inside a record: needed {needed} bytes, got {got}"
                )
            }
            RecordError::PayloadTooLarge { len } => {
                write!(
                    f,
                    "payload length {len} is over the maximum of {FRAME_BYTES_MAX}"
                )
            }
            RecordError::UnknownKind(code) => write!(f, "unknown frame kind {code}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Writes a recording: the magic on creation, then one record per [`RecordWriter::write`].
/// It does not buffer; give it a `BufWriter` for files.
pub struct RecordWriter<W: Write> {
    out: W,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a recording on `out` by writing the magic.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&RECORD_MAGIC)?;
        Ok(RecordWriter { out })
    }

    /// Appends one record. A payload over [`FRAME_BYTES_MAX`] is refused (`InvalidInput`) and
    /// nothing is written, so the file stays readable.
    pub fn write(&mut self, recv_time_ns: u64, kind: FrameKind, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&len| len as usize <= FRAME_BYTES_MAX)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    RecordError::PayloadTooLarge { len: payload.len() },
                )
            })?;
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header[0..8].copy_from_slice(&recv_time_ns.to_le_bytes());
        header[8..12].copy_from_slice(&len.to_le_bytes());
        header[12] = kind.code();
        self.out.write_all(&header)?;
        self.out.write_all(payload)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Iterates the records of a recording held in memory. The first item is
/// [`RecordError::BadMagic`] if the magic is wrong. After an error it yields nothing more: the
/// position of the next record is unknown.
pub struct RecordReader<'a> {
    /// Bytes not yet read; starts with the magic until the first call to `next`.
    rest: &'a [u8],
    /// Whether the magic has been checked.
    magic_checked: bool,
    /// Set after an error; the iterator is then exhausted.
    failed: bool,
}

impl<'a> RecordReader<'a> {
    /// Records in `file`, magic included.
    pub fn new(file: &'a [u8]) -> Self {
        RecordReader {
            rest: file,
            magic_checked: false,
            failed: false,
        }
    }

    fn next_result(&mut self) -> Option<Result<Record<'a>, RecordError>> {
        if !self.magic_checked {
            self.magic_checked = true;
            match self.rest.split_first_chunk::<8>() {
                Some((magic, rest)) if *magic == RECORD_MAGIC => self.rest = rest,
                _ => return Some(Err(RecordError::BadMagic)),
            }
        }
        if self.rest.is_empty() {
            return None;
        }
        Some(split_record(self.rest).map(|(record, rest)| {
            self.rest = rest;
            record
        }))
    }
}

impl<'a> Iterator for RecordReader<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_result();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// Splits the record at the start of `bytes` (which is not empty) from the bytes after it.
fn split_record(bytes: &[u8]) -> Result<(Record<'_>, &[u8]), RecordError> {
    let Some((header, rest)) = bytes.split_first_chunk::<RECORD_HEADER_BYTES>() else {
        return Err(RecordError::TruncatedRecord {
            needed: RECORD_HEADER_BYTES,
            got: bytes.len(),
        });
    };
    let (time, header_rest) = header.split_at(8);
    let (len, kind) = header_rest.split_at(4);
    // The splits above are of a fixed-size array at constant offsets, so these conversions hold.
    let recv_time_ns = u64::from_le_bytes(time.try_into().unwrap_or_default());
    let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(RecordError::PayloadTooLarge { len });
    }
    let kind = FrameKind::from_code(kind[0]).ok_or(RecordError::UnknownKind(kind[0]))?;
    if rest.len() < len {
        return Err(RecordError::TruncatedRecord {
            needed: len,
            got: rest.len(),
        });
    }
    let (payload, rest) = rest.split_at(len);
    let record = Record {
        recv_time_ns,
        kind,
        payload,
    };
    Ok((record, rest))
}

// ---------------------------------------------------------------------------------------------
// Recording: connect as a client and write every data frame.

/// What to record from where, and when to stop.
#[derive(Clone)]
pub struct RecordOptions {
    /// A `ws://` or `wss://` URL, e.g.
    /// `ws://127.0.0.1:9443/stream?streams=btcusdt@trade/btcusdt@depth`.
    pub url: String,
    /// Sent as the `X-MBX-APIKEY` header when present. Never logged, and redacted in `Debug`.
    pub api_key: Option<String>,
    /// PEM certificates that `wss://` trusts instead of the webpki roots (for a simulator's
    /// self-signed certificate). `None` trusts [`crate::tls::default_client_config`].
    pub trust_pem: Option<String>,
    /// The recording to create (an existing file is truncated).
    pub out: PathBuf,
    /// Stop after this long (counted from the moment the connection is open).
    pub duration: Option<Duration>,
    /// Stop after this many data frames.
    pub max_frames: Option<u64>,
}

impl fmt::Debug for RecordOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordOptions")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("trust_pem", &self.trust_pem.is_some())
            .field("out", &self.out)
            .field("duration", &self.duration)
            .field("max_frames", &self.max_frames)
            .finish()
    }
}

/// What a recording holds. Invariant: `frames == binary + text`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordSummary {
    /// Data frames recorded.
    pub frames: u64,
    /// Of which binary.
    pub binary: u64,
    /// Of which text.
    pub text: u64,
    /// Payload bytes recorded (record headers and the magic not counted).
    pub bytes: u64,
}

impl RecordSummary {
    fn count(&mut self, kind: FrameKind, payload_bytes: usize) {
        self.frames += 1;
        match kind {
            FrameKind::Binary => self.binary += 1,
            FrameKind::Text => self.text += 1,
        }
        self.bytes += payload_bytes as u64;
    }
}

/// Why recording stopped, when it stopped without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The server closed the connection.
    Closed,
    /// `duration` ran out.
    Duration,
    /// `max_frames` were recorded.
    MaxFrames,
}

type ClientSocket = WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;
type FileWriter = RecordWriter<BufWriter<File>>;

/// Connects to `opts.url` and records every data frame with its receive time until `duration`
/// or `max_frames` is reached (then closes normally) or the server closes. Pings are answered
/// with pongs carrying the same payload. The file is flushed before returning, also on error,
/// so a connection that breaks keeps what it received.
pub async fn record(opts: RecordOptions) -> anyhow::Result<RecordSummary> {
    let file =
        File::create(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut writer = RecordWriter::new(BufWriter::with_capacity(RECORD_BUFFER_BYTES, file))?;
    let mut ws = connect(&opts).await?;
    tracing::info!(
        url = %opts.url,
        out = %opts.out.display(),
        api_key_present = opts.api_key.is_some(),
        "recording"
    );

    let deadline = opts.duration.map(|d| Instant::now() + d);
    let mut summary = RecordSummary::default();
    let received = receive(
        &mut ws,
        &mut writer,
        &mut summary,
        deadline,
        opts.max_frames,
    )
    .await;
    writer
        .flush()
        .with_context(|| format!("cannot write {}", opts.out.display()))?;
    let stop =
        received.with_context(|| format!("recording stopped after {} frames", summary.frames))?;
    if stop != Stop::Closed {
        close_client(&mut ws).await;
    }
    tracing::info!(
        ?stop,
        frames = summary.frames,
        bytes = summary.bytes,
        "recording finished"
    );
    Ok(summary)
}

/// Opens the WebSocket: the request with its API key header, TLS per `trust_pem`.
async fn connect(opts: &RecordOptions) -> anyhow::Result<ClientSocket> {
    let request = client_request(&opts.url, opts.api_key.as_deref())?;
    let config = match &opts.trust_pem {
        Some(pem) => Arc::new(tls::client_config_trusting(pem)?),
        None => tls::default_client_config()?,
    };
    let connector = Some(Connector::Rustls(config));
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(frame_limits()),
        true,
        connector,
    );
    let (ws, _response) = timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| anyhow!("timed out connecting to {}", opts.url))?
        .with_context(|| format!("cannot connect to {}", opts.url))?;
    Ok(ws)
}

/// The handshake request for `url`, with the API key header marked sensitive.
fn client_request(url: &str, api_key: Option<&str>) -> anyhow::Result<Request> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("invalid WebSocket URL {url}"))?;
    if let Some(key) = api_key {
        // The error would not include the key, but it is not worth the risk: say it in words.
        let mut value = HeaderValue::from_str(key)
            .map_err(|_| anyhow!("the API key is not a valid HTTP header value"))?;
        value.set_sensitive(true);
        request.headers_mut().insert(API_KEY_HEADER, value);
    }
    Ok(request)
}

/// Frames above what the file format stores are refused by the WebSocket layer.
fn frame_limits() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(FRAME_BYTES_MAX))
        .max_frame_size(Some(FRAME_BYTES_MAX))
}

/// Reads until a stop condition, writing each data frame and sending pongs as pings arrive.
async fn receive(
    ws: &mut ClientSocket,
    writer: &mut FileWriter,
    summary: &mut RecordSummary,
    deadline: Option<Instant>,
    max_frames: Option<u64>,
) -> anyhow::Result<Stop> {
    let mut close_received = false;
    loop {
        if max_frames.is_some_and(|max| summary.frames >= max) {
            return Ok(Stop::MaxFrames);
        }
        let Some(next) = next_before(ws, deadline).await else {
            return Ok(Stop::Duration);
        };
        let message = match next {
            None => return Ok(Stop::Closed),
            Some(Ok(message)) => message,
            // Many TLS servers drop the connection after the close handshake without a TLS
            // close_notify; once the server has closed, that is not a failure.
            Some(Err(_)) if close_received => return Ok(Stop::Closed),
            Some(Err(e)) => return Err(e).context("WebSocket read failed"),
        };
        let recv_time_ns = unix_time_ns();
        close_received |= message.is_close();
        match message {
            Message::Binary(payload) => {
                keep(writer, summary, recv_time_ns, FrameKind::Binary, &payload)?;
            }
            Message::Text(text) => {
                keep(
                    writer,
                    summary,
                    recv_time_ns,
                    FrameKind::Text,
                    text.as_bytes(),
                )?;
            }
            // tungstenite has queued the pong with the ping's payload; send it now rather
            // than with the next read, which may be far off on a quiet stream.
            Message::Ping(_) => ws.flush().await.context("cannot send pong")?,
            // tungstenite answers a close itself; the next read ends the stream.
            Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {}
        }
    }
}

/// The next message, or `None` if `deadline` passes first.
async fn next_before(
    ws: &mut ClientSocket,
    deadline: Option<Instant>,
) -> Option<Option<Result<Message, WsError>>> {
    match deadline {
        Some(deadline) => timeout_at(deadline, ws.next()).await.ok(),
        None => Some(ws.next().await),
    }
}

fn keep(
    writer: &mut FileWriter,
    summary: &mut RecordSummary,
    recv_time_ns: u64,
    kind: FrameKind,
    payload: &[u8],
) -> anyhow::Result<()> {
    writer
        .write(recv_time_ns, kind, payload)
        .context("cannot write the recording")?;
    summary.count(kind, payload.len());
    Ok(())
}

/// Sends a normal close and waits (bounded) for the server's answer. Failures only matter to
/// the server, so they are logged, not returned.
async fn close_client(ws: &mut ClientSocket) {
    let closing = async {
        ws.close(Some(close_frame(CloseCode::Normal))).await?;
        while let Some(message) = ws.next().await {
            message?;
        }
        Ok::<(), WsError>(())
    };
    match timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "close handshake failed"),
        Err(_) => tracing::debug!("close handshake timed out"),
    }
}

fn close_frame(code: CloseCode) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(""),
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch (0 before 1970, saturating in 2554).
fn unix_time_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

// ---------------------------------------------------------------------------------------------
// Replaying: serve a recording to every WebSocket client.

/// How fast the replayer sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Each frame at its recorded offset from the first frame (measured from the handshake).
    Recorded,
    /// Back to back, flushed every few hundred frames.
    AsFastAsPossible,
}

/// What to replay and where.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// The recording.
    pub file: PathBuf,
    /// Address to listen on; port 0 picks a free one (see [`ReplayHandle::addr`]).
    pub listen: SocketAddr,
    /// Recorded pace or as fast as possible.
    pub pace: Pace,
    /// Start again from the first frame after the last, until the client leaves, instead of
    /// closing. An empty recording is never repeated.
    pub repeat: bool,
}

/// A running replayer. [`ReplayHandle::shutdown`] or dropping the handle stops it: it stops
/// accepting and closes open connections with 1001 (going away).
pub struct ReplayHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Frames in the recording.
    pub frames: usize,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ReplayHandle {
    /// Stops the replayer and waits until the listener is closed and every connection ended.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ReplayHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// One frame ready to send.
#[derive(Clone, Debug)]
struct ReplayFrame {
    /// Receive time minus the first record's (zero if the clock stepped back).
    offset: Duration,
    /// The frame, sharing the file's bytes.
    message: Message,
}

/// What every connection is sent.
struct Script {
    frames: Vec<ReplayFrame>,
    pace: Pace,
    repeat: bool,
}

type ServerSink = SplitSink<WebSocketStream<TcpStream>, Message>;
type ServerStream = SplitStream<WebSocketStream<TcpStream>>;

/// Loads and validates `opts.file` (an error names the bad record's index), listens on
/// `opts.listen`, and serves the recording to every WebSocket connection, on any path, each
/// connection independently from the first frame.
pub async fn replay(opts: ReplayOptions) -> anyhow::Result<ReplayHandle> {
    let frames = load(&opts.file).await?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        file = %opts.file.display(),
        frames = frames.len(),
        pace = ?opts.pace,
        "replaying"
    );
    let frame_count = frames.len();
    let script = Arc::new(Script {
        frames,
        pace: opts.pace,
        repeat: opts.repeat,
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, script, stopped));
    Ok(ReplayHandle {
        addr,
        frames: frame_count,
        stop,
        task: Some(task),
    })
}

async fn load(path: &Path) -> anyhow::Result<Vec<ReplayFrame>> {
    let owned = path.to_path_buf();
    let file = tokio::task::spawn_blocking(move || std::fs::read(owned))
        .await
        .context("the file reader panicked")?
        .with_context(|| format!("cannot read {}", path.display()))?;
    replay_frames(Bytes::from(file)).with_context(|| format!("{} is unusable", path.display()))
}

/// Every record of `file` as a message sharing `file`'s bytes, checked in full first.
fn replay_frames(file: Bytes) -> anyhow::Result<Vec<ReplayFrame>> {
    let mut frames = Vec::new();
    let mut first_ns = None;
    for (index, record) in RecordReader::new(&file).enumerate() {
        let record = record.map_err(|e| match e {
            RecordError::BadMagic => anyhow!(e),
            _ => anyhow!("record {index}: {e}"),
        })?;
        let first = *first_ns.get_or_insert(record.recv_time_ns);
        let payload = file.slice_ref(record.payload);
        let message = match record.kind {
            FrameKind::Binary => Message::Binary(payload),
            FrameKind::Text => Message::Text(
                Utf8Bytes::try_from(payload)
                    .map_err(|_| anyhow!("record {index}: text payload is not UTF-8"))?,
            ),
        };
        let offset = Duration::from_nanos(record.recv_time_ns.saturating_sub(first));
        frames.push(ReplayFrame { offset, message });
    }
    Ok(frames)
}

/// Accepts until stopped, then waits for the connections, which see the same stop signal.
async fn accept_loop(
    listener: TcpListener,
    script: Arc<Script>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopping(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "replay connection");
                    connections.spawn(serve(stream, Arc::clone(&script), stopped.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
            // Reap finished connections so the set does not grow with a long-lived replayer.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once the handle asks to stop (or is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|&stop| stop).await;
}

/// One connection: handshake, the script, then a close (normal, or going away on shutdown).
async fn serve(stream: TcpStream, script: Arc<Script>, mut stopped: watch::Receiver<bool>) {
    let ws = tokio::select! {
        accepted = timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::accept_async(stream)) => {
            match accepted {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => return tracing::debug!(error = %e, "replay handshake failed"),
                Err(_) => return tracing::debug!("replay handshake timed out"),
            }
        }
        () = stopping(&mut stopped) => return,
    };
    let (mut sink, mut incoming) = ws.split();
    let code = tokio::select! {
        sent = send_script(&mut sink, &script) => match sent {
            Ok(()) => CloseCode::Normal,
            Err(e) => return tracing::debug!(error = %e, "replay connection failed"),
        },
        () = client_gone(&mut incoming) => return,
        () = stopping(&mut stopped) => CloseCode::Away,
    };
    close_server(sink, incoming, code).await;
}

async fn send_script(sink: &mut ServerSink, script: &Script) -> Result<(), WsError> {
    loop {
        match script.pace {
            Pace::Recorded => send_paced(sink, &script.frames).await?,
            Pace::AsFastAsPossible => send_batched(sink, &script.frames).await?,
        }
        if !script.repeat || script.frames.is_empty() {
            return Ok(());
        }
    }
}

/// Sleeps until each frame's offset from the start of this pass, so delays do not accumulate.
async fn send_paced(sink: &mut ServerSink, frames: &[ReplayFrame]) -> Result<(), WsError> {
    let start = Instant::now();
    for frame in frames {
        sleep_until(start + frame.offset).await;
        sink.send(frame.message.clone()).await?;
    }
    Ok(())
}

async fn send_batched(sink: &mut ServerSink, frames: &[ReplayFrame]) -> Result<(), WsError> {
    for batch in frames.chunks(REPLAY_BATCH_FRAMES) {
        for frame in batch {
            sink.feed(frame.message.clone()).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}

/// Reads (answering pings and a close) until the client's side ends.
async fn client_gone(incoming: &mut ServerStream) {
    while let Some(Ok(_)) = incoming.next().await {}
}

/// Sends a close frame and waits (bounded) for the client's answer.
async fn close_server(mut sink: ServerSink, mut incoming: ServerStream, code: CloseCode) {
    let closing = async {
        sink.send(Message::Close(Some(close_frame(code)))).await?;
        while let Some(message) = incoming.next().await {
            message?;
        }
        Ok::<(), WsError>(())
    };
    match timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "replay close failed"),
        Err(_) => tracing::debug!("replay close timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record built by hand, so the reader is tested against the documented layout rather
    /// than against the writer.
    fn raw_record(recv_time_ns: u64, len: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&recv_time_ns.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(payload);
        out
    }

    fn file_of(records: &[Vec<u8>]) -> Vec<u8> {
        let mut file = RECORD_MAGIC.to_vec();
        records.iter().for_each(|r| file.extend_from_slice(r));
        file
    }

    #[test]
    fn writer_output_reads_back_in_order() {
        let mut writer = RecordWriter::new(Vec::new()).expect("in memory");
        writer
            .write(7, FrameKind::Binary, &[0x32, 0x00, 0x11])
            .expect("in memory");
        writer
            .write(9, FrameKind::Text, br#"{"e":"serverShutdown"}"#)
            .expect("in memory");
        writer
            .write(u64::MAX, FrameKind::Binary, b"")
            .expect("in memory");
        let file = writer.into_inner();
        assert!(file.starts_with(&RECORD_MAGIC));

        let records: Vec<_> = RecordReader::new(&file).collect();
        let expected = [
            (7, FrameKind::Binary, &[0x32u8, 0x00, 0x11][..]),
            (9, FrameKind::Text, &br#"{"e":"serverShutdown"}"#[..]),
            (u64::MAX, FrameKind::Binary, &b""[..]),
        ]
        .map(|(recv_time_ns, kind, payload)| {
            Ok(Record {
                recv_time_ns,
                kind,
                payload,
            })
        });
        assert_eq!(records, expected);
    }

    #[test]
    fn writer_produces_the_documented_bytes() {
        let mut writer = RecordWriter::new(Vec::new()).expect("in memory");
        writer.write(1, FrameKind::Text, b"hi").expect("in memory");
        let file = writer.into_inner();
        let record = [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0x68, 0x69];
        assert_eq!(&file[..8], b"HPREC001");
        assert_eq!(&file[8..], &record);
    }

    #[test]
    fn writer_refuses_an_oversize_payload_and_writes_nothing() {
        let mut writer = RecordWriter::new(Vec::new()).expect("in memory");
        let huge = vec![0u8; FRAME_BYTES_MAX + 1];
        let err = writer
            .write(1, FrameKind::Binary, &huge)
            .expect_err("over the maximum");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(writer.into_inner(), RECORD_MAGIC);
    }

    #[test]
    fn a_file_of_only_the_magic_has_no_records() {
        assert_eq!(RecordReader::new(&RECORD_MAGIC).count(), 0);
    }

    #[test]
    fn a_wrong_or_short_magic_is_bad_magic_and_ends_the_iteration() {
        for file in [&b""[..], b"HPREC00", b"HPREC002", b"GET / HTTP/1.1"] {
            let items: Vec<_> = RecordReader::new(file).collect();
            assert_eq!(items, [Err(RecordError::BadMagic)], "{file:?}");
        }
    }

    #[test]
    fn a_truncated_header_or_payload_is_reported_after_the_good_records() {
        let good = raw_record(1, 2, 0, b"ok");
        let mut file = file_of(&[good.clone(), raw_record(2, 3, 0, b"abc")]);
        file.truncate(file.len() - 1);
        let items: Vec<_> = RecordReader::new(&file).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert_eq!(
            items[1],
            Err(RecordError::TruncatedRecord { needed: 3, got: 2 })
        );

        let mut file = file_of(&[good]);
        file.extend_from_slice(&[0; 5]);
        let items: Vec<_> = RecordReader::new(&file).collect();
        assert_eq!(
            items[1..],
            [Err(RecordError::TruncatedRecord {
                needed: RECORD_HEADER_BYTES,
                got: 5
            })]
        );
    }

    #[test]
    fn a_payload_over_the_maximum_is_refused_without_reading_it() {
        let too_long = u32::try_from(FRAME_BYTES_MAX + 1).expect("fits, asserted above");
        let file = file_of(&[raw_record(1, too_long, 0, b""), raw_record(2, 0, 0, b"")]);
        let items: Vec<_> = RecordReader::new(&file).collect();
        assert_eq!(
            items,
            [Err(RecordError::PayloadTooLarge {
                len: FRAME_BYTES_MAX + 1
            })]
        );
    }

    #[test]
    fn an_unknown_kind_is_refused_and_nothing_follows() {
        let file = file_of(&[raw_record(1, 1, 2, b"x"), raw_record(2, 1, 0, b"y")]);
        let items: Vec<_> = RecordReader::new(&file).collect();
        assert_eq!(items, [Err(RecordError::UnknownKind(2))]);
    }

    #[test]
    fn replay_frames_are_offsets_from_the_first_record() {
        let file = file_of(&[
            raw_record(1_000, 1, 0, b"a"),
            raw_record(21_000, 2, 1, b"bc"),
            raw_record(500, 0, 0, b""),
        ]);
        let frames = replay_frames(Bytes::from(file)).expect("valid");
        let offsets: Vec<_> = frames.iter().map(|f| f.offset.as_nanos()).collect();
        assert_eq!(
            offsets,
            [0, 20_000, 0],
            "a clock step back gives offset zero"
        );
        assert_eq!(frames[0].message, Message::binary(&b"a"[..]));
        assert_eq!(frames[1].message, Message::text("bc"));
        assert_eq!(frames[2].message, Message::binary(Bytes::new()));
    }

    #[test]
    fn replay_refuses_bad_records_and_names_their_index() {
        let file = file_of(&[
            raw_record(1, 1, 0, b"a"),
            raw_record(2, 2, 1, &[0xff, 0xfe]),
        ]);
        let err = replay_frames(Bytes::from(file)).expect_err("not UTF-8");
        assert_eq!(err.to_string(), "record 1: text payload is not UTF-8");

        let file = file_of(&[raw_record(1, 1, 0, b"a"), raw_record(2, 1, 9, b"b")]);
        let err = replay_frames(Bytes::from(file)).expect_err("unknown kind");
        assert_eq!(err.to_string(), "record 1: unknown frame kind 9");

        let err = replay_frames(Bytes::from_static(b"nonsense")).expect_err("bad magic");
        assert!(err.to_string().contains("HPREC001"), "{err}");
    }

    #[test]
    fn the_api_key_is_sent_but_kept_out_of_debug_output() {
        let request = client_request("ws://127.0.0.1:1/ws", Some("secret-key")).expect("valid");
        let value = &request.headers()[API_KEY_HEADER];
        assert_eq!(value, "secret-key");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("secret-key"));

        let opts = RecordOptions {
            url: "ws://127.0.0.1:1/ws".into(),
            api_key: Some("secret-key".into()),
            trust_pem: None,
            out: PathBuf::from("out.hprec"),
            duration: None,
            max_frames: None,
        };
        assert!(!format!("{opts:?}").contains("secret-key"));
        assert!(client_request("ws://127.0.0.1:1/ws", Some("bad\nkey")).is_err());
    }
}
