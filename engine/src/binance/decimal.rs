//! Binance's decimals. REST sends prices and quantities as strings (`"69769.88000000"`); the
//! engine keeps them as `i64` mantissas at the SBE frames' exponents. [`parse_decimal`]
//! converts one exactly, refusing anything that would round, and [`mantissas`] converts a side
//! of a depth snapshot (text from JSON, or SBE mantissas at the answer's exponents).

use super::rest::Levels;

/// Parses a decimal such as `"12345.67000000"` or `"-0.5"` exactly into its mantissa at
/// `exponent` (`"12345.67000000"` at -8 is 1234567000000). `None` when the text is not
/// `-?[0-9]+(\.[0-9]+)?`, when it has a non-zero digit finer than `10^exponent`, or when the
/// mantissa does not fit an `i64`. Trailing and leading zeros are free.
pub fn parse_decimal(text: &str, exponent: i8) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (unsigned, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let has_point = unsigned.len() != int_part.len();
    if int_part.is_empty()
        || (has_point && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return None;
    }
    // value = digits * 10^-frac_len, so mantissa = digits * 10^(-frac_len - exponent).
    let digits = int_part.bytes().chain(frac_part.bytes());
    let len = int_part.len() + frac_part.len();
    let shift = -i64::try_from(frac_part.len()).ok()? - i64::from(exponent);
    // A negative shift drops that many trailing digits, which must all be zeros (digits
    // beyond the text's length are leading zeros: nothing to check there).
    let dropped = usize::try_from(-shift).unwrap_or(0);
    let kept = len.saturating_sub(dropped);
    // The magnitude of i64::MIN.
    let limit = u128::from(i64::MIN.unsigned_abs());
    let mut magnitude: u128 = 0;
    for (i, digit) in digits.enumerate() {
        let digit = u128::from(digit - b'0');
        if i < kept {
            magnitude = magnitude * 10 + digit;
            if magnitude > limit {
                return None;
            }
        } else if digit != 0 {
            return None;
        }
    }
    if magnitude != 0 {
        for _ in 0..shift.max(0) {
            magnitude *= 10;
            if magnitude > limit {
                return None;
            }
        }
    }
    if negative {
        // 0 ..= 2^63 fits i128; its negation fits i64.
        i64::try_from(-i128::try_from(magnitude).ok()?).ok()
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Converts a depth snapshot's side, as JSON text or SBE mantissas, into mantissas at the given
/// exponents (the SBE frames': -8 for the simulator), exactly, or says which level does not
/// convert. Mantissas already at those exponents are copied as they are.
pub fn mantissas(
    levels: &Levels,
    price_exponent: i8,
    qty_exponent: i8,
) -> Result<Vec<(i64, i64)>, String> {
    match levels {
        Levels::Text(levels) => text_mantissas(levels, price_exponent, qty_exponent),
        Levels::Exact {
            price_exponent: from_pe,
            qty_exponent: from_qe,
            levels,
        } => {
            if (*from_pe, *from_qe) == (price_exponent, qty_exponent) {
                return Ok(levels.clone());
            }
            levels
                .iter()
                .enumerate()
                .map(|(i, &(price, qty))| {
                    let exact = |m: i64, from: i8, to: i8, what: &str| {
                        rescale(m, from, to).ok_or_else(|| {
                            format!(
                                "level {i}: {what} {m}e{from} is not exact at exponent {to} \
                                 within i64"
                            )
                        })
                    };
                    Ok((
                        exact(price, *from_pe, price_exponent, "price")?,
                        exact(qty, *from_qe, qty_exponent, "quantity")?,
                    ))
                })
                .collect()
        }
    }
}

/// `mantissa x 10^from` as a mantissa at `10^to`, if exact and within i64.
pub fn rescale(mantissa: i64, from: i8, to: i8) -> Option<i64> {
    let shift = i32::from(from) - i32::from(to);
    let scale = 10i64.checked_pow(shift.unsigned_abs())?;
    if shift >= 0 {
        mantissa.checked_mul(scale)
    } else {
        (mantissa % scale == 0).then(|| mantissa / scale)
    }
}

/// [`mantissas`] of decimal strings.
fn text_mantissas(
    levels: &[(String, String)],
    price_exponent: i8,
    qty_exponent: i8,
) -> Result<Vec<(i64, i64)>, String> {
    levels
        .iter()
        .enumerate()
        .map(|(i, (price, qty))| {
            let exact = |text: &str, exponent: i8, what: &str| {
                parse_decimal(text, exponent).ok_or_else(|| {
                    format!(
                        "level {i}: {what} {text:?} is not a decimal exact at exponent \
                         {exponent} within i64"
                    )
                })
            };
            Ok((
                exact(price, price_exponent, "price")?,
                exact(qty, qty_exponent, "quantity")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sbe_runtime::Decimal;

    #[test]
    fn decimals_parse_exactly_at_the_exponent() {
        let cases: [(&str, i8, Option<i64>); 27] = [
            ("12345.67000000", -8, Some(1_234_567_000_000)),
            ("12345.67", -8, Some(1_234_567_000_000)),
            ("12345.67", -2, Some(1_234_567)),
            ("12345.670000000000000000000", -2, Some(1_234_567)),
            ("12345.671", -2, None),
            ("0.00000001", -8, Some(1)),
            ("0.000000001", -8, None),
            ("0.000000000", -8, Some(0)),
            ("-0.5", -1, Some(-5)),
            ("-0", -8, Some(0)),
            ("007.50", -2, Some(750)),
            ("1200", 2, Some(12)),
            ("1234", 2, None),
            ("12", 3, None),
            ("000", 5, Some(0)),
            ("92233720368.54775807", -8, Some(i64::MAX)),
            ("92233720368.54775808", -8, None),
            ("-92233720368.54775808", -8, Some(i64::MIN)),
            ("-92233720368.54775809", -8, None),
            ("99999999999999999999999999999999", 0, None),
            ("", -8, None),
            ("-", -8, None),
            ("1.", -8, None),
            (".5", -8, None),
            ("+1", -8, None),
            ("1e5", -8, None),
            (" 1", -8, None),
        ];
        for (text, exponent, want) in cases {
            assert_eq!(
                parse_decimal(text, exponent),
                want,
                "{text:?} at {exponent}"
            );
        }
        for bad in ["1 ", "1,5", "--1", "-.5", "1.2.3", "0x10", "１", "1.-2"] {
            assert_eq!(parse_decimal(bad, -8), None, "{bad:?}");
        }
        // Extreme exponents: many zeros, and no shift overflow.
        let zeros = "0".repeat(127);
        assert_eq!(parse_decimal(&format!("1{zeros}"), 127), Some(1));
        assert_eq!(parse_decimal(&format!("0.{zeros}1"), -128), Some(1));
        assert_eq!(parse_decimal("1", -128), None);
        assert_eq!(parse_decimal("0", -128), Some(0));
        assert_eq!(parse_decimal("1", 127), None);
    }

    fn pow10(k: u32) -> Option<i128> {
        10i128.checked_pow(k)
    }

    proptest! {
        #[test]
        fn decimals_round_trip_through_their_display(mantissa: i64, exponent: i8) {
            let text = Decimal::new(mantissa, exponent).to_string();
            prop_assert_eq!(parse_decimal(&text, exponent), Some(mantissa), "{}", text);
        }

        #[test]
        fn finer_and_coarser_exponents_scale_or_refuse(
            mantissa: i64,
            exponent in -20i8..=20,
            k in 0u32..=20,
        ) {
            let text = Decimal::new(mantissa, exponent).to_string();
            let shift = i8::try_from(k).expect("small");
            let scale = pow10(k).expect("10^20 fits i128");
            let finer = i128::from(mantissa)
                .checked_mul(scale)
                .and_then(|m| i64::try_from(m).ok());
            prop_assert_eq!(parse_decimal(&text, exponent - shift), finer, "{}", text);
            let coarser = (i128::from(mantissa) % scale == 0)
                .then(|| i64::try_from(i128::from(mantissa) / scale).ok())
                .flatten();
            prop_assert_eq!(parse_decimal(&text, exponent + shift), coarser, "{}", text);
        }
    }

    #[test]
    fn levels_convert_or_name_the_bad_one() {
        let levels = Levels::Text(vec![
            ("69769.88000000".to_string(), "0.00100000".to_string()),
            ("69769.87".to_string(), "2".to_string()),
        ]);
        assert_eq!(
            mantissas(&levels, -8, -8),
            Ok(vec![
                (6_976_988_000_000, 100_000),
                (6_976_987_000_000, 200_000_000)
            ])
        );
        assert_eq!(
            mantissas(&levels, -2, 0).map_err(|e| e.contains("level 0: quantity")),
            Err(true)
        );
        let bad = Levels::Text(vec![
            ("1".to_string(), "1".to_string()),
            ("x".to_string(), "1".to_string()),
        ]);
        let error = mantissas(&bad, -8, -8).expect_err("not a decimal");
        assert!(error.contains("level 1: price \"x\""), "{error}");
    }

    #[test]
    fn sbe_levels_rescale_exactly_or_name_the_bad_one() {
        let exact = |price_exponent, qty_exponent, levels| Levels::Exact {
            price_exponent,
            qty_exponent,
            levels,
        };
        let levels = exact(-2, 0, vec![(6_976_988, 1), (6_976_987, 2)]);
        assert_eq!(
            mantissas(&levels, -8, -8),
            Ok(vec![
                (6_976_988_000_000, 100_000_000),
                (6_976_987_000_000, 200_000_000)
            ])
        );
        // At their own exponents they are taken as they are.
        assert_eq!(
            mantissas(&levels, -2, 0),
            Ok(vec![(6_976_988, 1), (6_976_987, 2)])
        );
        // Coarser is fine while nothing is lost.
        let fine = exact(-8, -8, vec![(6_976_988_000_000, 100_000_000), (1, 1)]);
        let error = mantissas(&fine, -2, 0).expect_err("would round");
        assert!(error.contains("level 1: price 1e-8"), "{error}");
        assert_eq!(rescale(i64::MAX, 0, -1), None);
        assert_eq!(rescale(-1_500, -3, -1), Some(-15));
        assert_eq!(rescale(7, 0, -30), None);
    }
}
