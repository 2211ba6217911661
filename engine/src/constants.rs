//! Every limit hotpath enforces, named once. Relations between them are checked at compile time.

/// The largest `numInGroup` a Binance frame may declare (trades per event, levels per side).
/// Binance does not document a maximum; depth groups have 16-bit counts, so this is their
/// natural bound, and it also caps the 32-bit trades count of a hostile frame.
pub const GROUP_COUNT_MAX: u32 = 65_535;

/// The largest frame hotpath accepts from a file or socket. A full 65,535/65,535-level depth
/// diff with a 255-byte symbol is 43 + 16 * 131,070 + 255 bytes, about 2 MiB.
pub const FRAME_BYTES_MAX: usize = 4 << 20;

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
