//! The command line itself: generated completions and man pages are checked in and current.

use crate::harness::ztk_bin;

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn checked_in_completions_are_current() {
    for (shell, file) in [
        ("bash", "completions/ztk.bash"),
        ("zsh", "completions/_ztk"),
        ("fish", "completions/ztk.fish"),
    ] {
        let out = std::process::Command::new(ztk_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let checked_in = std::fs::read(repo(file)).unwrap_or_default();
        assert!(
            checked_in == out.stdout,
            "{file} is stale: regenerate with `cargo run -- completions {shell} > {file}` (or ./scripts/generate.sh)"
        );
    }
}

#[test]
fn checked_in_man_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ztk_bin())
        .args(["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut generated: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    generated.sort();
    assert!(generated.len() > 5);
    for name in generated {
        let fresh = std::fs::read(dir.path().join(&name)).unwrap();
        let checked_in = std::fs::read(repo("man").join(&name)).unwrap_or_default();
        assert!(
            fresh == checked_in,
            "man/{} is stale: regenerate with ./scripts/generate.sh",
            name.to_string_lossy()
        );
    }
}

#[test]
fn bad_filters_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["audit", "list", "--status", "9xx"][..],
        &["audit", "list", "--since", "yesterday"],
        &["audit", "list", "--view", "nope"],
        &["audit", "list", "--min-duration", "fast"],
        &["audit", "list", "--access-method", "telepathy"],
        &[
            "audit",
            "export",
            "--view",
            "commands",
            "--format",
            "k8s-audit",
        ],
    ] {
        let out = std::process::Command::new(ztk_bin())
            .args(args)
            .env("ZTK_DATA_DIR", dir.path())
            .env("ZTK_CONFIG_DIR", dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("invalid") || err.contains("k8s-audit describes API calls"),
            "{err}"
        );
    }
}

/// mimalloc's arenas are committed on demand: `.cargo/config.toml` compiles that default in, and
/// a `CFLAGS` from the environment would silently replace it (doubling the idle proxy's RSS
/// where transparent huge pages are `always`). mimalloc prints its options when asked.
#[test]
fn the_allocator_commits_memory_on_demand() {
    let out = std::process::Command::new(ztk_bin())
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("option 'arena_eager_commit'"))
        .unwrap_or_else(|| panic!("mimalloc printed no options: {stderr}"));
    assert!(
        line.trim_end().ends_with(": 0"),
        "{line}: build with .cargo/config.toml's CFLAGS"
    );
}
