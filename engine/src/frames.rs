//! Reading recorded frames: hex text (one frame per line) and binary files of frames each
//! preceded by its length as a little-endian u32.

use std::fmt;

use crate::constants::FRAME_BYTES_MAX;

/// Why a recorded frame could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A hex line has an odd number of digits or a non-hex character.
    BadHex {
        /// 1-based column of the first bad character (or the line length, for odd counts).
        column: usize,
    },
    /// A binary file ends inside a length prefix or a frame.
    TruncatedFile {
        /// Bytes the frame needed.
        needed: usize,
        /// Bytes left in the file.
        got: usize,
    },
    /// A length prefix above [`FRAME_BYTES_MAX`].
    FrameTooLarge {
        /// The declared length.
        len: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::BadHex { column } => write!(f, "invalid hex at column {column}"),
            FrameError::TruncatedFile { needed, got } => {
                write!(
                    f,
                    "file ends inside a frame: needed {needed} bytes, got {got}"
                )
            }
            FrameError::FrameTooLarge { len } => {
                write!(
                    f,
                    "frame length {len} is over the maximum of {FRAME_BYTES_MAX}"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses one line of hex digits (whitespace around it ignored) into `out`, which is cleared
/// first.
pub fn parse_hex(line: &str, out: &mut Vec<u8>) -> Result<(), FrameError> {
    out.clear();
    let text = line.trim();
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(FrameError::BadHex {
            column: digits.len(),
        });
    }
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let high = hex_value(pair[0]).ok_or(FrameError::BadHex { column: 2 * i + 1 })?;
        let low = hex_value(pair[1]).ok_or(FrameError::BadHex { column: 2 * i + 2 })?;
        out.push(high << 4 | low);
    }
    Ok(())
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Iterates the frames of a length-prefixed binary file. After an error it yields nothing
/// more: the position of the next frame is unknown.
pub struct LengthPrefixed<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> LengthPrefixed<'a> {
    /// Frames in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        LengthPrefixed {
            rest: bytes,
            failed: false,
        }
    }
}

impl<'a> Iterator for LengthPrefixed<'a> {
    type Item = Result<&'a [u8], FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = split_frame(self.rest);
        match result {
            Ok((frame, rest)) => {
                self.rest = rest;
                Some(Ok(frame))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn split_frame(bytes: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(FrameError::TruncatedFile {
            needed: 4,
            got: bytes.len(),
        });
    };
    let len = u32::from_le_bytes(*prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::FrameTooLarge { len });
    }
    if rest.len() < len {
        return Err(FrameError::TruncatedFile {
            needed: len,
            got: rest.len(),
        });
    }
    Ok(rest.split_at(len))
}

/// Appends `frame` to `out` with its length prefix: the inverse of [`LengthPrefixed`].
pub fn push_length_prefixed(out: &mut Vec<u8>, frame: &[u8]) {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lines_parse_and_bad_digits_are_located() {
        let mut out = Vec::new();
        assert_eq!(parse_hex("  00ff7A \n", &mut out), Ok(()));
        assert_eq!(out, [0x00, 0xff, 0x7a]);
        assert_eq!(parse_hex("", &mut out), Ok(()));
        assert!(out.is_empty());
        assert_eq!(
            parse_hex("0g", &mut out),
            Err(FrameError::BadHex { column: 2 })
        );
        assert_eq!(
            parse_hex("abc", &mut out),
            Err(FrameError::BadHex { column: 3 })
        );
    }

    #[test]
    fn length_prefixed_frames_round_trip_and_stop_at_damage() {
        let mut file = Vec::new();
        push_length_prefixed(&mut file, b"one");
        push_length_prefixed(&mut file, b"");
        push_length_prefixed(&mut file, b"three");
        let frames: Vec<_> = LengthPrefixed::new(&file).collect();
        assert_eq!(frames, [Ok(&b"one"[..]), Ok(&b""[..]), Ok(&b"three"[..])]);

        file.truncate(file.len() - 1);
        let frames: Vec<_> = LengthPrefixed::new(&file).collect();
        assert_eq!(
            frames[2],
            Err(FrameError::TruncatedFile { needed: 5, got: 4 })
        );
        assert_eq!(frames.len(), 3);

        let huge = (FRAME_BYTES_MAX as u32 + 1).to_le_bytes();
        let frames: Vec<_> = LengthPrefixed::new(&huge).collect();
        assert_eq!(
            frames,
            [Err(FrameError::FrameTooLarge {
                len: FRAME_BYTES_MAX + 1
            })]
        );
    }
}
