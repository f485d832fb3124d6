//! Records `git describe` for `retort --version`-style reporting in run manifests.
fn main() {
    let described = std::process::Command::new("git")
        .args(["describe", "--always", "--tags"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(d) = described {
        println!("cargo:rustc-env=RETORT_GIT_DESCRIBE={d}");
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
