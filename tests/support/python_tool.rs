//! Running a Python reference script of `tools/` from a test: the JSON request on stdin, the
//! JSON answer from stdout (model_fixtures, text_eval).

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `python tools/SCRIPT ARGS...` with `request` as JSON on stdin; its JSON output. `what` names
/// the call in the failure message.
pub fn run_python_tool(python: &str, script: &str, args: &[&Path], request: &Value, what: &str) -> Value {
    let mut child = Command::new(python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{what}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}
