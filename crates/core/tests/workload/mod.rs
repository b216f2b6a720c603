//! The seeded day model: the same seed yields the same steps, the curve adds up to the day with
//! its peak where the record puts it, steps come in virtual-time order, and each order's steps
//! are spaced, with every payment step well before the order's hold runs out.

use std::collections::HashMap;

use orderly_core::domain::{Command, DeclineReason, OrderCommand, PaymentCommand};
use orderly_core::workload::{
    Fate, LAST_PAYMENT_STEP_MS, MIN_FOLLOW_UP_MS, MINUTES_PER_DAY, PEAK_MINUTE, Step, StepKind,
    Workload, WorkloadConfig, day_curve, peak_orders,
};

fn day(orders: u64, tenants: usize, seed: u64) -> Vec<Step> {
    Workload::new(WorkloadConfig::new(orders, tenants, seed)).collect()
}

#[test]
fn the_same_seed_yields_the_same_steps_and_another_seed_others() {
    let first = day(5_000, 4, 7);
    let again = day(5_000, 4, 7);
    assert_eq!(first, again);
    let other = day(5_000, 4, 8);
    assert_ne!(first, other);
}

#[test]
fn the_record_day_peaks_at_987_in_the_evening_and_adds_up() {
    let curve = day_curve(1_033_625);
    assert_eq!(curve.len(), MINUTES_PER_DAY);
    assert_eq!(curve.iter().sum::<u64>(), 1_033_625);
    assert_eq!(curve[PEAK_MINUTE], 987);
    assert_eq!(curve.iter().max(), Some(&987));
    // A day, not a plateau: the night is quieter than the evening.
    assert!(curve[4 * 60] * 10 < curve[PEAK_MINUTE] * 6, "04:00 has {}", curve[4 * 60]);
}

#[test]
fn every_day_size_adds_up_exactly_with_the_scaled_peak() {
    // Among them the days whose scaled peak rounds below a flat day's minute (1,441 to 1,570).
    let small = [0, 1, 7, 1_439, 1_440, 1_441, 1_500, 1_570, 1_571, 2_880, 2_881];
    for orders in small.into_iter().chain([20_000, 123_457, 4_000_000]) {
        let curve = day_curve(orders);
        assert_eq!(curve.iter().sum::<u64>(), orders, "{orders} orders");
        let peak = peak_orders(orders);
        assert_eq!(curve[PEAK_MINUTE], peak, "{orders} orders");
        assert_eq!(curve.iter().copied().max().unwrap_or(0), peak, "{orders} orders");
    }
    assert_eq!(peak_orders(20_000), 19);
    assert_eq!((peak_orders(1_440), peak_orders(1_441), peak_orders(1_571)), (1, 2, 2));
    assert_eq!(peak_orders(2_067_250), 1_974);
}

#[test]
fn steps_come_in_virtual_time_order_and_each_order_is_placed_once() {
    let steps = day(20_000, 5, 3);
    assert!(steps.windows(2).all(|w| w[0].at <= w[1].at), "steps out of time order");
    assert!(steps.iter().all(|s| s.envelope.admitted_at == s.at));
    let placements = steps.iter().filter(|s| s.kind == StepKind::Place).count();
    assert_eq!(placements, 20_000);
    let first_order = steps.iter().position(|s| s.order.is_some()).expect("orders");
    assert!(steps[..first_order].iter().all(|s| s.kind == StepKind::ReceiveStock));
    assert!(steps[first_order..].iter().all(|s| s.kind != StepKind::ReceiveStock));
}

#[test]
fn an_orders_steps_are_spaced_and_end_as_its_fate_says() {
    let steps = day(20_000, 5, 11);
    let mut lives: HashMap<u64, Vec<&Step>> = HashMap::new();
    for step in &steps {
        if let Some(order) = step.order {
            lives.entry(order.number).or_default().push(step);
        }
    }
    assert_eq!(lives.len(), 20_000);
    let mut fates: HashMap<Fate, u64> = HashMap::new();
    for (number, life) in &lives {
        let fate = life[0].order.expect("tagged").fate;
        *fates.entry(fate).or_default() += 1;
        assert_eq!(life[0].kind, StepKind::Place, "order {number} starts with its placement");
        for pair in life.windows(2) {
            let gap = pair[1].at.0 - pair[0].at.0;
            assert!(gap >= MIN_FOLLOW_UP_MS, "order {number}: steps {gap} ms apart");
        }
        let paying = |s: &&&Step| {
            matches!(
                s.kind,
                StepKind::Authorize
                    | StepKind::RetryAuthorize
                    | StepKind::Decline
                    | StepKind::DeclineUnavailable
            ) || (fate == Fate::Declined && s.kind == StepKind::Cancel)
        };
        for step in life.iter().filter(paying) {
            let after = step.at.0 - life[0].at.0;
            assert!(
                after <= LAST_PAYMENT_STEP_MS,
                "order {number}: {:?} after {after} ms",
                step.kind
            );
        }
        let last = life.last().expect("at least the placement");
        let ends = match fate {
            Fate::Shipped => last.kind == StepKind::Ship,
            Fate::Refunded => last.kind == StepKind::Refund,
            Fate::CancelledByShopper | Fate::Declined => last.kind == StepKind::Cancel,
            Fate::Expired => !life.iter().any(|s| s.kind == StepKind::Authorize),
        };
        assert!(ends, "order {number} ({fate:?}) ends with {:?}", last.kind);
    }
    // Every kind of life happens in a day this size, in about the shares the model names.
    let share = |fate| fates.get(&fate).copied().unwrap_or(0) * 1000 / 20_000;
    assert!((30..=90).contains(&share(Fate::Expired)), "{fates:?}");
    assert!((10..=60).contains(&share(Fate::Declined)), "{fates:?}");
    assert!(share(Fate::CancelledByShopper) >= 10 && share(Fate::Refunded) >= 10, "{fates:?}");
    assert!(share(Fate::Shipped) > 700, "{fates:?}");
}

#[test]
fn retries_repeat_the_command_with_its_key_and_outages_decline_as_unavailable() {
    let steps = day(20_000, 5, 5);
    let count = |kind| steps.iter().filter(|s| s.kind == kind).count();
    assert!(count(StepKind::RetryPlace) > 300, "{}", count(StepKind::RetryPlace));
    assert!(count(StepKind::RetryAuthorize) > 200, "{}", count(StepKind::RetryAuthorize));
    assert!(count(StepKind::DeclineUnavailable) > 0);
    let mut firsts: HashMap<_, &Step> = HashMap::new();
    for step in &steps {
        let Some(key) = &step.envelope.idempotency_key else { continue };
        match step.kind {
            StepKind::RetryPlace | StepKind::RetryAuthorize => {
                let first = firsts.get(key).expect("a retry follows its first send");
                assert_eq!(first.envelope.command, step.envelope.command);
                assert_eq!(first.envelope.tenant, step.envelope.tenant);
            }
            _ => assert!(firsts.insert(key.clone(), step).is_none(), "key {key} reused"),
        }
    }
    let workload = Workload::new(WorkloadConfig::new(20_000, 5, 5));
    for step in steps.iter().filter(|s| s.kind == StepKind::DeclineUnavailable) {
        assert!(workload.outages().iter().any(|(from, to)| (from.0..to.0).contains(&step.at.0)));
        let Command::Payment { command: PaymentCommand::Decline { reason, .. }, .. } =
            &step.envelope.command
        else {
            panic!("an outage declines: {step:?}")
        };
        assert_eq!(*reason, DeclineReason::GatewayUnavailable);
    }
    let refund_is_partial_or_full = steps.iter().filter(|s| s.kind == StepKind::Refund).all(|s| {
        matches!(&s.envelope.command, Command::Order { command: OrderCommand::Refund { amount }, .. } if amount.minor > 0)
    });
    assert!(refund_is_partial_or_full);
}
