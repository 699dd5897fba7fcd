//! Against a real MLflow 3 tracking server (started by tests/support/services.sh): versions,
//! aliases and stages resolve to the right bytes, digests from model-version tags are enforced,
//! external-data files come along, and basic auth works as MLflow's clients do it.

mod common;

use std::{path::Path, process::Output};

use common::{
    Server, assert_outputs_match, manifest,
    metrics::find_sample,
    run_fetch,
    services::{expected, mlflow_uri, registered, serve_from_mlflow, var},
    stderr,
};

/// `pinserve fetch --model-uri URI --registry-uri REGISTRY --dest DEST`, with `env` set.
async fn fetch(uri: &str, registry: &str, dest: &Path, env: &[(&str, String)]) -> Output {
    let args = [
        "--model-uri",
        uri,
        "--registry-uri",
        registry,
        "--dest",
        dest.to_str().unwrap(),
    ];
    run_fetch(&args, env).await
}

/// The registered digest of a version's model.onnx, as register_models.py computed it.
fn registered_digest(model: &str, version: &str) -> String {
    registered()["mlflow"][model]["versions"][version]["model_onnx_sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn check_answers(server: &Server, model: &str, version: &str) {
    let (request, outputs) = expected(&format!("{model}/{version}"));
    let (status, body) = server
        .post_json(
            &format!("/v2/models/{model}/versions/{version}/infer"),
            &request,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_outputs_match(
        &body["outputs"],
        &outputs,
        &format!("{model} version {version}"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_a_version_then_serve_the_directory_without_the_registry() {
    let dest = tempfile::tempdir().unwrap();
    let registry = mlflow_uri();
    let output = fetch("models:/tabular-mlp/1", &registry, dest.path(), &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = manifest(dest.path());
    assert_eq!(
        (manifest["model"].as_str(), manifest["version"].as_str()),
        (Some("tabular-mlp"), Some("1"))
    );
    let model_file = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "model.onnx")
        .unwrap();
    assert_eq!(model_file["sha256"], registered_digest("tabular-mlp", "1"));
    assert!(
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "MLmodel")
    );
    assert_eq!(manifest["signature"]["inputs"][0]["name"], "features");

    let server = Server::fixture_dir(
        dest.path(),
        &[("MLFLOW_TRACKING_URI", "http://127.0.0.1:9".to_owned())],
    )
    .await;
    check_answers(&server, "tabular-mlp", "1").await;
    let (_, metadata) = server.get("/v2/models/tabular-mlp").await;
    assert_eq!(metadata["versions"], serde_json::json!(["1"]));
    assert_eq!(
        metadata["parameters"]["mlflow_signature"]["inputs"][0]["tensor-spec"]["dtype"],
        "float32"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_resolves_once_to_its_version_with_external_data() {
    let (server, cache) = serve_from_mlflow("models:/tabular-mlp@champion").await;
    let (_, health) = server.get("/health").await;
    assert_eq!(
        (health["model"].as_str(), health["version"].as_str()),
        (Some("tabular-mlp"), Some("2"))
    );
    check_answers(&server, "tabular-mlp", "2").await;
    let weights = &registered()["mlflow"]["tabular-mlp"]["versions"]["2"]["external_data"];
    for file in weights.as_array().unwrap() {
        assert!(
            cache
                .path()
                .join("tabular-mlp/2")
                .join(file.as_str().unwrap())
                .is_file(),
            "{file} was not fetched"
        );
    }
    let metrics = server.metrics().await;
    let version = [("model", "tabular-mlp"), ("version", "2")];
    assert_eq!(
        find_sample(&metrics, "pinserve_ready", &version),
        Some(1.0),
        "{metrics}"
    );
    let logs = server.logs();
    let warning = logs.iter().find(|entry| {
        entry["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a reproducible pin"))
    });
    assert!(warning.is_some(), "the alias warning is logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_and_a_registry_version_by_flags_resolve_too() {
    let registry = mlflow_uri();
    let dest = tempfile::tempdir().unwrap();
    let output = fetch(
        "models:/tabular-mlp/Production",
        &registry,
        dest.path(),
        &[],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(manifest(dest.path())["version"], "1");

    let by_flags = tempfile::tempdir().unwrap();
    let env = [("MLFLOW_TRACKING_URI", registry.clone())];
    let args = [
        "--model",
        "tabular-mlp",
        "--version",
        "2",
        "--dest",
        by_flags.path().to_str().unwrap(),
    ];
    let output = run_fetch(&args, &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(manifest(by_flags.path())["version"], "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_whose_tag_digest_does_not_match_is_refused() {
    let dest = tempfile::tempdir().unwrap();
    let registry = mlflow_uri();
    let output = fetch("models:/tabular-mlp/3", &registry, dest.path(), &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("MLflow model-version tag 'sha256'"),
        "{message}"
    );
    assert!(
        message.contains(&registered_digest("tabular-mlp", "3")),
        "the computed digest is named: {message}"
    );
    assert!(
        message.contains(
            registered()["mlflow"]["tabular-mlp"]["versions"]["3"]["sha256"]
                .as_str()
                .unwrap()
        )
    );
    assert!(
        !dest.path().join("model.onnx").exists() && !dest.path().join("pinserve.json").exists()
    );

    let cache = tempfile::tempdir().unwrap();
    let served = Server::start_with_env(
        &[
            "--model-uri",
            "models:/tabular-mlp/3",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[("MLFLOW_TRACKING_URI", registry)],
    );
    let health = served.wait_for_health("failed").await;
    assert!(
        health["error"].as_str().unwrap().contains("does not match"),
        "{health}"
    );
    let version_dir = cache.path().join("tabular-mlp/3");
    assert!(
        version_dir.is_dir() && !version_dir.join("pinserve.json").exists(),
        "the refused fetch went into the given cache and left nothing servable there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_versions_and_aliases_fail_at_once_with_mlflow_error_codes() {
    let registry = mlflow_uri();
    let dest = tempfile::tempdir().unwrap();
    for (uri, code) in [
        ("models:/tabular-mlp/9", "RESOURCE_DOES_NOT_EXIST"),
        ("models:/no-such-model/1", "RESOURCE_DOES_NOT_EXIST"),
        ("models:/tabular-mlp@nope", "INVALID_PARAMETER_VALUE"),
    ] {
        let output = fetch(uri, &registry, dest.path(), &[]).await;
        assert_eq!(output.status.code(), Some(1), "{uri}");
        let message = stderr(&output);
        assert!(
            message.contains(uri) && message.contains(code) && message.contains(&registry),
            "{uri}: {message}"
        );
        assert!(
            !message.contains("retrying"),
            "{uri} was retried: {message}"
        );
    }
    let versions = |uri| async move {
        let output = fetch(uri, &mlflow_uri(), tempfile::tempdir().unwrap().path(), &[]).await;
        stderr(&output)
    };
    let listed = versions("models:/tabular-mlp/9").await;
    assert!(
        listed.contains("the versions of 'tabular-mlp' are: 1, 2, 3"),
        "{listed}"
    );
    let none = versions("models:/no-such-model/1").await;
    assert!(
        none.contains("the registry has no versions of a model named 'no-such-model'"),
        "{none}"
    );
}

/// An alias is looked up as a version number is: when the model itself is missing, the
/// message says so rather than leaving only MLflow's code.
#[tokio::test(flavor = "multi_thread")]
async fn an_alias_of_a_missing_model_says_the_registry_has_no_versions_of_it() {
    let dest = tempfile::tempdir().unwrap();
    let output = fetch(
        "models:/no-such-model@champion",
        &mlflow_uri(),
        dest.path(),
        &[],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("RESOURCE_DOES_NOT_EXIST"), "{message}");
    assert!(
        message.contains("the registry has no versions of a model named 'no-such-model'"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_input_pipeline_with_string_inputs_serves_from_mlflow() {
    let (server, _cache) = serve_from_mlflow("models:/churn-pipeline/1").await;
    check_answers(&server, "churn-pipeline", "1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_uses_mlflow_credentials_and_never_logs_them() {
    let registry = var("PINSERVE_TEST_MLFLOW_AUTH_URI");
    let password = var("PINSERVE_TEST_MLFLOW_PASSWORD");
    let dest = tempfile::tempdir().unwrap();
    let fetch_version_1 = |env| fetch("models:/tabular-mlp/1", &registry, dest.path(), env);

    let anonymous = fetch_version_1(&[]).await;
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(stderr(&anonymous).contains("401"), "{}", stderr(&anonymous));

    let wrong = [
        (
            "MLFLOW_TRACKING_USERNAME",
            var("PINSERVE_TEST_MLFLOW_USERNAME"),
        ),
        (
            "MLFLOW_TRACKING_PASSWORD",
            "not-the-password-at-all".to_owned(),
        ),
    ];
    let refused = fetch_version_1(&wrong).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(!stderr(&refused).contains("not-the-password-at-all"));

    let right = [
        (
            "MLFLOW_TRACKING_USERNAME",
            var("PINSERVE_TEST_MLFLOW_USERNAME"),
        ),
        ("MLFLOW_TRACKING_PASSWORD", password.clone()),
        (
            "MLFLOW_TRACKING_TOKEN",
            "a-token-that-basic-auth-outranks".to_owned(),
        ),
    ];
    let output = fetch_version_1(&right).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains(&password));
    assert_eq!(manifest(dest.path())["version"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_verified_against_a_custom_ca_or_skipped_only_when_asked() {
    let registry = var("PINSERVE_TEST_MLFLOW_TLS_URI");
    let ca = var("PINSERVE_TEST_MLFLOW_TLS_CA");
    let untrusted = tempfile::tempdir().unwrap();
    let output = fetch("models:/tabular-mlp/1", &registry, untrusted.path(), &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("certificate") && message.contains("MLFLOW_TRACKING_SERVER_CERT_PATH"),
        "{message}"
    );
    assert!(
        !message.contains("retrying"),
        "a certificate error is not retried: {message}"
    );

    for env in [
        ("MLFLOW_TRACKING_SERVER_CERT_PATH", ca.clone()),
        ("MLFLOW_TRACKING_INSECURE_TLS", "true".to_owned()),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let output = fetch(
            "models:/tabular-mlp/1",
            &registry,
            dest.path(),
            std::slice::from_ref(&env),
        )
        .await;
        assert!(output.status.success(), "{}: {}", env.0, stderr(&output));
        assert_eq!(manifest(dest.path())["version"], "1");
    }
}

/// An overlay pinning `tabular-mlp` version 1 by its digest, as k8s/services lays one out;
/// its folder (`tabular-mlp/staging`).
fn tabular_overlay(root: &Path) -> std::path::PathBuf {
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("k8s/services/fraud-detection/staging/kustomization.yaml");
    let text = std::fs::read_to_string(template).unwrap();
    let pinned = text.rsplit_once("value: ").unwrap().1.trim().to_owned();
    let text = text
        .replace("value: fraud-detection", "value: tabular-mlp")
        .replace("value: \"8\"", "value: \"1\"")
        .replace(
            &pinned,
            &format!("\"{}\"", registered_digest("tabular-mlp", "1")),
        );
    let dir = root.join("tabular-mlp/staging");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kustomization.yaml"), text).unwrap();
    dir
}

/// `pinserve promote --sha256-from-registry` pins the version's `sha256` tag, read with the
/// client fetch uses, and refuses a tag that disagrees with the eval report's digest.
#[tokio::test(flavor = "multi_thread")]
async fn promote_pins_the_digest_the_registry_tags() {
    let root = tempfile::tempdir().unwrap();
    let overlay = tabular_overlay(root.path());
    let promote = async |version: &str, extra: &[&str]| {
        common::pinserve_async()
            .args([
                "promote",
                "--overlay",
                overlay.to_str().unwrap(),
                "--version",
                version,
            ])
            .args(["--sha256-from-registry"])
            .args(extra)
            .env("MLFLOW_TRACKING_URI", mlflow_uri())
            .output()
            .await
            .unwrap()
    };
    let output = promote("2", &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let digest = registered_digest("tabular-mlp", "2");
    let text = std::fs::read_to_string(overlay.join("kustomization.yaml")).unwrap();
    assert!(text.contains(&format!("value: \"{digest}\"")), "{text}");

    let report = root.path().join("report.json");
    let real = registered_digest("tabular-mlp", "3");
    let body =
        serde_json::json!({"model": "tabular-mlp", "version": "3", "sha256": real, "passed": true});
    std::fs::write(&report, body.to_string()).unwrap();
    let output = promote("3", &["--report", report.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("the digests disagree: the registry says"),
        "{}",
        stderr(&output)
    );
}

/// A logged model in no registered model, as register_models.py logged it (`good`, `tampered`).
fn logged_model(role: &str) -> serde_json::Value {
    let logged = registered()["mlflow_logged_models"][role].clone();
    assert!(
        logged.is_object(),
        "registered.json has no logged model {role}"
    );
    logged
}

fn logged_model_uri(logged: &serde_json::Value) -> String {
    format!("models:/{}", logged["model_id"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_model_is_fetched_and_served_by_its_id() {
    let logged = logged_model("good");
    let (uri, id) = (
        logged_model_uri(&logged),
        logged["model_id"].as_str().unwrap(),
    );
    let registry = mlflow_uri();
    let dest = tempfile::tempdir().unwrap();
    let output = fetch(&uri, &registry, dest.path(), &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let manifest = manifest(dest.path());
    assert_eq!(
        (manifest["model"].as_str(), manifest["version"].as_str()),
        (Some("tabular-logged"), Some(id))
    );
    assert_eq!(manifest["reference"], format!("{uri} at {registry}/"));
    let recorded: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        recorded,
        logged["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect::<Vec<_>>()
    );
    let model_file = &manifest["files"].as_array().unwrap()
        [recorded.iter().position(|p| *p == "model.onnx").unwrap()];
    assert_eq!(model_file["sha256"], logged["model_onnx_sha256"]);

    let (server, cache) = serve_from_mlflow(&uri).await;
    let (_, health) = server.get("/health").await;
    assert_eq!(
        (health["model"].as_str(), health["version"].as_str()),
        (Some("tabular-logged"), Some(id))
    );
    let (status, body) = server
        .post_json(
            &format!("/v2/models/tabular-logged/versions/{id}/infer"),
            &logged["request"],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_outputs_match(&body["outputs"], &logged["outputs"], "the logged model");
    assert!(
        cache
            .path()
            .join("tabular-logged")
            .join(id)
            .join("pinserve.json")
            .is_file()
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(&format!(
            r#"pinserve_ready{{model="tabular-logged",version="{id}"}} 1"#
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_logged_model_is_named_and_its_fetch_fails() {
    let registry = mlflow_uri();
    let dest = tempfile::tempdir().unwrap();
    let uri = "models:/m-0123456789abcdef0123456789abcdef";
    let output = fetch(uri, &registry, dest.path(), &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(uri)
            && message.contains("RESOURCE_DOES_NOT_EXIST")
            && message.contains(&registry),
        "{message}"
    );
    assert!(!dest.path().join("pinserve.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_model_whose_tag_digest_does_not_match_is_refused() {
    let logged = logged_model("tampered");
    let dest = tempfile::tempdir().unwrap();
    let output = fetch(&logged_model_uri(&logged), &mlflow_uri(), dest.path(), &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    for named in [
        "MLflow logged-model tag 'sha256'",
        logged["sha256"].as_str().unwrap(),
        logged["model_onnx_sha256"].as_str().unwrap(),
    ] {
        assert!(message.contains(named), "{named} in: {message}");
    }
    assert!(
        !dest.path().join("model.onnx").exists() && !dest.path().join("pinserve.json").exists()
    );
}
