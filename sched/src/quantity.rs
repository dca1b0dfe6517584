//! Kubernetes resource quantities (`100m`, `0.5`, `1Gi`, `500M`, `1e3`),
//! parsed exactly as `k8s.io/apimachinery/pkg/api/resource` reads them:
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! signedNumber    ::= [+-] number
//! number          ::= digits | digits "." digits | digits "." | "." digits
//! suffix          ::= binarySI | decimalExponent | decimalSI
//! binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI       ::= m | "" | k | M | G | T | P | E
//! decimalExponent ::= ("e" | "E") signedInteger
//! ```
//!
//! Values are kept exact (mantissa × 10^a × 2^b) and only rounded when read
//! at a scale, upwards as Kubernetes' `Value()` and `MilliValue()` do.
//!
//! ```
//! use skiff_sched::quantity::Quantity;
//! assert_eq!(Quantity::parse("100m").unwrap().milli_value().unwrap(), 100);
//! assert_eq!(Quantity::parse("1Gi").unwrap().value().unwrap(), 1 << 30);
//! assert_eq!(Quantity::parse("0.5").unwrap().milli_value().unwrap(), 500);
//! assert!(Quantity::parse("1.2.3").is_err());
//! ```

use std::fmt;

/// A quantity that does not parse, or does not fit in an `i64` at the
/// requested scale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("invalid quantity {0:?}: {1}")]
    Invalid(String, &'static str),
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// An exact Kubernetes quantity: `mantissa × 10^exp10 × 2^exp2`, negated if
/// `negative`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// More digits than this cannot be held exactly in the mantissa.
const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Parses a quantity string; whitespace is not allowed, as in Kubernetes.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let invalid = |why| QuantityError::Invalid(text.to_owned(), why);
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(invalid("empty"));
        }
        let mut pos = 0;
        let negative = match bytes[0] {
            b'-' => {
                pos = 1;
                true
            }
            b'+' => {
                pos = 1;
                false
            }
            _ => false,
        };

        // Digits with at most one decimal point.
        let mut mantissa: u128 = 0;
        let mut digits = 0usize;
        let mut exp10: i32 = 0;
        let mut seen_digit = false;
        let mut seen_point = false;
        while pos < bytes.len() {
            match bytes[pos] {
                b'0'..=b'9' => {
                    seen_digit = true;
                    let d = u128::from(bytes[pos] - b'0');
                    if mantissa == 0 && d == 0 {
                        // Leading zeros carry no precision.
                    } else {
                        digits += 1;
                        if digits > MAX_DIGITS {
                            return Err(invalid("too many digits"));
                        }
                        mantissa = mantissa * 10 + d;
                    }
                    if seen_point {
                        exp10 -= 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'.' => return Err(invalid("more than one decimal point")),
                _ => break,
            }
            pos += 1;
        }
        if !seen_digit {
            return Err(invalid("no digits"));
        }

        let suffix = &text[pos..];
        let mut exp2 = 0;
        match suffix {
            "" => {}
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            _ if suffix.len() > 1 && (suffix.starts_with('e') || suffix.starts_with('E')) => {
                let exp = &suffix[1..];
                let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("malformed exponent"));
                }
                let e: i32 = exp.parse().map_err(|_| invalid("exponent out of range"))?;
                if !(-1000..=1000).contains(&e) {
                    return Err(invalid("exponent out of range"));
                }
                exp10 += e;
            }
            _ => return Err(invalid("unknown suffix")),
        }
        Ok(Quantity {
            text: text.to_owned(),
            negative,
            mantissa,
            exp10,
            exp2,
        })
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative && self.mantissa != 0
    }

    /// The value in whole units, rounded up (Kubernetes' `Value()`).
    pub fn value(&self) -> Result<i64, QuantityError> {
        self.scaled(0)
    }

    /// The value in thousandths, rounded up (Kubernetes' `MilliValue()`).
    pub fn milli_value(&self) -> Result<i64, QuantityError> {
        self.scaled(-3)
    }

    /// The value in units of 10^scale, rounded towards positive infinity.
    fn scaled(&self, scale: i32) -> Result<i64, QuantityError> {
        let too_large = || QuantityError::TooLarge(self.text.clone());
        if self.mantissa == 0 {
            return Ok(0);
        }
        let base = self
            .mantissa
            .checked_mul(1u128 << self.exp2)
            .ok_or_else(too_large)?;
        let e = self.exp10 - scale;
        let magnitude_up; // |value| rounded up
        let magnitude_down; // |value| rounded down
        if e >= 0 {
            let factor = 10u128.checked_pow(e as u32).ok_or_else(too_large)?;
            magnitude_up = base.checked_mul(factor).ok_or_else(too_large)?;
            magnitude_down = magnitude_up;
        } else {
            match 10u128.checked_pow(e.unsigned_abs()) {
                Some(div) => {
                    magnitude_down = base / div;
                    magnitude_up = magnitude_down + u128::from(base % div != 0);
                }
                // Smaller than one unit at this scale, but not zero.
                None => {
                    magnitude_down = 0;
                    magnitude_up = 1;
                }
            }
        }
        if self.negative {
            // Rounding a negative value up moves it towards zero.
            let m = i64::try_from(magnitude_down).map_err(|_| too_large())?;
            Ok(-m)
        } else {
            i64::try_from(magnitude_up).map_err(|_| too_large())
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i64 {
        Quantity::parse(s).unwrap().milli_value().unwrap()
    }

    fn value(s: &str) -> i64 {
        Quantity::parse(s).unwrap().value().unwrap()
    }

    #[test]
    fn decimal_forms() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("1"), 1000);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("2."), 2000);
        assert_eq!(milli("+1.25"), 1250);
        assert_eq!(milli("0"), 0);
        assert_eq!(milli("000250m"), 250);
        assert_eq!(value("500M"), 500_000_000);
        assert_eq!(value("1k"), 1000);
        assert_eq!(value("3G"), 3_000_000_000);
        assert_eq!(value("1T"), 1_000_000_000_000);
        assert_eq!(value("1P"), 1_000_000_000_000_000);
        assert_eq!(value("1E"), 1_000_000_000_000_000_000);
    }

    #[test]
    fn binary_forms() {
        assert_eq!(value("2Ki"), 2048);
        assert_eq!(value("1Mi"), 1 << 20);
        assert_eq!(value("1Gi"), 1 << 30);
        assert_eq!(value("1.5Gi"), 3 << 29);
        assert_eq!(value("1Ti"), 1 << 40);
        assert_eq!(value("1Pi"), 1 << 50);
        assert_eq!(value("1Ei"), 1 << 60);
    }

    #[test]
    fn exponents() {
        assert_eq!(value("1e3"), 1000);
        assert_eq!(value("1E3"), 1000);
        assert_eq!(value("12e+2"), 1200);
        assert_eq!(milli("1e-3"), 1);
        assert_eq!(value("5e-1"), 1, "0.5 rounds up to 1");
    }

    #[test]
    fn rounding_is_upwards() {
        assert_eq!(milli("0.0001"), 1);
        assert_eq!(milli("1e-40"), 1);
        assert_eq!(value("100m"), 1);
        assert_eq!(value("-100m"), 0, "negative values round towards zero");
        assert_eq!(value("-1.5"), -1);
        assert!(Quantity::parse("-1").unwrap().is_negative());
        assert!(!Quantity::parse("-0").unwrap().is_negative());
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in [
            "",
            "m",
            "-",
            ".",
            "1.2.3",
            "1x",
            "1 ",
            " 1",
            "1KiB",
            "1e",
            "1e+",
            "1ee3",
            "1e3.5",
            "1mi",
            "Gi",
            "1..",
            "0x10",
            "1e99999",
            "1234567890123456789012345678901234567",
        ] {
            assert!(
                matches!(Quantity::parse(bad), Err(QuantityError::Invalid(..))),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn too_large_is_an_error() {
        let q = Quantity::parse("1e30").unwrap();
        assert_eq!(q.value(), Err(QuantityError::TooLarge("1e30".into())));
        assert!(Quantity::parse("16Ei").unwrap().value().is_err());
        assert!(Quantity::parse("1e16").unwrap().milli_value().is_err());
        assert_eq!(
            QuantityError::Invalid("1x".into(), "unknown suffix").to_string(),
            "invalid quantity \"1x\": unknown suffix"
        );
    }
}
