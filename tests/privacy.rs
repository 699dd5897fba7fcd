//! Nothing leaves the pod, and nothing is written where it is not asked to be: ONNX Runtime 1.31
//! records telemetry (a device id, queued events naming the OS, CPU and executable) under
//! `$HOME/.cache/Microsoft` unless `ORT_DISABLE_TELEMETRY` is set before it initialises, which
//! pinserve does for itself. Each command runs with a HOME of its own that is checked afterwards.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{ORT_TELEMETRY_VARIABLE, Server, fixtures, tabular_request};

/// Where ONNX Runtime 1.31 writes its telemetry state, relative to HOME.
const TELEMETRY_DIR: &str = ".cache/Microsoft";

fn model_file(model: &str) -> PathBuf {
    fixtures().join(model).join("1/model.onnx")
}

fn inspect_with_home(home: &Path, env: &[(&str, &str)]) -> std::process::Output {
    common::pinserve()
        .env("HOME", home)
        .envs(env.iter().copied())
        .arg("inspect")
        .arg(model_file("tabular_mlp"))
        .output()
        .expect("cannot run pinserve inspect")
}

fn assert_no_telemetry(home: &Path, command: &str) {
    let written = home.join(TELEMETRY_DIR);
    assert!(
        !written.exists(),
        "`pinserve {command}` wrote ONNX Runtime telemetry into {}",
        written.display()
    );
}

#[test]
fn inspect_writes_no_telemetry() {
    let home = tempfile::tempdir().unwrap();
    let output = inspect_with_home(home.path(), &[]);
    assert!(output.status.success(), "{output:?}");
    assert_no_telemetry(home.path(), "inspect");
}

/// The check above can see what ONNX Runtime writes, and a user's own setting is left alone.
#[test]
fn a_users_own_telemetry_setting_is_respected() {
    let home = tempfile::tempdir().unwrap();
    let output = inspect_with_home(home.path(), &[(ORT_TELEMETRY_VARIABLE, "0")]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        home.path().join(TELEMETRY_DIR).is_dir(),
        "with {ORT_TELEMETRY_VARIABLE}=0 ONNX Runtime should have written its telemetry state"
    );
}

#[tokio::test]
async fn fetch_writes_no_telemetry() {
    let home = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let repository = fixtures();
    let output = common::pinserve_async()
        .env("HOME", home.path())
        .args(["fetch", "--model-repository"])
        .arg(&repository)
        .args(["--model", "tabular_mlp", "--version", "1", "--dest"])
        .arg(dest.path().join("model"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_no_telemetry(home.path(), "fetch");
}

#[tokio::test]
async fn serve_writes_no_telemetry() {
    let home = tempfile::tempdir().unwrap();
    let repository = fixtures();
    let home_env = [("HOME", home.path().to_str().unwrap().to_owned())];
    let args = [
        "--model-repository",
        repository.to_str().unwrap(),
        "--model",
        "tabular_mlp",
        "--version",
        "1",
    ];
    let mut server = Server::start_with_env(&args, &home_env);
    server.wait_ready().await;
    let request = tabular_request();
    let (status, body) = server
        .post_json("/v2/models/tabular_mlp/infer", &request)
        .await;
    assert_eq!(status, 200, "{body}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.success());
    assert_no_telemetry(home.path(), "serve");
}
