//! Every limit hotpath enforces, named once. Relations between them are checked at compile time.

use std::time::Duration;

/// The largest `numInGroup` a Binance frame may declare (trades per event, levels per side).
/// Binance does not document a maximum; depth groups have 16-bit counts, so this is their
/// natural bound, and it also caps the 32-bit trades count of a hostile frame.
pub const GROUP_COUNT_MAX: u32 = 65_535;

/// The largest frame hotpath accepts from a file or socket. A full 65,535/65,535-level depth
/// diff with a 255-byte symbol is 43 + 16 * 131,070 + 255 bytes, about 2 MiB.
pub const FRAME_BYTES_MAX: usize = 4 << 20;
/// How much a reader's WebSocket reads from its socket at a time (tungstenite's
/// `read_buffer_size`). tungstenite zero-fills this much of its buffer before every read, so
/// its default of 128 KiB cost a 128 KiB `memset` per socket read (several µs, and the cache it
/// evicts) where a read brings a few frames of 100-2,000 bytes; 16 KiB holds about a hundred of
/// them. A larger frame still arrives whole: its length is reserved once its header is read.
pub const WS_READ_BUFFER_BYTES: usize = 16 << 10;

const _: () = assert!(
    FRAME_BYTES_MAX >= 43 + 16 * 2 * GROUP_COUNT_MAX as usize + 255,
    "a frame of the largest accepted depth diff must fit FRAME_BYTES_MAX"
);

/// Trade events a sink holds per symbol while ids before them are missing (the sidecar is
/// fetching them). Beyond, the sink gives up on the missing ids and delivers what it holds. At
/// 1000 events a second this is well over the default hold of 45 s.
pub const TRADE_EVENTS_HELD_MAX: usize = 100_000;

/// Slots of each sink's repair ring (sidecar -> sink). A full ring never loses a repair: the
/// sidecar keeps it in its outbox until there is room.
pub const REPAIR_RING_CAPACITY: usize = 65_536;

/// Slots of the Redis writer's depth snapshot request ring (writer -> sidecar). A symbol has at
/// most one sync and one check request outstanding; the writer keeps what does not fit, in
/// order.
pub const BOOK_REQUEST_RING_CAPACITY: usize = 4096;

// --- The feed's connection slot and reader (engine/src/feed/{slot,reader,frame_path}.rs) ---

/// Binance's limit on messages a client may send per second on one WebSocket connection
/// (PING, PONG and JSON control frames; PROTOCOL.md 3.8). Exceeding it closes the connection.
pub const BINANCE_INCOMING_PER_SECOND_MAX: u64 = 5;

/// How often one connection may send a SUBSCRIBE or UNSUBSCRIBE: under three per second, so
/// with the pongs (one per server ping, every 20 s) it stays within
/// [`BINANCE_INCOMING_PER_SECOND_MAX`].
pub const CONTROL_INTERVAL: Duration = Duration::from_millis(350);

/// How long a SUBSCRIBE or UNSUBSCRIBE may wait for its `{"result":null,"id":N}` reply before
/// it counts as failed (counted, reported, retried with backoff).
pub const CONTROL_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest delay before a failed SUBSCRIBE or UNSUBSCRIBE of a stream is tried again; the
/// delay doubles from [`CONTROL_INTERVAL`] per failure of that stream up to this.
pub const CONTROL_RETRY_MAX: Duration = Duration::from_secs(60);

/// How long a connection attempt (TCP, TLS, WebSocket handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a close handshake may take before the socket is dropped anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a connection that carries no stream may stay quiet before it is replaced anyway
/// (it is quiet by design, not silent).
pub const QUIET_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// Messages a reader processes back to back from one connection before it selects again (so a
/// busy connection cannot starve its timers, its command channel or the other connections).
pub const DRAIN_MAX: usize = 256;

/// Frames of a replacement connection held back (waiting for the connection it replaces to
/// deliver the ids before them) at most; one more releases them all, a gap being reported for
/// what is still missing. About four seconds of a busy connection.
pub const HELD_FRAMES_MAX: usize = 1 << 16;

const _: () = assert!(
    1000 / (CONTROL_INTERVAL.as_millis() as u64) < BINANCE_INCOMING_PER_SECOND_MAX,
    "control frames plus a pong must stay within Binance's incoming-message limit"
);
const _: () = assert!(
    CONTROL_REPLY_TIMEOUT.as_millis() > CONTROL_INTERVAL.as_millis()
        && CONTROL_RETRY_MAX.as_millis() >= CONTROL_REPLY_TIMEOUT.as_millis(),
    "a reply is awaited longer than the pacing interval, and retries back off beyond it"
);
const _: () = assert!(
    CLOSE_TIMEOUT.as_millis() < CONNECT_TIMEOUT.as_millis(),
    "closing an old connection never takes longer than opening a new one may"
);
const _: () = assert!(DRAIN_MAX > 0 && HELD_FRAMES_MAX >= DRAIN_MAX);

/// Trades per Redis pipeline at most (a long outage's backlog goes out in several).
pub const TRADES_PER_PIPELINE: usize = 20_000;
/// The Redis writer's connect and response deadline.
pub const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// Receipt times the Redis writer keeps for its latency histogram between two
/// acknowledgements.
pub const LATENCY_SAMPLES_MAX: usize = 1 << 20;
/// Trade gaps a sink logs one by one when it gives up on them; later ones are only counted.
pub const GAPS_LOGGED_MAX: u32 = 100;

const _: () = assert!(TRADES_PER_PIPELINE > 0 && LATENCY_SAMPLES_MAX >= TRADES_PER_PIPELINE);

/// Idle rounds a `backoff` consumer spins (a CPU hint per round) before it yields.
pub const IDLE_SPINS_MAX: u32 = 100;
/// Idle rounds a `backoff` consumer yields its core after spinning, before it parks.
pub const IDLE_YIELDS_MAX: u32 = 10;
/// Idle spells in a row whose spins and yields found nothing (the work came only after a
/// park) after which a `backoff` consumer parks at once: at low rates the gap between frames
/// is far longer than the spin phase, which then only costs CPU.
pub const IDLE_SPIN_MISSES_MAX: u32 = 4;
/// While it parks at once, a `backoff` consumer still spins through every this many-th spell,
/// to notice when the rate has risen enough for spinning to catch the next frame again.
pub const IDLE_SPIN_PROBE_EVERY: u32 = 16;
/// A `backoff` consumer's first park; each further idle round doubles it up to
/// [`IDLE_PARK_MAX`]. Data wakes a parked consumer at once: the timeout only bounds how late
/// its timers (linger, hold, reconnect) fire and how often an idle thread looks around.
pub const IDLE_PARK_MIN: std::time::Duration = std::time::Duration::from_micros(50);
/// A `backoff` consumer's longest park.
pub const IDLE_PARK_MAX: std::time::Duration = std::time::Duration::from_millis(10);
/// A `blocking` consumer's park: it sleeps until woken, looking at its timers this often.
pub const IDLE_BLOCKING_PARK: std::time::Duration = std::time::Duration::from_millis(100);
const _: () = assert!(
    IDLE_SPIN_PROBE_EVERY > 0
        && IDLE_PARK_MIN.as_nanos() > 0
        && IDLE_PARK_MIN.as_nanos() <= IDLE_PARK_MAX.as_nanos()
        && IDLE_PARK_MAX.as_nanos() <= IDLE_BLOCKING_PARK.as_nanos()
);
/// The Redis writer's default `redis.linger_us`: none. Batches grow with the load while a
/// pipeline is in flight (group commit); a linger holds frames taken while nothing is in flight
/// until the oldest is this old, trading latency for CPU at low rates.
pub const REDIS_LINGER_DEFAULT: Duration = Duration::ZERO;
/// The longest `redis.linger_us` accepted.
pub const REDIS_LINGER_MAX: Duration = Duration::from_millis(10);
/// How often the Redis writer runs its timers (held-trade expiry, re-anchor retries, the
/// queue-depth gauge, the dead-letter sync) in rounds that found no work; rounds with work
/// run them at once.
pub const REDIS_HOUSEKEEPING: Duration = Duration::from_millis(2);
const _: () = assert!(REDIS_LINGER_DEFAULT.as_nanos() <= REDIS_LINGER_MAX.as_nanos());
/// How often a thread that owns a latency histogram (a reader) publishes a copy for the control
/// plane's `/metrics`; a scrape sees the reader's latencies at most this old.
pub const LIVE_HISTOGRAM_PUBLISH: Duration = Duration::from_secs(1);

/// How often the Redis writer publishes its books' sync state (for `/ready` and the staleness
/// metric), and how often the control plane samples counters into rates and ages.
pub const CONTROL_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
