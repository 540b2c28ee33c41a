//! Test images, built locally (no registry is reachable in CI): `FROM
//! scratch` with Debian's static busybox, run as `/bin/busybox sh -c …`.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// busybox at `/bin/busybox`, and `/out` owned by nobody (65534) for result
/// files. Bump the tag when the content changes.
pub const BUSYBOX: &str = "celeriac-test-busybox:1";

const DOCKERFILE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nCOPY --chown=65534:65534 out /out\n";

/// The busybox image, built once per test run (and only if missing).
/// Panics with the reason when it cannot be built: the tests need it.
pub fn busybox() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(ensure_busybox) {
        panic!("cannot build the test image {BUSYBOX}: {e}");
    }
    BUSYBOX
}

fn ensure_busybox() -> Result<(), String> {
    if docker(&["image", "inspect", BUSYBOX])?.status.success() {
        return Ok(());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let busybox = Path::new("/bin/busybox");
    std::fs::copy(busybox, dir.path().join("busybox")).map_err(|e| {
        format!(
            "{}: {e} (install Debian's busybox-static)",
            busybox.display()
        )
    })?;
    std::fs::create_dir(dir.path().join("out")).map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).map_err(|e| e.to_string())?;
    let context = dir.path().to_string_lossy().into_owned();
    let out = docker(&["build", "-q", "-t", BUSYBOX, &context])?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Run the docker CLI; a missing CLI or daemon is reported, not skipped.
pub fn docker(args: &[&str]) -> Result<std::process::Output, String> {
    Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {}: {e}", args.join(" ")))
}
