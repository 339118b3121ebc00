//! Scanning a git repository's whole history, every branch and tag: the
//! lines each commit added (`git log --all -p -U0`), hunk by hunk, so a
//! secret that was committed and later removed is still found, with the
//! commit, the path and its line in that commit's version of the file. A URL
//! is cloned (bare, into a temp folder) first. Uses the `git` program.
//! Findings are those of `Scanner::scan_reader` on each hunk, so custom
//! rules apply and allowlisted paths and fingerprints are dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::engine::Scanner;
use crate::finding::Finding;

/// Whether `target` names a repository to scan by history: a URL, or a
/// folder that is a git work tree or bare repository.
pub fn is_repository(target: &str) -> bool {
    if target.contains("://") || target.starts_with("git@") {
        return true;
    }
    let path = Path::new(target);
    path.join(".git").exists() || (path.join("HEAD").is_file() && path.join("objects").is_dir())
}

/// A clone removed when dropped.
struct TempClone(PathBuf);

impl Drop for TempClone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every finding in the history of `target` (a path or a URL).
pub fn scan_history(scanner: &Scanner, target: &str) -> std::io::Result<Vec<Finding>> {
    let _clone;
    let repo: PathBuf = if Path::new(target).exists() {
        PathBuf::from(target)
    } else {
        let dir = std::env::temp_dir().join(format!(
            "longhaul-scan-clone-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let status = Command::new("git")
            .args(["clone", "--quiet", "--mirror", "--", target])
            .arg(&dir)
            .status()?;
        _clone = TempClone(dir.clone());
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "git clone {target} failed: {status}"
            )));
        }
        dir
    };
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args([
            // Paths as they are (only ", \ and control characters quoted).
            "-c",
            "core.quotePath=false",
            "log",
            "--all",
            "-p",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            // A repository's own textconv filters are programs it names.
            "--no-textconv",
            // Whatever the repository's config says: prefixes as parsed
            // here, and the root commit's diff too.
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "--root",
            "--no-renames",
            "--format=commit %H",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("git log gave no output stream"))?;
    let mut findings = Vec::new();
    let mut hunk = Hunk::default();
    let mut commit = String::new();
    let mut path: Option<String> = None;
    // Between `diff --git` and the first `@@`: `---`/`+++` are headers;
    // inside hunks every `+` line is content, even one reading `+++ x`.
    let mut in_header = false;
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        if !in_header && text.starts_with('+') {
            hunk.text.push_str(&text[1..]);
            hunk.text.push('\n');
        } else if let Some(hash) = text.strip_prefix("commit ") {
            hunk.flush(scanner, &commit, path.as_deref(), &mut findings)?;
            commit = hash.trim().to_string();
            path = None;
            in_header = false;
        } else if text.starts_with("diff --git ") {
            hunk.flush(scanner, &commit, path.as_deref(), &mut findings)?;
            path = None;
            in_header = true;
        } else if let Some(target) = text.strip_prefix("+++ ").filter(|_| in_header) {
            path = new_path(target);
        } else if text.starts_with("@@ ") {
            hunk.flush(scanner, &commit, path.as_deref(), &mut findings)?;
            hunk.first_line = new_start(&text).unwrap_or(1);
            in_header = false;
        }
    }
    hunk.flush(scanner, &commit, path.as_deref(), &mut findings)?;
    let status = child.wait()?;
    if !status.success() {
        return Err(std::io::Error::other(format!("git log failed: {status}")));
    }
    findings.sort_by(|a, b| {
        (&a.commit, &a.file, a.line, a.column, &a.rule)
            .cmp(&(&b.commit, &b.file, b.line, b.column, &b.rule))
    });
    Ok(findings)
}

/// The added lines of one hunk: consecutive lines of the new file.
#[derive(Default)]
struct Hunk {
    first_line: usize,
    text: String,
}

impl Hunk {
    fn flush(
        &mut self,
        scanner: &Scanner,
        commit: &str,
        path: Option<&str>,
        findings: &mut Vec<Finding>,
    ) -> std::io::Result<()> {
        if self.text.is_empty() {
            return Ok(());
        }
        if let Some(path) = path {
            for mut finding in scanner.scan_reader(path, self.text.as_bytes())? {
                finding.line += self.first_line.saturating_sub(1);
                finding.commit = Some(commit.to_string());
                findings.push(finding);
            }
        }
        self.text.clear();
        Ok(())
    }
}

/// The path of `+++ b/path` (None for `/dev/null`); a quoted path
/// (`"b/a\"b"`) is unquoted.
fn new_path(target: &str) -> Option<String> {
    // git ends a path holding spaces with a tab.
    let target = target.strip_suffix('\t').unwrap_or(target);
    let unquoted = match target.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => {
            // C-style escapes, octal ones being raw bytes (UTF-8 names).
            let mut out: Vec<u8> = Vec::with_capacity(quoted.len());
            let bytes = quoted.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] != b'\\' || i + 1 == bytes.len() {
                    out.push(bytes[i]);
                    i += 1;
                    continue;
                }
                let next = bytes[i + 1];
                let octal = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
                if let Some(digits) = octal {
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    out.push(u8::try_from(value).unwrap_or(b'?'));
                    i += 4;
                    continue;
                }
                out.push(match next {
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    other => other,
                });
                i += 2;
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        None => target.to_string(),
    };
    unquoted.strip_prefix("b/").map(str::to_string)
}

/// The new file's first line in `@@ -a,b +c,d @@`.
fn new_start(header: &str) -> Option<usize> {
    let plus = header
        .split_whitespace()
        .find(|part| part.starts_with('+'))?;
    plus[1..].split(',').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::new_path;

    #[test]
    fn diff_paths_are_unquoted() {
        assert_eq!(new_path("b/src/app.py"), Some("src/app.py".into()));
        assert_eq!(new_path("b/a b.txt\t"), Some("a b.txt".into()));
        assert_eq!(new_path("\"b/a\\\"b\\\\c\""), Some("a\"b\\c".into()));
        assert_eq!(new_path("\"b/caf\\303\\251.txt\""), Some("café.txt".into()));
        assert_eq!(new_path("\"b/tab\\there\""), Some("tab\there".into()));
        assert_eq!(new_path("/dev/null"), None);
    }
}
