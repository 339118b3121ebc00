//! The scanning engine: files are read in 1 MiB chunks that overlap by 8 KiB
//! (a secret across a chunk border is still seen whole; one starting in the
//! overlap is reported by the next chunk only), a literal prefilter
//! (Aho-Corasick over every rule's keywords) picks the rules worth running on a
//! chunk, and only those rules' regexes run. Files are spread over threads.
//! Binary files (a NUL in their first 8 KiB) are skipped.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use aho_corasick::AhoCorasick;

use crate::finding::{fingerprint, redact, Finding};
use crate::rules::{builtin, Rule};

/// Bytes read per step.
pub const CHUNK: usize = 1 << 20;
/// Bytes a chunk shares with the next: the longest secret a rule may match.
pub const OVERLAP: usize = 8 * 1024;
/// How much of a file decides whether it is binary.
const BINARY_SNIFF: usize = 8 * 1024;

pub struct Scanner {
    rules: Vec<Rule>,
    prefilter: AhoCorasick,
    /// For each prefilter pattern, the rules it may start.
    rules_of_keyword: Vec<Vec<usize>>,
}

/// What a scan of many files did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub findings: Vec<Finding>,
    pub files: usize,
    pub bytes: u64,
    pub skipped_binary: usize,
}

/// A secret found in a chunk, before its line is known.
struct Hit {
    start: usize,
    rule: usize,
    secret: String,
}

impl Scanner {
    /// The built-in ruleset.
    pub fn builtin() -> Self {
        Self::new(builtin())
    }

    pub fn new(rules: Vec<Rule>) -> Self {
        let mut keywords: Vec<&str> = Vec::new();
        let mut rules_of_keyword: Vec<Vec<usize>> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            for keyword in rule.keywords {
                match keywords.iter().position(|k| *k == *keyword) {
                    Some(at) => rules_of_keyword[at].push(index),
                    None => {
                        keywords.push(keyword);
                        rules_of_keyword.push(vec![index]);
                    }
                }
            }
        }
        let prefilter = AhoCorasick::new(&keywords)
            .unwrap_or_else(|_| unreachable!("literal keywords always build an automaton"));
        Scanner {
            rules,
            prefilter,
            rules_of_keyword,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The secrets in `text` starting before `report_before`, by start.
    fn scan_text(&self, text: &str, report_before: usize) -> Vec<Hit> {
        let mut triggered = BTreeSet::new();
        for found in self.prefilter.find_overlapping_iter(text) {
            triggered.extend(
                self.rules_of_keyword[found.pattern().as_usize()]
                    .iter()
                    .copied(),
            );
        }
        let mut hits = Vec::new();
        for index in triggered {
            let rule = &self.rules[index];
            for captures in rule.pattern.captures_iter(text) {
                let Some(secret) = captures.name("secret") else {
                    continue;
                };
                if secret.start() >= report_before {
                    continue;
                }
                if rule.check.is_some_and(|check| !check(secret.as_str())) {
                    continue;
                }
                hits.push(Hit {
                    start: secret.start(),
                    rule: index,
                    secret: secret.as_str().to_string(),
                });
            }
        }
        hits.sort_by_key(|hit| (hit.start, hit.rule));
        hits.dedup_by_key(|hit| (hit.start, hit.rule));
        hits
    }

    /// Every finding in what `reader` yields, read chunk by chunk: memory
    /// holds one chunk and its overlap whatever the size.
    pub fn scan_reader(&self, name: &str, mut reader: impl Read) -> std::io::Result<Vec<Finding>> {
        let mut findings = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + OVERLAP);
        // Line and byte offset (in the file) of buf[0], and of the line's start.
        let mut line = 1usize;
        let mut line_start_in_buf: isize = 0;
        let mut eof = false;
        while !eof {
            let before = buf.len();
            buf.resize(before + CHUNK, 0);
            let mut filled = before;
            while filled < buf.len() {
                let n = reader.read(&mut buf[filled..])?;
                if n == 0 {
                    eof = true;
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            // Report what starts before the overlap (all of it at the end),
            // cut at a character boundary.
            let mut cut = if eof {
                buf.len()
            } else {
                buf.len().saturating_sub(OVERLAP)
            };
            while cut > 0 && cut < buf.len() && (buf[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            let text = String::from_utf8_lossy(&buf);
            let hits = self.scan_text(&text, cut.min(text.len()));
            // Lines up to each hit, counted once, in order.
            let bytes = text.as_bytes();
            let mut pos = 0usize;
            for hit in hits {
                for (i, &b) in bytes[pos..hit.start].iter().enumerate() {
                    if b == b'\n' {
                        line += 1;
                        line_start_in_buf = (pos + i + 1) as isize;
                    }
                }
                pos = hit.start;
                let rule = &self.rules[hit.rule];
                findings.push(Finding {
                    rule: rule.id,
                    severity: rule.severity,
                    commit: None,
                    file: name.to_string(),
                    line,
                    column: (hit.start as isize - line_start_in_buf) as usize + 1,
                    redacted: redact(&hit.secret),
                    fingerprint: fingerprint(rule.id, &hit.secret),
                });
            }
            let cut = cut.min(bytes.len());
            for (i, &b) in bytes[pos..cut].iter().enumerate() {
                if b == b'\n' {
                    line += 1;
                    line_start_in_buf = (pos + i + 1) as isize;
                }
            }
            drop(text);
            // Keep the overlap for the next chunk; positions shift by `cut`.
            buf.drain(..cut);
            line_start_in_buf -= cut as isize;
        }
        Ok(findings)
    }

    /// Scans a file or a folder tree (`.git` folders and binaries skipped)
    /// on `threads` threads.
    pub fn scan_path(&self, root: &Path, threads: usize) -> std::io::Result<ScanReport> {
        let files = collect_files(root)?;
        let next = AtomicUsize::new(0);
        let report = Mutex::new(ScanReport::default());
        let failure: Mutex<Option<std::io::Error>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(index) else {
                        return;
                    };
                    match self.scan_file(path) {
                        Ok(Some((found, size))) => {
                            let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                            report.files += 1;
                            report.bytes += size;
                            report.findings.extend(found);
                        }
                        Ok(None) => {
                            let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                            report.skipped_binary += 1;
                        }
                        Err(error) => {
                            let mut failure = failure.lock().unwrap_or_else(|p| p.into_inner());
                            failure.get_or_insert(std::io::Error::new(
                                error.kind(),
                                format!("{}: {error}", path.display()),
                            ));
                        }
                    }
                });
            }
        });
        if let Some(error) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(error);
        }
        let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
        report.findings.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.rule).cmp(&(&b.file, b.line, b.column, b.rule))
        });
        Ok(report)
    }

    /// A file's findings and size; None for a binary file.
    fn scan_file(&self, path: &Path) -> std::io::Result<Option<(Vec<Finding>, u64)>> {
        let mut file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let mut head = vec![0u8; BINARY_SNIFF];
        let mut got = 0;
        while got < head.len() {
            let n = file.read(&mut head[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        head.truncate(got);
        if head.contains(&0) {
            return Ok(None);
        }
        let name = path.display().to_string();
        let findings = self.scan_reader(&name, std::io::Cursor::new(head).chain(file))?;
        Ok(Some((findings, size)))
    }
}

/// Regular files under `root` (or `root` itself), sorted; `.git` skipped,
/// symbolic links not followed.
pub(crate) fn collect_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if entry.file_name() != ".git" {
                    pending.push(entry.path());
                }
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}
