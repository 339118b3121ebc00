//! Classification of texts and files: the highest level any validated match
//! implies, its data types, counts per detector, never the values.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failure

use longhaul_scan::classify::{classify_path, classify_text};
use longhaul_scan::detectors::{builtin, DataType, Level};

#[test]
fn the_level_is_the_highest_a_validated_match_implies() {
    let detectors = builtin();
    let mut rng = fastrand::Rng::with_seed(3);
    let sample = |id: &str, rng: &mut fastrand::Rng| {
        (detectors.iter().find(|d| d.id == id).expect(id).sample)(rng)
    };

    let plain = classify_text(
        &detectors,
        "plain",
        "nothing to see here, v1.2.3 build 42\n",
        false,
    );
    assert_eq!(plain.level, Level::Public);
    assert!(plain.data_types.is_empty() && plain.counts.is_empty());

    let email = sample("email", &mut rng);
    let contact = classify_text(
        &detectors,
        "contact",
        &format!("write to {email} today\n"),
        false,
    );
    assert_eq!(contact.level, Level::Confidential);
    assert!(contact.data_types.contains(&DataType::Pii));
    assert_eq!(contact.counts.get("email"), Some(&1));

    let card = sample("payment-card", &mut rng);
    let text = format!("name,card\nAda,{card}\nBob,{email}\n");
    let mixed = classify_text(&detectors, "orders.csv", &text, false);
    assert_eq!(mixed.level, Level::Restricted);
    assert!(mixed.data_types.contains(&DataType::Pci));
    assert!(mixed.data_types.contains(&DataType::Pii));
    let json = serde_json::to_string(&mixed).unwrap();
    assert!(!json.contains(&card) && !json.contains(&email), "{json}");

    // A card number that fails Luhn is not a card.
    let mut broken = card.clone().into_bytes();
    let last = broken.len() - 1;
    broken[last] = if broken[last] == b'9' {
        b'0'
    } else {
        broken[last] + 1
    };
    let broken = String::from_utf8(broken).unwrap();
    let not_card = classify_text(&detectors, "x", &format!("card {broken} end\n"), false);
    assert_eq!(not_card.counts.get("payment-card"), None);
}

#[test]
fn files_are_classified_and_binaries_skipped() {
    let detectors = builtin();
    let dir = std::env::temp_dir().join(format!(
        "longhaul-classify-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("readme.txt"), "just text\n").unwrap();
    std::fs::write(dir.join("blob.bin"), [0u8, 1, 2, 3, 0, 9]).unwrap();
    std::fs::write(dir.join("people.csv"), "ssn\n123-45-6789\n").unwrap();
    let results = classify_path(&detectors, &dir).unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    let people = results
        .iter()
        .find(|r| r.file.ends_with("people.csv"))
        .unwrap();
    assert_eq!(people.level, Level::Restricted);
    assert_eq!(people.counts.get("us-ssn"), Some(&1));
    let readme = results
        .iter()
        .find(|r| r.file.ends_with("readme.txt"))
        .unwrap();
    assert_eq!(readme.level, Level::Public);
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- Classifier: formats, gzip, limits, user rules --------------------------

use std::collections::BTreeSet;
use std::io::Write;

use longhaul_scan::classify::MAX_OBJECT_BYTES;
use longhaul_scan::{ClassRule, Classification, Classifier, Format, Outcome, SkipReason};

fn classified(outcome: Outcome) -> Classification {
    match outcome {
        Outcome::Classified(classification) => classification,
        Outcome::Skipped { file, reason } => panic!("{file} skipped: {reason:?}"),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// No value appears in the JSON of a classification.
fn assert_no_values(classification: &Classification, values: &[&str]) {
    let json = serde_json::to_string(classification).unwrap();
    for value in values {
        assert!(!json.contains(value), "{value} in {json}");
    }
}

const DATES: [&str; 3] = ["1985-03-12", "1990-11-30", "1979-01-05"];

fn people_csv() -> String {
    format!(
        "name,date_of_birth,email,note\n\
         Ada,{},ada@example.com,\"likes \"\"maths\"\", 1985\"\n\
         Bob,{},bob@example.org,\"two\nlines\"\n\
         Cy,{},,\n",
        DATES[0], DATES[1], DATES[2]
    )
}

#[test]
fn csv_cells_are_classified_with_their_column_name() {
    let classifier = Classifier::builtin();
    let csv = people_csv();
    let result =
        classified(classifier.classify_bytes("people.csv", csv.as_bytes(), MAX_OBJECT_BYTES));
    assert_eq!(result.format, Format::Csv);
    assert!(!result.gzip && !result.truncated);
    assert_eq!(result.counts.get("date-of-birth"), Some(&3), "{result:?}");
    assert_eq!(result.counts.get("email"), Some(&2));
    assert_eq!(result.level, longhaul_scan::detectors::Level::Confidential);
    assert!(result.data_types.contains(&DataType::Pii));
    assert_no_values(&result, &DATES);
    assert_no_values(&result, &["ada@example.com", "bob@example.org"]);

    // The same dates without the column name are not dates of birth.
    let plain = DATES.join("\n") + "\n";
    let result =
        classified(classifier.classify_bytes("dates.txt", plain.as_bytes(), MAX_OBJECT_BYTES));
    assert_eq!(result.format, Format::Text);
    assert!(result.counts.is_empty(), "{result:?}");
    assert_eq!(result.level, Level::Public);

    // Nor as an unnamed CSV column; and a header that is itself a match
    // is not counted for every row.
    let csv = format!("x,ops@example.com\n{},1\n{},2\n", DATES[0], DATES[1]);
    let result = classified(classifier.classify_bytes("t.csv", csv.as_bytes(), MAX_OBJECT_BYTES));
    assert!(result.counts.is_empty(), "{result:?}");

    // A malformed CSV falls back to text.
    let broken = "name,dob 1985-03-12,\"open\n";
    let result =
        classified(classifier.classify_bytes("b.csv", broken.as_bytes(), MAX_OBJECT_BYTES));
    assert_eq!(result.format, Format::Text);
    assert_eq!(result.counts.get("date-of-birth"), Some(&1));
}

#[test]
fn json_and_ndjson_values_are_decoded_and_classified() {
    let classifier = Classifier::builtin();
    let json = r#"{"customer": {"contact": "a\u0040example.com", "birthDate": "1985-03-12",
        "cards": [], "visits": [{"ip": "203.0.113.7"}], "age": 41, "vip": true}}"#;
    for name in ["customer.json", "customer.data"] {
        let result = classified(classifier.classify_bytes(name, json.as_bytes(), MAX_OBJECT_BYTES));
        assert_eq!(result.format, Format::Json, "{name}");
        assert_eq!(result.counts.get("email"), Some(&1), "{name}: {result:?}");
        assert_eq!(result.counts.get("date-of-birth"), Some(&1), "{name}");
        assert_eq!(result.counts.get("ipv4"), Some(&1), "{name}");
        assert_no_values(&result, &["a@example.com", "1985-03-12", "203.0.113.7"]);
    }
    // As text the escaped address is not an address.
    let text = classifier.classify_text("raw", json, false);
    assert_eq!(text.counts.get("email"), None);

    let ndjson = "{\"user\":\"ada@example.com\",\"dob\":\"1990-11-30\"}\n\n{\"user\":\"bob\\u0040example.org\"}\n{\"n\":1}\n";
    for name in ["events.ndjson", "events.jsonl", "events.log"] {
        let result =
            classified(classifier.classify_bytes(name, ndjson.as_bytes(), MAX_OBJECT_BYTES));
        assert_eq!(result.format, Format::Ndjson, "{name}");
        assert_eq!(result.counts.get("email"), Some(&2), "{name}");
        assert_eq!(result.counts.get("date-of-birth"), Some(&1), "{name}");
    }
    // Not JSON after all: text.
    let result = classified(classifier.classify_bytes(
        "x.json",
        b"{ nope: ada@example.com",
        MAX_OBJECT_BYTES,
    ));
    assert_eq!(result.format, Format::Text);
    assert_eq!(result.counts.get("email"), Some(&1));
}

#[test]
fn gzip_objects_are_decompressed_and_broken_ones_skipped() {
    let classifier = Classifier::builtin();
    let csv = people_csv();
    let plain =
        classified(classifier.classify_bytes("people.csv", csv.as_bytes(), MAX_OBJECT_BYTES));
    let packed = gzip(csv.as_bytes());
    let zipped = classified(classifier.classify_bytes("people.csv.gz", &packed, MAX_OBJECT_BYTES));
    assert!(zipped.gzip);
    assert_eq!(zipped.format, Format::Csv);
    assert_eq!(zipped.counts, plain.counts);
    assert_eq!(zipped.level, plain.level);

    let skipped =
        |name: &str, bytes: &[u8]| match classifier.classify_bytes(name, bytes, MAX_OBJECT_BYTES) {
            Outcome::Skipped { file, reason } => {
                assert_eq!(file, name);
                reason
            }
            Outcome::Classified(c) => panic!("{name} classified: {c:?}"),
        };
    let mut rng = fastrand::Rng::with_seed(8);
    let mut garbage = vec![0x1f, 0x8b];
    garbage.extend((0..4096).map(|_| rng.u8(..)));
    assert_eq!(skipped("garbage.gz", &garbage), SkipReason::CorruptGzip);
    assert_eq!(
        skipped("cut.csv.gz", &packed[..packed.len() / 2]),
        SkipReason::CorruptGzip
    );
    assert_eq!(skipped("header.gz", &packed[..5]), SkipReason::CorruptGzip);
    let binary: Vec<u8> = (0..10_000).map(|i| (i % 251) as u8).collect();
    assert_eq!(skipped("blob.bin", &binary), SkipReason::Binary);
    assert_eq!(skipped("blob.bin.gz", &gzip(&binary)), SkipReason::Binary);
    assert_eq!(
        serde_json::to_string(&SkipReason::CorruptGzip).unwrap(),
        "\"corruptGzip\""
    );
    // A gzip stream larger than the limit is cut, not corrupt.
    let big = "ada@example.com\n".repeat(10_000);
    let result = classified(classifier.classify_bytes("big.txt.gz", &gzip(big.as_bytes()), 1600));
    assert!(result.truncated && result.gzip);
    assert_eq!(result.counts.get("email"), Some(&100));
}

#[test]
fn only_the_first_max_bytes_are_classified() {
    let classifier = Classifier::builtin();
    let line = "mail ada@example.com now\n"; // 25 bytes
    let text = line.repeat(100);
    let whole = classified(classifier.classify_bytes("m.txt", text.as_bytes(), 2500));
    assert!(!whole.truncated);
    assert_eq!(whole.counts.get("email"), Some(&100));
    let cut = classified(classifier.classify_bytes("m.txt", text.as_bytes(), 250));
    assert!(cut.truncated);
    assert_eq!(cut.counts.get("email"), Some(&10));
    // A cut JSON or CSV keeps its format and counts what was read.
    let rows: String = (0..100)
        .map(|i| format!("{i},ada{i}@example.com\n"))
        .collect();
    let csv = format!("id,email\n{rows}");
    let cut = classified(classifier.classify_bytes("m.csv", csv.as_bytes(), 200));
    assert!(cut.truncated);
    assert_eq!(cut.format, Format::Csv);
    let n = *cut.counts.get("email").unwrap();
    assert!((8..=10).contains(&n), "{n}");
    let json = format!(
        "[{}]",
        (0..100)
            .map(|i| format!("{{\"mail\": \"ada{i}@example.com\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cut = classified(classifier.classify_bytes("m.json", json.as_bytes(), 300));
    assert!(cut.truncated);
    assert_eq!(cut.format, Format::Json);
    let n = *cut.counts.get("email").unwrap();
    assert!((8..=10).contains(&n), "{n}");
}

#[test]
fn user_rules_and_changed_levels_count() {
    let rule = ClassRule::regex(
        "employee-id",
        Level::Confidential,
        BTreeSet::from([DataType::Pii]),
        r"\bEMP-\d{6}\b",
    )
    .unwrap();
    let classifier = Classifier::new(builtin(), vec![rule]);
    let text = "staff: EMP-123456, EMP-654321 and EMP-12345\n";
    let result =
        classified(classifier.classify_bytes("staff.txt", text.as_bytes(), MAX_OBJECT_BYTES));
    assert_eq!(result.counts.get("employee-id"), Some(&2));
    assert_eq!(result.level, Level::Confidential);
    assert_eq!(result.data_types, BTreeSet::from([DataType::Pii]));
    assert_no_values(&result, &["EMP-123456", "EMP-654321"]);
    let csv = "who,id\nAda,EMP-123456\n";
    let result = classified(classifier.classify_bytes("s.csv", csv.as_bytes(), MAX_OBJECT_BYTES));
    assert_eq!(result.counts.get("employee-id"), Some(&1));

    for bad in ["(", "x*", &"a".repeat(1001), r"(?:\w{100}){10}"] {
        assert!(
            ClassRule::regex("r", Level::Internal, BTreeSet::new(), bad).is_err(),
            "{bad}"
        );
    }

    // An e-mail address is confidential by default; restricted here.
    let text = "write to ada@example.com\n";
    let default = Classifier::builtin().classify_text("t", text, false);
    assert_eq!(default.level, Level::Confidential);
    let mut detectors = builtin();
    for detector in &mut detectors {
        if detector.id == "email" {
            detector.level = Level::Restricted;
        }
    }
    let stricter = Classifier::new(detectors, Vec::new()).classify_text("t", text, false);
    assert_eq!(stricter.level, Level::Restricted);
    assert_eq!(stricter.counts, default.counts);
}

#[test]
fn files_of_every_format_are_classified_from_disk() {
    let dir = std::env::temp_dir().join(format!(
        "longhaul-classify-formats-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("people.csv.gz"), gzip(people_csv().as_bytes())).unwrap();
    std::fs::write(dir.join("broken.gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    std::fs::write(dir.join("c.json"), r#"{"m": "a\u0040example.com"}"#).unwrap();
    let outcomes = Classifier::builtin().classify_path(&dir).unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(matches!(
        &outcomes[0],
        Outcome::Skipped {
            reason: SkipReason::CorruptGzip,
            ..
        }
    ));
    let json = outcomes[1].classification().unwrap();
    assert_eq!(json.counts.get("email"), Some(&1));
    let csv = outcomes[2].classification().unwrap();
    assert!(csv.gzip);
    assert_eq!(csv.counts.get("date-of-birth"), Some(&3));
    // The free functions (the CLI's) see the same, skipped objects left out.
    let free = classify_path(&builtin(), &dir).unwrap();
    assert_eq!(free.len(), 2);
    assert_eq!(&free[1], csv);
    std::fs::remove_dir_all(dir).unwrap();
}
