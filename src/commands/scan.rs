//! `longhaul scan`: the scanning engine on local files, without a server
//! (like gitleaks). `scan leakage PATH` prints one JSON object per finding
//! (redacted: rule, severity, file, line, column, fingerprint) and a summary
//! on stderr; it exits 1 when it found something. `scan corpus DIR` writes the
//! labelled test corpus (planted secrets of every built-in rule).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use longhaul_scan::{corpus, Scanner};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum ScanCommand {
    /// Find secrets of the built-in ruleset in a file or folder tree, or in
    /// the whole history of a git repository (a URL, or a folder that is a
    /// repository; `--files` scans its files instead).
    Leakage {
        path: PathBuf,
        /// Scan the files even when PATH is a git repository.
        #[arg(long)]
        files: bool,
        /// Threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Classify files (public < internal < confidential < restricted; PII,
    /// PHI, PCI) with the validated detectors: one JSON object per file with
    /// counts per detector, never the matched values.
    Classify { path: PathBuf },
    /// Print the built-in rules' regexes, one per line, without group names
    /// (`rg -f` joins them into one regex).
    Patterns,
    /// Write the labelled corpus: FILES files of about KB kilobytes with
    /// PER_RULE planted secrets of every built-in rule; labels (without the
    /// secrets) to DIR/labels.json.
    Corpus {
        dir: PathBuf,
        #[arg(long, default_value_t = 50)]
        files: usize,
        #[arg(long, default_value_t = 1024)]
        kb: usize,
        #[arg(long, default_value_t = 3)]
        per_rule: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

/// Whether anything was found (the exit status says so).
pub fn run(command: ScanCommand) -> anyhow::Result<bool> {
    match command {
        ScanCommand::Leakage {
            path,
            files,
            threads,
        } => {
            let target = path.to_string_lossy().to_string();
            if !files && longhaul_scan::git::is_repository(&target) {
                let scanner = Scanner::builtin();
                let findings = longhaul_scan::git::scan_history(&scanner, &target)
                    .with_context(|| format!("scanning the history of {target}"))?;
                for finding in &findings {
                    println!("{}", serde_json::to_string(finding)?);
                }
                eprintln!("{}", json!({"history": target, "findings": findings.len()}));
                return Ok(!findings.is_empty());
            }
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let scanner = Scanner::builtin();
            let started = Instant::now();
            let report = scanner
                .scan_path(&path, threads)
                .with_context(|| format!("scanning {}", path.display()))?;
            let seconds = started.elapsed().as_secs_f64();
            for finding in &report.findings {
                println!("{}", serde_json::to_string(finding)?);
            }
            eprintln!(
                "{}",
                json!({
                    "files": report.files,
                    "skippedBinary": report.skipped_binary,
                    "bytes": report.bytes,
                    "findings": report.findings.len(),
                    "seconds": (seconds * 1000.0).round() / 1000.0,
                    "mbPerSecond": ((report.bytes as f64 / 1e6 / seconds) * 10.0).round() / 10.0,
                    "threads": threads,
                    "rules": scanner.rules().len(),
                })
            );
            Ok(!report.findings.is_empty())
        }
        ScanCommand::Classify { path } => {
            let detectors = longhaul_scan::detectors::builtin();
            let results = longhaul_scan::classify::classify_path(&detectors, &path)
                .with_context(|| format!("classifying {}", path.display()))?;
            for result in &results {
                println!("{}", serde_json::to_string(result)?);
            }
            Ok(false)
        }
        ScanCommand::Patterns => {
            for rule in Scanner::builtin().rules() {
                println!("{}", rule.pattern.as_str().replace("(?P<secret>", "("));
            }
            Ok(false)
        }
        ScanCommand::Corpus {
            dir,
            files,
            kb,
            per_rule,
            seed,
        } => {
            let scanner = Scanner::builtin();
            let planted = corpus::generate(&dir, scanner.rules(), files, kb * 1024, per_rule, seed)
                .with_context(|| format!("writing the corpus to {}", dir.display()))?;
            let labels: Vec<_> = planted
                .iter()
                .map(|p| json!({"file": p.file, "line": p.line, "rule": p.rule, "fingerprint": p.fingerprint}))
                .collect();
            std::fs::write(dir.join("labels.json"), serde_json::to_vec_pretty(&labels)?)?;
            eprintln!(
                "{} secrets planted in {files} files under {}",
                planted.len(),
                dir.display()
            );
            Ok(false)
        }
    }
}
