//! The day's arrival curve: how many orders arrive in each minute.
//!
//! The record day had 1,033,625 orders with a peak of 987 in one minute; a day of `orders`
//! keeps that ratio. The shape (quiet night, a climb through the morning, an evening peak at
//! 20:30) comes from hourly levels drawn through linearly; it is then flattened or sharpened
//! just enough for the peak minute to be exactly the scaled peak while the minutes add up to
//! exactly `orders`. Only basic float arithmetic is used (no `exp`), so the curve is the same
//! on every platform.

/// Minutes in the day.
pub const MINUTES_PER_DAY: usize = 1440;

/// Orders of the record day the curve is scaled from.
pub const RECORD_DAY_ORDERS: u64 = 1_033_625;

/// Orders in the record day's busiest minute.
pub const RECORD_PEAK_MINUTE: u64 = 987;

/// Relative traffic per hour of the day (00:00 to 23:00), each at the middle of its hour.
const HOURLY_LEVELS: [u32; 24] = [
    55, 45, 35, 30, 28, 30, 38, 50, 62, 70, 75, 78, 80, 78, 76, 75, 77, 82, 88, 95, 100, 92, 80, 66,
];

/// The minute of the peak: 20:30, the middle of the hour with the highest level.
pub const PEAK_MINUTE: usize = 20 * 60 + 30;

/// The busiest minute's orders in a day of `orders`: the record's 987 scaled, and at least a
/// flat day's minute (which the scaled peak is below, rounded, for days of 1,441 to 1,570).
#[must_use]
pub fn peak_orders(orders: u64) -> u64 {
    if orders == 0 {
        return 0;
    }
    let scaled = (u128::from(orders) * u128::from(RECORD_PEAK_MINUTE)
        + u128::from(RECORD_DAY_ORDERS / 2))
        / u128::from(RECORD_DAY_ORDERS);
    let scaled = u64::try_from(scaled).expect("the peak is below the day's orders");
    scaled.max(orders.div_ceil(MINUTES_PER_DAY as u64))
}

/// Orders per minute over the day: [`MINUTES_PER_DAY`] counts that add up to exactly
/// `orders`, the largest of which, at [`PEAK_MINUTE`], is [`peak_orders`].
#[must_use]
pub fn day_curve(orders: u64) -> Vec<u64> {
    let mut curve = vec![0u64; MINUTES_PER_DAY];
    let peak = peak_orders(orders);
    if orders == 0 {
        return curve;
    }
    curve[PEAK_MINUTE] = peak;
    let rest = orders - peak;
    // The peak is at least a flat day's minute: `rest` always fits in the other minutes at
    // `peak` each.
    assert!(rest <= peak * (MINUTES_PER_DAY as u64 - 1), "the peak is scaled from the day");
    let weights = other_minute_weights(rest, peak);
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total == 0 {
        return curve;
    }
    // Exact shares of `rest` by the weights, rounded down, then the remainder minute by minute
    // to the largest fractions (the earlier minute on a tie), never beyond the peak.
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(MINUTES_PER_DAY);
    let mut given = 0u64;
    for (minute, &weight) in weights.iter().enumerate() {
        if minute == PEAK_MINUTE {
            continue;
        }
        let share = u128::from(rest) * u128::from(weight);
        let count = u64::try_from(share / total).expect("a share of the day fits").min(peak);
        curve[minute] = count;
        given += count;
        remainders.push((share % total, minute));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = rest - given;
    while left > 0 {
        let before = left;
        for &(_, minute) in &remainders {
            if left == 0 {
                break;
            }
            if curve[minute] < peak {
                curve[minute] += 1;
                left -= 1;
            }
        }
        assert!(left < before, "the other minutes have room for the rest of the day");
    }
    curve
}

/// Integer weights of the minutes other than the peak, shaped by [`HOURLY_LEVELS`] and scaled
/// so that `rest` orders spread by them average `rest / 1439` per minute with none above
/// `peak`.
fn other_minute_weights(rest: u64, peak: u64) -> Vec<u64> {
    let shape: Vec<f64> = (0..MINUTES_PER_DAY).map(shape_at).collect();
    let top = shape[PEAK_MINUTE];
    let others = (MINUTES_PER_DAY - 1) as f64;
    let shape_mean = shape
        .iter()
        .enumerate()
        .filter(|(m, _)| *m != PEAK_MINUTE)
        .map(|(_, s)| s / top)
        .sum::<f64>()
        / others;
    #[allow(clippy::cast_precision_loss, reason = "orders per minute are far below 2^52")]
    let wanted_mean = rest as f64 / (others * peak as f64);
    // Blend with a flat day when the shape is too peaky for the ratio, scale it down when it
    // is too flat; either way the mean relative to the peak becomes `wanted_mean`.
    let level = |s: f64| {
        if wanted_mean >= shape_mean {
            let flat = (wanted_mean - shape_mean) / (1.0 - shape_mean);
            flat + (1.0 - flat) * s
        } else {
            s * wanted_mean / shape_mean
        }
    };
    shape
        .iter()
        .map(|s| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a level in 0..=1 times 1e12 fits in a u64"
            )]
            let weight = (level(s / top) * 1e12).round() as u64;
            weight
        })
        .collect()
}

/// The shape's level at `minute`, drawn linearly between the hourly levels (round the clock).
fn shape_at(minute: usize) -> f64 {
    let from_first = (minute + MINUTES_PER_DAY - 30) % MINUTES_PER_DAY;
    let (hour, into) = (from_first / 60, from_first % 60);
    let a = f64::from(HOURLY_LEVELS[hour]);
    let b = f64::from(HOURLY_LEVELS[(hour + 1) % 24]);
    #[allow(clippy::cast_precision_loss, reason = "minutes of an hour")]
    let t = into as f64 / 60.0;
    a + (b - a) * t
}
