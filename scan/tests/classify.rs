//! Classification of texts and files: the highest level any validated match
//! implies, its data types, counts per detector, never the values.

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
