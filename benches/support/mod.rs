//! What the benchmarks share: a deterministic Black Friday mix of tenants, SKUs and baskets,
//! and the arithmetic of their figures.

#![allow(dead_code, reason = "each benchmark uses a part")]

use std::sync::LazyLock;
use std::time::Duration;

use orderly::domain::{
    Command, Currency, CustomerId, OrderCommand, OrderId, OrderLine, Quantity, Sku, TenantId,
};

pub const TENANTS: u64 = 50;
pub const SKUS_PER_TENANT: u64 = 200;

pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator, so every run does the same work.
pub struct Mix(pub u64);

impl Mix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 1–5 distinct SKUs of one tenant, skewed towards the first ones (popular products).
    pub fn basket(&mut self) -> Vec<OrderLine> {
        let lines = 1 + self.below(5);
        let mut skus: Vec<u64> = Vec::new();
        while (skus.len() as u64) < lines {
            let sku = self.below(SKUS_PER_TENANT).min(self.below(SKUS_PER_TENANT));
            if !skus.contains(&sku) {
                skus.push(sku);
            }
        }
        skus.into_iter()
            .map(|sku| OrderLine {
                sku: self::sku(sku),
                quantity: Quantity::new(1 + self.below(2)).unwrap(),
                unit_price: 500 + self.below(20_000),
            })
            .collect()
    }
}

/// Tenant `t`'s id. The ids are made once, as a caller knows the ids it sends rather than
/// formatting them for every command: the callers share the two cores with the engine.
pub fn tenant(t: u64) -> TenantId {
    static IDS: LazyLock<Vec<TenantId>> = LazyLock::new(|| {
        (0..TENANTS).map(|t| TenantId::new(&format!("tenant-{t}")).unwrap()).collect()
    });
    IDS[usize::try_from(t).unwrap()].clone()
}

/// SKU `n` of every tenant, made once as [`tenant`]'s ids are.
pub fn sku(n: u64) -> Sku {
    static IDS: LazyLock<Vec<Sku>> = LazyLock::new(|| {
        (0..SKUS_PER_TENANT).map(|n| Sku::new(&format!("sku-{n}")).unwrap()).collect()
    });
    IDS[usize::try_from(n).unwrap()].clone()
}

pub fn stock_commands() -> Vec<(TenantId, Command)> {
    let mut commands = Vec::new();
    for t in 0..TENANTS {
        for s in 0..SKUS_PER_TENANT {
            let command =
                Command::ReceiveStock { sku: sku(s), quantity: Quantity::new(1_000_000).unwrap() };
            commands.push((tenant(t), command));
        }
    }
    commands
}

pub fn place(order: &OrderId, lines: Vec<OrderLine>) -> Command {
    let customer = CustomerId::new("c-1").unwrap();
    let command = OrderCommand::Place { customer, currency: Currency::new("EUR").unwrap(), lines };
    Command::Order { order: order.clone(), command }
}

#[allow(clippy::cast_precision_loss, reason = "figures for people, not for arithmetic")]
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a small sorted sample"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    #[allow(clippy::cast_precision_loss, reason = "microseconds to milliseconds for display")]
    let ms = sorted[i] as f64 / 1_000.0;
    ms
}
