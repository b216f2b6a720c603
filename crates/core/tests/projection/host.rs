//! One host for several projections: every read model built on one host (with odd batch
//! boundaries, and with two of them joining later from position 0 next to two caught up)
//! equals the same read model built alone by its own worker; a projection that fails in the
//! middle of a batch stops the host and leaves every hosted projection, model and checkpoint,
//! as it was before the batch. (A kill -9 of a host mid-batch is in `rebuild.rs`.)

use std::path::Path;
use std::sync::Arc;

use orderly_core::Position;
use orderly_core::domain::{CustomerId, Event};
use orderly_core::engine::{CommittedEvent, ManualClock};
use orderly_core::node::{LOG_DIR, Node, NodeConfig, READ_MODELS_FILE};
use orderly_core::projection::{
    self, Binding, CustomersProjection, Hosted, InventoryProjection, KpiProjection,
    OrdersProjection, Projection, ProjectionError, ProjectionHost, ProjectionWorker, Rows, Stage,
    WaitError, WorkerConfig,
};
use redb::{Database, TableDefinition};

use super::rebuild::{numbered_orders, orders};
use super::{START, WAIT, dump, open_engine, order_id, tenant};

const TENANTS: [&str; 2] = ["acme", "globex"];

/// Every row of the four read models, and every checkpoint.
fn everything(db: &Database) -> impl PartialEq + std::fmt::Debug {
    let per_tenant: Vec<_> = TENANTS
        .iter()
        .map(|t| {
            let customer = CustomerId::new("c-1").unwrap();
            let page =
                projection::orders_of_customer(db, &tenant(t), &customer, None, 10_000).unwrap();
            (page, projection::kpis(db, &tenant(t), 0, u64::MAX).unwrap())
        })
        .collect();
    let checkpoints: Vec<_> = ["inventory", "orders", "orders_by_customer", "sales_kpis"]
        .map(|name| projection::checkpoint(db, name).unwrap())
        .into();
    (dump(db, &TENANTS), per_tenant, projection::order_status_counts(db).unwrap(), checkpoints)
}

fn new_db(dir: &std::path::Path, name: &str) -> Arc<Database> {
    Arc::new(projection::open_db(&dir.join(name)).unwrap())
}

#[test]
fn every_model_on_one_host_equals_each_built_alone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    orders(&engine, 60, 4);
    let log = engine.log();
    let odd = WorkerConfig { max_batch: 7, ..WorkerConfig::default() };

    // Two models first; then all four, two of them from position 0 next to two caught up,
    // while more orders come in a minute later.
    let hosted = new_db(dir.path(), "hosted.redb");
    let two: Vec<Hosted> = vec![InventoryProjection.into(), OrdersProjection.into()];
    let host = ProjectionHost::start(hosted.clone(), log.clone(), two, odd.clone()).unwrap();
    for projection in host.projections() {
        projection.wait_for(log.head(), WAIT).unwrap();
    }
    host.stop().unwrap();
    let four: Vec<Hosted> = vec![
        InventoryProjection.into(),
        OrdersProjection.into(),
        CustomersProjection.into(),
        KpiProjection.into(),
    ];
    let host = ProjectionHost::start(hosted.clone(), log.clone(), four, odd).unwrap();
    clock.advance(60_000);
    numbered_orders(&engine, 1_000, 30, 2);
    for projection in host.projections() {
        projection.wait_for(log.head(), WAIT).unwrap();
        assert_eq!(projection.lag(), 0);
        assert_eq!(projection.lag_time(), std::time::Duration::ZERO);
    }
    host.stop().unwrap();

    let alone = new_db(dir.path(), "alone.redb");
    let start = |projection: Hosted| {
        ProjectionHost::start(alone.clone(), log.clone(), vec![projection], WorkerConfig::default())
            .unwrap()
    };
    let hosts = [
        start(InventoryProjection.into()),
        start(OrdersProjection.into()),
        start(CustomersProjection.into()),
        start(KpiProjection.into()),
    ];
    for host in hosts {
        host.projections()[0].wait_for(log.head(), WAIT).unwrap();
        host.stop().unwrap();
    }
    assert_eq!(everything(&hosted), everything(&alone));
    assert_eq!(projection::checkpoint(&hosted, "sales_kpis").unwrap(), log.head());
    engine.shutdown();
}

/// A projection that records the positions it sees and fails at one of them.
#[derive(Clone, Copy)]
struct FailingAt(u64);

const SEEN: TableDefinition<'static, u64, ()> = TableDefinition::new("seen");

impl Projection for FailingAt {
    type Tables<'s> = Rows<'s, u64, ()>;

    fn name(&self) -> &str {
        "failing"
    }

    fn tables(&self) -> Vec<String> {
        vec!["seen".to_owned()]
    }

    fn open<'s>(&self, stage: &'s Stage<'_>) -> Result<Self::Tables<'s>, ProjectionError> {
        stage.table(SEEN)
    }

    fn apply(
        &self,
        table: &mut Self::Tables<'_>,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            if event.position.0 >= self.0 && matches!(event.event, Event::Order { .. }) {
                return Err(ProjectionError::Inconsistent {
                    position: event.position.0,
                    problem: "failing on purpose".into(),
                });
            }
            table.insert(event.position.0, ());
        }
        Ok(())
    }
}

#[test]
fn a_projection_failing_mid_batch_leaves_every_hosted_projection_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(START);
    let engine = open_engine(&dir.path().join("log"), &clock);
    orders(&engine, 20, 2);
    let log = engine.log();
    let db = new_db(dir.path(), "models.redb");
    let worker = ProjectionWorker::start(
        db.clone(),
        log.clone(),
        InventoryProjection,
        WorkerConfig::default(),
    )
    .unwrap();
    worker.wait_for(log.head(), WAIT).unwrap();
    worker.stop().unwrap();
    let before = (dump(&db, &TENANTS), projection::checkpoint(&db, "inventory").unwrap());

    numbered_orders(&engine, 1_000, 20, 2);
    let head = log.head();
    // One batch holds everything from 0 to the head: the failing projection starts at 0.
    let hosted: Vec<Hosted> = vec![InventoryProjection.into(), FailingAt(head.0 / 2).into()];
    let host =
        ProjectionHost::start(db.clone(), log.clone(), hosted, WorkerConfig::default()).unwrap();
    for projection in host.projections() {
        match projection.wait_for(head, WAIT) {
            Err(WaitError::Stopped { cause, .. }) => assert!(cause.contains("failing on purpose")),
            other => panic!("{}: {other:?}", projection.name()),
        }
        assert_eq!(
            projection.reached(),
            if projection.name() == "failing" { orderly_core::Position(0) } else { before.1 }
        );
    }
    assert!(matches!(host.stop(), Err(ProjectionError::Inconsistent { .. })));
    assert_eq!((dump(&db, &TENANTS), projection::checkpoint(&db, "inventory").unwrap()), before);
    assert_eq!(projection::checkpoint(&db, "failing").unwrap(), orderly_core::Position(0));
    engine.shutdown();
}

/// A read model that applied records its log no longer holds (here the log is put back to an
/// older copy; recovery cutting a tail does the same) is refused by a host, and rebuilt from
/// the log by a node before it serves: its counts are those of the log it has, and the
/// positions written next reach it.
#[test]
fn a_read_model_ahead_of_its_log_is_refused_by_a_host_and_rebuilt_by_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let (data, older) = (dir.path().join("data"), dir.path().join("older-log"));
    let clock = ManualClock::at(START);
    let config = || node_config(&clock);
    let node = Node::open(&data, config()).unwrap();
    orders(node.engine(), 5, 1);
    caught_up(&node);
    assert_eq!(placed(node.read_models()), 10, "five orders in each of two tenants");
    node.shutdown().unwrap();
    copy_dir(&data.join(LOG_DIR), &older);

    let node = Node::open(&data, config()).unwrap();
    super::rebuild::numbered_orders(node.engine(), 5, 5, 1);
    caught_up(&node);
    assert_eq!(placed(node.read_models()), 20);
    node.shutdown().unwrap();
    std::fs::remove_dir_all(data.join(LOG_DIR)).unwrap();
    copy_dir(&older, &data.join(LOG_DIR));

    {
        let engine = open_engine(&data.join(LOG_DIR), &clock);
        let db = Arc::new(projection::open_db(&data.join(READ_MODELS_FILE)).unwrap());
        let hosted: Vec<Hosted> = vec![OrdersProjection.into()];
        match ProjectionHost::start(db, engine.log(), hosted, WorkerConfig::default()) {
            Err(ProjectionError::AheadOfLog { name, checkpoint, head }) => {
                assert_eq!(name, "orders");
                assert!(checkpoint > head, "{checkpoint} > {head}");
            }
            other => panic!("a host must refuse a read model ahead of its log: {other:?}"),
        }
    }

    let node = Node::open(&data, config()).unwrap();
    caught_up(&node);
    assert_eq!(placed(node.read_models()), 10, "only the orders of the log it has");
    super::rebuild::numbered_orders(node.engine(), 100, 1, 1);
    caught_up(&node);
    assert_eq!(placed(node.read_models()), 12, "the records written next reach it");
    node.shutdown().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Orders of every tenant and status in the orders read model.
fn placed(db: &Database) -> u64 {
    projection::order_status_counts(db).unwrap().iter().map(|(_, _, n)| n).sum()
}

fn caught_up(node: &Node) {
    for projection in node.projections() {
        projection.wait_for(node.engine().head(), WAIT).unwrap();
    }
}

fn node_config(clock: &ManualClock) -> NodeConfig {
    NodeConfig {
        engine: orderly_core::engine::Config {
            clock: Arc::new(clock.clone()),
            ..orderly_core::engine::Config::default()
        },
        ..NodeConfig::default()
    }
}

/// Read models kept while the log was put back from another data folder's copy, which holds
/// more records than they were built from, are refused by a host (their checkpoints' positions
/// alone would pass) and built again by a node from the log it has.
#[test]
fn read_models_built_from_another_log_are_refused_by_a_host_and_rebuilt_by_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let (data, other) = (dir.path().join("data"), dir.path().join("other"));
    let clock = ManualClock::at(START);
    let node = Node::open(&data, node_config(&clock)).unwrap();
    numbered_orders(node.engine(), 0, 5, 1);
    caught_up(&node);
    assert_eq!(placed(node.read_models()), 10, "five orders in each of two tenants");
    bound_to_its_log(&node);
    node.shutdown().unwrap();
    let node = Node::open(&other, node_config(&clock)).unwrap();
    numbered_orders(node.engine(), 100, 8, 1);
    node.shutdown().unwrap();
    std::fs::remove_dir_all(data.join(LOG_DIR)).unwrap();
    copy_dir(&other.join(LOG_DIR), &data.join(LOG_DIR));

    {
        let engine = open_engine(&data.join(LOG_DIR), &clock);
        let db = Arc::new(projection::open_db(&data.join(READ_MODELS_FILE)).unwrap());
        let checkpoint = projection::checkpoint(&db, OrdersProjection.name()).unwrap();
        assert!(checkpoint <= engine.head(), "{checkpoint:?} is within the log");
        let hosted: Vec<Hosted> = vec![OrdersProjection.into()];
        match ProjectionHost::start(db, engine.log(), hosted, WorkerConfig::default()) {
            Err(ProjectionError::OtherLog { bound, why }) => {
                assert_eq!(Position(bound.head), checkpoint, "bound where the models are");
                assert!(why.contains("another chain hash"), "{why}");
            }
            other => panic!("a host must refuse read models of another log: {other:?}"),
        }
        // A rebuild of them all that stops after its first read model (a crash, a full disk)
        // leaves the others of the other log: the database stays refused until one finishes.
        let db = Arc::new(projection::open_db(&data.join(READ_MODELS_FILE)).unwrap());
        let log = engine.log();
        let stopped = projection::binding::rebuild_all(&db, &log, || {
            projection::rebuild(&db, &log, &InventoryProjection, &WorkerConfig::default())?;
            Err(ProjectionError::Corrupt("stopped half way".to_owned()))
        });
        assert!(stopped.is_err());
        match projection::binding::check(&db, &log).unwrap() {
            Binding::Broken { why, .. } => assert!(why.contains("did not finish"), "{why}"),
            other => panic!("a rebuild that stopped half way vouches for nothing: {other:?}"),
        }
    }

    let node = Node::open(&data, node_config(&clock)).unwrap();
    caught_up(&node);
    let db = node.read_models();
    assert_eq!(placed(db), 16, "only the orders of the log it has");
    assert!(projection::order(db, &tenant("acme"), &order_id("o-100")).unwrap().is_some());
    assert!(projection::order(db, &tenant("acme"), &order_id("o-0")).unwrap().is_none());
    bound_to_its_log(&node);
    node.shutdown().unwrap();
}

/// Waits (bounded) until `node`'s read models are bound to its log: the binding is written
/// with the commit after the batch that reached the head, which comes after it is published.
fn bound_to_its_log(node: &Node) {
    let log = node.engine().log();
    let started = std::time::Instant::now();
    loop {
        match projection::binding::check(node.read_models(), &log).unwrap() {
            Binding::Holds => return,
            other if started.elapsed() > WAIT => panic!("not bound to its log: {other:?}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

/// A read models' file that is not one (damaged, or something else under its name) stops a
/// node's open with an error that names the file and says it can be rebuilt from the log; once
/// it is moved away, the node opens and builds it again.
#[test]
fn a_damaged_read_models_file_is_named_and_rebuilt_once_moved_away() {
    use orderly_core::node::NodeError;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), NodeConfig::default()).unwrap();
    orders(node.engine(), 3, 1);
    node.shutdown().unwrap();
    let file = dir.path().join(READ_MODELS_FILE);
    std::fs::write(&file, b"not a redb file at all, but long enough to be read as one").unwrap();
    match Node::open(dir.path(), NodeConfig::default()) {
        Err(error @ NodeError::ReadModels { .. }) => {
            let message = error.to_string();
            assert!(message.contains(READ_MODELS_FILE), "{message}");
            assert!(message.contains("derived from the log"), "{message}");
        }
        Err(other) => panic!("expected the read models' file to be named: {other}"),
        Ok(_) => panic!("a damaged read models' file opened"),
    }
    std::fs::rename(&file, dir.path().join("damaged.redb")).unwrap();
    let node = Node::open(dir.path(), NodeConfig::default()).unwrap();
    for projection in node.projections() {
        projection.wait_for(node.engine().head(), WAIT).unwrap();
    }
    let placed: u64 = projection::order_status_counts(node.read_models())
        .unwrap()
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(placed, 6, "three orders in each of two tenants, from the log");
    node.shutdown().unwrap();
}

/// A node keeps its log in `{data}/log`, an engine in its own folder: each refuses the other's
/// folder, which it would otherwise take for a new one and start empty beside the records.
#[test]
fn a_node_and_an_engine_refuse_each_others_folder() {
    use orderly_core::engine::{Engine, OpenEngineError};
    use orderly_core::node::NodeError;
    let data = tempfile::tempdir().unwrap();
    let node = Node::open(data.path(), NodeConfig::default()).unwrap();
    orders(node.engine(), 1, 1);
    let head = node.engine().head();
    node.shutdown().unwrap();
    match Engine::open(data.path(), orderly_core::engine::Config::default()) {
        Err(error @ OpenEngineError::NodeFolder { .. }) => {
            let message = error.to_string();
            assert!(message.contains("Node::open"), "{message}");
        }
        other => panic!("an engine on a node's data folder is refused, got {other:?}"),
    }

    let log = data.path().join(LOG_DIR);
    match Node::open(&log, NodeConfig::default()) {
        Err(error @ NodeError::LogFolder { .. }) => {
            assert!(error.to_string().contains("holds a log itself"), "{error}");
        }
        Err(other) => panic!("a node on a log's folder is refused as one, got {other}"),
        Ok(_) => panic!("a node opened on a log's folder"),
    }
    assert!(!log.join(LOG_DIR).exists(), "no second log was started inside the first");
    let engine = Engine::open(&log, orderly_core::engine::Config::default()).unwrap();
    assert_eq!(engine.head(), head, "the engine opens the node's log on its folder");
}
