//! Against a real S3 API (moto, started by tests/support/services.sh): a model repository in a
//! bucket, signed requests from the standard AWS variables, sidecar digests enforced.

mod common;

use common::{
    Server, assert_outputs_match, manifest, run_fetch,
    services::{expected, registered, s3_environment},
};

fn bucket() -> String {
    let registered = registered();
    format!(
        "s3://{}/{}",
        registered["s3"]["bucket"].as_str().unwrap(),
        registered["s3"]["root"].as_str().unwrap()
    )
}

async fn fetch(args: &[&str]) -> std::process::Output {
    run_fetch(args, &s3_environment()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_in_a_bucket_serves_with_its_sidecar_verified() {
    let cache = tempfile::tempdir().unwrap();
    let root = bucket();
    let server = Server::start_with_env(
        &[
            "--model-repository",
            &root,
            "--model",
            "tabular_mlp",
            "--version",
            "1",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &s3_environment(),
    );
    server.wait_ready().await;
    let (request, outputs) = expected("tabular-mlp/1");
    let (status, body) = server
        .post_json("/v2/models/tabular_mlp/infer", &request)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_outputs_match(&body["outputs"], &outputs, "tabular_mlp from S3");
    let sha256 = registered()["s3"]["models"]["tabular_mlp/1"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        server
            .metrics()
            .await
            .contains(&format!(r#"sha256="{sha256}""#))
    );
    assert!(
        !cache
            .path()
            .join("tabular_mlp/1/model.onnx.sha256")
            .exists(),
        "sidecars are digests, not model files"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_directory_uri_without_a_sidecar_records_the_computed_digest() {
    let dest = tempfile::tempdir().unwrap();
    let uri = format!("{}/churn_pipeline/1", bucket());
    let output = fetch(&["--model-uri", &uri, "--dest", dest.path().to_str().unwrap()]).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = manifest(dest.path());
    assert_eq!(
        (manifest["model"].as_str(), manifest["version"].as_str()),
        (Some("churn_pipeline"), Some("1"))
    );
    let model = std::fs::read(dest.path().join("model.onnx")).unwrap();
    assert_eq!(
        manifest["files"][0]["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&model))
    );
    let server = Server::fixture_dir(dest.path(), &[]).await;
    let (request, outputs) = expected("churn-pipeline/1");
    let (status, body) = server
        .post_json("/v2/models/churn_pipeline/infer", &request)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_outputs_match(&body["outputs"], &outputs, "churn_pipeline from S3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_sidecar_or_a_missing_version_is_refused() {
    let dest = tempfile::tempdir().unwrap();
    let tampered = format!("{}/tabular_mlp/2", bucket());
    let output = fetch(&[
        "--model-uri",
        &tampered,
        "--dest",
        dest.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("does not match") && message.contains("sidecar model.onnx.sha256"),
        "{message}"
    );
    assert!(!dest.path().join("model.onnx").exists());

    let missing = format!("{}/tabular_mlp/9", bucket());
    let output = fetch(&[
        "--model-uri",
        &missing,
        "--dest",
        dest.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("version '9' not found"), "{message}");
}
