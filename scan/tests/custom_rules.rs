//! Custom leakage rules (regex, keywords, entropy), their refusals,
//! allowlists (fingerprints and path globs), and parallel scans of one
//! buffer (`scan_bytes`) that must equal the streaming scan, including a
//! private-key block across a segment border.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failure

use std::collections::BTreeSet;

use longhaul_scan::corpus;
use longhaul_scan::custom::shannon_entropy;
use longhaul_scan::{git, Allowlist, Charset, CustomRule, Finding, Scanner, Severity};

fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "longhaul-custom-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

fn scanner_with(custom: Vec<CustomRule>) -> Scanner {
    Scanner::with_rules(Vec::new(), custom, Allowlist::default())
}

/// (rule, line, column) of each finding.
fn places(findings: &[Finding]) -> Vec<(&str, usize, usize)> {
    findings
        .iter()
        .map(|f| (f.rule.as_str(), f.line, f.column))
        .collect()
}

fn random_base64(rng: &mut fastrand::Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.usize(..ALPHABET.len())]))
        .collect()
}

#[test]
fn regex_rules_with_and_without_a_secret_group() {
    let grouped = CustomRule::regex(
        "acme-token",
        Severity::High,
        r"acme_token\s*=\s*'(?P<secret>ACME-[0-9A-F]{12})'",
    )
    .unwrap();
    let whole = CustomRule::regex("acme-id", Severity::Low, r"\bACMEID[0-9]{8}\b").unwrap();
    let scanner = scanner_with(vec![grouped, whole]);
    let text = "first line\n  acme_token = 'ACME-0123456789AB'\nid ACMEID12345678 and ACMEID87654321\nACMEID1234\n";
    let findings = scanner.scan_reader("conf.py", text.as_bytes()).unwrap();
    assert_eq!(
        places(&findings),
        [("acme-token", 2, 17), ("acme-id", 3, 4), ("acme-id", 3, 23)],
        "{findings:?}"
    );
    for finding in &findings {
        assert_eq!(finding.file, "conf.py");
        assert!(finding.commit.is_none());
        for secret in ["ACME-0123456789AB", "ACMEID12345678", "ACMEID87654321"] {
            assert!(!finding.redacted.contains(secret), "{finding:?}");
            assert!(!serde_json::to_string(finding).unwrap().contains(secret));
        }
    }
    assert_eq!(findings[0].severity, Severity::High);
    assert_eq!(
        findings[0].fingerprint,
        longhaul_scan::finding::fingerprint("acme-token", "ACME-0123456789AB")
    );
    assert_eq!(findings[0].redacted, "ACME****(17 chars)");
}

#[test]
fn keyword_rules_match_case_insensitively() {
    let rule = CustomRule::keywords(
        "codename",
        Severity::Medium,
        &["Project Nightjar".to_string(), "ÜBERGEHEIM".to_string()],
    )
    .unwrap();
    let scanner = scanner_with(vec![rule]);
    let text =
        "notes\nabout PROJECT NIGHTJAR and project nightjar.\nübergeheim\nproject night jar\n";
    let findings = scanner.scan_reader("notes.txt", text.as_bytes()).unwrap();
    assert_eq!(
        places(&findings),
        [("codename", 2, 7), ("codename", 2, 28), ("codename", 3, 1)]
    );
    assert_eq!(
        findings[0].fingerprint,
        longhaul_scan::finding::fingerprint("codename", "PROJECT NIGHTJAR")
    );
    assert!(!findings[0].redacted.contains("NIGHTJAR"));

    assert!(CustomRule::keywords("k", Severity::Low, &[]).is_err());
    assert!(CustomRule::keywords("k", Severity::Low, &["a".to_string(), String::new()]).is_err());
}

#[test]
fn entropy_rules_find_random_tokens_only() {
    let mut rng = fastrand::Rng::with_seed(17);
    let token = random_base64(&mut rng, 40);
    assert!(shannon_entropy(&token) > 4.5, "{}", shannon_entropy(&token));
    let rule =
        CustomRule::entropy("high-entropy", Severity::Medium, 4.5, Charset::Base64, 20).unwrap();
    let scanner = scanner_with(vec![rule]);
    let text = format!(
        "thequickbrownfoxjumpsoverthelazydogagainandagain\naaaaaaaaaaaaaaaaaaaaaaaa\nkey: \"{token}\"\nshort {}\n",
        &token[..12]
    );
    let findings = scanner.scan_reader("x.yaml", text.as_bytes()).unwrap();
    assert_eq!(places(&findings), [("high-entropy", 3, 7)], "{findings:?}");
    assert!(!findings[0].redacted.contains(&token));
    assert_eq!(
        findings[0].fingerprint,
        longhaul_scan::finding::fingerprint("high-entropy", &token)
    );

    // Hex: a commit hash is found by a hex rule; a base64 token is not one
    // long hex run.
    let hex = CustomRule::entropy("hex", Severity::Low, 3.0, Charset::Hex, 32).unwrap();
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
    let scanner = scanner_with(vec![hex]);
    let findings = scanner
        .scan_reader("h", format!("commit {hash}\n{token}\n").as_bytes())
        .unwrap();
    assert_eq!(places(&findings), [("hex", 1, 8)]);

    assert!(CustomRule::entropy("e", Severity::Low, 0.0, Charset::Hex, 20).is_err());
    assert!(CustomRule::entropy("e", Severity::Low, 8.5, Charset::Hex, 20).is_err());
    assert!(CustomRule::entropy("e", Severity::Low, f64::NAN, Charset::Hex, 20).is_err());
    assert!(CustomRule::entropy("e", Severity::Low, 3.0, Charset::Hex, 7).is_err());
    assert!(CustomRule::entropy("e", Severity::Low, 3.0, Charset::Hex, 1025).is_err());
    assert!(CustomRule::entropy("e", Severity::Low, 8.0, Charset::Alphanumeric, 1024).is_ok());
    assert_eq!(
        serde_json::to_string(&Charset::Alphanumeric).unwrap(),
        "\"alphanumeric\""
    );
}

#[test]
fn bad_patterns_are_refused() {
    let refused = |pattern: &str| CustomRule::regex("r", Severity::Low, pattern).unwrap_err();
    assert!(refused("acme_(").contains("does not compile"));
    assert!(refused("a*").contains("empty string"));
    assert!(refused("(?m)^").contains("empty string"));
    assert!(refused(&"a".repeat(1001)).contains("1000"));
    let huge = refused(r"(?:\w{100}){10}");
    assert!(huge.contains("bytes"), "{huge}");
    assert!(CustomRule::regex("", Severity::Low, "abc").is_err());
    assert!(CustomRule::regex("r", Severity::Low, &"a".repeat(1000)).is_ok());
}

#[test]
fn allowlists_drop_exactly_the_listed_fingerprints_and_paths() {
    let mut rng = fastrand::Rng::with_seed(23);
    let rules = longhaul_scan::rules::builtin();
    let github = rules.iter().find(|r| r.id == "github-token").unwrap();
    let dir = temp_dir("allow");
    let files = [
        "src/main.rs",
        "src/lib.rs",
        "tests/a.rs",
        "tests/deep/b.rs",
        "README.md",
        "docs/guide.md",
        "docs/guide.mdx",
        "fixtures/keys.txt",
        "src/fixtures.rs",
    ];
    let mut secrets = Vec::new();
    for file in files {
        let (line, secret) = (github.sample)(&mut rng);
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("// {file}\n{line}\n")).unwrap();
        secrets.push(secret);
    }
    let all = Scanner::builtin().scan_path(&dir).unwrap();
    assert_eq!(all.findings.len(), files.len(), "{:?}", all.findings);
    let lib = all
        .findings
        .iter()
        .find(|f| f.file.ends_with("src/lib.rs"))
        .unwrap();

    let allowlist = Allowlist::new(
        [lib.fingerprint.clone()],
        ["tests/**", "*.md", "fixtures/"].map(String::from),
    )
    .unwrap();
    assert!(!allowlist.is_empty());
    assert!(allowlist.allows(lib));
    let scanner = Scanner::with_rules(longhaul_scan::rules::builtin(), Vec::new(), allowlist);
    let report = scanner.scan_path(&dir).unwrap();
    let prefix = format!("{}/", dir.display());
    let kept: BTreeSet<&str> = report
        .findings
        .iter()
        .map(|f| f.file.trim_start_matches(&prefix))
        .collect();
    assert_eq!(
        kept,
        BTreeSet::from(["src/main.rs", "docs/guide.mdx", "src/fixtures.rs"])
    );
    // Allowlisted files are not even read.
    assert_eq!(report.files, 4);

    // The other scan outputs drop the same findings.
    let text = std::fs::read(dir.join("src/lib.rs")).unwrap();
    assert!(scanner
        .scan_reader("src/lib.rs", &text[..])
        .unwrap()
        .is_empty());
    assert!(scanner.scan_bytes("src/lib.rs", &text, 2).is_empty());
    assert!(scanner.scan_bytes("other.rs", &text, 2).is_empty());
    let text = std::fs::read(dir.join("src/main.rs")).unwrap();
    assert_eq!(
        scanner.scan_reader("src/main.rs", &text[..]).unwrap().len(),
        1
    );
    assert!(scanner
        .scan_reader("x/tests/main.rs", &text[..])
        .unwrap()
        .is_empty());
    assert_eq!(scanner.scan_bytes("src/main.rs", &text, 2).len(), 1);
    assert!(scanner.scan_bytes("docs/x.md", &text, 2).is_empty());
    for finding in &all.findings {
        for secret in &secrets {
            assert!(!finding.redacted.contains(secret.as_str()));
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_history_scan_drops_allowlisted_findings() {
    use std::process::Command;
    let git_ok = |repo: &std::path::Path, args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(status.status.success(), "git {args:?}");
    };
    let mut rng = fastrand::Rng::with_seed(29);
    let rules = longhaul_scan::rules::builtin();
    let stripe = rules.iter().find(|r| r.id == "stripe-secret-key").unwrap();
    let repo = temp_dir("history");
    std::fs::create_dir_all(repo.join("tests")).unwrap();
    git_ok(&repo, &["init", "-q"]);
    std::fs::write(
        repo.join("pay.env"),
        format!("{}\n", (stripe.sample)(&mut rng).0),
    )
    .unwrap();
    std::fs::write(
        repo.join("tests/pay.env"),
        format!("{}\n", (stripe.sample)(&mut rng).0),
    )
    .unwrap();
    git_ok(&repo, &["add", "."]);
    git_ok(&repo, &["commit", "-q", "-m", "keys"]);
    let target = repo.display().to_string();
    let all = git::scan_history(&Scanner::builtin(), &target).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let allowlist = Allowlist::new(Vec::new(), ["tests/".to_string()]).unwrap();
    let scanner = Scanner::with_rules(longhaul_scan::rules::builtin(), Vec::new(), allowlist);
    let kept = git::scan_history(&scanner, &target).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].file, "pay.env");
    let by_fingerprint = Allowlist::new([kept[0].fingerprint.clone()], Vec::new()).unwrap();
    let scanner = Scanner::with_rules(longhaul_scan::rules::builtin(), Vec::new(), by_fingerprint);
    let kept = git::scan_history(&scanner, &target).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].file, "tests/pay.env");
    std::fs::remove_dir_all(repo).unwrap();
}

/// A multi-line PEM block; its secret is the first base64 line.
fn pem_block(rng: &mut fastrand::Rng) -> (String, String) {
    let lines: Vec<String> = (0..6).map(|_| random_base64(rng, 64)).collect();
    let block = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        lines.join("\n")
    );
    (block, lines[0].clone())
}

/// A corpus file of about `bytes` bytes with every built-in rule planted,
/// a PEM block in the middle (at a line start); and the block's offset.
fn corpus_text(bytes: usize, seed: u64) -> (Vec<u8>, usize, String) {
    let dir = temp_dir("segments");
    let rules = longhaul_scan::rules::builtin();
    let planted = corpus::generate(&dir, &rules, 1, bytes, 2, seed).unwrap();
    assert_eq!(planted.len(), rules.len() * 2);
    let mut text = std::fs::read(dir.join(&planted[0].file)).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    let mut middle = text.len() / 2;
    while text[middle - 1] != b'\n' {
        middle += 1;
    }
    let (block, secret) = pem_block(&mut fastrand::Rng::with_seed(seed));
    text.splice(middle..middle, block.bytes());
    (text, middle, secret)
}

fn scanner_with_everything() -> Scanner {
    let custom = vec![
        CustomRule::entropy("hex-entropy", Severity::Low, 3.0, Charset::Hex, 32).unwrap(),
        CustomRule::entropy("b64-entropy", Severity::Low, 4.5, Charset::Base64, 30).unwrap(),
        CustomRule::regex(
            "request-id",
            Severity::Low,
            r#"request_id = "(?P<secret>[0-9a-f]{8})-"#,
        )
        .unwrap(),
        CustomRule::keywords("todo", Severity::Low, &["todo: move".to_string()]).unwrap(),
    ];
    Scanner::with_rules(
        longhaul_scan::rules::builtin(),
        custom,
        Allowlist::default(),
    )
}

#[test]
fn parallel_segments_equal_the_streaming_scan() {
    let scanner = scanner_with_everything();
    // Over three chunks, so segments hold several chunks too.
    let (text, pem_at, pem_secret) = corpus_text(3 * 1024 * 1024, 31);
    let expected = scanner.scan_reader("big.rs", &text[..]).unwrap();
    let keys: Vec<&Finding> = expected
        .iter()
        .filter(|f| f.rule == "private-key")
        .collect();
    let pem_line = text[..pem_at].iter().filter(|&&b| b == b'\n').count() + 2;
    assert!(
        keys.iter().any(|f| f.line == pem_line && f.column == 1),
        "{keys:?}"
    );
    for rule in ["hex-entropy", "b64-entropy", "request-id", "todo"] {
        assert!(
            expected.iter().filter(|f| f.rule == rule).count() > 10,
            "{rule}"
        );
    }
    for threads in [1, 2, 4] {
        assert_eq!(
            scanner.scan_bytes("big.rs", &text, threads),
            expected,
            "threads {threads}"
        );
    }
    // A segment border between the key's header and its secret, and one in
    // the secret itself.
    let body = pem_at + "-----BEGIN RSA PRIVATE KEY-----\n".len();
    for segment in [body, body + 10, pem_at, pem_at + 5, 1 << 20] {
        assert_eq!(
            scanner.scan_bytes_segmented("big.rs", &text, segment),
            expected,
            "segment {segment}"
        );
    }
    for finding in &expected {
        assert!(!finding.redacted.contains(&pem_secret));
    }
}

#[test]
fn tiny_segments_equal_the_streaming_scan() {
    let scanner = scanner_with_everything();
    let (text, _, _) = corpus_text(96 * 1024, 37);
    let expected = scanner.scan_reader("small.rs", &text[..]).unwrap();
    assert!(expected.iter().any(|f| f.rule == "private-key"));
    for segment in [1, 64, 1000, 4096] {
        assert_eq!(
            scanner.scan_bytes_segmented("small.rs", &text, segment),
            expected,
            "segment {segment}"
        );
    }
    // Edge cases: nothing, no newline at all, no final newline.
    assert!(scanner.scan_bytes("e", b"", 4).is_empty());
    let line = b"x request_id = \"0123abcd-\" y";
    let one = scanner.scan_reader("one", &line[..]).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(scanner.scan_bytes_segmented("one", line, 3), one);
}

#[test]
fn planted_secrets_are_never_in_a_finding() {
    let dir = temp_dir("redaction");
    let scanner = scanner_with_everything();
    let planted = corpus::generate(&dir, scanner.rules(), 2, 64 * 1024, 2, 41).unwrap();
    let report = scanner.scan_path(&dir).unwrap();
    for finding in &report.findings {
        let json = serde_json::to_string(finding).unwrap();
        for label in &planted {
            assert!(!json.contains(&label.secret), "{json}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
