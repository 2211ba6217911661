//! Recording and replaying over real loopback WebSockets: a file of Binance SBE frames (the
//! re-encoded bestBidAsk samples in `../shared/binance/samples/`) and a text frame is replayed,
//! recorded back and compared; recorded pacing, repeat, shutdown, the API key header, pongs,
//! `wss://` with a trusted self-signed certificate, and unusable files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hotpath::sim::record::{
    FrameKind, Pace, RecordOptions, RecordReader, RecordSummary, RecordWriter, ReplayHandle,
    ReplayOptions, record, replay,
};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{shared_binance, unhex};

/// Upper bound on any one recording in these tests, so a hang fails instead of stalling.
const RECORD_TIMEOUT: Duration = Duration::from_secs(20);

/// How much earlier than recorded a paced frame may arrive: timer and scheduling jitter.
const PACE_TOLERANCE: Duration = Duration::from_millis(10);

/// A JSON text frame like the ones Binance sends on the SBE stream (PROTOCOL.md 3.7).
const SHUTDOWN_TEXT: &str = r#"{"e":"serverShutdown","E":1770123456789}"#;

/// Receive time of the first frame in the files these tests write.
const FIRST_RECV_TIME_NS: u64 = 1_770_000_000_000_000_000;

/// A directory under the system temp dir, unique to this process and call, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("hotpath-it-{label}-{}-{unique}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ten re-encoded bestBidAsk frames with a text frame after the fifth and at the end.
fn sample_frames() -> Vec<(FrameKind, Vec<u8>)> {
    let hex = shared_binance("samples/bestbidask_btcusdt_reencoded.hex");
    let mut frames: Vec<_> = hex
        .lines()
        .map(|line| (FrameKind::Binary, unhex(line)))
        .collect();
    assert_eq!(frames.len(), 10);
    let text = (FrameKind::Text, SHUTDOWN_TEXT.as_bytes().to_vec());
    frames.insert(5, text.clone());
    frames.push(text);
    frames
}

/// Writes `frames` received at `FIRST_RECV_TIME_NS` plus each offset.
fn write_recording(path: &Path, frames: &[(FrameKind, Vec<u8>)], offsets: &[Duration]) {
    assert_eq!(frames.len(), offsets.len());
    let file = std::fs::File::create(path).expect("create recording");
    let mut writer = RecordWriter::new(std::io::BufWriter::new(file)).expect("magic");
    for ((kind, payload), offset) in frames.iter().zip(offsets) {
        let nanos = u64::try_from(offset.as_nanos()).expect("small offset");
        writer
            .write(FIRST_RECV_TIME_NS + nanos, *kind, payload)
            .expect("write record");
    }
    writer.flush().expect("flush");
}

/// Every record of the file at `path`, which must be valid.
fn read_recording(path: &Path) -> Vec<(u64, FrameKind, Vec<u8>)> {
    let file = std::fs::read(path).expect("read recording");
    RecordReader::new(&file)
        .map(|r| r.expect("valid record"))
        .map(|r| (r.recv_time_ns, r.kind, r.payload.to_vec()))
        .collect()
}

fn replay_options(file: PathBuf, pace: Pace, repeat: bool) -> ReplayOptions {
    ReplayOptions {
        file,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        pace,
        repeat,
    }
}

fn record_options(url: String, out: PathBuf) -> RecordOptions {
    RecordOptions {
        url,
        api_key: None,
        trust_pem: None,
        out,
        duration: Some(RECORD_TIMEOUT),
        max_frames: None,
    }
}

fn ws_url(handle: &ReplayHandle) -> String {
    format!("ws://{}/ws", handle.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_frames_are_recorded_identically_and_in_order() {
    let dir = TempDir::new("roundtrip");
    let frames = sample_frames();
    let offsets: Vec<_> = (0..frames.len() as u64)
        .map(Duration::from_millis)
        .collect();
    write_recording(&dir.join("original.hprec"), &frames, &offsets);

    let options = replay_options(dir.join("original.hprec"), Pace::AsFastAsPossible, false);
    let handle = replay(options).await.expect("replay starts");
    assert_eq!(handle.frames, frames.len());
    let out = dir.join("recorded.hprec");
    let summary = record(record_options(ws_url(&handle), out.clone()))
        .await
        .expect("recording");
    handle.shutdown().await;

    let payload_bytes: usize = frames.iter().map(|(_, p)| p.len()).sum();
    let expected = RecordSummary {
        frames: 12,
        binary: 10,
        text: 2,
        bytes: payload_bytes as u64,
    };
    assert_eq!(summary, expected);
    let recorded = read_recording(&out);
    let kinds_and_payloads: Vec<_> = recorded.iter().map(|(_, k, p)| (*k, p.clone())).collect();
    assert_eq!(kinds_and_payloads, frames);
    assert!(recorded.is_sorted_by_key(|(time, _, _)| *time));
    for (_, kind, payload) in &recorded {
        match kind {
            FrameKind::Binary => assert!(hotpath::sbe::decode(payload).is_ok()),
            FrameKind::Text => assert_eq!(payload, SHUTDOWN_TEXT.as_bytes()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_pace_keeps_the_gaps_between_frames() {
    let dir = TempDir::new("paced");
    let frames = sample_frames()[..4].to_vec();
    let offsets = [0, 20, 60, 80].map(Duration::from_millis);
    write_recording(&dir.join("original.hprec"), &frames, &offsets);

    let options = replay_options(dir.join("original.hprec"), Pace::Recorded, false);
    let handle = replay(options).await.expect("replay starts");
    let out = dir.join("recorded.hprec");
    let summary = record(record_options(ws_url(&handle), out.clone()))
        .await
        .expect("recording");
    handle.shutdown().await;

    assert_eq!(summary.frames, 4);
    let times: Vec<u64> = read_recording(&out).iter().map(|(t, _, _)| *t).collect();
    for (i, pair) in times.windows(2).enumerate() {
        let gap = Duration::from_nanos(pair[1].saturating_sub(pair[0]));
        let original = offsets[i + 1] - offsets[i];
        assert!(pair[0] <= pair[1], "frame {} came before frame {i}", i + 1);
        assert!(
            gap + PACE_TOLERANCE >= original,
            "gap {i}: {gap:?} recorded, {original:?} original"
        );
    }
    let span = Duration::from_nanos(times[3] - times[0]);
    assert!(span + PACE_TOLERANCE >= offsets[3], "span {span:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_a_missing_or_corrupt_file() {
    let dir = TempDir::new("corrupt");
    let missing = dir.join("missing.hprec");
    let err = replay(replay_options(missing, Pace::AsFastAsPossible, false))
        .await
        .err()
        .expect("missing file");
    assert!(format!("{err:#}").contains("missing.hprec"), "{err:#}");

    let path = dir.join("not-a-recording.hprec");
    std::fs::write(&path, b"{\"e\":\"trade\"}\n").expect("write");
    let err = replay(replay_options(path, Pace::AsFastAsPossible, false))
        .await
        .err()
        .expect("bad magic");
    assert!(format!("{err:#}").contains("HPREC001"), "{err:#}");

    let path = dir.join("truncated.hprec");
    let frames = sample_frames()[..3].to_vec();
    write_recording(&path, &frames, &[Duration::ZERO; 3]);
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 1]).expect("write");
    let err = replay(replay_options(path, Pace::AsFastAsPossible, false))
        .await
        .err()
        .expect("truncated");
    let message = format!("{err:#}");
    assert!(
        message.contains("record 2") && message.contains("ends inside"),
        "{message}"
    );

    let path = dir.join("unknown-kind.hprec");
    let mut bytes = std::fs::read(dir.join("truncated.hprec")).expect("read");
    bytes.truncate(8);
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.push(7);
    std::fs::write(&path, &bytes).expect("write");
    let err = replay(replay_options(path, Pace::AsFastAsPossible, false))
        .await
        .err()
        .expect("unknown kind");
    let message = format!("{err:#}");
    assert!(
        message.contains("record 0: unknown frame kind 7"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_replays_until_the_recorder_has_its_frames() {
    let dir = TempDir::new("repeat");
    let frames = sample_frames();
    write_recording(&dir.join("original.hprec"), &frames, &[Duration::ZERO; 12]);

    let options = replay_options(dir.join("original.hprec"), Pace::AsFastAsPossible, true);
    let handle = replay(options).await.expect("replay starts");
    let out = dir.join("recorded.hprec");
    let mut options = record_options(ws_url(&handle), out.clone());
    options.max_frames = Some(30);
    let summary = record(options).await.expect("recording");
    handle.shutdown().await;

    assert_eq!(summary.frames, 30);
    let recorded = read_recording(&out);
    assert_eq!(recorded.len(), 30);
    for (i, (_, kind, payload)) in recorded.iter().enumerate() {
        assert_eq!(
            (*kind, payload),
            (frames[i % 12].0, &frames[i % 12].1),
            "frame {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_stops_when_its_duration_runs_out() {
    let dir = TempDir::new("duration");
    let frames = sample_frames()[..2].to_vec();
    let offsets = [Duration::ZERO, Duration::from_secs(3600)];
    write_recording(&dir.join("original.hprec"), &frames, &offsets);

    let options = replay_options(dir.join("original.hprec"), Pace::Recorded, false);
    let handle = replay(options).await.expect("replay starts");
    let out = dir.join("recorded.hprec");
    let mut options = record_options(ws_url(&handle), out.clone());
    options.duration = Some(Duration::from_millis(200));
    let summary = record(options).await.expect("recording");
    handle.shutdown().await;

    assert_eq!(summary.frames, 1);
    assert_eq!(read_recording(&out)[0].2, frames[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_connections_as_going_away() {
    let dir = TempDir::new("shutdown");
    let frames = sample_frames()[..2].to_vec();
    let offsets = [Duration::ZERO, Duration::from_secs(3600)];
    write_recording(&dir.join("original.hprec"), &frames, &offsets);
    let options = replay_options(dir.join("original.hprec"), Pace::Recorded, false);
    let handle = replay(options).await.expect("replay starts");
    let addr = handle.addr;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/any/path"))
        .await
        .expect("connects");
    let first = ws.next().await.expect("a frame").expect("no error");
    assert_eq!(first, Message::binary(frames[0].1.clone()));
    let stopping = tokio::spawn(handle.shutdown());
    let Some(Ok(Message::Close(Some(close)))) = ws.next().await else {
        panic!("expected a close frame");
    };
    assert_eq!(close.code, CloseCode::Away);
    assert!(ws.next().await.is_none(), "the close handshake completes");
    stopping.await.expect("shutdown finishes");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_sends_the_api_key_and_answers_pings_with_their_payload() {
    let dir = TempDir::new("ping");
    let frame = sample_frames()[0].1.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = frame.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut api_key = None;
        #[expect(clippy::result_large_err, reason = "tungstenite's callback signature")]
        let capture_key = |request: &Request, response: Response| {
            api_key = request.headers().get("x-mbx-apikey").cloned();
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, capture_key)
            .await
            .expect("handshake");
        ws.send(Message::Ping(b"hp-ping-7".to_vec().into()))
            .await
            .expect("ping");
        let reply = ws.next().await.expect("open").expect("no error");
        let Message::Pong(pong) = reply else {
            panic!("expected a pong, got {reply:?}");
        };
        ws.send(Message::binary(sent)).await.expect("frame");
        ws.close(None).await.expect("close");
        while ws.next().await.is_some() {}
        (api_key, pong)
    });

    let out = dir.join("recorded.hprec");
    let mut options = record_options(format!("ws://{addr}/ws"), out.clone());
    options.api_key = Some("test-key-not-a-secret".into());
    let summary = record(options).await.expect("recording");
    let (api_key, pong) = server.await.expect("server ran");

    assert_eq!(api_key.expect("header sent"), "test-key-not-a-secret");
    assert_eq!(&pong[..], b"hp-ping-7");
    assert_eq!(summary.frames, 1);
    assert_eq!(read_recording(&out)[0].2, frame);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_trusts_the_given_certificate_over_wss() {
    let dir = TempDir::new("wss");
    let frame = sample_frames()[0].1.clone();
    let (acceptor, pem) = hotpath::sim::tls::self_signed_acceptor().expect("certificate");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = frame.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let tls = acceptor.accept(stream).await.expect("TLS handshake");
        let mut ws = tokio_tungstenite::accept_async(tls)
            .await
            .expect("handshake");
        ws.send(Message::binary(sent)).await.expect("frame");
        ws.close(None).await.expect("close");
        while ws.next().await.is_some() {}
    });

    let out = dir.join("recorded.hprec");
    let mut options = record_options(format!("wss://127.0.0.1:{}/ws", addr.port()), out.clone());
    options.trust_pem = Some(pem);
    let summary = record(options).await.expect("recording over TLS");
    server.await.expect("server ran");

    assert_eq!(summary.frames, 1);
    assert_eq!(read_recording(&out)[0].2, frame);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_without_a_close_is_an_error_but_keeps_its_frames() {
    let dir = TempDir::new("dropped");
    let frame = sample_frames()[0].1.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = frame.clone();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("handshake");
        ws.send(Message::binary(sent)).await.expect("frame");
        // Dropping the socket here ends the TCP connection with no close handshake.
    });

    let out = dir.join("recorded.hprec");
    let err = record(record_options(format!("ws://{addr}/ws"), out.clone()))
        .await
        .expect_err("no close handshake");
    server.await.expect("server ran");

    assert!(format!("{err:#}").contains("after 1 frames"), "{err:#}");
    assert_eq!(read_recording(&out)[0].2, frame);
}
