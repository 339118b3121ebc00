//! Classifying objects: a `Classifier` (the validated detectors of
//! `detectors.rs`, possibly with changed levels, plus user `ClassRule`s)
//! runs over each object's bytes: gzip is decompressed first, binaries and
//! corrupt gzip streams are skipped, at most `max_bytes` are classified
//! ([`MAX_OBJECT_BYTES`] for files), and CSV / JSON / NDJSON objects are
//! read as key/value lines (`formats.rs`). The object gets the highest level
//! any match implies, its data types, and counts per detector or rule —
//! never the matched values.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use regex::Regex;
use serde::Serialize;

use crate::custom::compile_user_regex;
use crate::detectors::{self, DataType, Detector, Level};
use crate::formats::{flatten, Flat, Format};

/// Bytes of one object that are classified; the rest is not read.
pub const MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;
/// How much of an object (after decompression) decides whether it is binary.
const BINARY_SNIFF: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Classification {
    pub file: String,
    pub level: Level,
    pub data_types: BTreeSet<DataType>,
    /// Validated matches per detector or rule id (ids without one absent).
    pub counts: BTreeMap<String, usize>,
    /// The object was larger than the cap: only its start was read.
    pub truncated: bool,
    /// How the object was read.
    pub format: Format,
    /// The object was gzip-compressed.
    pub gzip: bool,
}

/// Why an object was not classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SkipReason {
    Binary,
    CorruptGzip,
}

/// What classifying one object gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Classified(Classification),
    Skipped { file: String, reason: SkipReason },
}

impl Outcome {
    pub fn file(&self) -> &str {
        match self {
            Outcome::Classified(classification) => &classification.file,
            Outcome::Skipped { file, .. } => file,
        }
    }

    pub fn classification(&self) -> Option<&Classification> {
        match self {
            Outcome::Classified(classification) => Some(classification),
            Outcome::Skipped { .. } => None,
        }
    }

    pub fn into_classification(self) -> Option<Classification> {
        match self {
            Outcome::Classified(classification) => Some(classification),
            Outcome::Skipped { .. } => None,
        }
    }
}

/// A user rule: a regex whose matches imply `level` and `data_types`
/// (counted under `id`). A named group `value`, if any, is what must lie in
/// one value of a CSV/JSON object; else the whole match.
#[derive(Debug, Clone)]
pub struct ClassRule {
    pub id: String,
    pub level: Level,
    pub data_types: BTreeSet<DataType>,
    pattern: Regex,
    group: bool,
}

impl ClassRule {
    /// Refuses what `CustomRule::regex` refuses: patterns that do not
    /// compile, are over 1000 chars, compile to more than 1 MiB, or match
    /// the empty string.
    pub fn regex(
        id: impl Into<String>,
        level: Level,
        data_types: BTreeSet<DataType>,
        pattern: &str,
    ) -> Result<Self, String> {
        let id = id.into();
        if id.trim().is_empty() {
            return Err("rule id must not be empty".to_string());
        }
        let pattern = compile_user_regex(pattern).map_err(|error| format!("rule {id}: {error}"))?;
        let group = pattern.capture_names().any(|name| name == Some("value"));
        Ok(ClassRule {
            id,
            level,
            data_types,
            pattern,
            group,
        })
    }

    fn count(&self, flat: &Flat) -> usize {
        if self.group {
            self.pattern
                .captures_iter(&flat.text)
                .filter_map(|captures| captures.name("value"))
                .filter(|m| !m.as_str().is_empty() && flat.counts(m.start(), m.end()))
                .count()
        } else {
            self.pattern
                .find_iter(&flat.text)
                .filter(|m| !m.as_str().is_empty() && flat.counts(m.start(), m.end()))
                .count()
        }
    }
}

/// Detectors and user rules, run over objects.
#[derive(Debug, Clone)]
pub struct Classifier {
    detectors: Vec<Detector>,
    custom: Vec<ClassRule>,
}

/// A reader that remembers whether it failed, to tell a read error from a
/// corrupt gzip stream.
pub(crate) struct Tracked<R> {
    inner: R,
    pub(crate) failed: bool,
}

impl<R> Tracked<R> {
    pub(crate) fn new(inner: R) -> Self {
        Tracked {
            inner,
            failed: false,
        }
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let result = self.inner.read(buf);
        if result
            .as_ref()
            .is_err_and(|error| error.kind() != std::io::ErrorKind::Interrupted)
        {
            self.failed = true;
        }
        result
    }
}

impl Classifier {
    /// All built-in detectors, no custom rules.
    pub fn builtin() -> Self {
        Self::new(detectors::builtin(), Vec::new())
    }

    /// These detectors (e.g. built-in ones with another `level`) and rules.
    pub fn new(detectors: Vec<Detector>, custom: Vec<ClassRule>) -> Self {
        Classifier { detectors, custom }
    }

    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    pub fn custom_rules(&self) -> &[ClassRule] {
        &self.custom
    }

    /// Classifies one object's bytes: gzip (magic 1f 8b) is decompressed
    /// first (at most `max_bytes` of output read); binaries (a NUL in the
    /// first 8 KiB after decompression) and corrupt gzip streams are
    /// skipped; past `max_bytes` only the first `max_bytes` are classified
    /// and `truncated` is set.
    pub fn classify_bytes(&self, name: &str, bytes: &[u8], max_bytes: u64) -> Outcome {
        // Reading a byte slice never fails: only gzip errors remain, and
        // those are an outcome.
        self.classify_reader(name, bytes, max_bytes)
            .unwrap_or_else(|_| Outcome::Skipped {
                file: name.to_string(),
                reason: SkipReason::CorruptGzip,
            })
    }

    /// `classify_bytes` on what `reader` yields (reading at most what is
    /// needed); Err only when `reader` fails.
    pub fn classify_reader(
        &self,
        name: &str,
        mut reader: impl Read,
        max_bytes: u64,
    ) -> std::io::Result<Outcome> {
        let mut magic = Vec::with_capacity(2);
        (&mut reader).take(2).read_to_end(&mut magic)?;
        let gzip = magic == [0x1f, 0x8b];
        let source = std::io::Cursor::new(magic).chain(reader);
        let want = max_bytes.saturating_add(1);
        let mut bytes = Vec::new();
        if gzip {
            let mut tracked = Tracked {
                inner: source,
                failed: false,
            };
            let result = MultiGzDecoder::new(&mut tracked)
                .take(want)
                .read_to_end(&mut bytes);
            if let Err(error) = result {
                if tracked.failed {
                    return Err(error);
                }
                return Ok(Outcome::Skipped {
                    file: name.to_string(),
                    reason: SkipReason::CorruptGzip,
                });
            }
        } else {
            source.take(want).read_to_end(&mut bytes)?;
        }
        let truncated = bytes.len() as u64 > max_bytes;
        if truncated {
            bytes.truncate(usize::try_from(max_bytes).unwrap_or(usize::MAX));
        }
        if bytes[..bytes.len().min(BINARY_SNIFF)].contains(&0) {
            return Ok(Outcome::Skipped {
                file: name.to_string(),
                reason: SkipReason::Binary,
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        let flat = flatten(name, &text, truncated);
        Ok(Outcome::Classified(
            self.classify_flat(name, &flat, truncated, gzip),
        ))
    }

    /// A plain text (no format handling, not compressed).
    pub fn classify_text(&self, name: &str, text: &str, truncated: bool) -> Classification {
        let flat = Flat {
            text: text.into(),
            spans: None,
            format: Format::Text,
        };
        self.classify_flat(name, &flat, truncated, false)
    }

    /// A file, at most [`MAX_OBJECT_BYTES`] of its content classified.
    pub fn classify_file(&self, path: &Path) -> std::io::Result<Outcome> {
        let file = std::fs::File::open(path)?;
        self.classify_reader(&path.display().to_string(), file, MAX_OBJECT_BYTES)
    }

    /// Every file under `root` (or `root` itself), sorted by path.
    pub fn classify_path(&self, root: &Path) -> std::io::Result<Vec<Outcome>> {
        crate::engine::collect_files(root)?
            .iter()
            .map(|path| self.classify_file(path))
            .collect()
    }

    fn classify_flat(
        &self,
        name: &str,
        flat: &Flat,
        truncated: bool,
        gzip: bool,
    ) -> Classification {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut level = Level::Public;
        let mut data_types = BTreeSet::new();
        for detector in &self.detectors {
            let n = detector
                .pattern
                .captures_iter(&flat.text)
                .filter_map(|captures| captures.name("value"))
                .filter(|m| flat.counts(m.start(), m.end()) && (detector.validate)(m.as_str()))
                .count();
            if n > 0 {
                *counts.entry(detector.id.to_string()).or_insert(0) += n;
                level = level.max(detector.level);
                data_types.insert(detector.data_type);
            }
        }
        for rule in &self.custom {
            let n = rule.count(flat);
            if n > 0 {
                *counts.entry(rule.id.clone()).or_insert(0) += n;
                level = level.max(rule.level);
                data_types.extend(rule.data_types.iter().copied());
            }
        }
        Classification {
            file: name.to_string(),
            level,
            data_types,
            counts,
            truncated,
            format: flat.format,
            gzip,
        }
    }
}

/// A file's classification with these detectors (formats and gzip
/// handled); None for a binary file or a corrupt gzip stream.
pub fn classify_file(
    detectors: &[Detector],
    path: &Path,
) -> std::io::Result<Option<Classification>> {
    Ok(Classifier::new(detectors.to_vec(), Vec::new())
        .classify_file(path)?
        .into_classification())
}

/// The classification of one plain text.
pub fn classify_text(
    detectors: &[Detector],
    name: &str,
    text: &str,
    truncated: bool,
) -> Classification {
    Classifier::new(detectors.to_vec(), Vec::new()).classify_text(name, text, truncated)
}

/// Every file under `root` (or `root` itself), classified; binaries and
/// corrupt gzip streams skipped.
pub fn classify_path(detectors: &[Detector], root: &Path) -> std::io::Result<Vec<Classification>> {
    Ok(Classifier::new(detectors.to_vec(), Vec::new())
        .classify_path(root)?
        .into_iter()
        .filter_map(Outcome::into_classification)
        .collect())
}
