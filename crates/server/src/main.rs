//! `orderly`: the order server and its command-line tool.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod audit_cli;
use orderly_core::domain::TenantId;
use orderly_core::node::{Node, NodeConfig, ReadModel};
use orderly_server::app::{
    DEFAULT_BODY_LIMIT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT, DEFAULT_REQUESTS_PER_TENANT,
    DEFAULT_TENANT_RATE, ServerConfig,
};
use orderly_server::load::{self, LoadConfig};
use orderly_server::{serve, tenants};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "orderly",
    version,
    about = "Event-sourced order engine: inventory, orders and payments"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Run the order server (HTTP API, metrics, dashboard) on a data folder.
    Serve(ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Audit a data folder, read-only (works beside a running server): verify, digest,
    /// trace, reconcile.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Rebuild the state as of a position or a time and print inventory levels and order
    /// counts.
    Replay {
        /// The data folder (or a copy of its `log` folder).
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
        /// A log position (state before it) or an RFC 3339 time (state at it; without an
        /// offset, UTC).
        #[arg(long, allow_hyphen_values = true)]
        at: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild read models from the log (blue-green: the old ones answer until the switch).
    /// Runs on a data folder no server holds.
    Rebuild {
        /// The data folder.
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
        /// The read model; all when left out.
        #[arg(long, value_parser = read_model_parser())]
        projection: Option<ReadModel>,
    },
    /// Drive a running server with a seeded Black Friday mix; prints a JSON line of figures.
    Load(LoadArgs),
    /// Run a seeded Black Friday day through the embedded engine, durably, then check it
    /// (verify, reconcile, nothing oversold, every order there); last line JSON figures.
    Bench(orderly_server::bench::BenchArgs),
    /// A hello-world HTTP server: the baseline `orderly load --hello` measures.
    HelloServer {
        /// Address to listen on (`HOST:PORT`).
        #[arg(long, default_value = "127.0.0.1:8081", value_parser = listen_address)]
        listen: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The server, as `http://HOST:PORT` [default: http://127.0.0.1:8080, or
    /// http://127.0.0.1:8081, where `orderly hello-server` listens, with `--hello`].
    #[arg(long, env = "ORDERLY_TARGET")]
    target: Option<String>,
    /// A tenant's bearer token.
    #[arg(long, env = "ORDERLY_TOKEN")]
    token: String,
    /// Orders to place.
    #[arg(long, default_value_t = 100_000)]
    orders: u64,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seeds the mix: the same seed sends the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Send the placements to a hello-world server (`orderly hello-server`) instead.
    #[arg(long)]
    hello: bool,
    /// Placements due per second across all connections (open loop: a placement sent late
    /// counts from when it was due). Without it, each connection sends back to back.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate: Option<u32>,
    /// Seconds a request is sent again (shed with `Retry-After`, or its connection broken)
    /// before it counts as failed; any failed request makes the exit status 1.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    give_up_after: u64,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (`HOST:PORT`; a name such as `localhost` is resolved).
    #[arg(long, env = "ORDERLY_LISTEN", default_value = "127.0.0.1:8080",
          value_parser = listen_address)]
    listen: SocketAddr,
    /// The data folder (created if missing).
    #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
    data: PathBuf,
    /// Largest request body accepted, in bytes (at least 1 KiB: an order of a few lines
    /// takes a few hundred bytes).
    #[arg(long, env = "ORDERLY_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..))]
    body_limit: usize,
    /// Seconds a request may take: then it is answered `503 request_timeout` if nothing was
    /// done, `504 outcome_unknown` once the engine had taken its command.
    #[arg(long, env = "ORDERLY_REQUEST_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout: u64,
    /// Requests in progress at once; more wait.
    #[arg(long, env = "ORDERLY_MAX_CONCURRENT", default_value_t = DEFAULT_MAX_CONCURRENT,
          value_parser = permits())]
    max_concurrent: usize,
    /// Seconds a connection may be without a request under way (idle between requests, or
    /// with a request's headers unfinished) before it is closed.
    #[arg(long, env = "ORDERLY_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_IDLE_TIMEOUT))]
    idle_timeout: u64,
    /// Requests per second per tenant (0: no limit).
    #[arg(long, env = "ORDERLY_TENANT_RATE", default_value_t = DEFAULT_TENANT_RATE)]
    tenant_rate: u32,
    /// Requests each tenant may have in progress at once; more are answered 429.
    #[arg(long, env = "ORDERLY_REQUESTS_PER_TENANT", default_value_t = DEFAULT_REQUESTS_PER_TENANT,
          value_parser = permits())]
    requests_per_tenant: usize,
}

/// The longest `--idle-timeout`, a day: hyper adds it to the clock, which a value near 2^64
/// seconds overflows in every connection.
const MAX_IDLE_TIMEOUT: u64 = 86_400;

/// A count of requests let in at once: at least one, and at most what a semaphore can hold.
fn permits() -> clap::builder::RangedU64ValueParser<usize> {
    let most = u64::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u64::MAX);
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=most)
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check every record's checksum, the hash chain, positions, stream versions and payloads;
    /// exit 1 naming segment, byte offset and position of the first problem, 2 when the audit
    /// cannot run.
    Verify {
        /// The data folder (or a copy of its `log` folder).
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
        /// Also prove the log still extends this published digest (`POS:HASH`).
        #[arg(long, allow_hyphen_values = true)]
        digest: Option<String>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the head position and its chain hash (`POS:HASH`), to publish.
    Digest {
        /// The data folder (or a copy of its `log` folder).
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Every event of one order, its payments and its stock holds, in log order.
    Trace {
        /// The order.
        order: String,
        /// The data folder (or a copy of its `log` folder).
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
        /// Only this tenant's order of that id.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Recompute stock per SKU and money per currency from the events; exit 1 on any
    /// discrepancy.
    Reconcile {
        /// The data folder (or a copy of its `log` folder).
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its bearer token (shown only this once).
    Add {
        /// The tenant's name: 1 to 64 of A-Z a-z 0-9 . _ : -
        name: String,
        /// The data folder.
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
    },
    /// End a tenant's token (a running server refuses it within a second); its data stays,
    /// and `tenant add` gives it a new one.
    Revoke {
        /// The tenant's name.
        name: String,
        /// The data folder.
        #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
        data: PathBuf,
    },
}

fn main() -> ExitCode {
    orderly_core::engine::use_small_pages();
    // A rewritten log's broken invariant is reported by the audit or the engine, by name:
    // not printed besides as if the program had crashed.
    orderly_core::engine::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // An audit asked for JSON reads stdout even when its arguments are wrong.
            let args: Vec<String> = std::env::args().collect();
            let audit =
                args.get(1).is_some_and(|command| command == "audit" || command == "replay");
            if audit && args.iter().any(|arg| arg == "--json") && error.use_stderr() {
                // clap's message, up to its usage lines, on one line.
                let text = error.render().to_string();
                let said: Vec<&str> =
                    text.lines().take_while(|line| !line.is_empty()).map(str::trim).collect();
                audit_cli::cannot_run(said.join(" ").trim_start_matches("error: "));
            }
            error.exit();
        }
    };
    if !matches!(cli.command, Commands::Serve(_)) {
        // Like any Unix tool, end quietly when the reader of our output goes away
        // (`orderly audit trace … | head`), rather than panic on a failed print.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    // An audit that cannot run says nothing about the log: its own exit code, so that a cron
    // job tells a typo from a log that is not intact.
    let failure = match cli.command {
        Commands::Audit(_) | Commands::Replay { .. } => ExitCode::from(audit_cli::CANNOT_AUDIT),
        _ => ExitCode::FAILURE,
    };
    let json = cli.command.wants_json();
    match run(cli) {
        Ok(code) => code,
        // A program that asked for JSON reads stdout: it gets why in the same shape as an
        // audit that ran and failed.
        Err(error) if json => {
            audit_cli::cannot_run(&orderly_server::describe(&error));
            failure
        }
        Err(error) => {
            eprintln!("error: {}", orderly_server::describe(&error));
            failure
        }
    }
}

impl Commands {
    /// Whether the command was asked for one JSON object on stdout.
    fn wants_json(&self) -> bool {
        match self {
            Commands::Audit(
                AuditCommand::Verify { json, .. }
                | AuditCommand::Digest { json, .. }
                | AuditCommand::Trace { json, .. }
                | AuditCommand::Reconcile { json, .. },
            )
            | Commands::Replay { json, .. } => *json,
            _ => false,
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Commands::Serve(args) => {
            init_logging();
            let mut config = ServerConfig::new(args.data);
            config.body_limit = args.body_limit;
            config.request_timeout = Duration::from_secs(args.request_timeout);
            config.idle_timeout = Duration::from_secs(args.idle_timeout);
            config.max_concurrent = args.max_concurrent;
            config.tenant_rate = std::num::NonZeroU32::new(args.tenant_rate);
            config.requests_per_tenant = args.requests_per_tenant;
            config.simulated_gateways = true;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve::serve(config, args.listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Audit(command) => match command {
            AuditCommand::Verify { data, digest, json } => {
                audit_cli::existing(&data)?;
                audit_cli::verify(&data, digest.as_deref(), json)
            }
            AuditCommand::Digest { data, json } => {
                audit_cli::existing(&data)?;
                audit_cli::digest(&data, json)
            }
            AuditCommand::Trace { order, data, tenant, json } => {
                audit_cli::existing(&data)?;
                audit_cli::trace(&data, &order, tenant.as_deref(), json)
            }
            AuditCommand::Reconcile { data, json } => {
                audit_cli::existing(&data)?;
                audit_cli::reconcile(&data, json)
            }
        },
        Commands::Rebuild { data, projection } => {
            audit_cli::existing(&data)?;
            // Opening a folder with no log would start an empty one there (a mistyped --data).
            if !data.join(orderly_core::node::LOG_DIR).is_dir() {
                anyhow::bail!("{} is not a data folder: it holds no log", data.display());
            }
            rebuild(&data, projection)
        }
        Commands::Replay { data, at, tenant, json } => {
            audit_cli::existing(&data)?;
            audit_cli::replay(&data, &at, tenant.as_deref(), json)
        }
        Commands::Load(args) => {
            init_logging();
            let config = LoadConfig {
                target: resolve(args.target.as_deref().unwrap_or(if args.hello {
                    "http://127.0.0.1:8081"
                } else {
                    "http://127.0.0.1:8080"
                }))?,
                token: args.token,
                orders: args.orders,
                concurrency: args.concurrency,
                seed: args.seed,
                hello: args.hello,
                rate: args.rate,
                give_up_after: Duration::from_secs(args.give_up_after),
                progress: true,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(load::run(config))?;
            println!("{}", serde_json::to_string(&report)?);
            if report.failed > 0 {
                eprintln!("error: {} requests were not answered", report.failed);
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Commands::Bench(args) => orderly_server::bench::main(args),
        Commands::HelloServer { listen } => {
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(load::hello_server(listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Tenant(TenantCommand::Add { name, data }) => {
            init_logging();
            let name = TenantId::new(&name)?;
            tenants::add_with(&data, &name, |token| {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{token}")
                    .and_then(|()| out.flush())
                    .context("cannot show the new token, so the tenant was not added")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Tenant(TenantCommand::Revoke { name, data }) => {
            init_logging();
            tenants::revoke(&data, &TenantId::new(&name)?)?;
            eprintln!("revoked the token of tenant {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours for a terminal only: a log file or a collector gets plain text.
    let colours = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .init();
}

/// The address to listen on for `HOST:PORT`: an IP address as it is, a name resolved (its
/// IPv4 address first, as the default `127.0.0.1` is).
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let addresses: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("not HOST:PORT, or HOST does not resolve ({e})"))?
        .collect();
    let first = addresses.iter().find(|a| a.is_ipv4()).or(addresses.first());
    first.copied().ok_or_else(|| format!("{text} resolves to no address"))
}

/// The address of `http://HOST:PORT` (or of `HOST:PORT`).
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let authority = target.strip_prefix("http://").unwrap_or(target).trim_end_matches('/');
    authority
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{target} resolves to no address"))
}

/// A read model named on the command line: one of [`ReadModel::ALL`]'s names, which `--help`
/// lists (another is a usage error, exit 2).
fn read_model_parser() -> impl clap::builder::TypedValueParser<Value = ReadModel> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(ReadModel::ALL.map(ReadModel::name))
        .map(|name: String| ReadModel::named(&name).expect("one of the names offered"))
}

/// `orderly rebuild`: each read model rebuilt from position 0 and switched to atomically.
fn rebuild(data: &std::path::Path, projection: Option<ReadModel>) -> anyhow::Result<ExitCode> {
    let models = projection.map_or_else(|| ReadModel::ALL.to_vec(), |model| vec![model]);
    serve::refuse_a_held_folder(data)?;
    let node = Node::open(data, NodeConfig::default())
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", data.display()))?;
    for model in models {
        let started = std::time::Instant::now();
        // Said before it starts: a rebuild of a big log takes a while.
        eprintln!("rebuilding {} from the log's {} records…", model.name(), node.engine().head().0);
        let rebuilt = node.rebuild(model)?;
        println!(
            "rebuilt {} up to position {} in {:.1?} (generation {} replaces {})",
            model.name(),
            rebuilt.position,
            started.elapsed(),
            rebuilt.generation.0,
            rebuilt.replaced.0
        );
    }
    node.shutdown()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listen_address_may_name_its_host() {
        let local = super::listen_address("localhost:8080").expect("resolved");
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        assert_eq!(super::listen_address("[::1]:9").expect("an address").port(), 9);
        assert!(super::listen_address("8080").is_err(), "a port alone is no address");
    }
}
