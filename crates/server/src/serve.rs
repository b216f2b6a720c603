//! `orderly serve`: the listener, first-start setup and graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use orderly_core::domain::TenantId;
use orderly_core::node::{LOG_DIR, READ_MODELS_FILE};
use orderly_core::store::Log;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::app::{App, ServerConfig, Shared};
use crate::tenants::{self, TENANTS_FILE};

/// The tenant a fresh data folder starts with.
pub const DEMO_TENANT: &str = "demo";

/// Serves on `listen` until SIGTERM or Ctrl-C, then closes cleanly: stops accepting, lets
/// requests in flight finish, answers every admitted command and closes the log.
pub async fn serve(config: ServerConfig, listen: SocketAddr) -> anyhow::Result<()> {
    // The log is opened after the listener starts (recovery may take a while, and /readyz
    // tells when it is done); a folder another server holds is refused before announcing
    // anything.
    refuse_a_log_folder(&config.data)?;
    refuse_a_held_folder(&config.data)?;
    // Bound before anything is written: a start that cannot listen (the port is taken) leaves
    // a new folder as it found it, with no demo tenant the operator did not ask for.
    let listener =
        TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let demo_token = first_start(&config.data)?;
    let app = App::new(config)?;
    if app.tenants().names().is_empty() {
        tracing::warn!(
            "the tenants file names no tenant (all revoked?): every request is refused until `orderly tenant add NAME`"
        );
    }
    let address = listener.local_addr()?;
    tracing::info!("listening on http://{address}");
    let token_file = app.config().data.join(format!("{DEMO_TENANT}.token"));
    // A demo token revoked since is no link to show.
    let demo_token = demo_token.filter(|token| app.tenants().authenticate(token).is_some());
    match demo_token {
        // On loopback (a developer's machine, the default) the demo's link is printed whole;
        // listening for others, no token goes to logs that a log collector may ship away.
        Some(token) if address.ip().is_loopback() => tracing::info!(
            "dashboard: http://{address}/#token={token}  (API: `Authorization: Bearer {token}`; \
             the token of tenant {DEMO_TENANT} is in {})",
            token_file.display()
        ),
        Some(_) => tracing::info!(
            "dashboard: http://{address}/#token=<the token in {}>",
            token_file.display()
        ),
        None => tracing::info!("dashboard: http://{address}/ (paste a tenant's token)"),
    }

    let (failed_tx, mut failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let opening = app.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        // A panic while opening is a bug, but it must stop the server like any failure to
        // open: a process that lives on, never ready, is never restarted by its supervisor.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| opening.open_node()))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("opening the data folder panicked")));
        match opened {
            Ok(()) => read_models_caught_up(&opening, started),
            Err(e) => drop(failed_tx.send(e)),
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let closing = app.clone();
    let mut signals = Signals::listen();
    let stopping = async move {
        tokio::select! {
            // A failed open is looked at first: a signal that comes with it must not turn the
            // failure into a clean exit.
            biased;
            Ok(error) = &mut failed_rx => {
                tracing::error!("cannot open the data folder: {}", crate::describe(&error));
                let _ = stop_tx.send(error);
            }
            _ = signals.next() => {
                if !closing.is_ready() {
                    // Nothing was accepted yet, and recovery cannot be stopped half-way but is
                    // made to survive a kill at any point: leave at once rather than make a
                    // supervisor wait for the whole replay, then kill the process anyway.
                    tracing::info!("stopped while recovering: nothing was accepted yet; exiting");
                    std::process::exit(0);
                }
                tracing::info!("shutting down (a second signal exits at once)");
                closing.begin_close();
                tokio::spawn(async move {
                    let status = signals.next().await;
                    // Every acknowledged command is durable: leaving now costs the snapshot
                    // (the next start replays more) and the answers still on their way.
                    tracing::warn!("second signal: exiting without finishing the shutdown");
                    std::process::exit(status);
                });
            }
        }
        let _ = began_tx.send(());
    };
    let idle = app.config().idle_timeout;
    let serving = crate::connections::serve(listener, app.router(), idle, stopping);
    // A client that stopped reading (a suspended laptop, a lost network) would hold its
    // connection, and the engine's shutdown behind it, until TCP gives up: the connections
    // get a grace period, then the server closes without them. Commands the engine took are
    // answered by its shutdown all the same.
    let grace = async {
        if began_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = serving => {}
        () = grace => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} into the shutdown: closing without them");
        }
    }
    let app_closing = app.clone();
    let closed = tokio::task::spawn_blocking(move || app_closing.shutdown()).await?;
    match stop_rx.await {
        Ok(error) => Err(error),
        Err(_) => closed,
    }
}

/// Says when the server is ready: once the log is recovered and every read model has reached
/// the log's head as it was then (`/readyz`), which takes a while after a lost read models'
/// file. Polls on the thread that opened the node, holding the node only to look, so that a
/// stop meanwhile is not held up.
fn read_models_caught_up(app: &Shared, started: std::time::Instant) {
    let recovered = started.elapsed();
    let behind = || {
        let node = app.node().ok()?;
        // A read model that stopped is reported where it stops, and by /readyz.
        let stopped = node.projections().iter().any(|p| p.ended().is_some());
        let at_open = app.head_at_open().0;
        let behind = node.projections().iter().map(|p| at_open.saturating_sub(p.reached().0));
        (!stopped).then(|| behind.max().unwrap_or(0))
    };
    match behind() {
        Some(0) => return tracing::info!("ready: log recovered in {recovered:.1?}"),
        Some(records) => tracing::info!(
            records,
            "log recovered in {recovered:.1?}, taking commands; the read models are catching up with it (/readyz says ready once they have)"
        ),
        None => return,
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        match behind() {
            Some(0) => break,
            Some(_) => {}
            None => return,
        }
    }
    tracing::info!("ready: the read models caught up in {:.1?}", started.elapsed());
}

/// Refuses `data` when it is a log's own folder (`DATA/log` given for `DATA`): a new store
/// would be made inside it, and would hide the log from the audit commands.
pub fn refuse_a_log_folder(data: &Path) -> anyhow::Result<()> {
    let is_log =
        Log::is_log_folder(data).with_context(|| format!("cannot read {}", data.display()))?;
    if is_log {
        anyhow::bail!(
            "{} is a log's folder, not a data folder: give the folder that holds it",
            data.display()
        );
    }
    Ok(())
}

/// Refuses the data folder `data` when another process holds its log (a server running on
/// it): for the programs that need the folder to themselves.
pub fn refuse_a_held_folder(data: &Path) -> anyhow::Result<()> {
    let log = data.join(LOG_DIR);
    if Log::held_elsewhere(&log).with_context(|| format!("cannot check {}", log.display()))? {
        anyhow::bail!(
            "the data folder {} is in use by another process (is a server running on it?)",
            data.display()
        );
    }
    Ok(())
}

/// How long open connections get to finish once the server starts shutting down: half of the
/// 10 s a container runtime gives by default (Docker's) before it kills, so that the engine's
/// stop and snapshot usually fit after it. (A request still holding the node then, as a
/// `min_position` wait, is given up to `read_wait` + 5 s more: a stop can take longer.)
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// On a data folder without tenants, creates the demo tenant and writes its token to
/// `<data>/demo.token`. Returns the demo token when its file exists.
///
/// A tenants file that gives no tenant a token counts as none: a first start cut short
/// between creating it and finishing the demo's line leaves one, and starts over. A folder that was
/// served before (it holds the read models, which only a server or `orderly rebuild` makes)
/// and has no tenants lost its tenants file: a new demo tenant would leave every other
/// tenant's token refused without a word, so the start is refused, saying what to do. A log
/// without read models is a folder no server made (`orderly bench --data`): its first start
/// makes the demo tenant, and says that the log's tenants have no token yet.
fn first_start(data: &Path) -> anyhow::Result<Option<String>> {
    let token_file = data.join(format!("{DEMO_TENANT}.token"));
    let tenants_file = data.join(TENANTS_FILE);
    let has_tenants = !tenants::Tenants::open(data)?.names().is_empty();
    if !has_tenants {
        if data.join(READ_MODELS_FILE).exists() {
            anyhow::bail!(
                "{} is missing or gives no tenant a token, though this data folder was served before \
                 (it holds {READ_MODELS_FILE}): no tenant's token would be accepted. Put it back \
                 (from a backup of the folder), or add the tenants again with \
                 `orderly tenant add NAME` (each gets a new token) before starting",
                tenants_file.display(),
            );
        }
        if data.join(LOG_DIR).is_dir() {
            tracing::warn!(
                "no tenants file beside the log: the tenants its events name get a token with `orderly tenant add NAME`"
            );
        }
        // The token's file first: a crash before the tenant's line is added leaves a tenants
        // file without one, so the next start makes both again (in the other order, a crash
        // between would leave a demo tenant whose token nobody has).
        let demo = TenantId::new(DEMO_TENANT)?;
        tenants::add_with(data, &demo, |token| tenants::write_token_file(&token_file, token))?;
        tracing::info!("created tenant {DEMO_TENANT}; its token is in {}", token_file.display());
    }
    match std::fs::read_to_string(&token_file) {
        Ok(token) => Ok(Some(token.trim().to_owned())),
        Err(_) => Ok(None),
    }
}

/// SIGTERM and SIGINT (Ctrl-C), listened to from the start and for the whole run, so that no
/// signal falls between two listeners.
struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl Signals {
    fn listen() -> Signals {
        let listen = |kind| {
            signal(kind)
                .inspect_err(|e| tracing::warn!("cannot listen to a signal ({kind:?}): {e}"))
                .ok()
        };
        Signals {
            terminate: listen(SignalKind::terminate()),
            interrupt: listen(SignalKind::interrupt()),
        }
    }

    /// The next signal's conventional exit status: 143 for SIGTERM, 130 for SIGINT.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            Some(()) = received(&mut self.terminate) => 143,
            Some(()) = received(&mut self.interrupt) => 130,
            else => std::future::pending().await,
        }
    }
}

/// The next delivery of `signal`; never, without a listener.
async fn received(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
