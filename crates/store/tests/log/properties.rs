//! Property: any sequence of batches with right or wrong expected versions reads back exactly
//! as a simple in-memory model says, before and after reopening.

use std::collections::HashMap;

use orderly_store::{AppendError, Expected, StreamVersion};
use proptest::prelude::*;

use super::common::{open, read_all, record, small_segments};

#[derive(Clone, Debug)]
struct Op {
    stream: u8,
    expect: Option<u64>,
    payload: Vec<u8>,
}

/// The id of stream `s`: two short ids and two longer than the index keeps inline.
fn name(s: u8) -> String {
    let long = if s >= 2 { "-with-an-id-longer-than-thirty-bytes" } else { "" };
    format!("s{s}{long}")
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..4, prop::option::of(0u64..6), prop::collection::vec(any::<u8>(), 0..300))
        .prop_map(|(stream, expect, payload)| Op { stream, expect, payload })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn batches_read_back_as_the_model_says(batches in prop::collection::vec(prop::collection::vec(op(), 1..5), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), small_segments());
        let mut model: Vec<(u8, Vec<u8>, u64)> = Vec::new();
        let mut versions: HashMap<u8, u64> = HashMap::new();
        for batch in batches {
            // The model decides the batch first.
            let mut tentative = versions.clone();
            let mut conflict = None;
            for op in &batch {
                let actual = *tentative.get(&op.stream).unwrap_or(&0);
                if let Some(e) = op.expect && e != actual && conflict.is_none() {
                    conflict = Some((op.stream, e, actual));
                }
                tentative.insert(op.stream, actual + 1);
            }
            let records = batch.iter().map(|op| {
                let mut r = record(&name(op.stream), &op.payload);
                r.expected = op.expect.map_or(Expected::Any, |e| Expected::Exactly(StreamVersion(e)));
                r
            }).collect();
            match (log.append(records), conflict) {
                (Ok(_), None) => {
                    for op in &batch {
                        let v = versions.entry(op.stream).or_insert(0);
                        model.push((op.stream, op.payload.clone(), *v));
                        *v += 1;
                    }
                }
                (Err(AppendError::Conflict { stream, expected, actual }), Some((s, e, a))) => {
                    prop_assert_eq!(stream, name(s).into_bytes());
                    prop_assert_eq!((expected.0, actual.0), (e, a));
                }
                (outcome, expected) => prop_assert!(false, "log said {outcome:?}, model {expected:?}"),
            }
        }
        let check = |log: &orderly_store::Log,
                     records: Vec<orderly_store::Record>|
         -> Result<(), TestCaseError> {
            prop_assert_eq!(records.len(), model.len());
            for (i, (r, (s, p, v))) in records.iter().zip(&model).enumerate() {
                prop_assert_eq!(r.position.0, i as u64);
                prop_assert_eq!(&r.stream, &name(*s).into_bytes());
                prop_assert_eq!(&r.payload, p);
                prop_assert_eq!(r.stream_version.0, *v);
            }
            for s in 0..4 {
                let stream = log.read_stream(name(s).as_bytes()).unwrap();
                let expected: Vec<&Vec<u8>> =
                    model.iter().filter(|(m, ..)| *m == s).map(|(_, p, _)| p).collect();
                prop_assert_eq!(stream.iter().map(|r| &r.payload).collect::<Vec<_>>(), expected);
                prop_assert_eq!(log.stream_version(name(s).as_bytes()).0, stream.len() as u64);
            }
            Ok(())
        };
        check(&log, read_all(&log))?;
        drop(log);
        let (log, _) = open(dir.path(), small_segments());
        check(&log, read_all(&log))?;
        // The read-only scan of an audit checks every stream's versions on its own.
        let mut scanned = Vec::new();
        orderly_store::scan(dir.path(), |_| {}, |r| {
            scanned.push((r.stream.to_vec(), r.stream_version.0));
            std::ops::ControlFlow::Continue(())
        }).unwrap();
        let modelled: Vec<(Vec<u8>, u64)> =
            model.iter().map(|(s, _, v)| (name(*s).into_bytes(), *v)).collect();
        prop_assert_eq!(scanned, modelled);
    }
}
