//! PostgreSQL's binary forms of the values the writer copies, pure: an exact decimal
//! (`mantissa x 10^exponent`, as Binance sends prices and quantities) as `NUMERIC`, and Unix
//! microseconds as `TIMESTAMPTZ`. Binary `COPY` carries them without any text round trip, so a
//! price lands exactly as the exchange sent it.
//!
//! `NUMERIC`'s binary form (PostgreSQL's `numeric_send`): `ndigits` (i16), `weight` (i16, the
//! power of 10000 of the first digit), `sign` (u16: 0 positive, 0x4000 negative), `dscale` (u16,
//! decimal digits after the point), then `ndigits` base-10000 digits (i16), most significant
//! first, without leading or trailing zero digits.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{IsNull, ToSql, Type, accepts, to_sql_checked};

/// Microseconds from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// An exact decimal `mantissa x 10^exponent`, written as `NUMERIC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numeric {
    /// The digits.
    pub mantissa: i64,
    /// The power of ten.
    pub exponent: i8,
}

impl Numeric {
    /// `mantissa x 10^exponent`.
    pub fn new(mantissa: i64, exponent: i8) -> Numeric {
        Numeric { mantissa, exponent }
    }

    /// The value as text, exactly (`69769.88`).
    pub fn text(&self) -> String {
        sbe_runtime::Decimal::new(self.mantissa, self.exponent).to_string()
    }

    /// The value as a float (spreads, not storage).
    pub fn to_f64(self) -> f64 {
        self.mantissa as f64 * 10f64.powi(i32::from(self.exponent))
    }

    /// Appends the binary `NUMERIC` form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = usize::from((-self.exponent.max(-127)).max(0).unsigned_abs());
        // The integer and fraction digits around the decimal point.
        let (int, frac) = if self.exponent >= 0 {
            let zeros = "0".repeat(usize::from(self.exponent.unsigned_abs()));
            (format!("{digits}{zeros}"), String::new())
        } else if digits.len() > scale {
            let (i, f) = digits.split_at(digits.len() - scale);
            (i.to_string(), f.to_string())
        } else {
            (
                String::new(),
                format!("{}{digits}", "0".repeat(scale - digits.len())),
            )
        };
        let int_pad = (4 - int.len() % 4) % 4;
        let frac_pad = (4 - frac.len() % 4) % 4;
        let int = format!("{}{int}", "0".repeat(int_pad));
        let frac = format!("{frac}{}", "0".repeat(frac_pad));
        let group = |s: &str| -> Vec<i16> {
            s.as_bytes()
                .chunks(4)
                .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
                .collect()
        };
        let mut groups = group(&int);
        let int_groups = groups.len();
        groups.extend(group(&frac));
        let mut weight = i16::try_from(int_groups).unwrap_or(i16::MAX) - 1;
        let leading = groups.iter().take_while(|g| **g == 0).count();
        groups.drain(..leading);
        weight -= i16::try_from(leading).unwrap_or(0);
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let negative = self.mantissa < 0 && !groups.is_empty();
        out.put_i16(i16::try_from(groups.len()).unwrap_or(0));
        out.put_i16(weight);
        out.put_u16(if negative { 0x4000 } else { 0 });
        out.put_u16(u16::try_from(scale).unwrap_or(0));
        for g in groups {
            out.put_i16(g);
        }
    }
}

impl ToSql for Numeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.encode(out);
        Ok(IsNull::No)
    }

    accepts!(NUMERIC);
    to_sql_checked!();
}

/// Unix microseconds, written as `TIMESTAMPTZ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixMicros(pub i64);

impl UnixMicros {
    /// The time as ISO-8601 text (`2024-11-14T17:30:00.123456Z`), which PostgreSQL reads.
    pub fn text(&self) -> String {
        crate::sink::redis::state::iso8601_us(self.0)
    }
}

impl ToSql for UnixMicros {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i64(self.0.saturating_sub(PG_EPOCH_OFFSET_US));
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (ndigits, weight, sign, dscale, digits) of `m x 10^e`.
    fn parts(m: i64, e: i8) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut out = BytesMut::new();
        Numeric::new(m, e).encode(&mut out);
        let w = |i: usize| i16::from_be_bytes([out[i], out[i + 1]]);
        let n = w(0);
        let digits = (0..usize::try_from(n).expect("n"))
            .map(|k| w(8 + 2 * k))
            .collect();
        (
            n,
            w(2),
            u16::from_be_bytes([out[4], out[5]]),
            u16::from_be_bytes([out[6], out[7]]),
            digits,
        )
    }

    #[test]
    fn numerics_as_postgres_sends_them() {
        // 69769.88
        assert_eq!(parts(6_976_988, -2), (3, 1, 0, 2, vec![6, 9769, 8800]));
        // 0.00100000 at exponent -8
        assert_eq!(parts(100_000, -8), (1, -1, 0, 8, vec![10]));
        // -12345.6789
        assert_eq!(
            parts(-123_456_789, -4),
            (3, 1, 0x4000, 4, vec![1, 2345, 6789])
        );
        // 0 at scale 8: no digits, scale kept
        assert_eq!(parts(0, -8), (0, 0, 0, 8, vec![]));
        // 5 x 10^4 = 50000
        assert_eq!(parts(5, 4), (1, 1, 0, 0, vec![5]));
        // 0.00000001
        assert_eq!(parts(1, -8), (1, -2, 0, 8, vec![1]));
        // i64::MIN does not overflow
        assert_eq!(parts(i64::MIN, 0).2, 0x4000);
    }

    #[test]
    fn text_and_float() {
        assert_eq!(Numeric::new(6_976_988, -2).text(), "69769.88");
        assert!((Numeric::new(6_976_988, -2).to_f64() - 69_769.88).abs() < 1e-9);
        assert_eq!(UnixMicros(0).text(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn timestamps_count_from_2000() {
        let mut out = BytesMut::new();
        UnixMicros(PG_EPOCH_OFFSET_US + 5)
            .to_sql(&Type::TIMESTAMPTZ, &mut out)
            .expect("encodes");
        assert_eq!(&out[..], &5i64.to_be_bytes());
    }
}
