//! The errors of generated codecs. Variants carry numbers, never strings, so constructing one
//! on the hot path costs nothing.

use core::fmt;

/// Why a frame was rejected by a generated decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame ends before a length it declares: `needed` bytes from its start, `got` present.
    Truncated {
        /// Bytes from the frame start the decoder needed.
        needed: usize,
        /// Bytes the frame has.
        got: usize,
    },
    /// The header names a template this schema does not define.
    UnknownTemplate(u16),
    /// The header names another template than the decoder being used.
    WrongTemplate {
        /// The decoder's template id.
        expected: u16,
        /// The header's template id.
        got: u16,
    },
    /// The header names another schema id.
    WrongSchema {
        /// The schema id the decoder was generated from.
        expected: u16,
        /// The header's schema id.
        got: u16,
    },
    /// A root block or group entry is shorter than the fields every version carries.
    BlockTooShort {
        /// The template id (root block) or group id (group entry).
        id: u16,
        /// The least block length the decoder accepts.
        needed: usize,
        /// The block length on the wire.
        got: usize,
    },
    /// A repeating group declares more entries than the configured cap.
    GroupTooLarge {
        /// The group id.
        id: u16,
        /// The count on the wire.
        count: u64,
        /// The cap: the configured limit, or the dimension's `maxValue` if lower.
        max: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { needed, got } => {
                write!(f, "truncated frame: needed {needed} bytes, got {got}")
            }
            DecodeError::UnknownTemplate(id) => write!(f, "unknown template id {id}"),
            DecodeError::WrongTemplate { expected, got } => {
                write!(f, "wrong template id: expected {expected}, got {got}")
            }
            DecodeError::WrongSchema { expected, got } => {
                write!(f, "wrong schema id: expected {expected}, got {got}")
            }
            DecodeError::BlockTooShort { id, needed, got } => {
                write!(
                    f,
                    "block of id {id} too short: needs {needed} bytes, got {got}"
                )
            }
            DecodeError::GroupTooLarge { id, count, max } => {
                write!(f, "group {id} has {count} entries, over the cap of {max}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a generated encoder refused to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small: `needed` bytes, `got` available.
    BufferTooSmall {
        /// Bytes the message needs so far.
        needed: usize,
        /// Bytes the buffer has.
        got: usize,
    },
    /// More entries were started than the group's declared count.
    GroupOverflow {
        /// The group id.
        id: u16,
        /// The declared count.
        count: u64,
    },
    /// A count or a var-data length does not fit its length field.
    TooLong {
        /// The group or var-data id.
        id: u16,
        /// The length asked for.
        len: u64,
        /// The largest length the encoding allows.
        max: u64,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, got } => {
                write!(f, "buffer too small: needed {needed} bytes, got {got}")
            }
            EncodeError::GroupOverflow { id, count } => {
                write!(f, "group {id}: more entries than the declared {count}")
            }
            EncodeError::TooLong { id, len, max } => {
                write!(f, "element {id}: length {len} over the maximum {max}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}
