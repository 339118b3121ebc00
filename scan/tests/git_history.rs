//! History scans of a real git repository (made with the `git` program): a
//! secret committed and later deleted, and one only on another branch, are
//! both found with their commit, path and line; the working-tree scan of the
//! same repository sees neither.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failure

use std::path::Path;
use std::process::Command;

use longhaul_scan::{git, Scanner};

fn run_git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn secrets_anywhere_in_the_history_are_found_with_commit_path_and_line() {
    let scanner = Scanner::builtin();
    let mut rng = fastrand::Rng::with_seed(11);
    let rule_of = |id: &str| scanner.rules().iter().find(|r| r.id == id).unwrap();
    let (github_line, _) = (rule_of("github-token").sample)(&mut rng);
    let (stripe_line, _) = (rule_of("stripe-secret-key").sample)(&mut rng);

    let repo = std::env::temp_dir().join(format!(
        "longhaul-git-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&repo).unwrap();
    run_git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("app.py"), "import os\n\nprint('hello')\n").unwrap();
    run_git(&repo, &["add", "."]);
    run_git(&repo, &["commit", "-q", "-m", "first"]);
    // Line 3 gets a token, which the next commit removes again.
    std::fs::write(
        repo.join("app.py"),
        format!("import os\n\n{github_line}\nprint('hello')\n"),
    )
    .unwrap();
    run_git(&repo, &["commit", "-q", "-am", "oops"]);
    let leaked = run_git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("app.py"), "import os\n\nprint('hello')\n").unwrap();
    run_git(&repo, &["commit", "-q", "-am", "remove the token"]);
    // Another branch adds a Stripe key to a new file.
    run_git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::create_dir_all(repo.join("config")).unwrap();
    std::fs::write(
        repo.join("config/pay.env"),
        format!("# payments\n{stripe_line}\n"),
    )
    .unwrap();
    run_git(&repo, &["add", "."]);
    run_git(&repo, &["commit", "-q", "-m", "payments"]);
    let branch = run_git(&repo, &["rev-parse", "HEAD"]);
    run_git(&repo, &["checkout", "-q", "-"]);

    assert!(git::is_repository(&repo.display().to_string()));
    let findings = git::scan_history(&scanner, &repo.display().to_string()).unwrap();
    let seen: Vec<_> = findings
        .iter()
        .map(|f| {
            (
                f.rule.as_str(),
                f.commit.clone().unwrap(),
                f.file.as_str(),
                f.line,
            )
        })
        .collect();
    assert!(
        seen.contains(&("github-token", leaked, "app.py", 3)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("stripe-secret-key", branch, "config/pay.env", 2)),
        "{seen:?}"
    );
    assert_eq!(findings.len(), 2, "{seen:?}");

    // The files as they are now hold neither.
    let report = scanner.scan_path(&repo.join("app.py")).unwrap();
    assert!(report.findings.is_empty());
    std::fs::remove_dir_all(repo).unwrap();
}

/// An added line that reads like a diff header (`++ …` shows as `+++ …`)
/// does not hide the lines after it, and a path git quotes (it has a `"`)
/// is reported unquoted.
#[test]
fn header_like_lines_and_quoted_paths_do_not_hide_secrets() {
    let scanner = Scanner::builtin();
    let mut rng = fastrand::Rng::with_seed(12);
    let rule_of = |id: &str| scanner.rules().iter().find(|r| r.id == id).unwrap();
    let (first, _) = (rule_of("github-token").sample)(&mut rng);
    let (second, _) = (rule_of("stripe-secret-key").sample)(&mut rng);
    let repo = std::env::temp_dir().join(format!(
        "longhaul-git-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&repo).unwrap();
    run_git(&repo, &["init", "-q"]);
    let name = "notes \"draft\".txt";
    std::fs::write(
        repo.join(name),
        format!("intro\n++ b/evil.txt\n{first}\n++ /dev/null\n{second}\n"),
    )
    .unwrap();
    run_git(&repo, &["add", "."]);
    run_git(&repo, &["commit", "-q", "-m", "notes"]);
    let findings = git::scan_history(&scanner, repo.to_str().unwrap()).unwrap();
    let places: Vec<(&str, &str, usize)> = findings
        .iter()
        .map(|f| (f.rule.as_str(), f.file.as_str(), f.line))
        .collect();
    assert!(places.contains(&("github-token", name, 3)), "{places:?}");
    assert!(
        places.contains(&("stripe-secret-key", name, 5)),
        "{places:?}"
    );
    std::fs::remove_dir_all(&repo).unwrap();
}
