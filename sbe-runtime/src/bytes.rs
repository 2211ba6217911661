//! Total loads and stores of SBE primitives at byte offsets, in both byte orders.
//!
//! `get_*` returns the value at `off`, or zero if the buffer is too short: decoders call these
//! only after validation proved the bytes are there, so the zero is unreachable in practice,
//! and it keeps every generated accessor panic-free by construction. `put_*` stores the value
//! and returns `false` (writing nothing) if the buffer is too short.
//!
//! Offsets are not aligned (Binance's are not), so everything goes through byte arrays and
//! `from_le_bytes`/`from_be_bytes`, which compile to single unaligned loads on x86-64 and
//! aarch64.

macro_rules! primitive_access {
    ($($ty:ty => $get_le:ident, $get_be:ident, $put_le:ident, $put_be:ident;)*) => {$(
        #[doc = concat!("Reads a little-endian `", stringify!($ty), "` at `off` (zero if out of bounds).")]
        #[inline(always)]
        pub fn $get_le(buf: &[u8], off: usize) -> $ty {
            match crate::array_at(buf, off) {
                Some(bytes) => <$ty>::from_le_bytes(*bytes),
                None => 0 as $ty,
            }
        }

        #[doc = concat!("Reads a big-endian `", stringify!($ty), "` at `off` (zero if out of bounds).")]
        #[inline(always)]
        pub fn $get_be(buf: &[u8], off: usize) -> $ty {
            match crate::array_at(buf, off) {
                Some(bytes) => <$ty>::from_be_bytes(*bytes),
                None => 0 as $ty,
            }
        }

        #[doc = concat!("Writes a little-endian `", stringify!($ty), "` at `off`; `false` if out of bounds.")]
        #[inline(always)]
        pub fn $put_le(buf: &mut [u8], off: usize, value: $ty) -> bool {
            put_bytes(buf, off, &value.to_le_bytes())
        }

        #[doc = concat!("Writes a big-endian `", stringify!($ty), "` at `off`; `false` if out of bounds.")]
        #[inline(always)]
        pub fn $put_be(buf: &mut [u8], off: usize, value: $ty) -> bool {
            put_bytes(buf, off, &value.to_be_bytes())
        }
    )*};
}

primitive_access! {
    u8 => get_u8_le, get_u8_be, put_u8_le, put_u8_be;
    i8 => get_i8_le, get_i8_be, put_i8_le, put_i8_be;
    u16 => get_u16_le, get_u16_be, put_u16_le, put_u16_be;
    i16 => get_i16_le, get_i16_be, put_i16_le, put_i16_be;
    u32 => get_u32_le, get_u32_be, put_u32_le, put_u32_be;
    i32 => get_i32_le, get_i32_be, put_i32_le, put_i32_be;
    u64 => get_u64_le, get_u64_be, put_u64_le, put_u64_be;
    i64 => get_i64_le, get_i64_be, put_i64_le, put_i64_be;
    f32 => get_f32_le, get_f32_be, put_f32_le, put_f32_be;
    f64 => get_f64_le, get_f64_be, put_f64_le, put_f64_be;
}

/// Copies `bytes` into `buf` at `off`; `false` (and nothing written) if they do not fit.
#[inline(always)]
pub fn put_bytes(buf: &mut [u8], off: usize, bytes: &[u8]) -> bool {
    let Some(end) = off.checked_add(bytes.len()) else {
        return false;
    };
    match buf.get_mut(off..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// The mutable sub-slice of `len` bytes at `off`, or an empty slice if out of bounds (writes
/// into it are then no-ops through the `put_*` helpers).
#[inline(always)]
pub fn slice_mut(buf: &mut [u8], off: usize, len: usize) -> &mut [u8] {
    let end = off.saturating_add(len);
    if end <= buf.len() {
        &mut buf[off..end]
    } else {
        &mut []
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_in_both_byte_orders() {
        let buf = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];
        assert_eq!(get_u16_le(&buf, 1), 0x0302);
        assert_eq!(get_u16_be(&buf, 1), 0x0203);
        assert_eq!(get_u64_le(&buf, 1), 0x0908_0706_0504_0302);
        assert_eq!(get_i8_le(&[0xf8], 0), -8);
        assert_eq!(get_u64_le(&buf, 2), 0, "out of bounds reads zero");
        assert_eq!(get_u32_be(&buf, usize::MAX), 0);
    }

    #[test]
    fn stores_round_trip_and_refuse_out_of_bounds() {
        let mut buf = [0u8; 8];
        assert!(put_f32_le(&mut buf, 0, 35.9));
        assert_eq!(get_f32_le(&buf, 0), 35.9);
        assert!(put_i16_be(&mut buf, 4, -2));
        assert_eq!(buf[4..6], [0xff, 0xfe]);
        assert!(!put_u64_le(&mut buf, 1, 7));
        assert!(!put_u8_le(&mut buf, usize::MAX, 7));
        assert_eq!(slice_mut(&mut buf, 6, 4).len(), 0);
        assert_eq!(slice_mut(&mut buf, 6, 2).len(), 2);
    }
}
