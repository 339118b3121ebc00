//! Benchmark programs (`longhaul bench …`): each prints one JSON line with its
//! figures. They are programs, not timed tests; docs/BENCHMARKS.md records the
//! numbers and the commands.

mod export;
mod metrics;
mod one_job;
mod queue;
mod retention;
mod scan;
mod scheduler;
mod scratch;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// An audit export of many rows through the real job, beside psql \copy.
    Export(export::ExportBenchArgs),
    /// Bulk enqueue, drain of system.noop jobs, and enqueue→start latency.
    Queue(queue::QueueBenchArgs),
    /// Many tenant schedules, many due in the same second: fire lag.
    Scheduler(scheduler::SchedulerBenchArgs),
    /// What a /metrics scrape costs with millions of jobs stored.
    Metrics(metrics::MetricsBenchArgs),
    /// A retention cleanup of millions of expired audit events beside a writer.
    Retention(retention::RetentionBenchArgs),
    /// A leakage or classification scan of a folder through the real job.
    Scan(scan::ScanBenchArgs),
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Export(args) => export::run(args).await,
        BenchCommand::Queue(args) => queue::run(args).await,
        BenchCommand::Scheduler(args) => scheduler::run(args).await,
        BenchCommand::Scan(args) => scan::run(args).await,
        BenchCommand::Retention(args) => retention::run(args).await,
        BenchCommand::Metrics(args) => metrics::run(args).await,
    }
}
