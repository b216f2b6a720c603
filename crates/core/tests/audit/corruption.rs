//! A real log damaged in each way the issue names — truncated (mid-record, and at a record
//! boundary of a closed segment), a bit flipped in a payload and in a header, two records
//! reordered, a record spliced in from another log, a rewrite with every checksum and hash
//! recomputed — is reported precisely (kind, segment, byte offset, position), a torn tail is a
//! warning and not corruption, and no input makes an audit panic.

use std::path::{Path, PathBuf};

use orderly_core::audit::{self, AuditError, ReplayPoint};
use orderly_core::codec;
use orderly_core::domain::{
    CancelReason, Context, Decider, Envelope, OrderCommand, Tenant, TenantState, Timestamp,
};
use orderly_core::store::{Log, LogConfig};

use super::{START, no_progress, on_order, place, receive, records};

/// A log of several 64 KiB segments of decision records, as the engine writes them: stock
/// received in `units`, then orders placed and cancelled, each order's placement and
/// cancellation one atomic batch of two records (as when both are decided in one turn). Logs
/// built with different `units` have records of the same sizes at the same offsets, but
/// different bytes from the first record on.
fn segmented_log(dir: &Path, units: u64) {
    let config = LogConfig { segment_size: 64 << 10, ..LogConfig::default() };
    let (log, _) = Log::open(dir, config).unwrap();
    let mut state = TenantState::default();
    let mut now = START;
    let decide = |state: &mut TenantState, envelope: Envelope, now: Timestamp| {
        let events = Tenant::decide(state, &envelope.command, &Context::at(now)).unwrap();
        for event in &events {
            Tenant::evolve(state, event);
        }
        codec::encode_decision(&envelope.tenant, None, &events).into_record(now)
    };
    log.append(vec![decide(&mut state, receive("acme", "sku-1", units), now)]).unwrap();
    for n in 0..700 {
        let o = format!("o-{n:04}");
        let placed = decide(&mut state, place("acme", &o, &[("sku-1", 1)]), now);
        let cancel = OrderCommand::Cancel { reason: CancelReason::Requested };
        let cancelled = decide(&mut state, on_order("acme", &o, cancel), now);
        log.append(vec![placed, cancelled]).unwrap();
        now = now.plus_millis(10);
    }
}

fn copy_log(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn at(n: u64) -> usize {
    usize::try_from(n).unwrap()
}

/// The error `verify` gives, checked to name `segment` at `offset` with `position`; `check`
/// (verify, reconcile and replay in one pass) must fail the same way.
fn expect(dir: &Path, code: &str, segment: &Path, offset: u64, position: u64) -> AuditError {
    let err = audit::verify(dir, None, &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), code, "{err}");
    let found = err.location().unwrap_or_else(|| panic!("{err} names no place"));
    assert_eq!(
        (found.segment.as_path(), found.offset, found.position),
        (segment, offset, Some(position)),
        "{err}"
    );
    let checked = audit::check(dir, &mut no_progress()).unwrap_err();
    assert_eq!((checked.code(), checked.location()), (err.code(), err.location()), "{checked}");
    err
}

/// A fresh copy of the pristine log, and its records: (segment, offset, length, position).
struct Case {
    dir: tempfile::TempDir,
    records: Vec<(PathBuf, u64, u64, u64)>,
}

impl Case {
    fn new(pristine: &Path) -> Case {
        let dir = tempfile::tempdir().unwrap();
        copy_log(pristine, dir.path());
        let records = records(dir.path());
        Case { dir, records }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The records of the first (closed) segment.
    fn first_segment(&self) -> Vec<(PathBuf, u64, u64, u64)> {
        let first = &self.records[0].0;
        self.records.iter().filter(|r| &r.0 == first).cloned().collect()
    }
}

fn pristine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    segmented_log(dir.path(), 1_000);
    assert!(segments(dir.path()).len() >= 3, "the log spans several segments");
    dir
}

#[test]
fn truncation_of_a_closed_segment_is_corruption_at_the_cut() {
    let pristine = pristine();
    // Mid-record.
    let case = Case::new(pristine.path());
    let (segment, offset, len, position) = case.first_segment()[10].clone();
    edit(&segment, |b| b.truncate(at(offset + len / 2)));
    expect(case.path(), "bad_header", &segment, offset, position);

    // At a record boundary inside a batch (an order's placement and cancellation are one
    // batch).
    let case = Case::new(pristine.path());
    let records = case.first_segment();
    let (segment, offset, _, position) =
        records.iter().skip(1).find(|r| r.3 % 2 == 0).cloned().unwrap();
    edit(&segment, |b| b.truncate(at(offset)));
    let err = audit::verify(case.path(), None, &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), "segment_ends_inside_batch", "{err}");
    let found = err.location().unwrap();
    let batch_offset = records.iter().find(|r| r.3 == position - 1).unwrap().1;
    assert_eq!(
        (found.segment, found.offset, found.position),
        (segment.clone(), batch_offset, Some(position - 1)),
        "named where the batch that was cut starts"
    );
    assert!(offset > batch_offset);

    // At a batch boundary: the next segment's first record is missing.
    let case = Case::new(pristine.path());
    let (segment, offset, _, position) = case.first_segment()[3].clone();
    edit(&segment, |b| b.truncate(at(offset)));
    let next = segments(case.path())[1].clone();
    expect(case.path(), "missing_segment", &next, 0, position);
}

#[test]
fn a_cut_at_the_end_of_the_last_segment_is_a_torn_tail_warning_not_corruption() {
    let pristine = pristine();
    let case = Case::new(pristine.path());
    let (segment, offset, len, _) = case.records.last().cloned().unwrap();
    // The last batch is an order's placement and its cancellation; its first record starts
    // where the committed log will end.
    let (_, batch_offset, batch_len, batch_start) = case.records[case.records.len() - 2].clone();
    // Zero the last record's second half: what a crash mid-write leaves in a preallocated file.
    edit(&segment, |b| b[at(offset + len / 2)..at(offset + len)].fill(0));
    let report = audit::verify(case.path(), None, &mut no_progress()).unwrap();
    assert_eq!(report.records, batch_start, "the torn batch is not counted");
    let torn = report.torn_tail.expect("reported");
    assert_eq!((torn.segment, torn.offset), (segment, batch_offset));
    assert!(torn.bytes > batch_len && torn.bytes <= batch_len + len);
    // Replay applies whole batches only, and stops before the torn one.
    let state = audit::replay(case.path(), ReplayPoint::Head, None, &mut no_progress()).unwrap();
    assert_eq!(state.digest.head, batch_start);
}

#[test]
fn a_flipped_bit_in_a_payload_or_a_header_is_a_checksum_mismatch_at_its_record() {
    let pristine = pristine();
    for (what, within) in [("payload", 1u64), ("position field", 17), ("chain hash", 50)] {
        let case = Case::new(pristine.path());
        let (segment, offset, len, position) = case.first_segment()[20].clone();
        let byte = if what == "payload" { offset + len - within } else { offset + within };
        edit(&segment, |b| b[at(byte)] ^= 0x10);
        let err = expect(case.path(), "bad_checksum", &segment, offset, position);
        assert!(err.to_string().contains("checksum"), "{what}: {err}");
    }
    // A flipped bit in a length field makes the header impossible or the checksum wrong.
    let case = Case::new(pristine.path());
    let (segment, offset, _, position) = case.first_segment()[20].clone();
    edit(&segment, |b| b[at(offset + 6)] ^= 0x01);
    let err = audit::verify(case.path(), None, &mut no_progress()).unwrap_err();
    assert!(["bad_header", "bad_checksum"].contains(&err.code()), "{err}");
    assert_eq!(err.location().unwrap().position, Some(position));
}

#[test]
fn two_records_swapped_are_out_of_position() {
    let pristine = pristine();
    let case = Case::new(pristine.path());
    let records = case.first_segment();
    // Two placements of the same size, two batches apart.
    let pair = records.windows(5).skip(5).find(|w| w[0].2 == w[4].2).unwrap().to_vec();
    let ((segment, offset, len, position), later) = (pair[0].clone(), pair[4].clone());
    edit(&segment, |b| {
        let (a, c, l) = (at(offset), at(later.1), at(len));
        let first = b[a..a + l].to_vec();
        b.copy_within(c..c + l, a);
        b[c..c + l].copy_from_slice(&first);
    });
    let err = expect(case.path(), "position_gap", &segment, offset, position);
    assert!(err.to_string().contains(&format!("found {}", later.3)), "{err}");
}

#[test]
fn a_record_spliced_in_from_another_log_breaks_the_chain() {
    let pristine = pristine();
    let other = tempfile::tempdir().unwrap();
    segmented_log(other.path(), 2_000);
    let case = Case::new(pristine.path());
    let (segment, offset, len, position) = case.first_segment()[30].clone();
    let foreign = std::fs::read(other.path().join(segment.file_name().unwrap())).unwrap();
    edit(&segment, |b| {
        let range = at(offset)..at(offset + len);
        b[range.clone()].copy_from_slice(&foreign[range]);
    });
    expect(case.path(), "broken_chain", &segment, offset, position);
}

#[test]
fn a_rewrite_with_every_checksum_and_hash_recomputed_no_longer_matches_the_digest() {
    let pristine = pristine();
    let published = audit::digest(pristine.path(), &mut no_progress()).unwrap();
    // The same history with one fact changed (stock received), written afresh: every
    // checksum and chain hash is valid, so only the digest can tell.
    let rewritten = tempfile::tempdir().unwrap();
    segmented_log(rewritten.path(), 2_000);
    let report = audit::verify(rewritten.path(), None, &mut no_progress()).unwrap();
    assert_eq!(report.records, published.head, "as long as the original");
    let err = audit::verify(rewritten.path(), Some(published), &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), "digest_mismatch");
    assert!(err.to_string().starts_with("digest mismatch"), "{err}");
    match err {
        AuditError::DigestMismatch { expected, found } => {
            assert_eq!(expected, published);
            assert_eq!(found.map(|d| d.head), Some(published.head));
        }
        other => panic!("{other}"),
    }
    // A digest of an earlier point is checked the same way.
    let earlier =
        audit::replay(pristine.path(), ReplayPoint::Position(101), None, &mut no_progress())
            .unwrap()
            .digest;
    let err = audit::verify(rewritten.path(), Some(earlier), &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), "digest_mismatch");
    audit::verify(pristine.path(), Some(earlier), &mut no_progress()).unwrap();
}

/// A small deterministic generator for the damage below.
struct Mix(u64);

impl Mix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn no_damage_makes_an_audit_panic() {
    let pristine = pristine();
    let mut mix = Mix(8);
    let files = segments(pristine.path());
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        copy_log(pristine.path(), dir.path());
        let file = dir.path().join(files[at(mix.below(files.len() as u64))].file_name().unwrap());
        edit(&file, |b| {
            let len = b.len() as u64;
            match round % 4 {
                0 => b.truncate(at(mix.below(len))),
                1 => {
                    for _ in 0..1 + mix.below(8) {
                        let i = at(mix.below(len));
                        b[i] ^= 1 << mix.below(8);
                    }
                }
                2 => {
                    let start = at(mix.below(len));
                    let end = (start + 300).min(b.len());
                    for byte in &mut b[start..end] {
                        *byte = u8::try_from(mix.below(256)).unwrap();
                    }
                }
                _ => b.truncate(at(mix.below(200))),
            }
        });
        // Each returns a result, whatever it is; a panic would fail the test.
        let _ = audit::verify(dir.path(), None, &mut no_progress());
        let _ = audit::replay(dir.path(), ReplayPoint::Head, None, &mut no_progress());
        let _ = audit::reconcile(dir.path(), &mut no_progress());
        let _ = audit::trace(dir.path(), None, &super::order("o-0001"), &mut no_progress());
    }
    // Not a log at all, and no folder.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000000.seg"), b"not a segment").unwrap();
    assert_eq!(
        audit::verify(dir.path(), None, &mut no_progress()).unwrap_err().code(),
        "bad_segment_header"
    );
    let missing = dir.path().join("nope");
    assert_eq!(audit::verify(&missing, None, &mut no_progress()).unwrap_err().code(), "io");
    // A folder with no segment is no log (a log has its first segment from its first open):
    // refused, never vouched for as an empty log, by every command.
    let empty = tempfile::tempdir().unwrap();
    let no_log = |e: audit::AuditError| e.code();
    assert_eq!(
        audit::verify(empty.path(), None, &mut no_progress()).map_err(no_log).unwrap_err(),
        "no_log"
    );
    assert_eq!(
        audit::replay(empty.path(), ReplayPoint::Head, None, &mut no_progress())
            .map_err(no_log)
            .unwrap_err(),
        "no_log"
    );
    assert_eq!(
        audit::reconcile(empty.path(), &mut no_progress()).map_err(no_log).unwrap_err(),
        "no_log"
    );
    let trace = audit::trace(empty.path(), None, &super::order("o-1"), &mut no_progress());
    assert_eq!(trace.map_err(no_log).unwrap_err(), "no_log");
    // A log folder whose segments were all deleted (its lock file remains) is damage, not a
    // mistyped path.
    let emptied = self::pristine();
    for segment in segments(emptied.path()) {
        std::fs::remove_file(segment).unwrap();
    }
    assert!(emptied.path().join("LOCK").exists(), "the writer left its lock file");
    let err = audit::verify(emptied.path(), None, &mut no_progress()).unwrap_err();
    assert_eq!(err.code(), "missing_segment", "{err}");
}
