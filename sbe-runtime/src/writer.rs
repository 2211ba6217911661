//! The append-only cursor that generated encoders write through.

use crate::EncodeError;

/// A position in an output buffer. Encoders reserve a block (zero-filled) and then store fields
/// into it at fixed offsets; repeating groups and var data append behind it in schema order.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    /// Bytes written so far; invariant: `pos <= buf.len()`.
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The whole output buffer, for stores at offsets returned by [`Writer::reserve`].
    pub fn buf_mut(&mut self) -> &mut [u8] {
        self.buf
    }

    /// Reserves `len` zeroed bytes and returns their offset.
    pub fn reserve(&mut self, len: usize) -> Result<usize, EncodeError> {
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or(EncodeError::BufferTooSmall {
                needed: start.saturating_add(len),
                got: self.buf.len(),
            })?;
        self.buf[start..end].fill(0);
        self.pos = end;
        Ok(start)
    }

    /// Appends `bytes` and returns their offset.
    pub fn append(&mut self, bytes: &[u8]) -> Result<usize, EncodeError> {
        let start = self.reserve(bytes.len())?;
        self.buf[start..start + bytes.len()].copy_from_slice(bytes);
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_zeroes_and_refuses_overflow() {
        let mut buf = [0xaau8; 6];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.reserve(2), Ok(0));
        assert_eq!(w.append(b"xyz"), Ok(2));
        assert_eq!(
            w.reserve(2),
            Err(EncodeError::BufferTooSmall { needed: 7, got: 6 })
        );
        assert_eq!(w.position(), 5);
        assert_eq!(&buf, b"\0\0xyz\xaa");
    }
}
