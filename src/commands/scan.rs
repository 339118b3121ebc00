//! `longhaul scan`: the scanning engine on local files, without a server
//! (like gitleaks). `scan leakage PATH` prints one JSON object per finding
//! (redacted: rule, severity, file, line, column, fingerprint) and a summary
//! on stderr; it exits 1 when it found something. Gzip files are scanned as
//! the text they hold. Tokens with a checksum are verified: made-up ones are
//! reported only with `--report-unverified` (as unverified, severity low).
//! `scan corpus DIR` writes the labelled test corpus (planted secrets of
//! every built-in rule, all valid).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;
use longhaul_core::scans::policies::LeakageSpec;
use longhaul_scan::classify::{Classifier, Outcome};
use longhaul_scan::custom::Allowlist;
use longhaul_scan::engine::{is_gzip, ScanReport};
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
        /// Threads (default: the machine's cores). A single file is split
        /// into line-aligned segments scanned in parallel.
        #[arg(long)]
        threads: Option<usize>,
        /// A leakage policy (the API's body: `{"patterns": [...],
        /// "allowlist": {...}}`) run beside the built-in rules.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Run only the policy's patterns, not the built-in rules.
        #[arg(long)]
        no_builtin: bool,
        /// Also report matches of a built-in format whose checksum or
        /// structure check fails (made-up or mistyped tokens), as
        /// `"unverified": true` with severity low.
        #[arg(long)]
        report_unverified: bool,
    },
    /// Classify files (public < internal < confidential < restricted; PII,
    /// PHI, PCI) with the validated detectors: one JSON object per file with
    /// counts per detector, never the matched values; CSV, JSON, NDJSON and
    /// gzip read as such; a summary on stderr.
    Classify {
        path: PathBuf,
        /// Bytes of one file classified (after gzip).
        #[arg(long, default_value_t = longhaul_scan::classify::MAX_OBJECT_BYTES)]
        max_bytes: u64,
    },
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
            policy,
            no_builtin,
            report_unverified,
        } => {
            let mut scanner = scanner(policy.as_deref(), no_builtin)?;
            if report_unverified {
                scanner = scanner.reporting_unverified();
            }
            let target = path.to_string_lossy().to_string();
            if !files && longhaul_scan::git::is_repository(&target) {
                let findings = longhaul_scan::git::scan_history(&scanner, &target)
                    .with_context(|| format!("scanning the history of {target}"))?;
                for finding in &findings {
                    println!("{}", serde_json::to_string(finding)?);
                }
                eprintln!("{}", json!({"history": target, "findings": findings.len()}));
                return Ok(!findings.is_empty());
            }
            if let Some(threads) = threads {
                longhaul_scan::engine::set_cpu_threads(threads).map_err(anyhow::Error::msg)?;
            }
            let threads = longhaul_scan::engine::cpu_threads();
            let started = Instant::now();
            let one_plain_file = path.is_file()
                && !is_gzip(
                    &read_head(&path).with_context(|| format!("reading {}", path.display()))?,
                );
            let report = if one_plain_file {
                // One file: read whole and split over the pool's threads.
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                ScanReport {
                    findings: scanner.scan_bytes(&target, &data, threads),
                    files: 1,
                    bytes: data.len() as u64,
                    ..ScanReport::default()
                }
            } else {
                scanner
                    .scan_path(&path)
                    .with_context(|| format!("scanning {}", path.display()))?
            };
            let seconds = started.elapsed().as_secs_f64();
            for finding in &report.findings {
                println!("{}", serde_json::to_string(finding)?);
            }
            let mut summary = json!({
                "files": report.files,
                "skippedBinary": report.skipped_binary,
                "skippedCorruptGzip": report.skipped_corrupt_gzip,
                "bytes": report.bytes,
                "findings": report.findings.len(),
                "seconds": (seconds * 1000.0).round() / 1000.0,
                "mbPerSecond": ((report.bytes as f64 / 1e6 / seconds) * 10.0).round() / 10.0,
                "threads": threads,
                "rules": scanner.rules().len() + scanner.custom_rules().len(),
            });
            if report.findings.is_empty() && !report_unverified {
                summary["hint"] = json!(NOTHING_FOUND_HINT);
            }
            eprintln!("{summary}");
            Ok(!report.findings.is_empty())
        }
        ScanCommand::Classify { path, max_bytes } => {
            let classifier = Classifier::builtin();
            let started = Instant::now();
            let (mut bytes, mut skipped, mut classified) = (0u64, 0usize, 0usize);
            for file in longhaul_scan::engine::collect_files(&path)
                .with_context(|| format!("listing {}", path.display()))?
            {
                let name = file.display().to_string();
                let reader =
                    std::fs::File::open(&file).with_context(|| format!("opening {name}"))?;
                bytes += reader.metadata().map(|m| m.len()).unwrap_or(0);
                match classifier
                    .classify_reader(&name, std::io::BufReader::new(reader), max_bytes)
                    .with_context(|| format!("reading {name}"))?
                {
                    Outcome::Classified(found) => {
                        classified += 1;
                        println!("{}", serde_json::to_string(&found)?);
                    }
                    Outcome::Skipped { .. } => skipped += 1,
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "{}",
                json!({
                    "classified": classified,
                    "skipped": skipped,
                    "bytes": bytes,
                    "seconds": (seconds * 1000.0).round() / 1000.0,
                    "mbPerSecond": ((bytes as f64 / 1e6 / seconds) * 10.0).round() / 10.0,
                })
            );
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

/// Said when a folder scan found nothing: made-up tokens are not secrets.
const NOTHING_FOUND_HINT: &str = "tokens with a checksum (GitHub, npm, age, …) and formats \
    with a fixed alphabet (AWS key ids: A-Z and 2-7) are verified, so made-up ones are not \
    reported: --report-unverified shows them; `longhaul scan corpus DIR` writes valid test secrets";

/// The first bytes of a file (enough to tell gzip).
fn read_head(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(2);
    std::fs::File::open(path)?.take(2).read_to_end(&mut head)?;
    Ok(head)
}

/// The built-in rules (unless `no_builtin`) and a policy file's patterns and
/// allowlist, validated as the API validates a policy.
fn scanner(policy: Option<&std::path::Path>, no_builtin: bool) -> anyhow::Result<Scanner> {
    let builtin = if no_builtin {
        Vec::new()
    } else {
        longhaul_scan::rules::builtin()
    };
    let Some(policy) = policy else {
        anyhow::ensure!(!no_builtin, "--no-builtin needs a --policy");
        return Ok(Scanner::with_rules(
            builtin,
            Vec::new(),
            Allowlist::default(),
        ));
    };
    let text = std::fs::read(policy).with_context(|| format!("reading {}", policy.display()))?;
    let body: serde_json::Value = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not JSON", policy.display()))?;
    let (custom, allowlist) = LeakageSpec::parse(&body)
        .and_then(|spec| spec.compile())
        .with_context(|| format!("the policy in {}", policy.display()))?;
    Ok(Scanner::with_rules(builtin, custom, allowlist))
}
