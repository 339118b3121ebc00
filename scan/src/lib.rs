//! longhaul-scan: the scanning engine shared by the leakage and
//! classification job kinds and by `longhaul scan`: the built-in ruleset of
//! well-known secret formats (`rules.rs`), user rules and allowlists
//! (`custom.rs`), streaming chunked scans with overlap and a literal
//! prefilter, parallel over files or segments of one buffer (`engine.rs`),
//! and findings that never hold a whole secret (`finding.rs`); git history
//! (`git.rs`). Classification: validated detectors (`detectors.rs`), user
//! rules, gzip and CSV/JSON/NDJSON handling (`classify.rs`, `formats.rs`).
//! `corpus.rs` makes labelled test data.

pub mod classify;
pub mod corpus;
pub mod custom;
pub mod detectors;
pub mod engine;
pub mod finding;
pub mod formats;
pub mod git;
pub mod rules;

pub use classify::{ClassRule, Classification, Classifier, Outcome, SkipReason};
pub use custom::{Allowlist, Charset, CustomRule};
pub use engine::Scanner;
pub use finding::Finding;
pub use formats::Format;
pub use rules::{Rule, Severity};
