//! `pinserve profile` end to end: the bins, categories and prediction shares it writes equal
//! numpy's on the same rows (tests/eval/sklearn_reference.py runs the model in ONNX Runtime's
//! Python package), the file reads back and matches its model, and bad input is refused with
//! exit 1, a message that names the problem, and no file.

mod common;

use std::{ffi::OsStr, path::Path, process::Output};

use common::{fixtures, stderr};
use pinserve::{
    model::{Model, OnnxModel},
    profile::{ReferenceProfile, format::Bins},
};
use serde_json::Value;

async fn profile(args: &[&str], out: &Path) -> Output {
    let cache = tempfile::tempdir().unwrap();
    common::pinserve_async()
        .arg("profile")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache.path())
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .await
        .expect("pinserve profile runs")
}

/// numpy's profile of `model` on `data` (see the script's `profile` mode).
fn reference(model: &Path, data: &Path, bins: &str, top: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/eval/sklearn_reference.py");
    let args = [
        script.as_os_str(),
        OsStr::new("profile"),
        model.as_os_str(),
        data.as_os_str(),
        OsStr::new("target"),
        OsStr::new(bins),
        OsStr::new(top),
    ];
    serde_json::from_slice(&common::run_fixture_python(&args)).unwrap()
}

fn assert_close(found: f64, expected: &Value, what: &str) {
    let expected = expected.as_f64().unwrap();
    assert!(
        (found - expected).abs() <= 1e-9 * expected.abs().max(1.0),
        "{what}: {found} != {expected}"
    );
}

fn assert_bins(found: &Bins, expected: &Value, what: &str) {
    let edges = expected["edges"].as_array().unwrap();
    assert_eq!(found.edges.len(), edges.len(), "{what}: {:?}", found.edges);
    for (edge, expected) in found.edges.iter().zip(edges) {
        assert_close(*edge, expected, what);
    }
    let fractions = expected["fractions"].as_array().unwrap();
    assert_eq!(found.fractions.len(), fractions.len(), "{what}");
    for (fraction, expected) in found.fractions.iter().zip(fractions) {
        assert_close(*fraction, expected, what);
    }
    assert_close(found.min, &expected["min"], what);
    assert_close(found.max, &expected["max"], what);
}

/// Profiles `dir` on `data` and compares every part with numpy's.
async fn check_against_numpy(dir: &Path, data: &Path, extra: &[&str]) -> ReferenceProfile {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("reference.json");
    let mut args = vec![
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--target",
        "target",
    ];
    args.extend_from_slice(extra);
    let output = profile(&args, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let profile = ReferenceProfile::read(&out).unwrap();
    let model = OnnxModel::load(&dir.join("model.onnx"), &Default::default()).unwrap();
    profile.check_against(model.signature()).unwrap();

    let expected = reference(&dir.join("model.onnx"), data, "10", "2");
    let features = expected["features"].as_array().unwrap();
    assert_eq!(profile.features.len(), features.len());
    for (feature, expected) in profile.features.iter().zip(features) {
        assert_eq!(feature.name, expected["name"].as_str().unwrap());
        assert_eq!(feature.missing_rate, 0.0);
        match (&feature.bins, &feature.categories) {
            (Some(bins), None) => assert_bins(bins, &expected["bins"], &feature.name),
            (None, Some(categories)) => {
                let found = serde_json::to_value(categories).unwrap();
                assert_eq!(
                    found["top"], expected["categories"]["top"],
                    "{}",
                    feature.name
                );
                assert_close(
                    categories.other,
                    &expected["categories"]["other"],
                    &feature.name,
                );
            }
            _ => panic!("{}: bins or categories", feature.name),
        }
    }
    let classes = profile.predictions[0].classes.as_ref().unwrap();
    assert_eq!(serde_json::to_value(classes).unwrap(), expected["classes"]);
    assert_eq!(profile.predictions[1].output, "probabilities");
    assert_eq!(profile.predictions[1].column, Some(1));
    let scores = profile.predictions[1].bins.as_ref().unwrap();
    assert_bins(scores, &expected["scores"], "scores");
    let rows = std::fs::read_to_string(data).unwrap().lines().count() as u64 - 1;
    assert_eq!(
        (profile.dataset.rows, profile.dataset.sampled_rows),
        (rows, rows)
    );
    profile
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_features_and_predictions_equal_numpys() {
    let dir = fixtures().join("breast_cancer/1");
    let data = fixtures().join("breast_cancer/test.csv");
    let profile = check_against_numpy(&dir, &data, &["--batch-size", "16"]).await;
    assert_eq!(profile.features.len(), 30);
    assert_eq!(profile.features[3].input, "input");
    assert_eq!(profile.features[3].index, 3);
    assert_eq!(profile.model.name, "breast_cancer");
}

#[tokio::test(flavor = "multi_thread")]
async fn categorical_features_keep_their_top_categories() {
    let dir = fixtures().join("churn_pipeline/1");
    let data = fixtures().join("eval-data/churn.csv");
    // One batch, as the reference runs it: the trees' probabilities can differ in their last
    // float32 bit between batch sizes (ONNX Runtime sums the trees in another order).
    let extra = ["--max-categories", "2", "--batch-size", "1000"];
    let profile = check_against_numpy(&dir, &data, &extra).await;
    let plan = &profile.features[0];
    assert_eq!((plan.name.as_str(), plan.input.as_str()), ("plan", "plan"));
    assert_eq!(plan.categories.as_ref().unwrap().top.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sample_of_larger_data_is_seeded_and_bounded() {
    let dir = fixtures().join("breast_cancer/1");
    let data = fixtures().join("breast_cancer/test.csv");
    let work = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for run in ["a", "b"] {
        let out = work.path().join(format!("{run}.json"));
        let args = [
            dir.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--target",
            "target",
            "--sample-rows",
            "50",
            "--seed",
            "7",
        ];
        let output = profile(&args, &out).await;
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        written.push(std::fs::read_to_string(&out).unwrap());
    }
    assert_eq!(written[0], written[1], "the same seed, the same sample");
    let profile: Value = serde_json::from_str(&written[0]).unwrap();
    assert_eq!(profile["dataset"]["sampled_rows"], 50);
    assert_eq!(profile["dataset"]["rows"], 143);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_exit_1_and_no_file() {
    let dir = fixtures().join("breast_cancer/1");
    let data = fixtures().join("breast_cancer/test.csv");
    let churn = fixtures().join("eval-data/churn.csv");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("reference.json");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec![
                dir.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--target",
                "nope",
            ],
            "column 'nope' (the target) is not in the file",
        ),
        (
            vec![
                dir.to_str().unwrap(),
                "--data",
                churn.to_str().unwrap(),
                "--target",
                "target",
            ],
            "input 'input' takes 30 features, but 4 columns are left",
        ),
        (
            vec![dir.to_str().unwrap(), "--data", "missing.csv"],
            "missing.csv",
        ),
        (
            vec![
                dir.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--target",
                "target",
                "--score-output",
                "label",
            ],
            "output 'label'",
        ),
    ];
    for (args, expected) in cases {
        let output = profile(&args, &out).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        assert!(!out.exists(), "{args:?} left a file");
    }
}

/// An embedding model's outputs are no classifier's or regressor's: its features are profiled
/// alone, unless the flags name outputs that must then fit.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_without_predictions_gets_its_features_profiled() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("ids.csv");
    let ids: Vec<String> = (0..200).map(|i| (i % 100).to_string()).collect();
    std::fs::write(&data, format!("ids\n{}\n", ids.join("\n"))).unwrap();
    let dir = fixtures().join("embedding_lookup/1");
    let out = work.path().join("reference.json");
    let args = [dir.to_str().unwrap(), "--data", data.to_str().unwrap()];
    let output = profile(&args, &out).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let written = ReferenceProfile::read(&out).unwrap();
    assert_eq!(written.features.len(), 1);
    assert_eq!(written.features[0].name, "ids");
    assert!(written.predictions.is_empty());
    assert!(stderr(&output).contains("predictions are not profiled"));

    std::fs::remove_file(&out).unwrap();
    let named = [
        dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--score-output",
        "embeddings",
    ];
    let output = profile(&named, &out).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot tell which outputs are predictions"));
    assert!(!out.exists());
}
