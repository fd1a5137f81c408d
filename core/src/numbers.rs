//! Python's float arithmetic where Rust's differs: a bucket index computed here must be the very
//! float the Python engine computes, or a snapshot written by one would misplace buckets in the other.

/// `x // y` for floats, as CPython computes it (Objects/floatobject.c: float_floor_div), which is not
/// always `(x / y).floor()`.
pub(crate) fn floor_div(x: f64, y: f64) -> f64 {
    let rem = x % y; // C's fmod, as CPython uses
    let mut div = (x - rem) / y;
    if rem != 0.0 && (y < 0.0) != (rem < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let floored = div.floor();
        if div - floored > 0.5 {
            floored + 1.0
        } else {
            floored
        }
    } else {
        0.0_f64.copysign(x / y)
    }
}

/// Python's `min(a, b)` for floats: `a` unless `b < a` (NaN never wins).
pub(crate) fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::floor_div;

    #[test]
    fn floors_as_python() {
        assert_eq!(floor_div(7.0, 2.0), 3.0);
        assert_eq!(floor_div(-7.0, 2.0), -4.0);
        assert_eq!(floor_div(1.0, 0.1), 9.0); // Python: 1.0 // 0.1 == 9.0, although 1.0 / 0.1 == 10.0
        assert!(floor_div(f64::NEG_INFINITY, 60.0).is_nan());
    }
}
