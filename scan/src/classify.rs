//! Classifying files: the validated detectors (`detectors.rs`) run over each
//! text file (binaries skipped, at most [`MAX_OBJECT_BYTES`] read), and the
//! file gets the highest level any match implies, its data types, and counts
//! per detector — never the matched values.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::detectors::{classify, DataType, Detector, Level};

/// Bytes of one object that are classified; the rest is not read.
pub const MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Classification {
    pub file: String,
    pub level: Level,
    pub data_types: BTreeSet<DataType>,
    pub counts: BTreeMap<&'static str, usize>,
    /// The object was larger than the cap: only its start was read.
    pub truncated: bool,
}

/// A file's classification; None for a binary file.
pub fn classify_file(
    detectors: &[Detector],
    path: &Path,
) -> std::io::Result<Option<Classification>> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut bytes = Vec::new();
    file.take(MAX_OBJECT_BYTES).read_to_end(&mut bytes)?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(Some(classify_text(
        detectors,
        &path.display().to_string(),
        &text,
        size > MAX_OBJECT_BYTES,
    )))
}

/// The classification of one text.
pub fn classify_text(
    detectors: &[Detector],
    name: &str,
    text: &str,
    truncated: bool,
) -> Classification {
    let counts = classify(detectors, text);
    let mut level = Level::Public;
    let mut data_types = BTreeSet::new();
    for detector in detectors {
        if counts.get(detector.id).is_some_and(|n| *n > 0) {
            level = level.max(detector.level);
            data_types.insert(detector.data_type);
        }
    }
    Classification {
        file: name.to_string(),
        level,
        data_types,
        counts: counts.into_iter().filter(|(_, n)| *n > 0).collect(),
        truncated,
    }
}

/// Every text file under `root` (or `root` itself), classified; binaries
/// skipped.
pub fn classify_path(detectors: &[Detector], root: &Path) -> std::io::Result<Vec<Classification>> {
    let mut out = Vec::new();
    for path in crate::engine::collect_files(root)? {
        if let Some(found) = classify_file(detectors, &path)? {
            out.push(found);
        }
    }
    Ok(out)
}
