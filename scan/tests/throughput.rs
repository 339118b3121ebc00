//! Throughput of the engine on the labelled corpus, built-in rules only and
//! with custom rules; ignored by default (run with
//! `cargo test -p longhaul-scan --release --test throughput -- --ignored --nocapture`).

use std::time::Instant;

use longhaul_scan::{corpus, Allowlist, Charset, CustomRule, Scanner, Severity};

#[test]
#[ignore]
fn throughput() {
    let dir = std::env::temp_dir().join(format!("longhaul-throughput-{}", std::process::id()));
    let rules = longhaul_scan::rules::builtin();
    let planted = corpus::generate(&dir, &rules, 1, 64 << 20, 20, 3).unwrap();
    let data = std::fs::read(dir.join(&planted[0].file)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mb = data.len() as f64 / 1e6;
    let builtin = Scanner::builtin();
    let custom = Scanner::with_rules(
        longhaul_scan::rules::builtin(),
        vec![
            CustomRule::regex("r", Severity::Low, r"internal_token_[A-Za-z0-9]{20}").unwrap(),
            CustomRule::keywords("k", Severity::Low, &["project nightjar".to_string()]).unwrap(),
            CustomRule::entropy("e", Severity::Low, 4.5, Charset::Base64, 30).unwrap(),
        ],
        Allowlist::default(),
    );
    for (label, scanner) in [("built-in", &builtin), ("with custom", &custom)] {
        for _ in 0..2 {
            let started = Instant::now();
            let found = scanner.scan_reader("x", &data[..]).unwrap();
            let reader = started.elapsed().as_secs_f64();
            let started = Instant::now();
            let parallel = scanner.scan_bytes("x", &data, 2);
            let bytes = started.elapsed().as_secs_f64();
            assert_eq!(found, parallel);
            println!(
                "{label}: scan_reader {:.0} MB/s, scan_bytes(2) {:.0} MB/s, {} findings",
                mb / reader,
                mb / bytes,
                found.len()
            );
        }
    }
}
