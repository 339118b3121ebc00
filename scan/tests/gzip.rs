//! Gzip in leakage scans: a gzip file in a folder and a gzip stream are
//! scanned as the text they inflate to (lines counted in that text), a
//! corrupt gzip file and a gzip of binary content are skipped and counted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failure

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use longhaul_scan::classify::SkipReason;
use longhaul_scan::engine::{is_gzip, Content};
use longhaul_scan::{corpus, Scanner};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "longhaul-scan-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn gzip_files_in_a_folder_are_scanned_decompressed() {
    let token = corpus::sample_secret("github-token", 1).unwrap();
    let dir = temp_dir("gzip");
    let text = format!("# deploy\nexport A=1\nGITHUB_TOKEN={token}\n");
    std::fs::write(dir.join("env.txt.gz"), gzip(text.as_bytes())).unwrap();
    // A gzip of binary content, and a file that starts like gzip but is not.
    std::fs::write(dir.join("blob.bin.gz"), gzip(&[0u8, 1, 2, 3, 0, 9])).unwrap();
    std::fs::write(dir.join("broken.gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5]).unwrap();

    let report = Scanner::builtin().scan_path(&dir).unwrap();
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.rule, "github-token");
    assert!(finding.file.ends_with("env.txt.gz"), "{}", finding.file);
    assert_eq!((finding.line, finding.column), (3, 14));
    assert!(!finding.unverified);
    assert_eq!(report.files, 1);
    assert_eq!(report.skipped_binary, 1);
    assert_eq!(report.skipped_corrupt_gzip, 1);
}

#[test]
fn a_gzip_stream_is_scanned_as_it_inflates_across_members_and_chunks() {
    let token = corpus::sample_secret("npm-token", 2).unwrap();
    // Two gzip members (as the audit exporter writes them), the secret in
    // the second, past the first 1 MiB chunk of the inflated text.
    let filler = "let x = 1;\n".repeat(200_000);
    let mut stream = gzip(filler.as_bytes());
    stream.extend(gzip(format!("NPM_TOKEN={token}\n").as_bytes()));
    assert!(is_gzip(&stream));
    let scanner = Scanner::builtin();
    let Content::Findings(findings) = scanner.scan_content("logs.gz", &stream[..], false).unwrap()
    else {
        panic!("a valid gzip stream was skipped");
    };
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].rule, "npm-token");
    assert_eq!(findings[0].line, 200_001);

    // The same bytes not compressed give the same findings.
    let mut plain = filler.into_bytes();
    plain.extend(format!("NPM_TOKEN={token}\n").bytes());
    assert_eq!(
        scanner.scan_content("logs.gz", &plain[..], false).unwrap(),
        Content::Findings(findings)
    );

    // Cut short: a corrupt stream is skipped, not half-reported.
    assert_eq!(
        scanner
            .scan_content("cut.gz", &stream[..stream.len() - 10], false)
            .unwrap(),
        Content::Skipped(SkipReason::CorruptGzip)
    );
}
