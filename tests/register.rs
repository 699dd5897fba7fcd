//! `pinserve register` against the real MLflow 3 server tests/support/services.sh starts: what
//! it registers loads in MLflow's own Python client, is served and fetched by pinserve with its
//! digest verified, and carries the tags, alias, dataset and reference profile asked for.

mod common;

use std::{path::Path, process::Output};

use common::{
    fixtures,
    services::{mlflow_get, mlflow_uri, register_version, serve_from_mlflow, tag, unique_name},
    stderr,
};
use serde_json::{Value, json};

async fn register(args: &[&str], env: &[(&str, String)]) -> Output {
    common::pinserve_async()
        .arg("register")
        .args(args)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .output()
        .await
        .expect("pinserve register runs")
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// MLflow's Python client: `mlflow.pyfunc.load_model(uri).predict(inputs)`, each output as a
/// flat list of floats.
fn mlflow_predict(uri: &str, inputs: &Value) -> Value {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-services/bin/python");
    let script = r#"
import json, sys
import mlflow, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
spec = {t.name: t.type for t in model.metadata.get_input_schema().inputs}
inputs = {name: np.array(value, dtype=spec[name]) for name, value in json.loads(sys.argv[2]).items()}
outputs = model.predict(inputs)
print(json.dumps({name: np.asarray(value, dtype=float).ravel().tolist() for name, value in outputs.items()}))
"#;
    let output = std::process::Command::new(&python)
        .args(["-c", script, uri, &inputs.to_string()])
        .env("MLFLOW_TRACKING_URI", mlflow_uri())
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("ORT_DISABLE_TELEMETRY", "1")
        .output()
        .unwrap_or_else(|err| panic!("{}: {err}", python.display()));
    assert!(
        output.status.success(),
        "MLflow's client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn assert_close(pinserve: &Value, mlflow: &Value) {
    let (a, b) = (pinserve.as_array().unwrap(), mlflow.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{pinserve} vs {mlflow}");
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        assert!((x - y).abs() <= 1e-6, "{pinserve} vs {mlflow}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_pipeline_loads_in_mlflows_client_and_serves_the_same_answers() {
    let name = unique_name("register-pipeline");
    let model_file = fixtures().join("churn_pipeline/1/model.onnx");
    let version = register_version(&model_file, &name, &["--alias", "candidate"]).await;
    assert_eq!(version, "1");

    let inputs = json!({
        "plan": [["basic"], ["premium"]],
        "region": [["eu"], ["us"]],
        "tenure_months": [[12.0], [40.0]],
        "monthly_charges": [[70.5], [20.25]],
    });
    let expected = mlflow_predict(&format!("models:/{name}/{version}"), &inputs);

    let (server, _cache) = serve_from_mlflow(&format!("models:/{name}@candidate")).await;
    let (status, body) = server
        .post_json("/predict", &json!({ "inputs": inputs }))
        .await;
    assert_eq!(status, 200, "{body}");
    let outputs = &body["outputs"];
    assert_close(&outputs["label"], &expected["label"]);
    let probabilities: Vec<Value> = outputs["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().clone())
        .collect();
    assert_close(&json!(probabilities), &expected["probabilities"]);
    let (_, health) = server.get("/health").await;
    assert_eq!(
        health["version"], "1",
        "the alias resolved to the new version"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_carries_its_digest_tags_dataset_and_reference_profile() {
    let name = unique_name("register-tags");
    let model_file = fixtures().join("tabular_mlp/1/model.onnx");
    let work = tempfile::tempdir().unwrap();
    let profile = common::profiles::tabular_profile(work.path());
    let dataset = fixtures().join("tabular_mlp/1/model.onnx");
    let first = register_version(
        &model_file,
        &name,
        &[
            "--tag",
            "team=fraud",
            "--tag",
            "trained_by=ci=nightly",
            "--reference-profile",
            profile.to_str().unwrap(),
            "--dataset",
            dataset.to_str().unwrap(),
        ],
    )
    .await;
    let second = register_version(&model_file, &name, &[]).await;
    assert_eq!((first.as_str(), second.as_str()), ("1", "2"));

    let answer = mlflow_get(
        "model-versions/get",
        &[("name", name.as_str()), ("version", "1")],
    )
    .await;
    let version = &answer["model_version"];
    assert_eq!(
        tag(version, "sha256"),
        Some(sha256_hex(&model_file).as_str())
    );
    assert_eq!(tag(version, "team"), Some("fraud"));
    assert_eq!(tag(version, "trained_by"), Some("ci=nightly"));
    assert_eq!(
        tag(version, "pinserve.dataset.sha256"),
        Some(sha256_hex(&dataset).as_str())
    );
    assert_eq!(
        tag(version, "pinserve.dataset.path"),
        Some(dataset.to_str().unwrap())
    );
    let run = mlflow_get(
        "runs/get",
        &[("run_id", version["run_id"].as_str().unwrap())],
    )
    .await;
    assert_eq!(run["run"]["info"]["status"], "FINISHED");
    let inputs = &run["run"]["inputs"]["dataset_inputs"][0]["dataset"];
    assert_eq!(inputs["digest"], &sha256_hex(&dataset)[..36]);

    let dest = tempfile::tempdir().unwrap();
    let output = common::run_fetch(
        &[
            "--model-uri",
            &format!("models:/{name}/1"),
            "--dest",
            dest.path().to_str().unwrap(),
        ],
        &[("MLFLOW_TRACKING_URI", mlflow_uri())],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("MLflow model-version tag 'sha256'"));
    assert_eq!(
        std::fs::read(dest.path().join("reference.json")).unwrap(),
        std::fs::read(&profile).unwrap()
    );
}

/// A model whose weights are external-data files (MLflow's default when it saves ONNX) is
/// registered with them: the new version serves without the original directory.
#[tokio::test(flavor = "multi_thread")]
async fn external_data_files_are_registered_with_the_model() {
    let source = tempfile::tempdir().unwrap();
    let output = common::run_fetch(
        &[
            "--model-uri",
            "models:/tabular-mlp/2",
            "--dest",
            source.path().to_str().unwrap(),
        ],
        &[("MLFLOW_TRACKING_URI", mlflow_uri())],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let name = unique_name("register-external");
    let version = register_version(&source.path().join("model.onnx"), &name, &[]).await;
    let listing = mlflow_get(
        "model-versions/get",
        &[("name", name.as_str()), ("version", version.as_str())],
    )
    .await;
    assert!(tag(&listing["model_version"], "sha256").is_some());

    let (request, outputs) = common::services::expected("tabular-mlp/2");
    let (server, _cache) = serve_from_mlflow(&format!("models:/{name}/{version}")).await;
    let path = format!("/v2/models/{name}/versions/{version}/infer");
    let (status, body) = server.post_json(&path, &request).await;
    assert_eq!(status, 200, "{body}");
    common::assert_outputs_match(&body["outputs"], &outputs, "the re-registered version");
}

/// Arguments, environment, and what the error must say.
type RefusalCase<'a> = (&'a [&'a str], &'a [(&'a str, String)], &'a str);

#[tokio::test]
async fn bad_models_and_registries_are_refused_with_their_reason() {
    let tracking = [("MLFLOW_TRACKING_URI", mlflow_uri())];
    let not_onnx = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_onnx.path(), b"not a model").unwrap();
    let missing = fixtures().join("tabular_mlp/1/missing.onnx");
    let model = fixtures().join("tabular_mlp/1/model.onnx");
    let work = tempfile::tempdir().unwrap();
    let other_models_profile = work.path().join("breast_cancer.json");
    common::profiles::write_profile(
        &fixtures().join("breast_cancer/1"),
        &fixtures().join("breast_cancer/test.csv"),
        &other_models_profile,
        &["--target", "target"],
    );
    let cases: [RefusalCase; 5] = [
        (
            &["--model-file", missing.to_str().unwrap(), "--name", "m"],
            &tracking,
            "missing.onnx",
        ),
        (
            &[
                "--model-file",
                not_onnx.path().to_str().unwrap(),
                "--name",
                "m",
            ],
            &tracking,
            "model",
        ),
        (
            &["--model-file", model.to_str().unwrap(), "--name", "m"],
            &[],
            "--registry-uri URL or MLFLOW_TRACKING_URI",
        ),
        (
            &[
                "--model-file",
                model.to_str().unwrap(),
                "--name",
                "m",
                "--reference-profile",
                other_models_profile.to_str().unwrap(),
            ],
            &tracking,
            "--reference-profile: the reference profile does not match the model: feature \
             'mean_radius' is of input 'input', which the model does not have",
        ),
        (
            &[
                "--model-file",
                model.to_str().unwrap(),
                "--name",
                "m",
                "--registry-uri",
                "http://127.0.0.1:9",
            ],
            &[],
            "cannot find or create the experiment",
        ),
    ];
    for (args, env, expected) in cases {
        let output = common::pinserve_async()
            .env_remove("MLFLOW_TRACKING_URI")
            .arg("register")
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .output()
            .await
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "nothing on stdout: {args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: expected {expected:?} in {}",
            stderr(&output)
        );
    }
    let output = register(&["--name", "m"], &tracking).await;
    assert_eq!(output.status.code(), Some(2), "usage: {}", stderr(&output));
}
