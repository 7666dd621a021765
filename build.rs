//! Records the build's version, commit and time for `openchatd --version`, the start-up log,
//! the capabilities document (`build_version`, `build_commit`) and `/metrics`.
//! `OPENCHAT_BUILD_VERSION` (default: the package version), `OPENCHAT_BUILD_COMMIT` (default:
//! what git says) and `OPENCHAT_BUILD_TIME` (RFC 3339; default: `SOURCE_DATE_EPOCH`, else the
//! clock) override them; the Dockerfile passes its build arguments this way (no `.git` there).

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=OPENCHAT_BUILD_VERSION");
    println!("cargo:rerun-if-env-changed=OPENCHAT_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=OPENCHAT_BUILD_TIME");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = non_empty("OPENCHAT_BUILD_COMMIT").or_else(|| {
        let output = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    });
    let version = non_empty("OPENCHAT_BUILD_VERSION")
        .unwrap_or_else(|| std::env::var("CARGO_PKG_VERSION").unwrap_or_default());
    let time = non_empty("OPENCHAT_BUILD_TIME").unwrap_or_else(|| {
        let time = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|secs| secs.parse::<u64>().ok())
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap_or_else(SystemTime::now);
        humantime::format_rfc3339_seconds(time).to_string()
    });
    println!("cargo:rustc-env=OPENCHAT_BUILD_VERSION={version}");
    println!(
        "cargo:rustc-env=OPENCHAT_BUILD_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rustc-env=OPENCHAT_BUILD_TIME={time}");
}

/// A build-time override: the variable's value unless unset, empty or "unknown" (the
/// Dockerfile's defaults for its build arguments).
fn non_empty(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty() && value != "unknown")
}
