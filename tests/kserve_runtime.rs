//! pinserve as KServe's ONNX runtime (k8s/kserve): the ClusterServingRuntime and the example
//! InferenceService pass KServe's strict CRD schemas (and a misspelt field does not); the runtime
//! runs the pinned image on KServe's port with honest probes; and its container's own arguments,
//! with `{{.Name}}` filled in as KServe fills it, serve a directory laid out as KServe's storage
//! initializer lays out /mnt/models (the model at the top, or in a single version folder),
//! without the pinserve.json that `pinserve fetch` writes.

mod common;
// Shared with tests/k8s_manifests.rs, which uses more of it.
#[allow(dead_code)]
mod k8s;

use std::path::Path;

use common::{Server, fixtures, tabular_request};
use k8s::{k8s_dir, pinned_image, read_documents, validate};
use serde_json::json;
use serde_yaml_ng::Value;

fn runtime() -> Value {
    read_documents(&k8s_dir().join("kserve/clusterservingruntime.yaml")).remove(0)
}

fn inference_service() -> Value {
    read_documents(&k8s_dir().join("kserve/inferenceservice.yaml")).remove(0)
}

fn container(runtime: &Value) -> &Value {
    &runtime["spec"]["containers"][0]
}

fn args(runtime: &Value) -> Vec<String> {
    container(runtime)["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|arg| arg.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_runtime_and_the_example_pass_kserves_strict_schemas() {
    validate(&[runtime(), inference_service()]).unwrap_or_else(|err| panic!("{err}"));
    let mut misspelt = runtime();
    let spec = misspelt["spec"].as_mapping_mut().unwrap();
    let formats = spec.remove("supportedModelFormats").unwrap();
    spec.insert("supportedModelFormat".into(), formats);
    assert!(validate(&[misspelt]).is_err(), "a misspelt field passed");
}

/// KServe picks the runtime for ONNX models and serves the InferenceService's name over V2 on
/// its HTTP port; the container runs the image k8s/base pins, as a non-root user, with /health
/// gating readiness.
#[test]
fn the_runtime_serves_onnx_on_kserves_port_with_honest_probes() {
    let runtime = runtime();
    let spec = &runtime["spec"];
    let onnx = spec["supportedModelFormats"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|format| format["name"] == "onnx")
        .expect("no onnx format");
    assert_eq!(onnx["autoSelect"], true);
    let protocols = spec["protocolVersions"].as_sequence().unwrap();
    for protocol in ["v2", "grpc-v2"] {
        assert!(protocols.contains(&protocol.into()), "{protocols:?}");
    }
    let container = container(&runtime);
    assert_eq!(container["name"], "kserve-container");
    assert_eq!(container["image"].as_str().unwrap(), pinned_image());
    let args = args(&runtime);
    assert_eq!(args[0], "serve");
    for expected in [
        "--model-uri=/mnt/models",
        "--model-name={{.Name}}",
        "--listen=0.0.0.0:8080",
        "--grpc-listen=0.0.0.0:8081",
    ] {
        assert!(args.iter().any(|arg| arg == expected), "{args:?}");
    }
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    // Knative and KServe know a gRPC port by the name h2c.
    assert_eq!(container["ports"][1]["name"], "h2c");
    assert_eq!(container["ports"][1]["containerPort"], 8081);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    let example = inference_service();
    let model = &example["spec"]["predictor"]["model"];
    assert_eq!(model["modelFormat"]["name"], "onnx");
    assert_eq!(model["runtime"], runtime["metadata"]["name"]);
}

/// The runtime's own arguments, with KServe's substitutions, against `models` standing for
/// /mnt/models; `--listen`, `--grpc-listen` and `--log-format` are the test server's.
fn serve_as_kserve_would(models: &Path, name: &str) -> Server {
    let args: Vec<String> = args(&runtime())
        .into_iter()
        .skip(1)
        .filter(|arg| {
            !["--listen=", "--grpc-listen=", "--log-format="]
                .iter()
                .any(|own| arg.starts_with(own))
        })
        .map(|arg| {
            arg.replace("{{.Name}}", name)
                .replace("/mnt/models", models.to_str().unwrap())
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_serves_kserves_model_layouts_without_a_manifest() {
    let name = inference_service()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let fixture = fixtures().join("tabular_mlp/1/model.onnx");
    let request = tabular_request();
    for layout in ["model.onnx", "1/model.onnx"] {
        let models = tempfile::tempdir().unwrap();
        let file = models.path().join(layout);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::copy(&fixture, &file).unwrap();
        let server = serve_as_kserve_would(models.path(), &name);
        server.wait_ready().await;
        let (status, metadata) = server.get(&format!("/v2/models/{name}")).await;
        assert_eq!(status, 200, "{layout}: {metadata}");
        assert_eq!(metadata["name"], name.as_str());
        let (status, answer) = server
            .post_json(&format!("/v2/models/{name}/infer"), &request)
            .await;
        assert_eq!(status, 200, "{layout}: {answer}");
        assert_eq!(answer["outputs"][0]["shape"], json!([1, 1]), "{layout}");
        assert!(
            !models.path().join("pinserve.json").exists(),
            "serving wrote into the model folder"
        );
    }
}
