//! Kubernetes resource quantities (`250m`, `1.5Gi`, `1e3`), parsed exactly,
//! for the core (downward API) and backends (sizing tasks, summing capacity).
//! Hand-written: k8s-openapi's `Quantity` is a string without arithmetic.

/// A non-negative resource quantity as an exact fraction `num / den`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    /// Numerator.
    pub num: u128,
    /// Denominator (never zero for a parsed quantity).
    pub den: u128,
}

impl Quantity {
    /// Zero.
    pub const ZERO: Self = Self { num: 0, den: 1 };
    /// One.
    pub const ONE: Self = Self { num: 1, den: 1 };

    /// Parses Kubernetes' quantity syntax: a decimal number with a binary
    /// (`Ki`..`Ei`) or decimal (`n`..`E`) suffix or an exponent (`e3`).
    /// `None` for negative numbers, bad syntax and overflow.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.strip_prefix('+').unwrap_or(s);
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut num: u128 = 0;
        for c in int.chars().chain(frac.chars()) {
            num = num
                .checked_mul(10)?
                .checked_add(u128::from(c.to_digit(10)?))?;
        }
        let mut den = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        let (mul, div) = match suffix {
            "" => (1, 1),
            "n" => (1, 10u128.pow(9)),
            "u" => (1, 10u128.pow(6)),
            "m" => (1, 1000),
            "k" => (1000, 1),
            "M" => (10u128.pow(6), 1),
            "G" => (10u128.pow(9), 1),
            "T" => (10u128.pow(12), 1),
            "P" => (10u128.pow(15), 1),
            "E" => (10u128.pow(18), 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            e if e.len() > 1 && (e.starts_with('e') || e.starts_with('E')) => {
                let exp: i32 = e[1..].parse().ok()?;
                let pow = 10u128.checked_pow(exp.unsigned_abs())?;
                if exp >= 0 { (pow, 1) } else { (1, pow) }
            }
            _ => return None,
        };
        num = num.checked_mul(mul)?;
        den = den.checked_mul(div)?;
        Some(Self { num, den })
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.num == 0
    }

    /// `ceil(self * scale)`: `Value()` for scale 1, `MilliValue()` for 1000.
    pub fn scaled_ceil(self, scale: u128) -> Option<u128> {
        ceil_div(self.num.checked_mul(scale)?, self.den)
    }
}

/// `ceil(a / b)`; `None` when `b` is zero.
pub fn ceil_div(a: u128, b: u128) -> Option<u128> {
    (b != 0).then(|| a / b + u128::from(!a.is_multiple_of(b)))
}

impl Quantity {
    /// The value as a float in base units (cores, bytes, count).
    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            self.num as f64 / self.den as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let q = |s| {
            Quantity::parse(s).map(|q| (q.scaled_ceil(1000).unwrap(), q.scaled_ceil(1).unwrap()))
        };
        assert_eq!(q("250m"), Some((250, 1)));
        assert_eq!(q("1.5Gi"), Some((1_610_612_736_000, 1_610_612_736)));
        assert_eq!(q("1e3"), Some((1_000_000, 1000)));
        assert_eq!(q("1E"), Some((10u128.pow(21), 10u128.pow(18))));
        assert_eq!(q("12e-1"), Some((1200, 2)));
        assert_eq!(q(".5"), Some((500, 1)));
        assert_eq!(q("1n"), Some((1, 1)));
        assert_eq!(q("0"), Some((0, 0)));
        for bad in ["", "-1", "1x", "1.2.3", "Mi", "1e", "1e99999"] {
            assert_eq!(Quantity::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Quantity::parse("500m").unwrap().as_f64(), 0.5);
    }
}
