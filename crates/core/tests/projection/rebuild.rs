//! Blue-green rebuild and crash safety of projections.
//!
//! - Rebuilding while serving: a reader thread queries the inventory and order views without
//!   pause while both projections are rebuilt from position 0 (in small batches, so that the
//!   rebuild takes many transactions); every answer equals the old read model or the rebuilt
//!   one, never a mix and never an error. The old model was deliberately damaged first (a row
//!   no event made, as an earlier buggy version of a projection might leave), so the two
//!   differ. After the switch the models equal a fresh build, the old generation's tables are
//!   gone, and the live projections (both on one host), which kept running, follow the new
//!   generation.
//! - Two workers (or two rebuilds) of one projection on one database: the second is refused.
//! - kill -9: a child process (this test binary, run with `ORDERLY_PROJ_KILL_DIR` set) catches
//!   the inventory and order projections (on one host, one transaction per batch for both) up
//!   over a log of a few thousand events and then rebuilds them over and over; it is
//!   SIGKILLed at random moments (≥ 10 times), drawn within the time a whole catch-up took in
//!   this build (most in a catch-up, every third once caught up, in a rebuild), so that the
//!   kills land alike in fast and slow builds. After each kill a copy of its redb file reopens,
//!   finishes catch-up, and equals a fresh build into a new file; rebuilt once more (dropping
//!   any half-built generation) it still does.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orderly_core::domain::{CancelReason, OrderCommand};
use orderly_core::engine::{Engine, ManualClock};
use orderly_core::projection::{
    self, Generation, InventoryProjection, OrdersProjection, ProjectionError, ProjectionHost,
    ProjectionWorker, WorkerConfig,
};
use orderly_store::{Log, LogConfig, LogReader};
use redb::{Database, ReadableDatabase, TableDefinition};

use super::{START, WAIT, dump, open_engine, order_command, pay, place, receive, sku, tenant};

const TENANTS: [&str; 2] = ["acme", "globex"];
const KILL_ENV: &str = "ORDERLY_PROJ_KILL_DIR";

/// Both projections on one host, as a node runs them.
fn start(db: &Arc<Database>, log: &LogReader, config: &WorkerConfig) -> ProjectionHost {
    let hosted = vec![InventoryProjection.into(), OrdersProjection.into()];
    ProjectionHost::start(db.clone(), log.clone(), hosted, config.clone()).unwrap()
}

fn catch_up(host: &ProjectionHost, log: &LogReader) {
    for projection in host.projections() {
        projection.wait_for(log.head(), WAIT).unwrap();
    }
}

fn stop(host: ProjectionHost) {
    host.stop().unwrap();
}

/// Both read models built from position 0 into a new file at `path`.
fn fresh_build(path: &Path, log: &LogReader) -> super::Dump {
    let db = Arc::new(projection::open_db(path).unwrap());
    let workers = start(&db, log, &WorkerConfig::default());
    catch_up(&workers, log);
    stop(workers);
    dump(&db, &TENANTS)
}

/// `orders` orders per tenant from `threads` threads: every fifth paid and shipped, every
/// seventh cancelled, the rest left placed.
pub(super) fn orders(engine: &Engine, orders: usize, threads: usize) {
    numbered_orders(engine, 0, orders, threads);
}

/// As [`orders`], numbered from `first`.
pub(super) fn numbered_orders(engine: &Engine, first: usize, orders: usize, threads: usize) {
    for t in TENANTS {
        for s in ["sku-1", "sku-2", "sku-3"] {
            receive(engine, t, s, 1_000_000);
        }
    }
    std::thread::scope(|scope| {
        for thread in 0..threads {
            scope.spawn(move || {
                for n in (thread..orders).step_by(threads) {
                    for t in TENANTS {
                        let o = format!("o-{}", first + n);
                        let first = 1 + u64::try_from(n % 3).unwrap();
                        let lines = [("sku-1", first), ("sku-2", 1), ("sku-3", 2)];
                        let lines = &lines[..1 + n % 3];
                        place(engine, t, &o, lines);
                        if n % 5 == 0 {
                            let total = lines.iter().map(|(_, units)| units * 1_000).sum();
                            pay(engine, t, &o, total);
                            order_command(engine, t, &o, OrderCommand::Ship);
                        } else if n % 7 == 0 {
                            let cancel = OrderCommand::Cancel { reason: CancelReason::Requested };
                            order_command(engine, t, &o, cancel);
                        }
                    }
                }
            });
        }
    });
}

/// The plain and multimap table names in `db`.
fn table_names(db: &Database) -> HashSet<String> {
    let txn = db.begin_read().unwrap();
    let mut names: HashSet<String> =
        txn.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_owned()).collect();
    names.extend(
        txn.list_multimap_tables().unwrap().map(|t| redb::MultimapTableHandle::name(&t).to_owned()),
    );
    names
}

#[test]
fn a_rebuild_while_serving_answers_old_or_new_never_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    orders(&engine, 60, 4);
    let log = engine.log();
    let fresh = fresh_build(&dir.path().join("fresh.redb"), &log);

    let db = Arc::new(projection::open_db(&dir.path().join("models.redb")).unwrap());
    let live = start(&db, &log, &WorkerConfig::default());
    catch_up(&live, &log);
    assert_eq!(dump(&db, &TENANTS), fresh);
    // Damage the old generation: a row no event made, in each model.
    {
        let txn = db.begin_write().unwrap();
        let inventory: TableDefinition<'_, (&str, &str), (u64, u64)> =
            TableDefinition::new("inventory");
        txn.open_table(inventory).unwrap().insert(("acme", "ghost"), (9, 9)).unwrap();
        let orders: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("orders");
        let row =
            projection::order(&db, &tenant("acme"), &super::order_id("o-1")).unwrap().unwrap();
        txn.open_table(orders).unwrap().insert(("acme", "ghost"), row.encode().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let old = dump(&db, &TENANTS);
    assert_ne!(old, fresh);

    let done = AtomicBool::new(false);
    let small = WorkerConfig { max_batch: 7, ..WorkerConfig::default() };
    let (seen_old, seen_new) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut seen_old, mut seen_new) = (0, 0);
            let mut after = 0;
            // Keeps reading for a while after the switch, to see the new answers too.
            while after < 50 {
                if done.load(Ordering::Acquire) {
                    after += 1;
                }
                for (t, (old_stock, old_orders)) in TENANTS.iter().zip(&old) {
                    let i = usize::from(*t != "acme");
                    let stock = projection::inventory_levels(&db, &tenant(t)).unwrap();
                    let orders = projection::orders_of(&db, &tenant(t)).unwrap();
                    for (was, is) in [
                        (stock == *old_stock, stock == fresh[i].0),
                        (orders == *old_orders, orders == fresh[i].1),
                    ] {
                        assert!(was || is, "tenant {t}: an answer that is neither old nor new");
                        if was && !is {
                            seen_old += 1;
                        } else if is && !was {
                            seen_new += 1;
                        }
                    }
                    let level = projection::inventory(&db, &tenant(t), &sku("sku-1")).unwrap();
                    assert_eq!(level, Some(fresh[i].0[0].1), "untouched rows never change");
                }
            }
            (seen_old, seen_new)
        });
        let inventory = projection::rebuild(&db, &log, &InventoryProjection, &small).unwrap();
        let orders = projection::rebuild(&db, &log, &OrdersProjection, &small).unwrap();
        done.store(true, Ordering::Release);
        for rebuilt in [inventory, orders] {
            assert_eq!(rebuilt.generation, Generation(1));
            assert_eq!(rebuilt.replaced, Generation::FIRST);
            assert_eq!(rebuilt.position, log.head());
        }
        reader.join().unwrap()
    });
    assert!(seen_old > 0 && seen_new > 0, "old {seen_old} times, new {seen_new} times");
    assert_eq!(dump(&db, &TENANTS), fresh, "the rebuilt models equal a fresh build");
    assert_eq!(projection::generation(&db, "inventory").unwrap(), Generation(1));
    assert_eq!(projection::checkpoint(&db, "orders").unwrap(), log.head());
    let tables = table_names(&db);
    for gone in ["inventory", "orders", "order_payments"] {
        assert!(!tables.contains(gone), "{gone} dropped: {tables:?}");
    }
    assert!(tables.contains("inventory@1") && tables.contains("orders@1"), "{tables:?}");

    // The live workers kept running and follow the new generation.
    let received = receive(&engine, "acme", "sku-1", 5);
    for worker in live.projections() {
        worker.wait_for(received.next_position(), WAIT).unwrap();
        assert!(worker.ended().is_none());
    }
    let level = projection::inventory(&db, &tenant("acme"), &sku("sku-1")).unwrap().unwrap();
    assert_eq!(level.on_hand, fresh[0].0[0].1.on_hand + 5);
    stop(live);

    // A second rebuild goes to generation 2 and drops generation 1.
    let again = projection::rebuild(&db, &log, &InventoryProjection, &small).unwrap();
    assert_eq!((again.generation, again.replaced), (Generation(2), Generation(1)));
    assert!(!table_names(&db).contains("inventory@1"));
    assert_eq!(projection::inventory(&db, &tenant("acme"), &sku("sku-1")).unwrap(), Some(level));
}

#[test]
fn a_second_worker_or_rebuild_of_one_projection_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    receive(&engine, "acme", "sku-1", 3);
    let db = Arc::new(projection::open_db(&dir.path().join("models.redb")).unwrap());
    let config = WorkerConfig::default();
    let first =
        ProjectionWorker::start(db.clone(), engine.log(), InventoryProjection, config.clone())
            .unwrap();
    let second =
        ProjectionWorker::start(db.clone(), engine.log(), InventoryProjection, config.clone());
    let Err(ProjectionError::AlreadyRunning { name }) = second else { panic!("{second:?}") };
    assert_eq!(name, "inventory");
    // Another projection, or the same one on another database, may run.
    let orders =
        ProjectionWorker::start(db.clone(), engine.log(), OrdersProjection, config.clone())
            .unwrap();
    let other = Arc::new(projection::open_db(&dir.path().join("other.redb")).unwrap());
    let elsewhere =
        ProjectionWorker::start(other, engine.log(), InventoryProjection, config.clone()).unwrap();
    first.stop().unwrap();
    let restarted =
        ProjectionWorker::start(db.clone(), engine.log(), InventoryProjection, config.clone())
            .unwrap();

    let log = engine.log();
    restarted.wait_for(log.head(), WAIT).unwrap();
    assert_eq!(
        projection::inventory(&db, &tenant("acme"), &sku("sku-1")).unwrap().unwrap().on_hand,
        3
    );
    for worker in [restarted, orders, elsewhere] {
        worker.stop().unwrap();
    }
}

/// Opens the log at `dir` (only read: nothing is appended).
fn open_log(dir: &Path) -> Log {
    Log::open(dir, LogConfig { segment_size: 1 << 20, ..LogConfig::default() }).unwrap().0
}

/// In the child: start both projections (print `started`), catch them up in small batches,
/// print `caught-up`, then rebuild
/// them forever, printing `rebuilt` after each pair.
#[test]
fn child_projects_and_rebuilds() {
    let Ok(dir) = std::env::var(KILL_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let log = open_log(&dir.join("log")).reader();
    let db = Arc::new(projection::open_db(&dir.join("models.redb")).unwrap());
    let small = WorkerConfig { max_batch: 16, ..WorkerConfig::default() };
    let workers = start(&db, &log, &small);
    println!("started");
    catch_up(&workers, &log);
    println!("caught-up");
    let config = WorkerConfig { max_batch: 64, ..WorkerConfig::default() };
    loop {
        projection::rebuild(&db, &log, &InventoryProjection, &config).unwrap();
        projection::rebuild(&db, &log, &OrdersProjection, &config).unwrap();
        println!("rebuilt");
    }
}

#[test]
fn after_kill_9_during_catch_up_the_models_equal_a_fresh_rebuild() {
    let started = Instant::now();
    let kills: u64 = std::env::var("ORDERLY_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    {
        let clock = ManualClock::at(START);
        let engine = open_engine(&dir.path().join("log"), &clock);
        orders(&engine, 1_200, 8);
        engine.shutdown();
    }
    // The log is open in one process at a time: here only while the child is not running.
    let (head, fresh) = {
        let log = open_log(&dir.path().join("log"));
        let reader = log.reader();
        (reader.head(), fresh_build(&dir.path().join("fresh.redb"), &reader))
    };
    assert!(head.0 >= 2_000, "a log of a few thousand records: {head:?}");

    let models = dir.path().join("models.redb");
    let check = dir.path().join("check.redb");
    // A whole catch-up takes milliseconds in a release build and much longer in a debug one:
    // the kills meant for a catch-up are drawn within the time one took here. When one from
    // scratch lands too late (the machine got faster, or the first start was a cold one), the
    // window halves, and the kills go on until enough have landed in a catch-up.
    let catch_up_takes = {
        let child = Child::spawn(dir.path());
        let took = child.caught_up.recv_timeout(WAIT).expect("the child catches up");
        child.kill();
        took
    };
    let mut window = u64::try_from(catch_up_takes.as_micros()).unwrap().max(1);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let (mut in_catch_up, mut in_rebuild) = (0, 0);
    let mut kill = 0;
    while kill < kills || (in_catch_up < 3 && kill < kills + 30) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Of every three kills: one from scratch and one going on from where the last was
        // killed, both at a random moment in the catch-up; one once caught up, in a rebuild.
        let plan = kill % 3;
        if plan == 0 {
            std::fs::remove_file(&models).unwrap();
        }
        let child = Child::spawn(dir.path());
        if plan == 2 {
            child.caught_up.recv_timeout(WAIT).expect("the child catches up");
        }
        std::thread::sleep(Duration::from_micros(seed % window));
        let caught_up = child.kill();
        if caught_up {
            in_rebuild += 1;
            // Only a catch-up from scratch says the window is too wide: one that goes on from
            // the last kill has only the rest of a catch-up to do, or none.
            if plan == 0 {
                window = (window / 2).max(1);
            }
        } else {
            in_catch_up += 1
        }

        // Check a copy, so that the next child goes on from where this one was killed.
        std::fs::copy(&models, &check).unwrap();
        {
            let log = open_log(&dir.path().join("log"));
            let reader = log.reader();
            let db = Arc::new(projection::open_db(&check).unwrap());
            for name in ["inventory", "orders"] {
                let at = projection::checkpoint(&db, name).unwrap();
                assert!(at <= head, "kill {kill}: {name} checkpoint {at:?} beyond the log");
            }
            let workers = start(&db, &reader, &WorkerConfig::default());
            catch_up(&workers, &reader);
            stop(workers);
            assert_eq!(dump(&db, &TENANTS), fresh, "kill {kill}: caught up after the crash");
            let config = WorkerConfig::default();
            projection::rebuild(&db, &reader, &InventoryProjection, &config).unwrap();
            projection::rebuild(&db, &reader, &OrdersProjection, &config).unwrap();
            assert_eq!(dump(&db, &TENANTS), fresh, "kill {kill}: rebuilt after the crash");
        }
        std::fs::remove_file(&check).unwrap();
        kill += 1;
    }
    assert!(
        in_catch_up >= 3,
        "kills during catch-up: {in_catch_up}, during rebuilds: {in_rebuild} \
         (a catch-up took {catch_up_takes:?}, the window ended at {window} µs)"
    );
    eprintln!(
        "{kill} kills ({in_catch_up} in catch-up, {in_rebuild} in rebuilds) in {:?}",
        started.elapsed()
    );
}

/// A child running `child_projects_and_rebuilds` on `dir`, started: it has the database open.
struct Child {
    process: std::process::Child,
    /// Gets how long after `started` the child printed `caught-up`.
    caught_up: std::sync::mpsc::Receiver<Duration>,
    lines: std::thread::JoinHandle<bool>,
}

impl Child {
    fn spawn(dir: &Path) -> Child {
        let mut process = Process::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "projection::rebuild::child_projects_and_rebuilds",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (caught_up_tx, caught_up) = std::sync::mpsc::channel();
        let lines = std::thread::spawn(move || {
            let (mut started, mut caught_up) = (None, false);
            // (libtest prints "test <name> ... " before the child's first line, on that line.)
            // Read to the end, so that the child never writes to a closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.ends_with("started") {
                    started = Some(Instant::now());
                    let _ = started_tx.send(());
                }
                if line.ends_with("caught-up") {
                    caught_up = true;
                    let _ = caught_up_tx.send(started.map_or(Duration::ZERO, |s| s.elapsed()));
                }
            }
            caught_up
        });
        started_rx.recv_timeout(WAIT).expect("the child starts");
        Child { process, caught_up, lines }
    }

    /// Kills the child with SIGKILL; returns whether it had caught up by then.
    fn kill(mut self) -> bool {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        self.lines.join().unwrap()
    }
}
