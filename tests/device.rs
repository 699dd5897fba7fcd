//! `--device cuda` never falls back to the CPU silently: it either runs on the GPU or start-up
//! fails and says why.
//!
//! With the `cuda` feature on a machine with a GPU and the onnxruntime-gpu library, set
//! `PINSERVE_EXPECT_CUDA=1` and the test checks the CUDA path serves golden answers instead.

mod common;

use std::time::Duration;

use common::Server;

fn start_on(device: &str) -> Server {
    Server::start_fixture("tabular_mlp", "1", &["--device", device])
}

async fn expect_startup_failure(device: &str, reason: &str) {
    let mut server = start_on(device);
    let health = server.wait_for_health("failed").await;
    let error = health["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("cannot run on device {device}")),
        "{error}"
    );
    assert!(error.contains(reason), "{error}");
    assert_eq!(
        server.wait_exit(Duration::from_secs(20)).await.code(),
        Some(1)
    );
}

#[cfg(not(feature = "cuda"))]
#[tokio::test]
async fn cuda_without_the_cuda_feature_fails_and_says_so() {
    expect_startup_failure("cuda", "built without CUDA support (cargo feature `cuda`)").await;
}

#[cfg(feature = "cuda")]
#[tokio::test]
async fn cuda_runs_on_the_gpu_or_fails_and_says_why() {
    use common::{assert_outputs_match, golden};

    if std::env::var("PINSERVE_EXPECT_CUDA").as_deref() == Ok("1") {
        let server = start_on("cuda:0");
        server.wait_ready().await;
        let (_, health) = server.get("/health").await;
        assert_eq!(health["device"], "cuda:0");
        for case in golden("tabular_mlp")["cases"].as_array().unwrap() {
            let (status, body) = server
                .post_json("/v2/models/tabular_mlp/infer", &case["request"])
                .await;
            assert_eq!(status, 200, "{body}");
            assert_outputs_match(&body["outputs"], &case["outputs"], "tabular_mlp on cuda:0");
        }
        assert!(server.metrics().await.contains(r#"device="cuda:0""#));
    } else {
        expect_startup_failure("cuda:0", "CUDA execution provider could not be registered").await;
    }
}

#[tokio::test]
async fn unknown_devices_are_refused_before_anything_starts() {
    let output = common::pinserve()
        .args([
            "serve",
            "--model-repository",
            "m",
            "--model",
            "a",
            "--version",
            "1",
            "--device",
            "tpu",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown device 'tpu': expected cpu, cuda or cuda:N"),
        "{stderr}"
    );
}
