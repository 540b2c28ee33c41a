//! The Python virtualenv with real Celery, built by the tests themselves so
//! `cargo test` works on a fresh machine.
//!
//! One venv per content of `python/requirements.txt`, shared by every test
//! process: nextest runs each test in its own process, so creation is guarded
//! by an exclusive file lock and marked complete by a stamp file written last.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Overrides where the venv lives (used as-is, created there if missing).
pub const VENV_ENV: &str = "CELERIAC_TEST_VENV";
const STAMP: &str = ".celeriac-ready";

/// `tests/python`: the Celery app and driver scripts.
pub fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

fn requirements() -> PathBuf {
    python_dir().join("requirements.txt")
}

/// The venv directory, created (once, under a lock) on first use.
/// Panics with pip's output when it cannot be built (e.g. PyPI unreachable):
/// every interop test needs it, so there is nothing sensible to fall back to.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| match ensure_venv() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot build the Python Celery venv for interop tests: {e:#}"),
    })
}

/// `<venv>/bin/python`.
pub fn python_bin() -> PathBuf {
    venv().join("bin").join("python")
}

fn ensure_venv() -> Result<PathBuf> {
    let reqs = fs::read(requirements()).context("reading python/requirements.txt")?;
    let hash = format!("{:016x}", fnv1a(&reqs));
    let chosen = std::env::var_os(VENV_ENV).filter(|d| !d.is_empty());
    // Only a venv we own (the hashed one under target/) may be wiped.
    let owned = chosen.is_none();
    let dir = chosen.map_or_else(
        || target_dir().join(format!("celeriac-py-venv-{hash}")),
        PathBuf::from,
    );
    if is_ready(&dir, &hash) {
        return Ok(dir);
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut lock_path = dir.clone().into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = File::create(&lock_path)
        .with_context(|| format!("creating lock file {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another process may have finished while we waited for the lock.
    if !is_ready(&dir, &hash) {
        build(&dir, owned)?;
        fs::write(dir.join(STAMP), &hash).context("writing the venv stamp")?;
    }
    Ok(dir)
}

fn is_ready(dir: &Path, hash: &str) -> bool {
    fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == hash)
}

/// Create the venv (unless `$CELERIAC_TEST_VENV` already is one) and
/// install the requirements into it.
fn build(dir: &Path, owned: bool) -> Result<()> {
    if owned && dir.exists() {
        // A half-built venv from an interrupted run: start over.
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if !dir.join("bin").join("python").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(dir))?;
    }
    run(Command::new(dir.join("bin").join("pip"))
        .args(["install", "--disable-pip-version-check", "--no-input"])
        .args(["--timeout", "30", "--retries", "2", "-r"])
        .arg(requirements()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else the ancestor of this
/// test binary that holds cargo's `CACHEDIR.TAG`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    from_exe.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between releases,
/// which would rebuild the venv for nothing).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
