//! The engine against the labelled corpus: every planted secret of every
//! built-in rule is found at its file and line, nothing else is found in the
//! filler, no finding (nor its JSON) holds a secret, and a secret across a
//! chunk border is found once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failure

use std::collections::BTreeSet;

use longhaul_scan::corpus::{self, clean_line};
use longhaul_scan::engine::{CHUNK, OVERLAP};
use longhaul_scan::Scanner;

fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "longhaul-scan-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

#[test]
fn every_planted_secret_is_found_where_it_was_planted_and_nothing_else() {
    let scanner = Scanner::builtin();
    assert!(
        scanner.rules().len() >= 30,
        "{} rules",
        scanner.rules().len()
    );
    let dir = temp_dir("corpus");
    let planted = corpus::generate(&dir, scanner.rules(), 8, 256 * 1024, 3, 42).unwrap();
    assert_eq!(planted.len(), scanner.rules().len() * 3);
    let report = scanner.scan_path(&dir).unwrap();
    assert_eq!(report.files, 8);

    let prefix = format!("{}/", dir.display());
    let found: BTreeSet<(String, usize, &str)> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.file.trim_start_matches(&prefix).to_string(),
                f.line,
                f.rule.as_str(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, usize, &str)> = planted
        .iter()
        .map(|p| (p.file.clone(), p.line, p.rule))
        .collect();
    let missed: Vec<_> = expected.difference(&found).collect();
    let extra: Vec<_> = found.difference(&expected).collect();
    assert!(missed.is_empty(), "missed (recall < 1): {missed:?}");
    assert!(extra.is_empty(), "false positives: {extra:?}");

    // Fingerprints match; no secret appears in any finding or its JSON.
    for finding in &report.findings {
        let label = planted
            .iter()
            .find(|p| {
                finding.file.ends_with(&p.file) && p.line == finding.line && p.rule == finding.rule
            })
            .unwrap();
        assert_eq!(finding.fingerprint, label.fingerprint);
        let json = serde_json::to_string(finding).unwrap();
        assert!(!json.contains(&label.secret), "{json}");
        assert!(!finding.redacted.contains(&label.secret));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn clean_text_has_no_findings() {
    let scanner = Scanner::builtin();
    let mut rng = fastrand::Rng::with_seed(9);
    let text: String = (0..50_000).map(|_| clean_line(&mut rng) + "\n").collect();
    let findings = scanner.scan_reader("clean", text.as_bytes()).unwrap();
    assert!(findings.is_empty(), "{findings:?}");
}

#[test]
fn a_secret_across_a_chunk_border_is_found_once_at_its_line_and_column() {
    let scanner = Scanner::builtin();
    let mut rng = fastrand::Rng::with_seed(5);
    let rule = &scanner.rules()[0];
    let (line_text, _secret) = (rule.sample)(&mut rng);
    for offset in [
        CHUNK - 10,
        CHUNK - OVERLAP + 3,
        CHUNK + 7,
        2 * CHUNK - 1 - OVERLAP / 2,
    ] {
        // Filler lines of 99 chars + LF up to about `offset`.
        let mut text = String::new();
        let mut lines = 0;
        while text.len() + 100 <= offset {
            text.push_str(&"a".repeat(99));
            text.push('\n');
            lines += 1;
        }
        let pad = offset - text.len();
        text.push_str(&" ".repeat(pad));
        let column = pad + line_text.find(&_secret).unwrap() + 1;
        text.push_str(&line_text);
        text.push('\n');
        text.push_str(&"b".repeat(3 * OVERLAP));
        let findings = scanner.scan_reader("border", text.as_bytes()).unwrap();
        let own: Vec<_> = findings.iter().filter(|f| f.rule == rule.id).collect();
        assert_eq!(own.len(), 1, "offset {offset}: {findings:?}");
        assert_eq!(own[0].line, lines + 1, "offset {offset}");
        assert_eq!(own[0].column, column, "offset {offset}");
    }
}

#[test]
fn a_private_key_whose_header_ends_at_a_chunk_border_is_found_once() {
    let scanner = Scanner::builtin();
    let mut rng = fastrand::Rng::with_seed(13);
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = |len: usize| -> String {
        (0..len)
            .map(|_| char::from(B64[rng.usize(..B64.len())]))
            .collect()
    };
    let header = "-----BEGIN PRIVATE KEY-----\n";
    // The chunk's report border (just after the last newline before
    // CHUNK - OVERLAP) falls right after the header, inside it, or inside
    // the (long) first base64 line.
    for header_end in [
        CHUNK - OVERLAP - 1,
        CHUNK - OVERLAP - 100,
        CHUNK - OVERLAP + 5,
        CHUNK - OVERLAP + 20,
    ] {
        let start = header_end - header.len();
        let mut text = String::new();
        let mut lines = 0;
        while text.len() + 100 <= start {
            text.push_str(&"c".repeat(99));
            text.push('\n');
            lines += 1;
        }
        text.push_str(&"-".repeat(start - text.len()));
        // Keep the header at the start of its own line.
        text.pop();
        text.push('\n');
        text.push_str(header);
        let secret = b64(300);
        text.push_str(&secret);
        text.push('\n');
        text.push_str(&b64(64));
        text.push_str("\n-----END PRIVATE KEY-----\n");
        text.push_str(&"d".repeat(2 * OVERLAP));
        let findings = scanner.scan_reader("pem", text.as_bytes()).unwrap();
        assert_eq!(findings.len(), 1, "header end {header_end}: {findings:?}");
        assert_eq!(findings[0].rule, "private-key");
        assert_eq!(findings[0].line, lines + 3, "header end {header_end}");
        assert_eq!(findings[0].column, 1);
        assert_eq!(
            scanner.scan_bytes("pem", text.as_bytes(), 3),
            findings,
            "header end {header_end}"
        );
    }
}
