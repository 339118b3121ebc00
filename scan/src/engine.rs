//! The scanning engine: files are read in 1 MiB chunks that overlap by 8 KiB
//! (a secret across a chunk border is still seen whole; one starting in the
//! overlap is reported by the next chunk only), a literal prefilter
//! (Aho-Corasick over every rule's keywords) picks the built-in rules worth
//! running on a chunk, and only those rules' regexes run; custom rules
//! (`custom.rs`) run on every chunk after them. Files are spread over
//! threads, and one big buffer can be split into segments scanned in
//! parallel (`scan_bytes`). Gzip files and objects (magic 1f 8b) are
//! scanned as the text they inflate to, streamed (`scan_content`); binary
//! files (a NUL in their first 8 KiB, after decompression) and corrupt gzip
//! streams are skipped; allowlisted findings (and files) are dropped. A
//! match whose rule's check fails (a bad checksum: a made-up token) is
//! dropped too, or reported as an unverified low-severity finding when the
//! scanner is built with [`Scanner::reporting_unverified`].
//!
//! Which chunk (or segment) reports a match is decided by where the whole
//! match starts, while its line and column are those of the secret: a
//! private-key block whose header ends just before a chunk border and whose
//! secret (the first base64 line) starts after it is still reported once.
//! Chunk borders are moved back to just after a newline where one is near,
//! and segments start just after a newline, so every scanned text starts at
//! a line start, as the whole file does.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aho_corasick::AhoCorasick;
use flate2::read::MultiGzDecoder;
use rayon::prelude::*;

use crate::classify::{SkipReason, Tracked};
use crate::custom::{Allowlist, CustomRule};
use crate::finding::{fingerprint, redact, Finding};
use crate::rules::{builtin, Rule, Severity};

/// Threads of the CPU pool every scan shares (rayon's global pool: one per
/// core unless the process sized it, e.g. `longhaul scan --threads`).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// Sizes the CPU pool; once per process, before the first scan.
pub fn set_cpu_threads(threads: usize) -> Result<(), String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build_global()
        .map_err(|error| format!("sizing the scan thread pool: {error}"))
}

/// Bytes read per step.
pub const CHUNK: usize = 1 << 20;
/// Bytes a chunk shares with the next: the longest secret a rule may match.
pub const OVERLAP: usize = 8 * 1024;
/// How much of a file decides whether it is binary.
const BINARY_SNIFF: usize = 8 * 1024;
/// How far back from a chunk's end a newline is looked for to cut at.
const CUT_SEARCH: usize = 64 * 1024;

pub struct Scanner {
    rules: Vec<Rule>,
    prefilter: AhoCorasick,
    /// For each prefilter pattern, the rules it may start.
    rules_of_keyword: Vec<Vec<usize>>,
    custom: Vec<CustomRule>,
    allowlist: Allowlist,
    /// Keys the fingerprints (see [`crate::finding::keyed_fingerprint`]).
    fingerprint_key: Option<[u8; 32]>,
    /// Report matches whose rule's check fails, as unverified.
    report_unverified: bool,
}

/// What a scan of many files did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub findings: Vec<Finding>,
    pub files: usize,
    pub bytes: u64,
    pub skipped_binary: usize,
    pub skipped_corrupt_gzip: usize,
}

/// What scanning one file's or object's content gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Findings(Vec<Finding>),
    /// Not scanned: binary, or a corrupt gzip stream.
    Skipped(SkipReason),
}

/// Whether `head` starts a gzip stream (magic 1f 8b).
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// A secret found in a chunk, before its line is known.
struct Hit {
    /// Where the secret starts.
    start: usize,
    /// A built-in rule's index, or `rules.len()` + a custom rule's index.
    rule: usize,
    secret: String,
    /// The rule's check failed (reported only when asked for).
    unverified: bool,
}

/// Line bookkeeping while walking a chunk: the 1-based line at `pos`, and
/// where (relative to the chunk, possibly before it) that line starts.
#[derive(Clone, Copy)]
struct Cursor {
    pos: usize,
    line: usize,
    line_start: isize,
}

impl Cursor {
    fn advance(&mut self, bytes: &[u8], to: usize) {
        for (i, &b) in bytes[self.pos..to].iter().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.line_start = (self.pos + i + 1) as isize;
            }
        }
        self.pos = to;
    }
}

/// `bytes` as text with every byte at its place: valid UTF-8 is borrowed,
/// and each byte of an invalid (or cut) sequence becomes '?', so positions
/// in the text are positions in the bytes.
fn text_of(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len());
            let mut rest = bytes;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(text) => {
                        out.push_str(text);
                        break;
                    }
                    Err(error) => {
                        let (valid, after) = rest.split_at(error.valid_up_to());
                        // Valid by `valid_up_to`.
                        out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                        let bad = error.error_len().unwrap_or(after.len());
                        out.extend(std::iter::repeat_n('?', bad));
                        rest = &after[bad..];
                    }
                }
            }
            Cow::Owned(out)
        }
    }
}

impl Scanner {
    /// The built-in ruleset.
    pub fn builtin() -> Self {
        Self::new(builtin())
    }

    /// These built-in rules, no custom rules, an empty allowlist.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self::with_rules(rules, Vec::new(), Allowlist::default())
    }

    /// Built-in rules (prefiltered), custom rules (run on every chunk) and
    /// an allowlist.
    pub fn with_rules(builtin: Vec<Rule>, custom: Vec<CustomRule>, allowlist: Allowlist) -> Self {
        let rules = builtin;
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
            custom,
            allowlist,
            fingerprint_key: None,
            report_unverified: false,
        }
    }

    /// Also report matches of a built-in rule whose checksum or structure
    /// check fails, as unverified findings of severity low: someone trying
    /// a made-up token sees it was matched, and why it is doubtful.
    pub fn reporting_unverified(mut self) -> Self {
        self.report_unverified = true;
        self
    }

    /// Fingerprints keyed with `key` (a service keys them per tenant).
    pub fn with_fingerprint_key(mut self, key: [u8; 32]) -> Self {
        self.fingerprint_key = Some(key);
        self
    }

    fn fingerprint_of(&self, rule: &str, secret: &str) -> String {
        match &self.fingerprint_key {
            Some(key) => crate::finding::keyed_fingerprint(key, rule, secret),
            None => fingerprint(rule, secret),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn custom_rules(&self) -> &[CustomRule] {
        &self.custom
    }

    pub fn allowlist(&self) -> &Allowlist {
        &self.allowlist
    }

    /// Id and severity of a hit's rule.
    fn rule_of(&self, index: usize) -> (&str, Severity) {
        match self.rules.get(index) {
            Some(rule) => (rule.id, rule.severity),
            None => {
                let rule = &self.custom[index - self.rules.len()];
                (&rule.id, rule.severity)
            }
        }
    }

    /// The secrets in `text` whose match starts before `report_before`, by
    /// the secret's start.
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
                let (Some(whole), Some(secret)) = (captures.get(0), captures.name("secret")) else {
                    continue;
                };
                if whole.start() >= report_before {
                    break;
                }
                let unverified = rule.check.is_some_and(|check| !check(secret.as_str()));
                if unverified && !self.report_unverified {
                    continue;
                }
                hits.push(Hit {
                    start: secret.start(),
                    rule: index,
                    secret: secret.as_str().to_string(),
                    unverified,
                });
            }
        }
        for (offset, rule) in self.custom.iter().enumerate() {
            let index = self.rules.len() + offset;
            rule.find(text, report_before, &mut |hit| {
                hits.push(Hit {
                    start: hit.start,
                    rule: index,
                    secret: hit.secret.to_string(),
                    unverified: false,
                });
            });
        }
        hits.sort_by_key(|hit| (hit.start, hit.rule));
        hits.dedup_by_key(|hit| (hit.start, hit.rule));
        hits
    }

    /// Every finding in what `reader` yields, read chunk by chunk: memory
    /// holds one chunk and its overlap whatever the size.
    pub fn scan_reader(&self, name: &str, reader: impl Read) -> std::io::Result<Vec<Finding>> {
        self.scan_stream(name, reader, None)
    }

    /// The one chunk loop: every finding in `reader` whose match starts
    /// before `limit` (all of them for None), sorted by (line, column, rule),
    /// allowlisted ones dropped. Lines are counted from 1 at the reader's
    /// start, which must be a line start.
    fn scan_stream(
        &self,
        name: &str,
        mut reader: impl Read,
        limit: Option<usize>,
    ) -> std::io::Result<Vec<Finding>> {
        let mut findings = Vec::new();
        if self.allowlist.allows_path(name) {
            return Ok(findings);
        }
        let mut buf: Vec<u8> = Vec::new();
        // Offset in the stream of buf[0]; the line there.
        let mut base = 0usize;
        let mut state = Cursor {
            pos: 0,
            line: 1,
            line_start: 0,
        };
        let mut eof = false;
        while !eof {
            // Grows `buf` only by what is read: a small input (a segment,
            // a hunk) costs no more than its size.
            let n = (&mut reader).take(CHUNK as u64).read_to_end(&mut buf)?;
            eof = n < CHUNK;
            // Report what starts before the overlap (all of it at the end),
            // cut just after a newline if one is near, else at a character
            // boundary.
            let mut cut = if eof {
                buf.len()
            } else {
                let cut = buf.len().saturating_sub(OVERLAP);
                let from = cut.saturating_sub(CUT_SEARCH);
                match buf[from..cut].iter().rposition(|&b| b == b'\n') {
                    Some(at) => from + at + 1,
                    None => cut,
                }
            };
            while cut > 0 && cut < buf.len() && (buf[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            let report_before = match limit {
                Some(limit) => cut.min(limit.saturating_sub(base)),
                None => cut,
            };
            let done = eof || limit.is_some_and(|limit| base + cut >= limit);
            let text = text_of(&buf);
            let hits = self.scan_text(&text, report_before);
            let bytes = text.as_bytes();
            // Hits whose secret starts before the cut, then the line state at
            // the cut, then the (rare) hits whose match starts before the cut
            // but whose secret starts after it.
            let split = hits.partition_point(|hit| hit.start < cut);
            let mut cursor = state;
            for (number, hit) in hits.iter().enumerate() {
                if number == split {
                    let mut at_cut = cursor;
                    at_cut.advance(bytes, cut);
                    state = at_cut;
                }
                cursor.advance(bytes, hit.start);
                let (id, severity) = self.rule_of(hit.rule);
                findings.push(Finding {
                    rule: id.to_string(),
                    severity: if hit.unverified {
                        Severity::Low
                    } else {
                        severity
                    },
                    commit: None,
                    file: name.to_string(),
                    line: cursor.line,
                    column: (hit.start as isize - cursor.line_start) as usize + 1,
                    redacted: redact(&hit.secret),
                    fingerprint: self.fingerprint_of(id, &hit.secret),
                    unverified: hit.unverified,
                });
            }
            if split == hits.len() {
                cursor.advance(bytes, cut);
                state = cursor;
            }
            drop(text);
            if done {
                break;
            }
            // Keep the overlap for the next chunk; positions shift by `cut`.
            buf.drain(..cut);
            base += cut;
            state.pos = 0;
            state.line_start -= cut as isize;
        }
        if !self.allowlist.is_empty() {
            findings.retain(|finding| !self.allowlist.allows(finding));
        }
        findings.sort_by(|a, b| (a.line, a.column, &a.rule).cmp(&(b.line, b.column, &b.rule)));
        Ok(findings)
    }

    /// Every finding in `data`, scanned in parallel on the CPU pool
    /// ([`cpu_threads`]): `data` is split into `parts` segments of about
    /// `len / parts` bytes. The same findings, in the same order, as
    /// `scan_reader` on the same bytes.
    pub fn scan_bytes(&self, name: &str, data: &[u8], parts: usize) -> Vec<Finding> {
        let segment = data.len().div_ceil(parts.max(1)).max(1);
        self.scan_bytes_segmented(name, data, segment)
    }

    /// `scan_bytes` with segments of `segment_bytes` (each start moved to
    /// just after a newline), scanned on the CPU pool. Each segment scans
    /// its bytes and the next `OVERLAP` and reports only the matches that
    /// start in it.
    pub fn scan_bytes_segmented(
        &self,
        name: &str,
        data: &[u8],
        segment_bytes: usize,
    ) -> Vec<Finding> {
        if self.allowlist.allows_path(name) {
            return Vec::new();
        }
        let segment_bytes = segment_bytes.max(1);
        let mut starts = vec![0usize];
        let mut last = 0usize;
        while last + segment_bytes < data.len() {
            let candidate = last + segment_bytes;
            // Just after the first newline at or after `candidate - 1`.
            match data[candidate - 1..].iter().position(|&b| b == b'\n') {
                Some(at) if candidate + at < data.len() => {
                    last = candidate + at;
                    starts.push(last);
                }
                _ => break,
            }
        }
        let bounds: Vec<(usize, usize)> = starts
            .iter()
            .enumerate()
            .map(|(i, &start)| (start, starts.get(i + 1).copied().unwrap_or(data.len())))
            .collect();
        // Per segment, in order: its findings and its newline count.
        let results: Vec<(Vec<Finding>, usize)> = bounds
            .par_iter()
            .map(|&(start, end)| {
                let slice = &data[start..(end + OVERLAP).min(data.len())];
                // Reading a byte slice never fails.
                let found = self
                    .scan_stream(name, slice, Some(end - start))
                    .unwrap_or_default();
                let newlines = data[start..end].iter().filter(|&&b| b == b'\n').count();
                (found, newlines)
            })
            .collect();
        let mut findings = Vec::new();
        let mut lines_before = 0usize;
        for (found, newlines) in results {
            findings.extend(found.into_iter().map(|mut finding| {
                finding.line += lines_before;
                finding
            }));
            lines_before += newlines;
        }
        findings.sort_by(|a, b| (a.line, a.column, &a.rule).cmp(&(b.line, b.column, &b.rule)));
        findings
    }

    /// Scans a file or a folder tree (`.git` folders, binaries and
    /// allowlisted paths skipped), files in parallel on the CPU pool.
    pub fn scan_path(&self, root: &Path) -> std::io::Result<ScanReport> {
        let mut files = collect_files(root)?;
        if !self.allowlist.is_empty() {
            files.retain(|path| !self.allowlist.allows_path(&path.display().to_string()));
        }
        let report = Mutex::new(ScanReport::default());
        let failure: Mutex<Option<std::io::Error>> = Mutex::new(None);
        files
            .par_iter()
            .for_each(|path| match self.scan_file(path) {
                Ok((Content::Findings(found), size)) => {
                    let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                    report.files += 1;
                    report.bytes += size;
                    report.findings.extend(found);
                }
                Ok((Content::Skipped(SkipReason::Binary), _)) => {
                    let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                    report.skipped_binary += 1;
                }
                Ok((Content::Skipped(SkipReason::CorruptGzip), _)) => {
                    let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                    report.skipped_corrupt_gzip += 1;
                }
                Err(error) => {
                    let mut failure = failure.lock().unwrap_or_else(|p| p.into_inner());
                    failure.get_or_insert(std::io::Error::new(
                        error.kind(),
                        format!("{}: {error}", path.display()),
                    ));
                }
            });
        if let Some(error) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(error);
        }
        let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
        report.findings.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.rule).cmp(&(&b.file, b.line, b.column, &b.rule))
        });
        Ok(report)
    }

    /// A file's content (findings, or why it was skipped) and size.
    fn scan_file(&self, path: &Path) -> std::io::Result<(Content, u64)> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        let name = path.display().to_string();
        Ok((self.scan_content(&name, file, true)?, size))
    }

    /// Every finding in what `reader` yields, a gzip stream (magic 1f 8b)
    /// decompressed first and scanned as it inflates (memory holds one
    /// chunk, whatever the size). Skipped: a corrupt gzip stream, and, when
    /// `skip_binary`, binary content (a NUL in its first 8 KiB after
    /// decompression). Err only when `reader` fails.
    pub fn scan_content(
        &self,
        name: &str,
        mut reader: impl Read,
        skip_binary: bool,
    ) -> std::io::Result<Content> {
        let mut magic = Vec::with_capacity(2);
        (&mut reader).take(2).read_to_end(&mut magic)?;
        let gzip = is_gzip(&magic);
        let source = std::io::Cursor::new(magic).chain(reader);
        if !gzip {
            return self.scan_plain(name, source, skip_binary);
        }
        let mut tracked = Tracked::new(source);
        match self.scan_plain(name, MultiGzDecoder::new(&mut tracked), skip_binary) {
            Err(_) if !tracked.failed => Ok(Content::Skipped(SkipReason::CorruptGzip)),
            other => other,
        }
    }

    /// `scan_content` of text that is not compressed.
    fn scan_plain(
        &self,
        name: &str,
        mut reader: impl Read,
        skip_binary: bool,
    ) -> std::io::Result<Content> {
        if !skip_binary {
            return Ok(Content::Findings(self.scan_reader(name, reader)?));
        }
        let mut head = Vec::with_capacity(BINARY_SNIFF);
        (&mut reader)
            .take(BINARY_SNIFF as u64)
            .read_to_end(&mut head)?;
        if head.contains(&0) {
            return Ok(Content::Skipped(SkipReason::Binary));
        }
        let findings = self.scan_reader(name, std::io::Cursor::new(head).chain(reader))?;
        Ok(Content::Findings(findings))
    }
}

/// Regular files under `root` (or `root` itself), sorted; `.git` skipped,
/// symbolic links not followed.
pub fn collect_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
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
