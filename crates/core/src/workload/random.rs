//! The model's only source of chance: a seeded SplitMix64 sequence, and skewed picks from it.
//! Hand-written (a dozen lines) so that the same seed gives the same day on every build, with
//! no dependency whose stream could change between versions.

/// A seeded pseudo-random sequence (SplitMix64): fast, and good enough to shape a workload.
#[derive(Clone, Debug)]
pub(crate) struct Seeded(u64);

impl Seeded {
    pub(crate) fn new(seed: u64) -> Seeded {
        Seeded(seed)
    }

    /// An independent sequence for one purpose, so that adding draws to one part of the model
    /// does not shift every other part.
    pub(crate) fn fork(&mut self, purpose: u64) -> Seeded {
        Seeded(self.next() ^ purpose.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is far below what a workload can show.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "a draw needs a non-empty range");
        self.next() % n
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with a chance of `per_mille` in 1000.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Picks an index with Zipf-like weights (the item of rank `r` weighs `1/(r+1)`): a few items
/// take much of the traffic, a long tail the rest, as tenants and products do.
#[derive(Clone, Debug)]
pub(crate) struct Skewed {
    /// Running sums of the integer weights.
    cumulative: Vec<u64>,
}

impl Skewed {
    /// Weights for `n` items (`n > 0`).
    pub(crate) fn zipf(n: usize) -> Skewed {
        assert!(n > 0, "a skewed pick needs at least one item");
        let mut total = 0u64;
        let cumulative = (1..=n as u64)
            .map(|rank| {
                total += 1_000_000_000 / rank;
                total
            })
            .collect();
        Skewed { cumulative }
    }

    /// The share of item `i`, in parts of `scale`.
    pub(crate) fn share(&self, i: usize, scale: u64) -> u64 {
        let before = if i == 0 { 0 } else { self.cumulative[i - 1] };
        let total = *self.cumulative.last().expect("at least one item");
        let weight = u128::from(self.cumulative[i] - before) * u128::from(scale);
        u64::try_from(weight / u128::from(total)).expect("a share of a u64 fits in a u64")
    }

    pub(crate) fn pick(&self, random: &mut Seeded) -> usize {
        let total = *self.cumulative.last().expect("at least one item");
        let draw = random.below(total);
        self.cumulative.partition_point(|&sum| sum <= draw)
    }
}
