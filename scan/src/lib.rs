//! longhaul-scan: the scanning engine shared by the leakage (and later the
//! classification) job kinds and by `longhaul scan`: the built-in ruleset of
//! well-known secret formats (`rules.rs`), streaming chunked scans with
//! overlap and a literal prefilter (`engine.rs`), and findings that never
//! hold a whole secret (`finding.rs`); git history (`git.rs`). `corpus.rs`
//! makes labelled test data.

pub mod classify;
pub mod corpus;
pub mod detectors;
pub mod engine;
pub mod finding;
pub mod git;
pub mod rules;

pub use engine::Scanner;
pub use finding::Finding;
pub use rules::{Rule, Severity};
