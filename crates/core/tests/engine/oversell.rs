//! Property: whatever the stock and however many callers place whatever orders at once, the
//! engine sells at most what is in stock, per SKU, and what it refused held nothing.

use std::collections::HashMap;

use orderly_core::engine::{Engine, ManualClock};
use proptest::prelude::*;

use super::{START, available, config, place, receive};

const SKUS: [&str; 3] = ["a", "b", "c"];

fn order() -> impl Strategy<Value = Vec<(usize, u64)>> {
    prop::sample::subsequence(vec![0usize, 1, 2], 1..=3)
        .prop_flat_map(|skus| {
            let n = skus.len();
            (Just(skus), prop::collection::vec(1u64..=3, n))
        })
        .prop_map(|(skus, units)| skus.into_iter().zip(units).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn concurrent_orders_never_oversell(
        stock in prop::collection::vec(1u64..40, 3),
        orders in prop::collection::vec(order(), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(START);
        let engine = Engine::open(dir.path(), config(&clock)).unwrap();
        for (sku, units) in SKUS.iter().zip(&stock) {
            engine.execute_blocking(receive("acme", sku, *units)).unwrap();
        }
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let engine = engine.clone();
                let mine: Vec<(usize, Vec<(usize, u64)>)> =
                    orders.iter().cloned().enumerate().filter(|(i, _)| i % 4 == t).collect();
                std::thread::spawn(move || {
                    mine.into_iter()
                        .filter_map(|(i, lines)| {
                            let named: Vec<(&str, u64)> = lines.iter().map(|&(s, u)| (SKUS[s], u)).collect();
                            match engine.execute_blocking(place("acme", &format!("o-{i}"), &named)) {
                                Ok(_) => Some(lines),
                                Err(e) => {
                                    assert_eq!(e.code(), "insufficient_stock");
                                    None
                                }
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut sold: HashMap<usize, u64> = HashMap::new();
        for thread in threads {
            for lines in thread.join().unwrap() {
                for (sku, units) in lines {
                    *sold.entry(sku).or_default() += units;
                }
            }
        }
        for (i, sku) in SKUS.iter().enumerate() {
            let sold = sold.get(&i).copied().unwrap_or(0);
            prop_assert!(sold <= stock[i], "{sku}: sold {sold} of {}", stock[i]);
            prop_assert_eq!(available(&engine, "acme", sku), stock[i] - sold);
        }
        engine.shutdown();
    }
}
