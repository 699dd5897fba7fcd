//! Every fixture's golden cases through the running server: pinserve's answers must equal
//! Python ONNX Runtime's to 1e-5 relative (plus 1e-6 absolute, see `assert_outputs_match`).

mod common;

use common::{Server, assert_outputs_match, fixtures, golden};
use serde_json::{Value, json};

async fn check_golden(model: &str) {
    let server = Server::fixture(model, &[]).await;
    let golden = golden(model);
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        for path in [
            format!("/v2/models/{model}/infer"),
            format!("/v2/models/{model}/versions/1/infer"),
        ] {
            let (status, body) = server.post_json(&path, &case["request"]).await;
            assert_eq!(status, 200, "{model}/{name} via {path}: {body}");
            assert_eq!(body["model_name"], model);
            assert_eq!(body["model_version"], "1");
            assert_eq!(
                body["id"], case["request"]["id"],
                "the request id is echoed"
            );
            assert_outputs_match(
                &body["outputs"],
                &case["outputs"],
                &format!("{model}/{name}"),
            );
        }
    }
}

#[tokio::test]
async fn breast_cancer_matches_onnxruntime() {
    check_golden("breast_cancer").await;
}

#[tokio::test]
async fn churn_pipeline_matches_onnxruntime() {
    check_golden("churn_pipeline").await;
}

#[tokio::test]
async fn tabular_mlp_matches_onnxruntime() {
    check_golden("tabular_mlp").await;
}

#[tokio::test]
async fn tabular_gbdt_matches_onnxruntime() {
    check_golden("tabular_gbdt").await;
}

#[tokio::test]
async fn fixed_batch_matches_onnxruntime() {
    check_golden("fixed_batch").await;
}

#[tokio::test]
async fn every_datatype_round_trips_through_onnxruntime() {
    check_golden("all_dtypes").await;
}

#[tokio::test]
async fn embedding_lookup_matches_onnxruntime() {
    check_golden("embedding_lookup").await;
}

#[tokio::test]
async fn compute_mlp_matches_onnxruntime() {
    check_golden("compute_mlp").await;
}

/// The held-out split through `/predict` in row form reproduces the recorded accuracy.
#[tokio::test]
async fn breast_cancer_test_split_keeps_its_accuracy() {
    let csv = std::fs::read_to_string(fixtures().join("breast_cancer/test.csv")).unwrap();
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("breast_cancer/metrics.json")).unwrap(),
    )
    .unwrap();
    let (features, targets): (Vec<Vec<f64>>, Vec<i64>) = csv
        .lines()
        .skip(1)
        .map(|line| {
            let mut values: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            let target = values.pop().unwrap() as i64;
            (values, target)
        })
        .unzip();
    assert_eq!(targets.len() as u64, metrics["test_rows"].as_u64().unwrap());

    let server = Server::fixture("breast_cancer", &[]).await;
    let (status, body) = server
        .post_json("/predict", &json!({ "instances": features }))
        .await;
    assert_eq!(status, 200, "{body}");
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), targets.len());
    let correct = predictions
        .iter()
        .zip(&targets)
        .filter(|(prediction, target)| prediction["label"].as_i64() == Some(**target))
        .count();
    let accuracy = correct as f64 / targets.len() as f64;
    assert_eq!(accuracy, metrics["accuracy_onnxruntime"].as_f64().unwrap());
}
