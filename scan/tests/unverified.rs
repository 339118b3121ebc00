//! Made-up tokens: a match of a built-in format whose checksum (or
//! alphabet) check fails is not a finding, unless the scanner reports
//! unverified matches: then it is one, marked unverified, severity low.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failure

use longhaul_scan::{corpus, Scanner, Severity};

/// A GitHub token with a valid checksum, then the same with its last
/// character changed (the checksum no longer matches).
fn github_tokens() -> (String, String) {
    let valid = corpus::sample_secret("github-token", 3).unwrap();
    let mut made_up = valid.clone();
    let last = made_up.pop().unwrap();
    made_up.push(if last == 'a' { 'b' } else { 'a' });
    (valid, made_up)
}

#[test]
fn made_up_tokens_are_reported_only_as_unverified_when_asked() {
    let (valid, made_up) = github_tokens();
    // An AWS key id with an 8: not in AWS's alphabet (A-Z, 2-7).
    let aws = corpus::sample_secret("aws-access-key-id", 3).unwrap();
    let aws_made_up = format!("{}8{}", &aws[..8], &aws[9..]);
    let text =
        format!("GITHUB_TOKEN={valid}\nGH_TOKEN={made_up}\naws_access_key_id = {aws_made_up}\n");

    let strict = Scanner::builtin().scan_bytes("a.env", text.as_bytes(), 1);
    assert_eq!(strict.len(), 1, "{strict:?}");
    assert_eq!((strict[0].line, strict[0].unverified), (1, false));
    assert_eq!(strict[0].severity, Severity::Critical);

    let lenient = Scanner::builtin()
        .reporting_unverified()
        .scan_bytes("a.env", text.as_bytes(), 1);
    let seen: Vec<(usize, &str, bool, Severity)> = lenient
        .iter()
        .map(|f| (f.line, f.rule.as_str(), f.unverified, f.severity))
        .collect();
    assert_eq!(
        seen,
        [
            (1, "github-token", false, Severity::Critical),
            (2, "github-token", true, Severity::Low),
            (3, "aws-access-key-id", true, Severity::Low),
        ]
    );
    let json = serde_json::to_value(&lenient[1]).unwrap();
    assert_eq!(json["unverified"], true);
    assert_eq!(json["severity"], "low");
    assert!(!json.to_string().contains(&made_up));
    // A verified finding's JSON does not carry the flag.
    assert!(serde_json::to_value(&lenient[0])
        .unwrap()
        .get("unverified")
        .is_none());
}
