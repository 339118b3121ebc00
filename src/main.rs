//! The `longhaul` binary: one program, several roles (see `longhaul --help`).
//! Each subcommand lives in `commands/`; benchmark programs in `bench/`.

mod api_client;
mod bench;
mod commands;
#[cfg(feature = "otel")]
mod otel;
mod runtime;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "longhaul",
    version,
    about = "Multi-tenant platform for long-running operations",
    after_help = "Configuration comes from LONGHAUL_* environment variables; see the README."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process on SQLite and a local folder: zero set-up.
    Dev(commands::dev::DevArgs),
    /// Serve the HTTP API.
    Api,
    /// Run a worker pool for some queues.
    Worker(commands::worker::WorkerArgs),
    /// Fire due schedules and run the maintenance loops (any number may run).
    Scheduler,
    /// Apply the database migrations and exit.
    Migrate,
    /// Operator tools on the database: bootstrap tenants and operator keys,
    /// enqueue jobs, count jobs per state.
    #[command(subcommand)]
    Admin(commands::admin::AdminCommand),
    /// A tenant's jobs through the API (LONGHAUL_URL, LONGHAUL_API_KEY):
    /// list, get, cancel, retry, watch, enqueue.
    #[command(subcommand)]
    Jobs(commands::jobs::JobsCommand),
    /// Exports through the API: `export audit --wait --out FILE`.
    #[command(subcommand)]
    Export(commands::export::ExportCommand),
    /// Scan local files with the scanning engine (no server needed).
    #[command(subcommand)]
    Scan(commands::scan::ScanCommand),
    /// Benchmark programs (print one JSON line).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Scans run on local files: no configuration, no runtime.
    if let Command::Scan(command) = cli.command {
        return match commands::scan::run(command) {
            Ok(false) => std::process::ExitCode::SUCCESS,
            Ok(true) => std::process::ExitCode::from(1),
            Err(error) => {
                eprintln!("longhaul: {error:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let config = match longhaul_core::Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("longhaul: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let _logging = match runtime::init_logging(
        &config.log,
        config.log_format,
        config.otlp_endpoint.as_deref(),
    ) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("longhaul: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(error) => {
            eprintln!("longhaul: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = tokio.block_on(async move {
        let serves = matches!(
            cli.command,
            Command::Dev(_) | Command::Api | Command::Worker(_) | Command::Scheduler
        );
        if serves {
            runtime::install_metrics(config.metrics_addr)?;
        }
        match cli.command {
            Command::Dev(args) => commands::dev::run(config, args).await,
            Command::Api => commands::api::run(config).await,
            Command::Worker(args) => commands::worker::run(config, args).await,
            Command::Scheduler => commands::scheduler::run(config).await,
            Command::Admin(command) => commands::admin::run(config, command).await,
            Command::Migrate => commands::migrate::run(config).await,
            Command::Jobs(command) => exit_code(commands::jobs::run(command).await),
            Command::Export(command) => exit_code(commands::export::run(command).await),
            Command::Bench(command) => bench::run(command).await,
            Command::Scan(_) => Err(anyhow::anyhow!("scans run before the runtime starts")),
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.is::<Unsuccessful>() => std::process::ExitCode::from(3),
        Err(error) => {
            eprintln!("longhaul: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A client command that ran but whose job did not succeed (exit status 3;
/// what happened is already printed).
#[derive(Debug)]
struct Unsuccessful;

impl std::fmt::Display for Unsuccessful {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the job did not succeed")
    }
}

impl std::error::Error for Unsuccessful {}

/// A client command's outcome: `true` (the job did not succeed) exits 3.
fn exit_code(outcome: anyhow::Result<bool>) -> anyhow::Result<()> {
    match outcome? {
        true => Err(Unsuccessful.into()),
        false => Ok(()),
    }
}
