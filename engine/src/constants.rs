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
