//! The small numeric pieces the extractor is built from: exponential decay (the O(1)
//! stand-in for a sliding window), a ring of recent values with its median and MAD, safe
//! ratios, and the conversions from exact amounts and timestamps to f64 features.
//! Every function returns a finite value for every finite input, and the extractor only
//! feeds it finite inputs.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// A ratio whose denominator is zero but numerator is not (a withdrawal with nothing
/// wagered, a win in a round without a bet) is reported as this cap, and every ratio is
/// clamped to it.
pub const RATIO_MAX: f64 = 100.0;

/// Nanoseconds per second.
const NANOS_PER_SECOND: f64 = 1e9;
const SECONDS_PER_DAY: i64 = 86_400;

/// Nanoseconds since the epoch, saturated at the ends of the i64 range (the store's range is
/// 1677..2262; a timestamp outside it saturates instead of failing).
pub fn instant_nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap_or(if at.timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// `later - earlier` in seconds, computed without overflow (negative when out of order).
/// The difference is converted from i64 when it fits (always, within the store's range):
/// the same nearest double as from i128, without the slow software i128 conversion.
pub fn seconds_between(later_nanos: i64, earlier_nanos: i64) -> f64 {
    match later_nanos.checked_sub(earlier_nanos) {
        Some(difference) => difference as f64 / NANOS_PER_SECOND,
        None => (later_nanos as i128 - earlier_nanos as i128) as f64 / NANOS_PER_SECOND,
    }
}

/// The weight that a value `elapsed_seconds` old keeps under a time constant: `e^(-t/τ)`.
/// Out-of-order input (negative elapsed time) decays nothing.
pub fn decay(elapsed_seconds: f64, time_constant_seconds: f64) -> f64 {
    (-(elapsed_seconds.max(0.0)) / time_constant_seconds).exp()
}

/// `sign(x) · ln(1 + |x|)`: a log scale that keeps the sign and is 0 at 0.
pub fn signed_log1p(value: f64) -> f64 {
    value.signum() * value.abs().ln_1p()
}

/// `numerator / denominator` for non-negative sums, clamped to `[0, RATIO_MAX]`; 0/0 is 0.
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        (numerator / denominator).clamp(0.0, RATIO_MAX)
    } else if numerator > 0.0 {
        RATIO_MAX
    } else {
        0.0
    }
}

const POWERS_OF_TEN: [f64; 29] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28,
];

/// The amount as f64 (for features only; money itself stays `Decimal`). Nearest double of
/// the mantissa divided by a power of ten: deterministic and fast.
pub fn decimal_to_f64(amount: Decimal) -> f64 {
    let scale = (amount.scale() as usize).min(POWERS_OF_TEN.len() - 1);
    amount.mantissa() as f64 / POWERS_OF_TEN[scale]
}

/// Hour of day and day of week (UTC) as points on the unit circle, so 23:59 is next to
/// 00:00 and Sunday next to Monday: `[hour_sin, hour_cos, weekday_sin, weekday_cos]`.
pub fn cyclic_time(at_nanos: i64) -> [f64; 4] {
    let seconds = at_nanos.div_euclid(1_000_000_000);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY) as f64;
    // 1970-01-01 was a Thursday: with Monday = 0 it is day 3.
    let weekday = (seconds.div_euclid(SECONDS_PER_DAY) + 3).rem_euclid(7) as f64;
    let day_angle = std::f64::consts::TAU * second_of_day / SECONDS_PER_DAY as f64;
    let week_angle = std::f64::consts::TAU * weekday / 7.0;
    [day_angle.sin(), day_angle.cos(), week_angle.sin(), week_angle.cos()]
}

/// [`cyclic_time`] of the latest second asked for. Transactions arrive many to a second and
/// the four sines and cosines depend on the second alone, so most calls reuse them.
#[derive(Clone, Copy, Debug, Default)]
pub struct CyclicTimeOfSecond {
    second: Option<i64>,
    values: [f64; 4],
}

impl CyclicTimeOfSecond {
    /// `cyclic_time(at_nanos)`, computed once per distinct second in a row.
    pub fn at(&mut self, at_nanos: i64) -> [f64; 4] {
        let second = at_nanos.div_euclid(1_000_000_000);
        if self.second != Some(second) {
            self.values = cyclic_time(at_nanos);
            self.second = Some(second);
        }
        self.values
    }
}

/// Values a ring holds: the account's last 16 amounts.
pub const RING_LENGTH: usize = 16;

/// The last `RING_LENGTH` values, kept sorted (f32: they are log amounts, 7 digits are
/// plenty), each with the serial number of its arrival, so the oldest can be found and
/// replaced. Keeping them sorted makes a push O(16) moves and the median and MAD O(16),
/// with no sort per transaction. 81 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ring {
    sorted: [f32; RING_LENGTH],
    serials: [u8; RING_LENGTH],
    len: u8,
    next_serial: u8,
}

impl Ring {
    pub fn push(&mut self, value: f64) {
        let value = value as f32;
        let mut len = self.len as usize;
        if len == RING_LENGTH {
            // Serials are unique within the window (16 < 256), so the oldest is found.
            let oldest = self.next_serial.wrapping_sub(RING_LENGTH as u8);
            let position = self.serials.iter().position(|&serial| serial == oldest).unwrap_or(0);
            self.sorted.copy_within(position + 1.., position);
            self.serials.copy_within(position + 1.., position);
            len -= 1;
        }
        let position = self.sorted[..len].partition_point(|held| held.total_cmp(&value).is_le());
        self.sorted.copy_within(position..len, position + 1);
        self.serials.copy_within(position..len, position + 1);
        self.sorted[position] = value;
        self.serials[position] = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        self.len = (len + 1) as u8;
    }

    /// Median and median absolute deviation of the held values (exact over the ring);
    /// `None` when empty.
    pub fn median_and_mad(&self) -> Option<(f64, f64)> {
        let n = self.len as usize;
        if n == 0 {
            return None;
        }
        let sorted = &self.sorted[..n];
        let median = middle(n, |index| sorted[index] as f64);
        // Deviations in increasing order: merge outwards from the median, the values at or
        // below it (walking down) with those above it (walking up).
        let mut deviations = [0f64; RING_LENGTH];
        let above = sorted.partition_point(|&held| (held as f64) <= median);
        let (mut down, mut up) = (above, above);
        for deviation in deviations.iter_mut().take(n / 2 + 1) {
            let below = (down > 0).then(|| median - sorted[down - 1] as f64);
            let over = (up < n).then(|| sorted[up] as f64 - median);
            *deviation = match (below, over) {
                (Some(b), Some(o)) if b <= o => {
                    down -= 1;
                    b
                }
                (_, Some(o)) => {
                    up += 1;
                    o
                }
                (Some(b), None) => {
                    down -= 1;
                    b
                }
                (None, None) => break,
            };
        }
        Some((median, middle(n, |index| deviations[index])))
    }
}

/// The median of `n` sorted values given by `at`.
fn middle(n: usize, at: impl Fn(usize) -> f64) -> f64 {
    if n % 2 == 1 {
        at(n / 2)
    } else {
        (at(n / 2 - 1) + at(n / 2)) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_median_and_mad_over_the_last_values() {
        let mut ring = Ring::default();
        assert!(ring.median_and_mad().is_none());
        for value in [1.0, 2.0, 3.0, 4.0, 100.0] {
            ring.push(value);
        }
        // median 3, deviations 2,1,0,1,97 → MAD 1
        assert_eq!(ring.median_and_mad(), Some((3.0, 1.0)));
        for _ in 0..RING_LENGTH {
            ring.push(5.0);
        }
        assert_eq!(ring.median_and_mad(), Some((5.0, 0.0)));
    }

    #[test]
    fn ring_matches_a_sort_of_the_last_values() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut ring = Ring::default();
        let mut history: Vec<f32> = Vec::new();
        for step in 0..2000 {
            let value = if step % 7 == 0 { 4.0 } else { rng.gen_range(0.0..20.0f32).round() / 2.0 };
            ring.push(value as f64);
            history.push(value);
            let mut last: Vec<f64> = history.iter().rev().take(RING_LENGTH).map(|&v| v as f64).collect();
            last.sort_by(f64::total_cmp);
            let median = middle(last.len(), |i| last[i]);
            let mut deviations: Vec<f64> = last.iter().map(|v| (v - median).abs()).collect();
            deviations.sort_by(f64::total_cmp);
            let mad = middle(deviations.len(), |i| deviations[i]);
            assert_eq!(ring.median_and_mad(), Some((median, mad)), "step {step}");
        }
    }

    #[test]
    fn weekday_and_hour_of_known_instants() {
        // 2026-11-23T00:00:00Z is a Monday: weekday angle 0, hour angle 0.
        let monday = DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z").unwrap().with_timezone(&Utc);
        let [hour_sin, hour_cos, week_sin, week_cos] = cyclic_time(instant_nanos(monday));
        assert!(hour_sin.abs() < 1e-12 && (hour_cos - 1.0).abs() < 1e-12);
        assert!(week_sin.abs() < 1e-12 && (week_cos - 1.0).abs() < 1e-12);
        // 18:00 is three quarters round the day: sin = -1.
        let evening = instant_nanos(monday) + 18 * 3600 * 1_000_000_000;
        assert!((cyclic_time(evening)[0] + 1.0).abs() < 1e-12);
        // Before 1970 too (div_euclid): 1969-12-29 was a Monday.
        let old = DateTime::parse_from_rfc3339("1969-12-29T00:00:00Z").unwrap().with_timezone(&Utc);
        assert!(cyclic_time(instant_nanos(old))[2].abs() < 1e-12);
    }

    #[test]
    fn cyclic_time_of_a_second_is_reused_only_within_that_second() {
        let mut cache = CyclicTimeOfSecond::default();
        let second = 1_795_478_400i64 * 1_000_000_000;
        for at in [second, second + 999_999_999, second + 1_000_000_000, second - 1, second, -1, 0] {
            assert_eq!(cache.at(at), cyclic_time(at), "{at}");
        }
    }

    #[test]
    fn ratios_are_bounded_and_defined_at_zero() {
        assert_eq!(ratio(0.0, 0.0), 0.0);
        assert_eq!(ratio(5.0, 0.0), RATIO_MAX);
        assert_eq!(ratio(5.0, 2.0), 2.5);
        assert_eq!(ratio(1e300, 1e-300), RATIO_MAX);
        assert_eq!(seconds_between(i64::MAX, i64::MIN), (u64::MAX as f64) / 1e9);
        // The i64 path and the i128 path convert a difference to the same double.
        for (later, earlier) in
            [(1i64 << 62, -(1i64 << 60)), (123_456_789_123_456_789, -3), (-5, 7), ((1 << 53) + 1, 0)]
        {
            assert_eq!(seconds_between(later, earlier), (later as i128 - earlier as i128) as f64 / 1e9);
        }
        assert_eq!(decay(-5.0, 60.0), 1.0);
    }
}
