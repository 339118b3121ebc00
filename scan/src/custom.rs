//! User-defined leakage rules and allowlists: custom rules (a regex, a list
//! of keywords, or high-entropy tokens of a charset) that the engine runs on
//! every chunk after the built-in rules, and the allowlist of fingerprints
//! and path globs whose findings are dropped from every scan. Also the
//! checked compilation of user regexes that classification rules share.

use std::collections::HashSet;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use regex::{Regex, RegexBuilder};

use crate::finding::Finding;
use crate::rules::Severity;

/// Longest user pattern accepted, in bytes.
pub const MAX_PATTERN_CHARS: usize = 1000;
/// Compiled-size limit of a user regex.
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Compiled-size limit of a keyword alternation (many keywords are fine).
const MAX_KEYWORDS_BYTES: usize = 8 << 20;
/// Runs longer than this are blobs (embedded files, images), not tokens: an
/// entropy rule ignores them. Below the engine's overlap, so a run is always
/// seen whole by the chunk (or segment) that reports it.
pub const MAX_ENTROPY_RUN: usize = 4096;

/// The characters of an entropy rule's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Charset {
    /// `A-Za-z0-9+/=` and the URL-safe `-_`.
    Base64,
    /// `0-9a-fA-F`.
    Hex,
    /// `A-Za-z0-9`.
    Alphanumeric,
}

impl Charset {
    /// Membership of every byte.
    fn table(self) -> [bool; 256] {
        let mut table = [false; 256];
        for b in 0..=255u8 {
            table[usize::from(b)] = match self {
                Charset::Base64 => {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
                }
                Charset::Hex => b.is_ascii_hexdigit(),
                Charset::Alphanumeric => b.is_ascii_alphanumeric(),
            };
        }
        table
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    /// `group`: the regex has a named group `secret`.
    Regex {
        regex: Regex,
        group: bool,
    },
    Keywords(Regex),
    Entropy {
        threshold: f64,
        charset: Charset,
        member: Box<[bool; 256]>,
        min_length: usize,
    },
}

/// A user-defined leakage rule.
#[derive(Debug, Clone)]
pub struct CustomRule {
    pub id: String,
    pub severity: Severity,
    matcher: Matcher,
}

/// One match of a custom rule in a text (whose whole match starts before
/// the report limit): where the secret starts, and the secret.
pub(crate) struct CustomHit<'t> {
    pub start: usize,
    pub secret: &'t str,
}

/// Compiles a user regex, refusing patterns that are too long, do not
/// compile, compile too big, or match the empty string.
pub(crate) fn compile_user_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_CHARS {
        return Err(format!(
            "pattern is {} characters long; at most {MAX_PATTERN_CHARS} are allowed",
            pattern.len()
        ));
    }
    let regex = RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(limit) => format!(
                "pattern compiles to more than {limit} bytes; simplify it (fewer or smaller repetitions, ASCII classes)"
            ),
            other => format!("pattern does not compile: {other}"),
        })?;
    if regex.is_match("") {
        return Err("pattern matches the empty string; it would match everywhere".to_string());
    }
    Ok(regex)
}

fn checked_id(id: String) -> Result<String, String> {
    if id.trim().is_empty() {
        return Err("rule id must not be empty".to_string());
    }
    Ok(id)
}

impl CustomRule {
    /// A user regex (regex crate syntax). If it has a named group `secret`,
    /// that group is the secret, else the whole match. Refuses patterns that
    /// do not compile, are over 1000 chars, compile to more than 1 MiB, or
    /// match the empty string.
    pub fn regex(id: impl Into<String>, severity: Severity, pattern: &str) -> Result<Self, String> {
        let id = checked_id(id.into())?;
        let regex = compile_user_regex(pattern).map_err(|error| format!("rule {id}: {error}"))?;
        let group = regex.capture_names().any(|name| name == Some("secret"));
        Ok(CustomRule {
            id,
            severity,
            matcher: Matcher::Regex { regex, group },
        })
    }

    /// Literal keywords, matched case-insensitively; the matched keyword
    /// text is the secret. Refuses an empty list or empty keywords.
    pub fn keywords(
        id: impl Into<String>,
        severity: Severity,
        keywords: &[String],
    ) -> Result<Self, String> {
        let id = checked_id(id.into())?;
        if keywords.is_empty() {
            return Err(format!("rule {id}: the keyword list is empty"));
        }
        if keywords.iter().any(|keyword| keyword.is_empty()) {
            return Err(format!("rule {id}: a keyword is empty"));
        }
        let alternation = keywords
            .iter()
            .map(|keyword| regex::escape(keyword))
            .collect::<Vec<_>>()
            .join("|");
        let regex = RegexBuilder::new(&format!("(?i:{alternation})"))
            .size_limit(MAX_KEYWORDS_BYTES)
            .build()
            .map_err(|error| format!("rule {id}: the keywords do not compile: {error}"))?;
        Ok(CustomRule {
            id,
            severity,
            matcher: Matcher::Keywords(regex),
        })
    }

    /// High-entropy tokens: maximal runs of `charset` characters at least
    /// `min_length` long (8..=1024) whose Shannon entropy in bits per char is
    /// at least `threshold` (0.0 < threshold <= 8.0). Runs longer than
    /// [`MAX_ENTROPY_RUN`] are ignored as blobs.
    pub fn entropy(
        id: impl Into<String>,
        severity: Severity,
        threshold: f64,
        charset: Charset,
        min_length: usize,
    ) -> Result<Self, String> {
        let id = checked_id(id.into())?;
        if !(threshold > 0.0 && threshold <= 8.0) {
            return Err(format!(
                "rule {id}: entropy threshold {threshold} is outside (0, 8] bits per character"
            ));
        }
        if !(8..=1024).contains(&min_length) {
            return Err(format!(
                "rule {id}: minimum length {min_length} is outside 8..=1024"
            ));
        }
        Ok(CustomRule {
            id,
            severity,
            matcher: Matcher::Entropy {
                threshold,
                charset,
                member: Box::new(charset.table()),
                min_length,
            },
        })
    }

    /// The charset of an entropy rule.
    pub fn charset(&self) -> Option<Charset> {
        match &self.matcher {
            Matcher::Entropy { charset, .. } => Some(*charset),
            _ => None,
        }
    }

    /// Every match in `text` whose whole match starts before `report_before`.
    pub(crate) fn find<'t>(
        &self,
        text: &'t str,
        report_before: usize,
        out: &mut impl FnMut(CustomHit<'t>),
    ) {
        match &self.matcher {
            Matcher::Regex { regex, group: true } => {
                for captures in regex.captures_iter(text) {
                    let Some(whole) = captures.get(0) else {
                        continue;
                    };
                    if whole.start() >= report_before {
                        break;
                    }
                    let Some(secret) = captures.name("secret") else {
                        continue;
                    };
                    if secret.as_str().is_empty() {
                        continue;
                    }
                    out(CustomHit {
                        start: secret.start(),
                        secret: secret.as_str(),
                    });
                }
            }
            Matcher::Regex {
                regex,
                group: false,
            }
            | Matcher::Keywords(regex) => {
                for found in regex.find_iter(text) {
                    if found.start() >= report_before {
                        break;
                    }
                    if found.as_str().is_empty() {
                        continue;
                    }
                    out(CustomHit {
                        start: found.start(),
                        secret: found.as_str(),
                    });
                }
            }
            Matcher::Entropy {
                threshold,
                member,
                min_length,
                ..
            } => {
                let bytes = text.as_bytes();
                let mut i = 0;
                while i < bytes.len() && i < report_before {
                    if !member[usize::from(bytes[i])] {
                        i += 1;
                        continue;
                    }
                    let start = i;
                    while i < bytes.len() && member[usize::from(bytes[i])] {
                        i += 1;
                    }
                    let len = i - start;
                    if len < *min_length || len > MAX_ENTROPY_RUN {
                        continue;
                    }
                    // Charsets are ASCII: the run is on character boundaries.
                    let run = &text[start..i];
                    if byte_entropy(run.as_bytes()) >= *threshold {
                        out(CustomHit { start, secret: run });
                    }
                }
            }
        }
    }
}

/// Shannon entropy of the bytes, in bits per byte.
fn byte_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    entropy_of_counts(counts.iter().copied(), bytes.len())
}

fn entropy_of_counts(counts: impl Iterator<Item = u32>, total: usize) -> f64 {
    let total = total as f64;
    counts
        .filter(|&n| n > 0)
        .map(|n| {
            let p = f64::from(n) / total;
            -p * p.log2()
        })
        .sum()
}

/// Shannon entropy of `text` in bits per character (0 for an empty text).
pub fn shannon_entropy(text: &str) -> f64 {
    if text.is_ascii() {
        return byte_entropy(text.as_bytes());
    }
    let mut counts: std::collections::HashMap<char, u32> = std::collections::HashMap::new();
    let mut total = 0usize;
    for c in text.chars() {
        *counts.entry(c).or_insert(0) += 1;
        total += 1;
    }
    entropy_of_counts(counts.into_values(), total)
}

/// Findings to drop: by fingerprint (exact) or by path glob on
/// `Finding.file`.
///
/// Globs (the `globset` crate's syntax): `*` is any characters but '/', `**`
/// any characters including '/', `?` one character other than '/', `[ab]`
/// and `[!ab]` a character class, `{a,b}` alternatives, `\` escapes the next
/// character. A pattern ending in '/' matches
/// everything under that folder. A pattern is matched against the whole path
/// and against every part of it that starts after a '/', so `*.md` matches
/// that name in any folder (as in .gitignore) and `tests/**` matches
/// `tests/a.rs` as well as `/repo/tests/a.rs` (findings carry the path as
/// scanned, which may have any prefix); a pattern starting with '/' is
/// anchored at the start of the path.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    fingerprints: HashSet<String>,
    /// All path globs as one set; None when there are none.
    paths: Option<GlobSet>,
}

impl Allowlist {
    pub fn new(
        fingerprints: impl IntoIterator<Item = String>,
        paths: impl IntoIterator<Item = String>,
    ) -> Result<Self, String> {
        let mut set = HashSet::new();
        for fingerprint in fingerprints {
            let fingerprint = fingerprint.trim().to_ascii_lowercase();
            if fingerprint.is_empty() || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "allowlist fingerprint {fingerprint:?} is not a finding's hex fingerprint"
                ));
            }
            set.insert(fingerprint);
        }
        let mut globs = GlobSetBuilder::new();
        let mut any = false;
        for glob in paths {
            globs.add(path_glob(&glob)?);
            any = true;
        }
        let paths = if any {
            Some(
                globs
                    .build()
                    .map_err(|error| format!("allowlist paths do not compile: {error}"))?,
            )
        } else {
            None
        };
        Ok(Allowlist {
            fingerprints: set,
            paths,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty() && self.paths.is_none()
    }

    /// Whether the path is allowlisted (skip it).
    pub fn allows_path(&self, path: &str) -> bool {
        let Some(paths) = &self.paths else {
            return false;
        };
        let path = path.strip_prefix("./").unwrap_or(path);
        paths.is_match(path)
    }

    /// Whether the finding's fingerprint or path is allowlisted.
    pub fn allows(&self, finding: &Finding) -> bool {
        self.fingerprints.contains(&finding.fingerprint) || self.allows_path(&finding.file)
    }
}

/// One allowlist glob, unanchored at folder boundaries unless it starts
/// with '/', and covering everything under a folder when it ends in '/'.
fn path_glob(glob: &str) -> Result<Glob, String> {
    let trimmed = glob.trim();
    if trimmed.is_empty() || trimmed == "/" {
        return Err(format!("allowlist path glob {glob:?} is empty"));
    }
    if trimmed.len() > MAX_PATTERN_CHARS {
        return Err(format!(
            "allowlist path glob is {} characters long; at most {MAX_PATTERN_CHARS} are allowed",
            trimmed.len()
        ));
    }
    let (anchored, body) = match trimmed.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix("./").unwrap_or(trimmed)),
    };
    let folder = if body.ends_with('/') { "**" } else { "" };
    let pattern = if anchored {
        format!("{body}{folder}")
    } else {
        format!("**/{body}{folder}")
    };
    GlobBuilder::new(&pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|error| format!("allowlist path glob {trimmed:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let list = Allowlist::new(
            Vec::new(),
            [
                "tests/**",
                "*.md",
                "fixtures/",
                "/root/?.txt",
                "a/**/b.rs",
                "*.{pem,key}",
                "vendor/[ab]*/x",
                "lit\\*eral",
            ]
            .map(String::from),
        )
        .unwrap();
        for yes in [
            "tests/a.rs",
            "repo/tests/x/y.rs",
            "README.md",
            "docs/x/README.md",
            "fixtures/a",
            "/tmp/fixtures/b/c",
            "root/a.txt",
            "a/b.rs",
            "a/x/y/b.rs",
            "./tests/a.rs",
            "certs/server.pem",
            "server.key",
            "vendor/a1/x",
            "vendor/b/x",
            "lit*eral",
        ] {
            assert!(list.allows_path(yes), "{yes}");
        }
        for no in [
            "src/tests.rs",
            "README.mdx",
            "fixturesx/a",
            "x/root/a.txt",
            "root/ab.txt",
            "ab/b.rs",
            "server.{pem,key}",
            "server.crt",
            "vendor/c/x",
            "vendor/[ab]/x",
            "litteral",
        ] {
            assert!(!list.allows_path(no), "{no}");
        }
        assert!(Allowlist::new(Vec::new(), [String::new()]).is_err());
        assert!(Allowlist::new(Vec::new(), ["a/[b".to_string()]).is_err());
        assert!(Allowlist::new(["not hex".to_string()], Vec::new()).is_err());
        assert!(Allowlist::default().is_empty());
    }

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abab") - 1.0).abs() < 1e-9);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert!((shannon_entropy("éèéè") - 1.0).abs() < 1e-9);
    }
}
