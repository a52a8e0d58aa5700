//! What the Docker test binaries share: the check that Docker is there (and the demo image built).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned()
}

/// Whether Docker can be used; fails the test under CI when it cannot. Builds the demo image
/// once per test binary.
pub fn docker_ready(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let ping = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
        match ping {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Err(e) => return Err(format!("cannot run docker: {e}")),
        }
        let build = Command::new(repo_root().join("scripts/demo-image")).output().expect("run scripts/demo-image");
        assert!(
            build.status.success(),
            "scripts/demo-image failed:\n{}{}",
            String::from_utf8_lossy(&build.stdout),
            String::from_utf8_lossy(&build.stderr)
        );
        Ok(())
    });
    match ready {
        Ok(()) => true,
        Err(e) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true and Docker is unreachable: {e}");
            eprintln!("\n!!!!!!!! SKIP {test}: Docker is unreachable ({e}) !!!!!!!!\n");
            false
        }
    }
}
