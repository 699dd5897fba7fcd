//! Drift monitoring over real HTTP: a profile from training data, then served rows, and what
//! `/metrics` says: PSI below 0.1 for every feature of in-distribution rows and above 0.2 for
//! exactly the features that were shifted; out-of-range, missing and unseen-category counts;
//! prediction counts; and a profile that does not fit the model failing the load.

mod common;

use std::{path::Path, time::Duration};

use common::{
    Server, fixtures,
    metrics::{by_label, samples},
    profiles::write_profile,
};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const FEATURES: usize = 32;

/// `rows` rows of 32 uniform features in [0, 1), seeded, with `change` applied to each row.
fn tabular_rows(seed: u64, rows: usize, change: impl Fn(&mut [f64])) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..rows)
        .map(|_| {
            let mut row: Vec<f64> = (0..FEATURES).map(|_| rng.random::<f64>()).collect();
            change(&mut row);
            row
        })
        .collect()
}

/// tabular_mlp's reference profile, from 5000 uniform rows.
fn tabular_profile(dir: &Path) -> std::path::PathBuf {
    let header: Vec<String> = (0..FEATURES).map(|c| format!("f{c}")).collect();
    let mut text = header.join(",") + "\n";
    for row in tabular_rows(1, 5000, |_| {}) {
        let values: Vec<String> = row.iter().map(|v| format!("{}", *v as f32)).collect();
        text += &(values.join(",") + "\n");
    }
    let data = dir.join("train.csv");
    std::fs::write(&data, text).unwrap();
    let out = dir.join("reference.json");
    write_profile(&fixtures().join("tabular_mlp/1"), &data, &out, &[]);
    out
}

/// Sends `rows` to tabular_mlp in requests of 100 rows and waits until every row is counted.
async fn serve_rows(server: &Server, rows: &[Vec<f64>]) -> String {
    for chunk in rows.chunks(100) {
        let data: Vec<f64> = chunk.iter().flatten().copied().collect();
        let body = json!({"inputs": [{"name": "features", "datatype": "FP32",
            "shape": [chunk.len(), FEATURES], "data": data}]});
        let (status, answer) = server
            .post_json("/v2/models/tabular_mlp/infer", &body)
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    let sent = rows.len() as f64;
    server
        .metrics_when(|text| {
            samples(text, "pinserve_prediction_value_count")
                .first()
                .is_some_and(|sample| sample.value == sent)
        })
        .await
}

async fn serve_tabular(profile: &Path) -> Server {
    Server::fixture(
        "tabular_mlp",
        &["--reference-profile", profile.to_str().unwrap()],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn in_distribution_rows_stay_below_0_1_and_shifted_features_go_above_0_2() {
    let work = tempfile::tempdir().unwrap();
    let profile = tabular_profile(work.path());

    let steady = serve_tabular(&profile).await;
    let text = serve_rows(&steady, &tabular_rows(2, 3000, |_| {})).await;
    let psi = by_label(&text, "pinserve_feature_psi", "feature");
    assert_eq!(psi.len(), FEATURES, "{psi:?}");
    assert!(psi.values().all(|&v| v < 0.1), "{psi:?}");
    // A new row falls outside the range of 5000 reference rows with odds of about 2 in 5001
    // per feature: about 1.2 of 3000 rows, rarely more than 10.
    let out_of_range = by_label(&text, "pinserve_feature_out_of_range_total", "feature");
    assert!(
        out_of_range.values().all(|&v| v <= 10.0),
        "{out_of_range:?}"
    );
    let prediction = by_label(&text, "pinserve_prediction_psi", "output");
    assert!(prediction["probability"] < 0.1, "{prediction:?}");
    for name in ["pinserve_drift_rows_total", "pinserve_drift_window_rows"] {
        let values: Vec<f64> = samples(&text, name)
            .iter()
            .map(|sample| sample.value)
            .collect();
        assert_eq!(values, [3000.0], "{name}");
    }

    let shifted = serve_tabular(&profile).await;
    let rows = tabular_rows(3, 3000, |row| {
        row[3] *= 3.0;
        row[7] = -1.0;
    });
    let text = serve_rows(&shifted, &rows).await;
    let psi = by_label(&text, "pinserve_feature_psi", "feature");
    for (feature, value) in &psi {
        if feature == "f3" || feature == "f7" {
            assert!(*value > 0.2, "{feature} was shifted: {psi:?}");
        } else {
            assert!(*value < 0.1, "{feature} was not: {psi:?}");
        }
    }
    let out_of_range = by_label(&text, "pinserve_feature_out_of_range_total", "feature");
    assert_eq!(out_of_range["f7"], 3000.0, "every -1 is below the minimum");
    assert!(out_of_range["f3"] > 1500.0, "{out_of_range:?}");
    assert!(out_of_range["f0"] <= 10.0, "{out_of_range:?}");
    let buckets = samples(&text, "pinserve_prediction_value_bucket");
    let infinite = buckets.iter().find(|sample| sample.labels["le"] == "+Inf");
    assert_eq!(
        infinite.map(|sample| sample.value),
        Some(3000.0),
        "{buckets:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unseen_and_missing_categories_are_counted_and_predictions_by_class() {
    let work = tempfile::tempdir().unwrap();
    let profile = work.path().join("reference.json");
    write_profile(
        &fixtures().join("churn_pipeline/1"),
        &fixtures().join("eval-data/churn.csv"),
        &profile,
        &["--target", "target"],
    );
    let server = Server::fixture(
        "churn_pipeline",
        &["--reference-profile", profile.to_str().unwrap()],
    )
    .await;
    let rows = 200;
    let column = |name: &str, datatype: &str, value: Value| {
        json!({"name": name, "datatype": datatype, "shape": [rows, 1],
            "data": vec![value; rows]})
    };
    let body = json!({"inputs": [
        column("plan", "BYTES", json!("enterprise")),
        column("region", "BYTES", json!("")),
        column("tenure_months", "FP32", json!(12.0)),
        column("monthly_charges", "FP32", json!(70.0)),
    ]});
    let (status, answer) = server
        .post_json("/v2/models/churn_pipeline/infer", &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    let text = server
        .metrics_when(|text| {
            by_label(text, "pinserve_prediction_class_total", "class")
                .values()
                .sum::<f64>()
                == rows as f64
        })
        .await;
    let unseen = by_label(&text, "pinserve_feature_unseen_category_total", "feature");
    assert_eq!(
        (unseen["plan"], unseen["region"]),
        (rows as f64, 0.0),
        "{unseen:?}"
    );
    let missing = by_label(&text, "pinserve_feature_missing_total", "feature");
    assert_eq!((missing["region"], missing["plan"]), (rows as f64, 0.0));
    let psi = by_label(&text, "pinserve_feature_psi", "feature");
    assert!(psi["plan"] > 0.2, "every plan is unseen: {psi:?}");
    assert!(psi["tenure_months"] > 0.2, "one value only: {psi:?}");
    let classes = by_label(&text, "pinserve_prediction_class_total", "class");
    assert!(
        classes.contains_key("0") && classes.contains_key("1"),
        "{classes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_beside_the_model_is_used_and_one_that_does_not_fit_fails_the_load() {
    let work = tempfile::tempdir().unwrap();
    let profile = tabular_profile(work.path());
    let repository = work.path().join("models");
    let version = repository.join("tabular_mlp/1");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(
        fixtures().join("tabular_mlp/1/model.onnx"),
        version.join("model.onnx"),
    )
    .unwrap();
    std::fs::copy(&profile, version.join("reference.json")).unwrap();
    let server = Server::start(&[
        "--model-repository",
        repository.to_str().unwrap(),
        "--model",
        "tabular_mlp",
        "--version",
        "1",
    ]);
    server.wait_ready().await;
    let text = serve_rows(&server, &tabular_rows(4, 100, |_| {})).await;
    assert_eq!(
        by_label(&text, "pinserve_feature_psi", "feature").len(),
        FEATURES
    );

    let other = work.path().join("breast_cancer.json");
    write_profile(
        &fixtures().join("breast_cancer/1"),
        &fixtures().join("breast_cancer/test.csv"),
        &other,
        &["--target", "target"],
    );
    let mut server = Server::start_fixture(
        "tabular_mlp",
        "1",
        &["--reference-profile", other.to_str().unwrap()],
    );
    let health = server.wait_for_health("failed").await;
    let reason = health.to_string();
    assert!(
        reason.contains("the reference profile does not match the model")
            && reason.contains("input 'input'"),
        "{reason}"
    );
    assert!(!server.wait_exit(Duration::from_secs(30)).await.success());
}
