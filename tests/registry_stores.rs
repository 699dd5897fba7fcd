//! Against real object-store APIs started by tests/support/services.sh: S3 (moto) and Azure
//! Blob (Azurite), each holding the same model repository. Requests are signed with the
//! credentials each cloud's standard variables give, and sidecar digests are enforced.

mod common;

use std::process::Output;

use common::{
    Server, assert_outputs_match, manifest, run_fetch,
    services::{expected, registered, s3_env, var},
};

/// A store holding the test model repository, and the environment that reaches it.
struct Store {
    root: String,
    env: Vec<(&'static str, String)>,
}

fn s3() -> Store {
    let registered = registered();
    Store {
        root: format!(
            "s3://{}/{}",
            registered["s3"]["bucket"].as_str().unwrap(),
            registered["s3"]["root"].as_str().unwrap()
        ),
        env: s3_env(),
    }
}

fn azure() -> Store {
    let registered = registered();
    Store {
        root: format!(
            "az://{}/{}",
            registered["azure"]["container"].as_str().unwrap(),
            registered["azure"]["root"].as_str().unwrap()
        ),
        env: vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".to_owned()),
            (
                "AZURITE_BLOB_STORAGE_URL",
                var("PINSERVE_TEST_AZURE_BLOB_URL"),
            ),
            (
                "AZURE_STORAGE_ACCOUNT_NAME",
                var("PINSERVE_TEST_AZURE_ACCOUNT"),
            ),
            ("AZURE_STORAGE_ACCOUNT_KEY", var("PINSERVE_TEST_AZURE_KEY")),
        ],
    }
}

impl Store {
    async fn fetch(&self, uri: &str, dest: &std::path::Path) -> Output {
        run_fetch(
            &["--model-uri", uri, "--dest", dest.to_str().unwrap()],
            &self.env,
        )
        .await
    }

    /// Serves `tabular_mlp` version 1 from the repository; its sidecar is verified.
    async fn serves_the_repository(&self) {
        let cache = tempfile::tempdir().unwrap();
        let args = [
            "--model-repository",
            &self.root,
            "--model",
            "tabular_mlp",
            "--version",
            "1",
        ];
        let mut args = args.to_vec();
        args.extend(["--cache-dir", cache.path().to_str().unwrap()]);
        let server = Server::start_with_env(&args, &self.env);
        server.wait_ready().await;
        let (request, outputs) = expected("tabular-mlp/1");
        let (status, body) = server
            .post_json("/v2/models/tabular_mlp/infer", &request)
            .await;
        assert_eq!(status, 200, "{}: {body}", self.root);
        assert_outputs_match(
            &body["outputs"],
            &outputs,
            &format!("tabular_mlp from {}", self.root),
        );
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

    /// Fetches a version directory without a sidecar, records its digest, and serves it.
    async fn records_the_digest_without_a_sidecar(&self) {
        let dest = tempfile::tempdir().unwrap();
        let output = self
            .fetch(&format!("{}/churn_pipeline/1", self.root), dest.path())
            .await;
        assert!(
            output.status.success(),
            "{}: {}",
            self.root,
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
        assert_outputs_match(
            &body["outputs"],
            &outputs,
            &format!("churn_pipeline from {}", self.root),
        );
    }

    /// Refuses a version whose sidecar does not match, and names a missing version.
    async fn refuses_wrong_digests_and_missing_versions(&self) {
        let dest = tempfile::tempdir().unwrap();
        let output = self
            .fetch(&format!("{}/tabular_mlp/2", self.root), dest.path())
            .await;
        assert_eq!(output.status.code(), Some(1));
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(
            message.contains("does not match") && message.contains("sidecar model.onnx.sha256"),
            "{message}"
        );
        assert!(!dest.path().join("model.onnx").exists());

        let output = self
            .fetch(&format!("{}/tabular_mlp/9", self.root), dest.path())
            .await;
        assert_eq!(output.status.code(), Some(1));
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains("version '9' not found"), "{message}");
        assert!(
            message.contains("its versions there: 1, 2"),
            "the versions that exist are listed: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_serves_a_repository_with_its_sidecar_verified() {
    s3().serves_the_repository().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_records_the_digest_of_a_version_without_a_sidecar() {
    s3().records_the_digest_without_a_sidecar().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_refuses_wrong_digests_and_names_missing_versions() {
    s3().refuses_wrong_digests_and_missing_versions().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_serves_a_repository_with_its_sidecar_verified() {
    azure().serves_the_repository().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_records_the_digest_of_a_version_without_a_sidecar() {
    azure().records_the_digest_without_a_sidecar().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_refuses_wrong_digests_and_names_missing_versions() {
    azure().refuses_wrong_digests_and_missing_versions().await;
}
