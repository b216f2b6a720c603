//! A running orderly: the engine, the read models it feeds and the payments process, opened
//! together on one data folder. The order server hosts one; an embedding program may too.
//!
//! ```text
//! <data>/log/                segment files: the source of truth (orderly-store)
//! <data>/read-models.redb    projections' tables and checkpoints, derived from the log
//! <data>/payments.checkpoint where the payments process's money movements are settled
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use orderly_store::LogReader;
use redb::Database;

use crate::engine::{self, Engine, OpenEngineError};
use crate::payments::Router;
use crate::process::{MoneyNotMoved, PaymentProcess};
use crate::projection::{
    self, Binding, CustomersProjection, Hosted, InventoryProjection, KpiProjection,
    OpenHoldsProjection, OrdersProjection, ProjectionError, ProjectionHandle, ProjectionHost,
    Rebuilt, WorkerConfig,
};

/// The folder of the log inside a data folder.
pub const LOG_DIR: &str = "log";
/// The read-model database inside a data folder.
pub const READ_MODELS_FILE: &str = "read-models.redb";
/// The payments process's checkpoint inside a data folder.
pub const PAYMENTS_CHECKPOINT_FILE: &str = "payments.checkpoint";

/// The read models a node keeps, all on one projection host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadModel {
    /// Stock levels per SKU ([`projection::inventory()`]).
    Inventory,
    /// Order views and status counts ([`projection::order()`]).
    Orders,
    /// Orders by customer ([`projection::orders_of_customer()`]).
    Customers,
    /// Sales figures per minute ([`projection::kpis()`]).
    Kpi,
    /// Units held per tenant ([`projection::open_holds()`]).
    Holds,
}

impl ReadModel {
    /// The name of the read model's projection (its checkpoint name).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Inventory => "inventory",
            ReadModel::Orders => "orders",
            ReadModel::Customers => "orders_by_customer",
            ReadModel::Kpi => "sales_kpis",
            ReadModel::Holds => "open_holds",
        }
    }

    /// The read model whose projection is named `name`.
    #[must_use]
    pub fn named(name: &str) -> Option<ReadModel> {
        ReadModel::ALL.into_iter().find(|model| model.name() == name)
    }

    /// Every read model, in the order of [`Node::projections`].
    pub const ALL: [ReadModel; 5] = [
        ReadModel::Inventory,
        ReadModel::Orders,
        ReadModel::Customers,
        ReadModel::Kpi,
        ReadModel::Holds,
    ];
}

/// How a node is set up.
#[derive(Clone, Debug, Default)]
pub struct NodeConfig {
    /// The engine's settings.
    pub engine: engine::Config,
    /// How the projection host batches.
    pub workers: WorkerConfig,
    /// Where payments go; `None` runs no payments process (orders then stay placed until
    /// something else authorizes them).
    pub payments: Option<Arc<Router>>,
}

/// Why a node did not open or did not close cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The data folder could not be created.
    #[error("cannot create the data folder {path}: {source}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The folder given holds a log itself (an engine's folder, or a node's `log` folder): a
    /// node opened on it would start a second, empty log inside it.
    #[error(
        "{} holds a log itself, it is not a node's data folder: give the folder that holds it, or open an Engine on it",
        path.display()
    )]
    LogFolder {
        /// The folder given.
        path: PathBuf,
    },
    /// The engine did not open.
    #[error(transparent)]
    Engine(#[from] OpenEngineError),
    /// A projection failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The log failed while the node ran (a full or failing disk): it accepted no command
    /// since, and this stop wrote no snapshot. What it acknowledged is on the disk; the next
    /// start replays the log from the last snapshot written before (or from its start).
    #[error(
        "the log failed while running ({cause}): no command was accepted since, and this stop wrote no snapshot"
    )]
    LogFailed {
        /// The storage error.
        cause: String,
    },
    /// The read models' file did not open. It is derived from the log: moved away or
    /// deleted, it is built again from the log at the next start.
    #[error(
        "cannot open the read models in {path} ({source}); if the file is damaged: it is derived from the log, so moving it away and starting again rebuilds it"
    )]
    ReadModels {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ProjectionError,
    },
}

/// An open node. Dropping it without [`Node::shutdown`] still stops every thread.
#[derive(Debug)]
pub struct Node {
    engine: Engine,
    read_models: Arc<Database>,
    projections: Option<ProjectionHost>,
    /// Taken by the first stop ([`Node::stop_payments`], [`Node::shutdown`]).
    payments: Mutex<Option<PaymentProcess>>,
    workers: WorkerConfig,
}

impl Node {
    /// Opens the node on `data` (created if missing): recovers the log, replays it, starts the
    /// projection host with every read model, each from its checkpoint, and starts the payments
    /// process.
    pub fn open(data: &Path, config: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(data)
            .map_err(|source| NodeError::DataDir { path: data.to_path_buf(), source })?;
        let is_log = orderly_store::Log::is_log_folder(data)
            .map_err(|source| NodeError::DataDir { path: data.to_path_buf(), source })?;
        if is_log {
            return Err(NodeError::LogFolder { path: data.to_path_buf() });
        }
        let engine = Engine::open(&data.join(LOG_DIR), config.engine)?;
        report_recovery(&engine);
        let file = data.join(READ_MODELS_FILE);
        let read_models = projection::open_db(&file)
            .map_err(|source| NodeError::ReadModels { path: file.clone(), source })?;
        let read_models = Arc::new(read_models);
        // Read models built from records the log does not hold (the log was put back from
        // another copy) are all built again from the log first; so is one ahead of the log
        // (whose tail recovery cut, or which was restored from an older copy), whose rows show
        // records that are gone.
        let log = engine.log();
        let head = engine.head();
        match projection::binding::check(&read_models, &log)? {
            Binding::Broken { bound, why } => {
                tracing::warn!(
                    %bound,
                    %why,
                    "the read models do not match the log; rebuilding every one from the log"
                );
                projection::binding::rebuild_all(&read_models, &log, || {
                    for model in ReadModel::ALL {
                        rebuild(&read_models, &log, model, &config.workers)?;
                    }
                    Ok(())
                })?;
            }
            Binding::Holds | Binding::Unbound => {
                for model in ReadModel::ALL {
                    let reached = projection::checkpoint(&read_models, model.name())?;
                    if reached > head {
                        tracing::warn!(
                            model = model.name(),
                            reached = reached.0,
                            head = head.0,
                            "the read model is ahead of the log; rebuilding it from the log"
                        );
                        rebuild(&read_models, &log, model, &config.workers)?;
                    }
                }
            }
        }
        let hosted = ReadModel::ALL.map(|model| -> Hosted {
            match model {
                ReadModel::Inventory => InventoryProjection.into(),
                ReadModel::Orders => OrdersProjection.into(),
                ReadModel::Customers => CustomersProjection.into(),
                ReadModel::Kpi => KpiProjection.into(),
                ReadModel::Holds => OpenHoldsProjection.into(),
            }
        });
        // One thread reads and decodes the log once for every read model and commits one
        // transaction per batch for all of them.
        let host = ProjectionHost::start(
            read_models.clone(),
            engine.log(),
            hosted.into(),
            config.workers.clone(),
        )?;
        let projections = Some(host);
        let checkpoint = data.join(PAYMENTS_CHECKPOINT_FILE);
        let payments = config
            .payments
            .map(|router| PaymentProcess::start_checkpointed(engine.clone(), router, checkpoint));
        let workers = config.workers;
        let payments = Mutex::new(payments);
        Ok(Node { engine, read_models, projections, payments, workers })
    }

    /// The engine: execute commands here.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The read-model database: pass it to the queries of [`crate::projection`].
    #[must_use]
    pub fn read_models(&self) -> &Database {
        &self.read_models
    }

    /// The projection of `model`: for `wait_for` (read-your-writes) and its lag.
    #[must_use]
    pub fn projection(&self, model: ReadModel) -> &ProjectionHandle {
        let index = ReadModel::ALL.iter().position(|m| *m == model).unwrap_or_default();
        &self.projections()[index]
    }

    /// Every projection, in the order of [`ReadModel::ALL`].
    #[must_use]
    pub fn projections(&self) -> &[ProjectionHandle] {
        self.projections.as_ref().map_or(&[], ProjectionHost::projections)
    }

    /// Rebuilds `model` from position 0 of the log into a new generation of its tables while
    /// the current one keeps answering queries, then switches to it atomically (blue-green; see
    /// [`projection::rebuild()`]). Blocks until done.
    pub fn rebuild(&self, model: ReadModel) -> Result<Rebuilt, NodeError> {
        Ok(rebuild(&self.read_models, &self.engine.log(), model, &self.workers)?)
    }

    /// Money the log says moved and the gateways did not move, since the payments process
    /// started (`None` without one, or once it stopped).
    #[must_use]
    pub fn money_not_moved(&self) -> Option<MoneyNotMoved> {
        let payments = self.payments.lock().unwrap_or_else(PoisonError::into_inner);
        payments.as_ref().map(PaymentProcess::money_not_moved)
    }

    /// Stops the payments process (bounded: money movements in flight get a few seconds), for a
    /// caller that must close the engine under requests still holding the node.
    pub fn stop_payments(&self) {
        let payments = self.payments.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(payments) = payments {
            payments.stop();
        }
    }

    /// Stops in dependency order: the payments process (which sends commands), then the engine
    /// (answering every admitted command), then the projection host. Returns the log's failure,
    /// if it failed while the node ran, or else the projection error the host had stopped on.
    pub fn shutdown(mut self) -> Result<(), NodeError> {
        self.stop_payments();
        self.engine.shutdown();
        let stopped = self.projections.take().map_or(Ok(()), ProjectionHost::stop);
        self.log_failure()?;
        Ok(stopped?)
    }

    /// [`NodeError::LogFailed`] if the log failed while the node ran.
    pub fn log_failure(&self) -> Result<(), NodeError> {
        match self.engine.log().failure() {
            Some(cause) => Err(NodeError::LogFailed { cause }),
            None => Ok(()),
        }
    }
}

/// Tells the operator what opening the log found and did: what a crash left behind is cut or
/// removed there, and they should know it happened.
fn report_recovery(engine: &Engine) {
    let recovery = engine.recovery();
    if let Some(torn) = &recovery.torn_tail {
        tracing::warn!(
            segment = %torn.segment.display(),
            offset = torn.offset,
            bytes = torn.bytes,
            "cut a torn write at the end of the log (records never acknowledged)"
        );
    }
    if let Some(segment) = &recovery.removed_segment {
        tracing::warn!(segment = %segment.display(), "removed a segment whose creation did not finish (a crash, or a disk too full for it)");
    }
    if let Some(why) = &recovery.checkpoint_ignored {
        tracing::warn!(%why, "the log's checkpoint was ignored: the whole hash chain was verified");
    }
    tracing::info!(
        records = recovery.records,
        segments = recovery.segments,
        chain_verified_from = recovery.chain_verified_from,
        restored_from_snapshot_at = ?engine.restored_from().map(|p| p.0),
        "log opened"
    );
}

/// Rebuilds `model` in `db` from `log` (see [`Node::rebuild`]).
fn rebuild(
    db: &Arc<Database>,
    log: &LogReader,
    model: ReadModel,
    config: &WorkerConfig,
) -> Result<Rebuilt, ProjectionError> {
    match model {
        ReadModel::Inventory => projection::rebuild(db, log, &InventoryProjection, config),
        ReadModel::Orders => projection::rebuild(db, log, &OrdersProjection, config),
        ReadModel::Customers => projection::rebuild(db, log, &CustomersProjection, config),
        ReadModel::Kpi => projection::rebuild(db, log, &KpiProjection, config),
        ReadModel::Holds => projection::rebuild(db, log, &OpenHoldsProjection, config),
    }
}
