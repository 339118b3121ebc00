//! Data-classification detectors (PII / PHI / PCI) for the classification
//! job kind.
//!
//! Every detector is a candidate matcher (a regex whose named group `value`
//! holds the candidate) plus a *validator* that decides whether the candidate
//! really is what it looks like: Luhn and issuer prefixes for payment cards,
//! ISO 13616 mod-97 and per-country lengths for IBANs, SSA allocation rules
//! for US SSNs, real calendar dates for dates of birth, ISO 7064 MOD 11,10 for
//! the German tax id, and so on. Detectors whose values are ambiguous on their
//! own (dates, ICD-10 codes, record numbers, national ids) only match after a
//! context word (e.g. "DOB", "diagnosis", "MRN", "Steuer-IdNr") that precedes
//! the value within a short window; the context is part of the pattern, since
//! the regex crate has no look-around.
//!
//! `classify` only ever returns counts per detector id, never the values.
//!
//! `sample` produces a random valid value for tests and the labelled corpus.
//! For context-bound detectors the sample *includes* its context word (e.g.
//! `"DOB: 1985-03-12"`), so that a sample embedded in text is detected; their
//! validators accept either the bare value or the value preceded by such a
//! context prefix (the `value` group the pattern captures never contains one).

use regex::Regex;
use std::collections::BTreeMap;

/// Sensitivity level implied by a match.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Public,
    Internal,
    Confidential,
    Restricted,
}

/// Regulatory family of the data.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Pii,
    Phi,
    Pci,
}

/// One validated data-classification detector.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Stable id, e.g. "email", "us-ssn", "payment-card", "iban".
    pub id: &'static str,
    pub data_type: DataType,
    /// The level a match implies.
    pub level: Level,
    /// Candidate matcher; the named group `value` is the candidate.
    pub pattern: Regex,
    /// Validation of the `value` group (checksum, ranges; context-free).
    pub validate: fn(&str) -> bool,
    /// A random valid value (for tests and the corpus).
    pub sample: fn(&mut fastrand::Rng) -> String,
}

#[allow(
    clippy::expect_used,
    reason = "built-in patterns are constants, and the tests compile every one"
)]
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pattern")
}

/// All built-in detectors.
pub fn builtin() -> Vec<Detector> {
    vec![
        Detector {
            id: "email",
            data_type: DataType::Pii,
            level: Level::Confidential,
            pattern: re(
                r"(?-u:\b)(?P<value>[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,63}\.)+[A-Za-z]{2,24})(?-u:\b)",
            ),
            validate: validate_email,
            sample: sample_email,
        },
        Detector {
            id: "phone",
            data_type: DataType::Pii,
            level: Level::Confidential,
            pattern: re(r"(?-u:\B)(?P<value>\+[0-9]{1,15}(?:[ \-][0-9]{1,15}){0,7})(?-u:\b)"),
            validate: validate_phone,
            sample: sample_phone,
        },
        Detector {
            id: "us-ssn",
            data_type: DataType::Pii,
            level: Level::Restricted,
            pattern: re(r"(?-u:\b)(?P<value>[0-9]{3}-[0-9]{2}-[0-9]{4})(?-u:\b)"),
            validate: validate_ssn,
            sample: sample_ssn,
        },
        Detector {
            id: "payment-card",
            data_type: DataType::Pci,
            level: Level::Restricted,
            pattern: re(r"(?-u:\b)(?P<value>[0-9](?:[ \-]?[0-9]){12,18})(?-u:\b)"),
            validate: validate_card,
            sample: sample_card,
        },
        Detector {
            id: "iban",
            data_type: DataType::Pii,
            level: Level::Confidential,
            pattern: re(
                r"(?-u:\b)(?P<value>[A-Z]{2}[0-9]{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?))(?-u:\b)",
            ),
            validate: validate_iban,
            sample: sample_iban,
        },
        Detector {
            id: "ipv4",
            data_type: DataType::Pii,
            level: Level::Internal,
            pattern: re(
                r"(?-u:\b)(?P<value>[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})(?-u:\b)",
            ),
            validate: validate_ipv4,
            sample: sample_ipv4,
        },
        Detector {
            id: "ipv6",
            data_type: DataType::Pii,
            level: Level::Internal,
            pattern: re(
                r"(?:^|[^0-9A-Za-z:.])(?P<value>[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})",
            ),
            validate: validate_ipv6,
            sample: sample_ipv6,
        },
        Detector {
            id: "date-of-birth",
            data_type: DataType::Pii,
            level: Level::Confidential,
            pattern: re(
                r"(?-u:\b)(?i:dob|date of birth|birth ?date|born|geburtsdatum)(?-u:\b)[^\n]{0,30}?(?-u:\b)(?P<value>[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{2}/[0-9]{2}/[0-9]{4})(?-u:\b)",
            ),
            validate: validate_dob,
            sample: sample_dob,
        },
        Detector {
            id: "icd10",
            data_type: DataType::Phi,
            level: Level::Restricted,
            pattern: re(
                r"(?-u:\b)(?i:diagnosis|icd-10|icd10|icd|dx)(?-u:\b)[^\n]{0,30}?(?-u:\b)(?P<value>[A-Z][0-9]{2}(?:\.?[A-Z0-9]{1,4})?)(?-u:\b)",
            ),
            validate: validate_icd10,
            sample: sample_icd10,
        },
        Detector {
            id: "medical-record-number",
            data_type: DataType::Phi,
            level: Level::Restricted,
            pattern: re(
                r"(?-u:\b)(?i:mrn|medical record)[^\n0-9]{0,20}(?-u:\b)(?P<value>[0-9]{6,10})(?-u:\b)",
            ),
            validate: validate_mrn,
            sample: sample_mrn,
        },
        Detector {
            id: "de-tax-id",
            data_type: DataType::Pii,
            level: Level::Restricted,
            pattern: re(
                r"(?-u:\b)(?i:steuer|tax[ \-]?id|idnr)[^\n0-9]{0,30}(?-u:\b)(?P<value>[0-9]{2} ?[0-9]{3} ?[0-9]{3} ?[0-9]{3})(?-u:\b)",
            ),
            validate: validate_de_tax_id,
            sample: sample_de_tax_id,
        },
    ]
}

/// Counts of validated matches per detector id in `text` (never the values).
/// Detectors without a validated match are absent from the map.
pub fn classify(detectors: &[Detector], text: &str) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for d in detectors {
        let n = d
            .pattern
            .captures_iter(text)
            .filter_map(|c| c.name("value"))
            .filter(|m| (d.validate)(m.as_str()))
            .count();
        if n > 0 {
            *out.entry(d.id).or_insert(0) += n;
        }
    }
    out
}

// ---------------------------------------------------------------- helpers

fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn push_digits(rng: &mut fastrand::Rng, out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(rng.digit(10));
    }
}

/// Parse an all-ASCII-digit string.
fn num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The value part of a (possibly context-prefixed) numeric value: everything
/// from the first ASCII digit on.
fn from_first_digit(s: &str) -> &str {
    s.trim_start_matches(|c: char| !c.is_ascii_digit())
}

/// The last token of a (possibly context-prefixed) value.
fn last_token(s: &str) -> &str {
    s.rsplit(|c: char| c.is_whitespace() || c == ':')
        .next()
        .unwrap_or(s)
}

fn digits_of(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect()
}

fn digits_to_string(d: &[u8]) -> String {
    d.iter().map(|&x| char::from(b'0' + x)).collect()
}

// ------------------------------------------------------------------ email

fn validate_email(s: &str) -> bool {
    if s.len() > 254 {
        return false;
    }
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.is_empty() || domain.len() > 253 {
        return false;
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
    {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    if !domain.contains('.') || domain.contains("..") {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    for label in &labels {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return false;
        }
    }
    match labels.last() {
        Some(tld) => tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()),
        None => false,
    }
}

fn sample_email(rng: &mut fastrand::Rng) -> String {
    const LOCALS: &[&str] = &[
        "john",
        "jane.doe",
        "m.mueller",
        "ops+billing",
        "first_last",
        "a.b.c",
    ];
    const DOMAINS: &[&str] = &[
        "example.com",
        "mail.example.org",
        "corp.example.co.uk",
        "uni-berlin.de",
        "example.io",
    ];
    let local = pick(rng, LOCALS);
    let n = rng.u32(0..1000);
    let domain = pick(rng, DOMAINS);
    format!("{local}{n}@{domain}")
}

// ------------------------------------------------------------------ phone

fn validate_phone(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('+') else {
        return false;
    };
    let bytes = rest.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    if !first.is_ascii_digit() || first == b'0' {
        return false;
    }
    let mut prev_sep = false;
    let mut digits = 0usize;
    for &b in bytes {
        if b.is_ascii_digit() {
            digits += 1;
            prev_sep = false;
        } else if b == b' ' || b == b'-' {
            if prev_sep {
                return false;
            }
            prev_sep = true;
        } else {
            return false;
        }
    }
    !prev_sep && (8..=15).contains(&digits)
}

fn sample_phone(rng: &mut fastrand::Rng) -> String {
    const CCS: &[&str] = &["1", "44", "49", "33", "31", "41", "61", "81", "353", "971"];
    let cc = pick(rng, CCS);
    let total = rng.usize(10..=13);
    let sep = pick(rng, &[" ", "-"]);
    let mut out = format!("+{cc}");
    let mut left = total - cc.len();
    while left > 0 {
        let g = left.min(rng.usize(2..=4));
        out.push_str(sep);
        push_digits(rng, &mut out, g);
        left -= g;
    }
    out
}

// ----------------------------------------------------------------- us-ssn

fn validate_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 11 || b[3] != b'-' || b[6] != b'-' {
        return false;
    }
    let (Some(area), Some(group), Some(serial)) = (num(&s[0..3]), num(&s[4..6]), num(&s[7..11]))
    else {
        return false;
    };
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    // Famous numbers that were published and voided.
    !matches!(s, "078-05-1120" | "219-09-9999")
}

fn sample_ssn(rng: &mut fastrand::Rng) -> String {
    loop {
        let area = rng.u32(1..900);
        let group = rng.u32(1..100);
        let serial = rng.u32(1..10_000);
        let s = format!("{area:03}-{group:02}-{serial:04}");
        if validate_ssn(&s) {
            return s;
        }
    }
}

// ----------------------------------------------------------- payment-card

fn luhn_sum(d: &[u8]) -> u32 {
    d.iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum()
}

/// The Luhn check digit to append to `payload`.
fn luhn_check_digit(payload: &[u8]) -> u8 {
    let mut v = payload.to_vec();
    v.push(0);
    ((10 - luhn_sum(&v) % 10) % 10) as u8
}

fn prefix_num(d: &[u8], k: usize) -> u32 {
    d.iter().take(k).fold(0, |a, &x| a * 10 + u32::from(x))
}

/// A known issuer prefix with a length that brand issues.
fn card_brand_ok(d: &[u8]) -> bool {
    let n = d.len();
    let (p1, p2, p3, p4) = (
        prefix_num(d, 1),
        prefix_num(d, 2),
        prefix_num(d, 3),
        prefix_num(d, 4),
    );
    if p1 == 4 {
        // Visa
        return matches!(n, 13 | 16 | 19);
    }
    if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        // Mastercard
        return n == 16;
    }
    if p2 == 34 || p2 == 37 {
        // American Express
        return n == 15;
    }
    if p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) {
        // Discover
        return (16..=19).contains(&n);
    }
    if (3528..=3589).contains(&p4) {
        // JCB
        return (16..=19).contains(&n);
    }
    if p2 == 36 || p2 == 38 || (300..=305).contains(&p3) {
        // Diners Club
        return (14..=19).contains(&n);
    }
    false
}

fn validate_card(s: &str) -> bool {
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b' ' || b == b'-')
    {
        return false;
    }
    // One kind of separator at most, never doubled, never at the ends.
    if (s.contains(' ') && s.contains('-')) || s.contains("  ") || s.contains("--") {
        return false;
    }
    if s.starts_with([' ', '-']) || s.ends_with([' ', '-']) {
        return false;
    }
    let d = digits_of(s);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    if d.iter().all(|&x| x == d[0]) {
        return false;
    }
    luhn_sum(&d).is_multiple_of(10) && card_brand_ok(&d)
}

fn format_card(rng: &mut fastrand::Rng, digits: &str) -> String {
    let sep = pick(rng, &["", " ", "-"]);
    let groups: Vec<usize> = match digits.len() {
        15 => vec![4, 6, 5],
        14 => vec![4, 6, 4],
        n => {
            let mut g = vec![4; n / 4];
            if n % 4 != 0 {
                g.push(n % 4);
            }
            g
        }
    };
    let mut out = String::new();
    let mut at = 0;
    for (i, &g) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&digits[at..at + g]);
        at += g;
    }
    out
}

fn sample_card(rng: &mut fastrand::Rng) -> String {
    loop {
        let (prefix, len): (String, usize) = match rng.usize(..7) {
            0 => (String::from("4"), 16),
            1 => (rng.u32(51..=55).to_string(), 16),
            2 => (rng.u32(2221..=2720).to_string(), 16),
            3 => (String::from(if rng.bool() { "34" } else { "37" }), 15),
            4 => (String::from(if rng.bool() { "6011" } else { "65" }), 16),
            5 => (rng.u32(3528..=3589).to_string(), 16),
            _ => (String::from(if rng.bool() { "36" } else { "38" }), 14),
        };
        let mut d = digits_of(&prefix);
        while d.len() < len - 1 {
            d.push(rng.u8(0..10));
        }
        let c = luhn_check_digit(&d);
        d.push(c);
        if d.iter().all(|&x| x == d[0]) {
            continue;
        }
        let s = format_card(rng, &digits_to_string(&d));
        if validate_card(&s) {
            return s;
        }
    }
}

// ------------------------------------------------------------------- iban

/// IBAN lengths per country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AE", 23),
    ("AT", 20),
    ("BE", 16),
    ("BG", 22),
    ("CH", 21),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("EE", 20),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("GR", 27),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IS", 26),
    ("IT", 27),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MT", 31),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("RO", 24),
    ("SA", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("TR", 26),
];

fn iban_len(cc: &str) -> Option<usize> {
    IBAN_LENGTHS.iter().find(|(c, _)| *c == cc).map(|&(_, n)| n)
}

/// Remainder mod 97 of the number formed by `chars`, letters as 10..=35.
fn mod97(chars: impl Iterator<Item = char>) -> Option<u32> {
    let mut r: u32 = 0;
    for c in chars {
        let v = c.to_digit(36)?;
        r = if v < 10 {
            (r * 10 + v) % 97
        } else {
            (r * 100 + v) % 97
        };
    }
    Some(r)
}

fn validate_iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|&c| c != ' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    if !compact
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    let b = compact.as_bytes();
    if !b[0].is_ascii_uppercase()
        || !b[1].is_ascii_uppercase()
        || !b[2].is_ascii_digit()
        || !b[3].is_ascii_digit()
    {
        return false;
    }
    if iban_len(&compact[..2]) != Some(compact.len()) {
        return false;
    }
    mod97(compact[4..].chars().chain(compact[..4].chars())) == Some(1)
}

fn sample_iban(rng: &mut fastrand::Rng) -> String {
    let (cc, len) = pick(rng, IBAN_LENGTHS);
    let mut bban = String::new();
    if cc == "GB" || cc == "NL" {
        // Bank code letters, as in real GB/NL IBANs.
        for _ in 0..4 {
            bban.push(rng.uppercase());
        }
    }
    let n = len - 4 - bban.len();
    push_digits(rng, &mut bban, n);
    let r = mod97(bban.chars().chain(cc.chars()).chain("00".chars())).unwrap_or(0);
    let check = 98 - r;
    let iban = format!("{cc}{check:02}{bban}");
    if rng.bool() {
        iban
    } else {
        let mut out = String::new();
        for (i, c) in iban.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        out
    }
}

// ------------------------------------------------------------- ipv4 / ipv6

fn validate_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && !(p.len() > 1 && p.starts_with('0'))
                && num(p).is_some_and(|v| v <= 255)
        })
}

fn sample_ipv4(rng: &mut fastrand::Rng) -> String {
    let o = [rng.u8(..), rng.u8(..), rng.u8(..), rng.u8(..)];
    format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])
}

fn validate_ipv6(s: &str) -> bool {
    (2..=39).contains(&s.len())
        && s.matches(':').count() >= 2
        && s.bytes().any(|b| b.is_ascii_hexdigit())
        && s.parse::<std::net::Ipv6Addr>().is_ok()
}

fn sample_ipv6(rng: &mut fastrand::Rng) -> String {
    if rng.bool() {
        let groups: Vec<String> = (0..8).map(|_| format!("{:x}", rng.u16(..))).collect();
        groups.join(":")
    } else {
        let k = rng.usize(1..=5);
        let mut groups: Vec<String> = vec![String::from("2001"), String::from("db8")];
        groups.truncate(k);
        while groups.len() < k {
            groups.push(format!("{:x}", rng.u16(..)));
        }
        format!("{}::{:x}", groups.join(":"), rng.u16(1..))
    }
}

// ---------------------------------------------------------- date of birth

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
        _ => 0,
    }
}

fn plausible_birth_date(y: u32, m: u32, d: u32) -> bool {
    (1900..=2025).contains(&y) && (1..=12).contains(&m) && (1..=days_in_month(y, m)).contains(&d)
}

fn validate_dob(s: &str) -> bool {
    let v = from_first_digit(s);
    if v.contains('-') {
        let p: Vec<&str> = v.split('-').collect();
        if p.len() != 3 || p[0].len() != 4 || p[1].len() != 2 || p[2].len() != 2 {
            return false;
        }
        match (num(p[0]), num(p[1]), num(p[2])) {
            (Some(y), Some(m), Some(d)) => plausible_birth_date(y, m, d),
            _ => false,
        }
    } else {
        let p: Vec<&str> = v.split('/').collect();
        if p.len() != 3 || p[0].len() != 2 || p[1].len() != 2 || p[2].len() != 4 {
            return false;
        }
        match (num(p[0]), num(p[1]), num(p[2])) {
            // DD/MM/YYYY or MM/DD/YYYY: either reading must be a real date.
            (Some(a), Some(b), Some(y)) => {
                plausible_birth_date(y, b, a) || plausible_birth_date(y, a, b)
            }
            _ => false,
        }
    }
}

fn sample_dob(rng: &mut fastrand::Rng) -> String {
    const CONTEXT: &[&str] = &[
        "DOB:",
        "dob",
        "date of birth:",
        "Date of Birth",
        "birth date:",
        "born on",
        "Geburtsdatum:",
    ];
    let ctx = pick(rng, CONTEXT);
    let y = rng.u32(1920..=2020);
    let m = rng.u32(1..=12);
    let d = rng.u32(1..=days_in_month(y, m));
    let date = match rng.usize(..3) {
        0 => format!("{y:04}-{m:02}-{d:02}"),
        1 => format!("{d:02}/{m:02}/{y:04}"),
        _ => format!("{m:02}/{d:02}/{y:04}"),
    };
    format!("{ctx} {date}")
}

// ------------------------------------------------------------------ icd10

fn validate_icd10(s: &str) -> bool {
    let v = last_token(s).as_bytes();
    if v.len() < 3 || v.len() > 8 {
        return false;
    }
    if !v[0].is_ascii_uppercase() || v[0] == b'U' {
        return false;
    }
    if !v[1].is_ascii_digit() || !v[2].is_ascii_digit() {
        return false;
    }
    let rest = &v[3..];
    let rest = if rest.first() == Some(&b'.') {
        if rest.len() == 1 {
            return false;
        }
        &rest[1..]
    } else {
        rest
    };
    rest.len() <= 4
        && rest
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

fn sample_icd10(rng: &mut fastrand::Rng) -> String {
    const CONTEXT: &[&str] = &[
        "diagnosis:",
        "Diagnosis",
        "ICD-10:",
        "ICD10 code",
        "icd",
        "dx:",
        "Dx",
    ];
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTVWXYZ";
    let ctx = pick(rng, CONTEXT);
    let mut code = String::new();
    code.push(char::from(pick(rng, LETTERS)));
    push_digits(rng, &mut code, 2);
    if rng.bool() {
        code.push('.');
        let n = rng.usize(1..=3);
        push_digits(rng, &mut code, n);
    }
    format!("{ctx} {code}")
}

// -------------------------------------------------- medical record number

fn validate_mrn(s: &str) -> bool {
    let v = from_first_digit(s);
    (6..=10).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_digit())
        && !v.bytes().all(|b| Some(b) == v.bytes().next())
}

fn sample_mrn(rng: &mut fastrand::Rng) -> String {
    const CONTEXT: &[&str] = &[
        "MRN",
        "MRN:",
        "MRN #",
        "medical record no.",
        "Medical record number:",
    ];
    let ctx = pick(rng, CONTEXT);
    loop {
        let mut v = String::new();
        let n = rng.usize(6..=10);
        push_digits(rng, &mut v, n);
        if validate_mrn(&v) {
            return format!("{ctx} {v}");
        }
    }
}

// ------------------------------------------------------------- de-tax-id

/// ISO 7064 MOD 11,10 check digit over the first ten digits of a German
/// Steuerliche Identifikationsnummer.
fn de_tax_check_digit(d: &[u8]) -> u8 {
    let mut product: u32 = 10;
    for &x in d {
        let mut sum = (u32::from(x) + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (sum * 2) % 11;
    }
    let c = 11 - product;
    if c == 10 {
        0
    } else {
        c as u8
    }
}

fn validate_de_tax_id(s: &str) -> bool {
    let v = from_first_digit(s);
    if !v.bytes().all(|b| b.is_ascii_digit() || b == b' ') {
        return false;
    }
    let d = digits_of(v);
    if d.len() != 11 || d[0] == 0 {
        return false;
    }
    let body = &d[..10];
    let mut counts = [0usize; 10];
    for &x in body {
        counts[usize::from(x)] += 1;
    }
    // Exactly one digit occurs twice or three times, all others at most once.
    let repeated: Vec<usize> = counts.iter().copied().filter(|&c| c >= 2).collect();
    if repeated.len() != 1 || !(2..=3).contains(&repeated[0]) {
        return false;
    }
    // A digit occurring three times may not do so in three adjacent places.
    if body.windows(3).any(|w| w[0] == w[1] && w[1] == w[2]) {
        return false;
    }
    de_tax_check_digit(body) == d[10]
}

fn sample_de_tax_id(rng: &mut fastrand::Rng) -> String {
    const CONTEXT: &[&str] = &["Steuer-IdNr:", "Steuer-ID", "tax id:", "IdNr."];
    let ctx = pick(rng, CONTEXT);
    loop {
        let mut pool: Vec<u8> = (0..10u8).collect();
        rng.shuffle(&mut pool);
        let mut d: Vec<u8> = pool[..9].to_vec();
        let dup = d[rng.usize(..9)];
        d.push(dup);
        rng.shuffle(&mut d);
        if d[0] == 0 {
            continue;
        }
        let c = de_tax_check_digit(&d);
        d.push(c);
        let s = digits_to_string(&d);
        let v = if rng.bool() {
            s
        } else {
            format!("{} {} {} {}", &s[0..2], &s[2..5], &s[5..8], &s[8..11])
        };
        if validate_de_tax_id(&v) {
            return format!("{ctx} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: &[&str] = &[
        "email",
        "phone",
        "us-ssn",
        "payment-card",
        "iban",
        "ipv4",
        "ipv6",
        "date-of-birth",
        "icd10",
        "medical-record-number",
        "de-tax-id",
    ];

    fn det(ds: &[Detector], id: &str) -> usize {
        ds.iter().position(|d| d.id == id).expect("detector id")
    }

    fn count(ds: &[Detector], id: &str, text: &str) -> usize {
        classify(ds, text).get(id).copied().unwrap_or(0)
    }

    #[test]
    fn ids_are_unique_and_complete() {
        let ds = builtin();
        let mut ids: Vec<&str> = ds.iter().map(|d| d.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ds.len());
        for id in IDS {
            det(&ds, id);
        }
        assert_eq!(ds.len(), IDS.len());
    }

    #[test]
    fn types_and_levels() {
        let ds = builtin();
        let card = &ds[det(&ds, "payment-card")];
        assert_eq!(card.data_type, DataType::Pci);
        assert_eq!(card.level, Level::Restricted);
        assert_eq!(ds[det(&ds, "icd10")].data_type, DataType::Phi);
        assert_eq!(ds[det(&ds, "ipv4")].level, Level::Internal);
        assert!(Level::Public < Level::Internal);
        assert!(Level::Confidential < Level::Restricted);
        assert_eq!(
            serde_json::to_string(&Level::Restricted).expect("json"),
            "\"restricted\""
        );
        assert_eq!(
            serde_json::to_string(&DataType::Phi).expect("json"),
            "\"phi\""
        );
        let back: Level = serde_json::from_str("\"confidential\"").expect("json");
        assert_eq!(back, Level::Confidential);
    }

    #[test]
    fn samples_are_valid_and_detected_exactly_once() {
        let ds = builtin();
        let mut rng = fastrand::Rng::with_seed(0x10b6_4a11);
        for d in &ds {
            for _ in 0..100 {
                let v = (d.sample)(&mut rng);
                assert!((d.validate)(&v), "{}: sample {v:?} fails validation", d.id);
                let text = format!("customer note: {v} end");
                assert_eq!(count(&ds, d.id, &text), 1, "{}: {text:?}", d.id);
            }
        }
    }

    #[test]
    fn invalid_values_are_rejected() {
        let ds = builtin();
        // Broken Luhn.
        assert_eq!(count(&ds, "payment-card", "card 4111 1111 1111 1112 ok"), 0);
        assert_eq!(count(&ds, "payment-card", "card 378282246310006 ok"), 0);
        // Luhn-valid but all the same digit / unknown prefix.
        assert_eq!(count(&ds, "payment-card", "card 0000 0000 0000 0000 ok"), 0);
        assert!(!validate_card("1234567812345670"));
        // IBAN with one digit changed.
        assert_eq!(count(&ds, "iban", "iban GB82 WEST 1234 5698 7654 33 ok"), 0);
        assert_eq!(count(&ds, "iban", "iban DE89370400440532013001 ok"), 0);
        // Wrong length for the country.
        assert!(!validate_iban("DE8937040044053201300"));
        // SSN.
        assert_eq!(count(&ds, "us-ssn", "ssn 000-12-3456 ok"), 0);
        assert_eq!(count(&ds, "us-ssn", "ssn 666-12-3456 ok"), 0);
        assert_eq!(count(&ds, "us-ssn", "ssn 912-12-3456 ok"), 0);
        assert_eq!(count(&ds, "us-ssn", "ssn 123-00-3456 ok"), 0);
        assert_eq!(count(&ds, "us-ssn", "ssn 123-45-0000 ok"), 0);
        assert_eq!(count(&ds, "us-ssn", "ssn 078-05-1120 ok"), 0);
        assert_eq!(count(&ds, "us-ssn", "ssn 219-09-9999 ok"), 0);
        assert_eq!(count(&ds, "us-ssn", "ssn 123-45-6789 ok"), 1);
        // Dates of birth.
        assert_eq!(count(&ds, "date-of-birth", "DOB: 2023-02-29 ok"), 0);
        assert_eq!(count(&ds, "date-of-birth", "DOB: 1899-01-01 ok"), 0);
        assert_eq!(
            count(&ds, "date-of-birth", "date of birth 31/04/1980 ok"),
            0
        );
        assert_eq!(count(&ds, "date-of-birth", "DOB: 2024-02-29 ok"), 1);
        assert_eq!(count(&ds, "date-of-birth", "DOB: 2000-02-29 ok"), 1);
        assert!(!validate_dob("1900-02-29"));
        // A date without context is not a date of birth.
        assert_eq!(
            count(&ds, "date-of-birth", "meeting on 1985-03-12 at noon"),
            0
        );
        // Context too far away (more than 30 chars).
        assert_eq!(
            count(
                &ds,
                "date-of-birth",
                "DOB unknown, please ask the customer again later 1985-03-12"
            ),
            0
        );
        // IPv4.
        assert_eq!(count(&ds, "ipv4", "host 256.1.1.1 ok"), 0);
        assert_eq!(count(&ds, "ipv4", "host 01.2.3.4 ok"), 0);
        assert_eq!(count(&ds, "ipv4", "host 10.0.0.1 ok"), 1);
        // IPv6.
        assert_eq!(count(&ds, "ipv6", "at 10:00:00 ok"), 0);
        assert_eq!(count(&ds, "ipv6", "host 2001:db8::1 ok"), 1);
        assert!(!validate_ipv6("::"));
        // ICD-10: U is reserved, context required.
        assert_eq!(count(&ds, "icd10", "diagnosis: U07.1 ok"), 0);
        assert_eq!(count(&ds, "icd10", "room E11 ok"), 0);
        assert_eq!(count(&ds, "icd10", "diagnosis: E11.9 ok"), 1);
        // MRN: all the same digit; no context.
        assert_eq!(count(&ds, "medical-record-number", "MRN 1111111 ok"), 0);
        assert_eq!(count(&ds, "medical-record-number", "ticket 1234567 ok"), 0);
        // Email / phone.
        assert!(!validate_email("a..b@example.com"));
        assert!(!validate_email("ab@example"));
        assert!(!validate_email("ab@example.c"));
        assert!(!validate_email("ab@exa..mple.com"));
        assert!(!validate_phone("+0123456789"));
        assert!(!validate_phone("+1234567"));
        assert!(!validate_phone("+1234567890123456"));
        // German tax id: check digit off by one; digit rule broken.
        assert_eq!(count(&ds, "de-tax-id", "Steuer-IdNr: 86095742718 ok"), 0);
        assert!(!validate_de_tax_id("12345678903"));
        assert!(!validate_de_tax_id("06095742719"));
    }

    #[test]
    fn known_reference_values() {
        let ds = builtin();
        assert!(validate_card("4111 1111 1111 1111"));
        assert!(validate_card("378282246310005"));
        assert_eq!(count(&ds, "payment-card", "card 4111 1111 1111 1111 ok"), 1);
        assert_eq!(count(&ds, "payment-card", "amex 378282246310005 ok"), 1);
        assert_eq!(count(&ds, "payment-card", "mc 5555-5555-5555-4444 ok"), 1);
        assert!(validate_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(validate_iban("DE89370400440532013000"));
        assert_eq!(
            count(&ds, "iban", "pay to GB82 WEST 1234 5698 7654 32 please"),
            1
        );
        assert_eq!(
            count(&ds, "iban", "pay to DE89370400440532013000 please"),
            1
        );
        assert_eq!(
            count(&ds, "iban", "pay to DE89 3704 0044 0532 0130 00 please"),
            1
        );
        // Published example of a Steuerliche Identifikationsnummer.
        assert!(validate_de_tax_id("86095742719"));
        assert_eq!(count(&ds, "de-tax-id", "Steuer-IdNr: 86095742719 ok"), 1);
        assert_eq!(count(&ds, "de-tax-id", "tax id 86 095 742 719 ok"), 1);
        assert_eq!(count(&ds, "de-tax-id", "number 86095742719 ok"), 0);
        assert_eq!(count(&ds, "email", "mail jane.doe@example.co.uk."), 1);
        assert_eq!(count(&ds, "phone", "call +49 30 1234 5678 today"), 1);
        assert_eq!(count(&ds, "date-of-birth", "born on 12/03/1985."), 1);
        assert_eq!(count(&ds, "medical-record-number", "MRN: 00123456"), 1);
    }

    #[test]
    fn ordinary_text_is_not_classified() {
        let ds = builtin();
        let text = "\
fn main() { let v = vec![1, 2, 3]; println!(\"{v:?}\"); }
release v1.2.3 shipped; see build 20240501 and commit 3f2a9c1.
request id 550e8400-e29b-41d4-a716-446655440000 at 2024-05-01T10:00:00Z
order ORD-12345 total $1,299.99 (was 1499.00), qty 3, sku AB-1234-XY
port 8080, pid 4242, elapsed 12.5ms, ratio 0.75, epoch 1714557600
tracking 1Z999AA10123456784; invoice INV-2024-0042; row 42 of 1000
SHA256 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08
";
        let counts = classify(&ds, text);
        for id in [
            "payment-card",
            "us-ssn",
            "iban",
            "date-of-birth",
            "icd10",
            "medical-record-number",
            "de-tax-id",
        ] {
            assert_eq!(counts.get(id), None, "{id} in {counts:?}");
        }
    }
}
