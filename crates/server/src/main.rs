//! `orderly`: the order server and its command-line tool.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use orderly_core::domain::TenantId;
use orderly_server::app::{
    DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONCURRENT, DEFAULT_TENANT_RATE, ServerConfig,
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
    /// Drive a running server with a seeded Black Friday mix; prints a JSON line of figures.
    Load(LoadArgs),
    /// A hello-world HTTP server: the baseline `orderly load --hello` measures.
    #[command(hide = true)]
    HelloServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The server, as `http://HOST:PORT`.
    #[arg(long, env = "ORDERLY_TARGET", default_value = "http://127.0.0.1:8080")]
    target: String,
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
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ORDERLY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The data folder (created if missing).
    #[arg(long, env = "ORDERLY_DATA", default_value = "./data")]
    data: PathBuf,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ORDERLY_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, env = "ORDERLY_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout: u64,
    /// Requests in progress at once; more wait.
    #[arg(long, env = "ORDERLY_MAX_CONCURRENT", default_value_t = DEFAULT_MAX_CONCURRENT)]
    max_concurrent: usize,
    /// Requests per second per tenant (0: no limit).
    #[arg(long, env = "ORDERLY_TENANT_RATE", default_value_t = DEFAULT_TENANT_RATE)]
    tenant_rate: u32,
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => {
            init_logging();
            let mut config = ServerConfig::new(args.data);
            config.body_limit = args.body_limit;
            config.request_timeout = Duration::from_secs(args.request_timeout.max(1));
            config.max_concurrent = args.max_concurrent.max(1);
            config.tenant_rate = std::num::NonZeroU32::new(args.tenant_rate);
            config.node.payments = Some(orderly_server::app::simulated_payments());
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve::serve(config, args.listen))
        }
        Commands::Load(args) => {
            init_logging();
            let config = LoadConfig {
                target: resolve(&args.target)?,
                token: args.token,
                orders: args.orders,
                concurrency: args.concurrency,
                seed: args.seed,
                hello: args.hello,
                progress: true,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(load::run(config))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Commands::HelloServer { listen } => {
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(load::hello_server(listen))
        }
        Commands::Tenant(TenantCommand::Add { name, data }) => {
            let name = TenantId::new(&name)?;
            let token = tenants::add(&data, &name)?;
            println!("{token}");
            Ok(())
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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
