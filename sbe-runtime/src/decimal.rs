//! Exact base-10 decimals: a mantissa and an exponent, as Binance sends prices and quantities.
//!
//! Rendering never goes through `f64`: `Decimal::new(6976988000000, -8)` prints
//! `69769.88000000`, with exactly `-exponent` fractional digits, the way Binance's own JSON and
//! its C++ sample print them.

use core::fmt;

/// `mantissa × 10^exponent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// The integer significand.
    pub mantissa: i64,
    /// The power of ten it is scaled by.
    pub exponent: i8,
}

impl Decimal {
    /// A decimal from its two wire fields.
    #[inline]
    pub const fn new(mantissa: i64, exponent: i8) -> Self {
        Decimal { mantissa, exponent }
    }

    /// The nearest `f64`: a convenience for analytics, never used for exact output.
    #[inline]
    pub fn to_f64(self) -> f64 {
        let mantissa = self.mantissa as f64;
        if self.exponent < 0 {
            // Dividing by an exactly representable power of ten rounds once, so the common
            // cases (exponent -8, mantissa below 2^53) give the correctly rounded value.
            mantissa / 10f64.powi(-i32::from(self.exponent))
        } else {
            mantissa * 10f64.powi(i32::from(self.exponent))
        }
    }

    /// Appends the text `Display` gives to `out`, without the formatting machinery (no
    /// `Arguments`, no dynamic calls): for writers that render many decimals per message.
    #[inline]
    pub fn push_to(self, out: &mut String) {
        let magnitude = self.mantissa.unsigned_abs();
        let mut digits_buf = [0u8; 20];
        let digits = ascii_digits(magnitude, &mut digits_buf);
        // Writing to a `String` cannot fail.
        let _ = write_decimal(
            out,
            self.mantissa < 0,
            magnitude == 0,
            digits,
            self.exponent,
        );
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // i64::MIN has no positive i64 counterpart: work on the unsigned magnitude.
        let magnitude = self.mantissa.unsigned_abs();
        let mut digits_buf = [0u8; 20];
        let digits = ascii_digits(magnitude, &mut digits_buf);
        write_decimal(f, self.mantissa < 0, magnitude == 0, digits, self.exponent)
    }
}

/// `mantissa × 10^exponent` with a 128-bit mantissa (Binance's `mantissa128`: volumes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decimal128 {
    /// The integer significand.
    pub mantissa: i128,
    /// The power of ten it is scaled by.
    pub exponent: i8,
}

impl Decimal128 {
    /// A decimal from its two wire fields.
    #[inline]
    pub const fn new(mantissa: i128, exponent: i8) -> Self {
        Decimal128 { mantissa, exponent }
    }
}

impl fmt::Display for Decimal128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.mantissa.unsigned_abs();
        let mut digits_buf = [0u8; 40];
        let mut start = digits_buf.len();
        let mut value = magnitude;
        loop {
            start -= 1;
            digits_buf[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let digits = core::str::from_utf8(&digits_buf[start..]).unwrap_or("");
        write_decimal(f, self.mantissa < 0, magnitude == 0, digits, self.exponent)
    }
}

/// Writes the magnitude `digits` scaled by `10^exponent`, with exactly `-exponent` fractional
/// digits when the exponent is negative.
#[inline]
fn write_decimal<W: fmt::Write + ?Sized>(
    f: &mut W,
    negative: bool,
    zero: bool,
    digits: &str,
    exponent: i8,
) -> fmt::Result {
    if negative {
        f.write_str("-")?;
    }
    if exponent >= 0 {
        f.write_str(digits)?;
        if !zero {
            write_zeros(f, exponent.unsigned_abs() as usize)?;
        }
        return Ok(());
    }
    let scale = exponent.unsigned_abs() as usize;
    if digits.len() > scale {
        let (int_part, frac_part) = digits.split_at(digits.len() - scale);
        f.write_str(int_part)?;
        f.write_str(".")?;
        f.write_str(frac_part)
    } else {
        f.write_str("0.")?;
        write_zeros(f, scale - digits.len())?;
        f.write_str(digits)
    }
}

/// Renders `value` in decimal into the tail of `buf` and returns that tail as text.
fn ascii_digits(mut value: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written, so this cannot fail; fall back to "" rather than panic.
    core::str::from_utf8(&buf[start..]).unwrap_or("")
}

fn write_zeros<W: fmt::Write + ?Sized>(f: &mut W, count: usize) -> fmt::Result {
    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let mut left = count;
    while left > 0 {
        let chunk = left.min(ZEROS.len());
        f.write_str(&ZEROS[..chunk])?;
        left -= chunk;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(mantissa: i64, exponent: i8) -> String {
        Decimal::new(mantissa, exponent).to_string()
    }

    #[test]
    fn renders_exactly_minus_exponent_decimals() {
        assert_eq!(text(6_976_988_000_000, -8), "69769.88000000");
        assert_eq!(text(1_301_000, -8), "0.01301000");
        assert_eq!(text(400_000_100, -8), "4.00000100");
        assert_eq!(text(0, -8), "0.00000000");
        assert_eq!(text(5, -1), "0.5");
        assert_eq!(text(-5, -3), "-0.005");
        assert_eq!(text(-123_456, -2), "-1234.56");
    }

    /// `push_to` appends exactly what `Display` writes, for every sign, size and exponent.
    #[test]
    fn push_to_appends_the_display_text() {
        let mantissas = [
            0,
            5,
            -5,
            7,
            1_301_000,
            6_976_988_000_000,
            i64::MAX,
            i64::MIN,
        ];
        for m in mantissas {
            for e in [-128, -19, -8, -3, -1, 0, 1, 3, 100] {
                let mut out = String::from("x");
                Decimal::new(m, e).push_to(&mut out);
                assert_eq!(out, format!("x{}", Decimal::new(m, e)), "{m}e{e}");
            }
        }
    }

    #[test]
    fn non_negative_exponents_append_zeros() {
        assert_eq!(text(12, 0), "12");
        assert_eq!(text(12, 3), "12000");
        assert_eq!(text(0, 3), "0");
        assert_eq!(text(1, 100).len(), 101);
    }

    #[test]
    fn extremes_do_not_overflow() {
        assert_eq!(text(i64::MIN, 0), "-9223372036854775808");
        assert_eq!(text(i64::MIN, -19), "-0.9223372036854775808");
        assert_eq!(text(i64::MAX, -128).len(), 2 + 128);
        assert_eq!(text(1, -128), format!("0.{}1", "0".repeat(127)));
    }

    #[test]
    fn renders_128_bit_mantissas() {
        let text = |m: i128, e: i8| Decimal128::new(m, e).to_string();
        assert_eq!(text(6_976_988_000_000, -8), "69769.88000000");
        assert_eq!(text(-5, -3), "-0.005");
        assert_eq!(text(0, 2), "0");
        assert_eq!(text(12, 2), "1200");
        assert_eq!(
            text(i128::MAX, -8),
            "1701411834604692317316873037158.84105727"
        );
        assert_eq!(
            text(i128::MIN, 0),
            "-170141183460469231731687303715884105728"
        );
    }

    #[test]
    fn f64_convenience_is_correctly_rounded_for_binance_values() {
        assert_eq!(Decimal::new(6_976_988_000_000, -8).to_f64(), 69769.88);
        assert_eq!(Decimal::new(286_360_000, -8).to_f64(), 2.8636);
        assert_eq!(Decimal::new(25, 2).to_f64(), 2500.0);
    }
}
