//! scikit-learn classifiers converted with skl2onnx's defaults, whose probabilities are a ZipMap
//! (`seq(map(int64|string, float))`): served as FP32 `[N, C]` with the labels in the output's
//! parameters (V2), as Triton's top-K strings on request (classification extension), as one
//! `{label: probability}` object per row (`/predict`), and described by `inspect`.

mod common;

use common::{Server, assert_data_match, assert_outputs_match, golden, metrics::find_sample};
use serde_json::{Value, json};

const FIXTURES: [(&str, &str); 3] = [
    ("zipmap_binary", "[0,1]"),
    ("zipmap_multiclass", "[-1,0,7]"),
    ("zipmap_iris", r#"["setosa","versicolor","virginica"]"#),
];

const PROBABILITIES: &str = "output_probability";

fn cases(model: &str) -> Vec<Value> {
    golden(model)["cases"].as_array().unwrap().clone()
}

/// The golden ZipMap output of a case: FP32 `[N, C]` with its labels in parameters.
fn golden_probabilities(case: &Value) -> &Value {
    let outputs = case["outputs"].as_array().unwrap();
    outputs.iter().find(|o| o["name"] == PROBABILITIES).unwrap()
}

fn labels(text: &str) -> Vec<String> {
    let values: Vec<Value> = serde_json::from_str(text).unwrap();
    values
        .iter()
        .map(|value| match value {
            Value::String(text) => text.clone(),
            number => number.to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_answers_onnxruntimes_probabilities_with_the_labels() {
    for (model, class_labels) in FIXTURES {
        let server = Server::fixture(model, &[]).await;
        for case in cases(model) {
            let context = format!("{model} {}", case["name"]);
            let (status, body) = server
                .post_json(&format!("/v2/models/{model}/infer"), &case["request"])
                .await;
            assert_eq!(status, 200, "{context}: {body}");
            assert_outputs_match(&body["outputs"], &case["outputs"], &context);
            let answered = &body["outputs"][1];
            assert_eq!(answered["name"], PROBABILITIES, "{context}");
            assert_eq!(
                answered["parameters"],
                json!({"class_labels": class_labels}),
                "{context}"
            );
            assert_eq!(
                answered["parameters"],
                golden_probabilities(&case)["parameters"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_names_the_labels_and_the_onnx_type() {
    for (model, class_labels) in FIXTURES {
        let server = Server::fixture(model, &[]).await;
        let (status, metadata) = server.get(&format!("/v2/models/{model}")).await;
        assert_eq!(status, 200, "{metadata}");
        let key = if class_labels.starts_with("[\"") {
            "string"
        } else {
            "int64"
        };
        let classes = labels(class_labels).len();
        assert_eq!(
            metadata["outputs"][1],
            json!({"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, classes],
                "parameters": {"class_labels": class_labels,
                    "onnx_type": format!("seq(map({key},tensor(float)))")}}),
            "{model}"
        );
        let (_, server_metadata) = server.get("/v2").await;
        assert!(
            server_metadata["extensions"]
                .as_array()
                .unwrap()
                .contains(&json!("classification"))
        );
    }
}

/// Binary outputs keep their labels beside `binary_data_size`.
#[tokio::test(flavor = "multi_thread")]
async fn binary_outputs_keep_their_labels() {
    let server = Server::fixture("zipmap_iris", &[]).await;
    let mut request = cases("zipmap_iris")[1]["request"].clone();
    request["parameters"] = json!({"binary_data_output": true});
    let response = server
        .client()
        .post(server.url("/v2/models/zipmap_iris/infer"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&bytes[..length]).unwrap();
    assert_eq!(
        header["outputs"][1]["parameters"],
        json!({"binary_data_size": 4 * 3 * 4,
            "class_labels": r#"["setosa","versicolor","virginica"]"#})
    );
}

/// `(score, index)` of each row's classes, best first, from a golden `[N, C]` output.
fn ranked(probabilities: &Value) -> Vec<Vec<(f64, usize)>> {
    let classes = probabilities["shape"][1].as_u64().unwrap() as usize;
    let data: Vec<f64> = probabilities["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    data.chunks(classes)
        .map(|row| {
            let mut ranked: Vec<(f64, usize)> = row.iter().copied().zip(0..).collect();
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
            ranked
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn classification_answers_the_top_classes_with_their_labels() {
    for (model, class_labels) in FIXTURES {
        let server = Server::fixture(model, &[]).await;
        let names = labels(class_labels);
        let case = &cases(model)[2];
        let mut request = case["request"].clone();
        request["outputs"] = json!([
            {"name": PROBABILITIES, "parameters": {"classification": 2}},
            {"name": "output_label"}
        ]);
        let (status, body) = server
            .post_json(&format!("/v2/models/{model}/infer"), &request)
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        let top = &body["outputs"][0];
        let rows = ranked(golden_probabilities(case));
        assert_eq!(top["datatype"], "BYTES");
        assert_eq!(top["shape"], json!([rows.len(), 2]));
        assert!(top.get("parameters").is_none(), "{top}");
        let answered = top["data"].as_array().unwrap();
        for (index, (text, (score, class))) in answered
            .iter()
            .zip(rows.iter().flat_map(|row| row[..2].to_vec()))
            .enumerate()
        {
            let context = format!("{model} classification [{index}]: {text}");
            let parts: Vec<&str> = text.as_str().unwrap().splitn(3, ':').collect();
            let [got_score, got_class, got_label] = parts[..] else {
                panic!("{context}: not score:index:label");
            };
            assert_data_match(
                &json!([got_score.parse::<f64>().unwrap()]),
                &json!([score]),
                "FP32",
                &context,
            );
            assert_eq!(got_class, class.to_string(), "{context}");
            assert_eq!(got_label, names[class], "{context}");
        }
        assert_eq!(body["outputs"][1]["name"], "output_label");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn classification_needs_a_count_of_at_least_one() {
    let server = Server::fixture("zipmap_binary", &[]).await;
    let mut request = cases("zipmap_binary")[0]["request"].clone();
    request["outputs"] = json!([{"name": PROBABILITIES, "parameters": {"classification": 0}}]);
    let (status, body) = server
        .post_json("/v2/models/zipmap_binary/infer", &request)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at least 1 class"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn predict_answers_one_object_per_row_keyed_by_label() {
    for (model, class_labels) in FIXTURES {
        let server = Server::fixture(model, &[]).await;
        let names = labels(class_labels);
        let case = &cases(model)[1];
        let input = &case["request"]["inputs"][0];
        let features: Vec<Value> = input["data"]
            .as_array()
            .unwrap()
            .chunks(4)
            .map(|row| Value::from(row.to_vec()))
            .collect();
        let (status, body) = server
            .post_json("/predict", &json!({"instances": features}))
            .await;
        assert_eq!(status, 200, "{model}: {body}");
        let probabilities = golden_probabilities(case)["data"].as_array().unwrap();
        let expected_labels = &case["outputs"][0]["data"];
        for (row, prediction) in body["predictions"].as_array().unwrap().iter().enumerate() {
            let context = format!("{model} /predict row {row}");
            assert_eq!(
                prediction["output_label"], expected_labels[row],
                "{context}"
            );
            let object = prediction[PROBABILITIES].as_object().unwrap();
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            let mut sorted_names: Vec<&String> = names.iter().collect();
            sorted_names.sort();
            assert_eq!(keys, sorted_names, "{context}: {prediction}");
            let got: Vec<Value> = names.iter().map(|name| object[name].clone()).collect();
            let want = &probabilities[row * names.len()..(row + 1) * names.len()];
            assert_data_match(
                &Value::from(got),
                &Value::from(want.to_vec()),
                "FP32",
                &context,
            );
        }
    }
}

fn inspect(args: &[&str]) -> String {
    let output = common::pinserve()
        .arg("inspect")
        .args(args)
        .output()
        .expect("cannot run pinserve");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn inspect_shows_the_zipmap_and_its_labels() {
    for (model, class_labels) in FIXTURES {
        let path = common::fixtures().join(model).join("1/model.onnx");
        let path = path.to_str().unwrap();
        let key = if class_labels.starts_with("[\"") {
            "string"
        } else {
            "int64"
        };
        let table = inspect(&[path]);
        let line = table
            .lines()
            .find(|line| line.contains(PROBABILITIES))
            .unwrap();
        assert!(
            line.ends_with(&format!("ZipMap ({key} labels): {class_labels}")),
            "{table}"
        );
        assert!(table.starts_with("ROLE"), "{table}");
        let document: Value = serde_json::from_str(&inspect(&["--json", path])).unwrap();
        assert_eq!(
            document["outputs"][1]["parameters"]["class_labels"],
            class_labels
        );
    }
}

/// A CSV of a golden case's rows (`x0` to `x3`) with their predicted label as `target`, for
/// the rows whose label `keep` accepts; and those rows' indices and labels.
fn held_out(case: &Value, keep: impl Fn(&str) -> bool) -> (String, Vec<(usize, String)>) {
    let features = case["request"]["inputs"][0]["data"].as_array().unwrap();
    let predicted = case["outputs"][0]["data"].as_array().unwrap();
    let mut csv = String::from("x0,x1,x2,x3,target\n");
    let mut kept = Vec::new();
    for (row, label) in predicted.iter().enumerate() {
        let label = label
            .as_str()
            .map_or_else(|| label.to_string(), str::to_owned);
        if !keep(&label) {
            continue;
        }
        let values: Vec<String> = features[row * 4..row * 4 + 4]
            .iter()
            .map(Value::to_string)
            .collect();
        csv.push_str(&format!("{},{label}\n", values.join(",")));
        kept.push((row, label));
    }
    (csv, kept)
}

/// `pinserve eval` reads the ZipMap as the class scores, its columns named by the model's
/// labels: held-out rows that never show class 0 still line up with the model's three columns
/// (the observed classes, -1 and 7, would not). The targets are the predicted labels, so
/// accuracy is 1 and log-loss is the mean of -ln(probability of the predicted class).
#[test]
fn eval_scores_with_the_models_labels_even_for_classes_the_data_lack() {
    let case = &cases("zipmap_multiclass")[2];
    let probabilities = golden_probabilities(case)["data"].as_array().unwrap();
    let columns = [-1, 0, 7];
    let (csv, kept) = held_out(case, |label| label != "0");
    let loss: f64 = kept
        .iter()
        .map(|&(row, ref label)| {
            let column = columns
                .iter()
                .position(|c| c.to_string() == *label)
                .unwrap();
            -probabilities[row * 3 + column].as_f64().unwrap().ln()
        })
        .sum();
    let rows = kept.len() as f64;
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("held_out.csv");
    std::fs::write(&data, csv).unwrap();
    let report = work.path().join("report.json");
    let model = common::fixtures().join("zipmap_multiclass/1");
    let output = common::pinserve()
        .arg("eval")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .args(["--target", "target", "--bootstrap", "50", "--report-json"])
        .arg(&report)
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .output()
        .expect("cannot run pinserve");
    assert_eq!(output.status.code(), Some(0), "{}", common::stderr(&output));
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["interpretation"]["score_output"], PROBABILITIES);
    assert_eq!(report["metrics"]["accuracy"]["value"], 1.0);
    let log_loss = report["metrics"]["log_loss"]["value"].as_f64().unwrap();
    assert!(
        (log_loss - loss / rows).abs() < 1e-6,
        "{log_loss} vs {}",
        loss / rows
    );
}

/// Drift monitoring profiles a binary ZipMap like any probability matrix: the positive class's
/// column (1) gets score bins, and served rows are tracked against them, besides the classes
/// of the label output.
#[tokio::test(flavor = "multi_thread")]
async fn drift_monitoring_tracks_the_positive_class_probability() {
    let case = &cases("zipmap_binary")[2];
    let (csv, kept) = held_out(case, |_| true);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("train.csv");
    std::fs::write(&data, csv).unwrap();
    let profile = work.path().join("reference.json");
    let model = common::fixtures().join("zipmap_binary/1");
    common::profiles::write_profile(&model, &data, &profile, &["--target", "target"]);
    let document: Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    let scores = &document["predictions"][1];
    assert_eq!(
        (&scores["output"], &scores["kind"], &scores["column"]),
        (&json!(PROBABILITIES), &json!("scores"), &json!(1)),
        "{document}"
    );

    let server = Server::fixture(
        "zipmap_binary",
        &["--reference-profile", profile.to_str().unwrap()],
    )
    .await;
    let (status, body) = server
        .post_json("/v2/models/zipmap_binary/infer", &case["request"])
        .await;
    assert_eq!(status, 200, "{body}");
    let output = [("output", PROBABILITIES)];
    let text = server
        .metrics_when(|text| {
            find_sample(text, "pinserve_prediction_value_count", &output) == Some(kept.len() as f64)
        })
        .await;
    assert!(
        find_sample(&text, "pinserve_prediction_psi", &output).is_some(),
        "{text}"
    );
    let ones = kept.iter().filter(|(_, label)| label == "1").count() as f64;
    assert_eq!(
        find_sample(&text, "pinserve_prediction_class_total", &[("class", "1")]),
        Some(ones)
    );
}
