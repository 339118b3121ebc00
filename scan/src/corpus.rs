//! A labelled corpus for tests and benchmarks: code-like text files with
//! secrets of every built-in rule planted at known places (file, line, rule),
//! and filler that no built-in rule may flag (identifiers, UUIDs, commit
//! hashes, URLs without credentials, base64 of words, placeholders).

use std::io::Write;
use std::path::Path;

use crate::finding::fingerprint;
use crate::rules::Rule;

/// One planted secret. `secret` is kept for the tests only; it is never
/// written anywhere but the corpus file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planted {
    /// Relative to the corpus folder.
    pub file: String,
    pub line: usize,
    pub rule: &'static str,
    pub secret: String,
    pub fingerprint: String,
}

/// A valid secret of the built-in rule `rule_id` (checksum and checks
/// passing), the same for the same seed: for demos and examples that must
/// be found. None for an unknown rule.
pub fn sample_secret(rule_id: &str, seed: u64) -> Option<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    crate::rules::builtin()
        .iter()
        .find(|rule| rule.id == rule_id)
        .map(|rule| (rule.sample)(&mut rng).1)
}

const WORDS: &[&str] = &[
    "account", "balance", "config", "deploy", "export", "handler", "invoice", "ledger", "metrics",
    "payload", "queue", "report", "session", "tenant", "upload", "window",
];

fn word(rng: &mut fastrand::Rng) -> &'static str {
    WORDS[rng.usize(..WORDS.len())]
}

fn hex(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.usize(..16)]))
        .collect()
}

/// A line of ordinary code or config, with no secret in it.
pub fn clean_line(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..10) {
        0 => format!(
            "    let {}_{} = {}(\"{}\", {});",
            word(rng),
            rng.u16(..),
            word(rng),
            word(rng),
            rng.u32(..)
        ),
        1 => format!(
            "// TODO: move the {} {} out of the {} path",
            word(rng),
            word(rng),
            word(rng)
        ),
        2 => format!(
            "request_id = \"{}-{}-4{}-a{}-{}\"",
            hex(rng, 8),
            hex(rng, 4),
            hex(rng, 3),
            hex(rng, 3),
            hex(rng, 12)
        ),
        3 => format!("commit: {}", hex(rng, 40)),
        4 => format!(
            "endpoint = \"https://api.example.com/v1/{}/{}\"",
            word(rng),
            rng.u32(..)
        ),
        5 => format!("password = \"${{{}_PASSWORD}}\"", word(rng).to_uppercase()),
        6 => format!(
            "    if {}.len() > {} {{ return Err(Error::{}); }}",
            word(rng),
            rng.u8(..),
            word(rng)
        ),
        7 => format!(
            "database_url = \"postgres://{}@db.internal:5432/{}\"",
            word(rng),
            word(rng)
        ),
        8 => format!("checksum: sha256:{}", hex(rng, 64)),
        _ => format!("    \"{}\": {},", word(rng), rng.u32(..)),
    }
}

/// Writes `files` files of about `bytes_per_file` bytes under `dir`, with
/// `per_rule` samples of every rule planted on random lines; the labels.
pub fn generate(
    dir: &Path,
    rules: &[Rule],
    files: usize,
    bytes_per_file: usize,
    per_rule: usize,
    seed: u64,
) -> std::io::Result<Vec<Planted>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    std::fs::create_dir_all(dir)?;
    // Which file each sample goes to, drawn up front.
    let mut plan: Vec<Vec<(usize, String, String)>> = vec![Vec::new(); files.max(1)];
    for (index, rule) in rules.iter().enumerate() {
        for _ in 0..per_rule {
            let (line, secret) = (rule.sample)(&mut rng);
            plan[rng.usize(..files.max(1))].push((index, line, secret));
        }
    }
    let mut planted = Vec::new();
    for (file_index, samples) in plan.into_iter().enumerate() {
        let name = format!("src/module_{file_index:04}.rs");
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut written = 0usize;
        let mut line = 0usize;
        let mut samples = samples.into_iter().peekable();
        while written < bytes_per_file || samples.peek().is_some() {
            line += 1;
            let text = if samples.peek().is_some() && rng.u8(..50) == 0 {
                let (rule, text, secret) = samples.next().unwrap_or_default();
                planted.push(Planted {
                    file: name.clone(),
                    line,
                    rule: rules[rule].id,
                    fingerprint: fingerprint(rules[rule].id, &secret),
                    secret,
                });
                text
            } else {
                clean_line(&mut rng)
            };
            written += text.len() + 1;
            writeln!(out, "{text}")?;
        }
        out.flush()?;
    }
    Ok(planted)
}
