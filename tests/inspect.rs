//! `pinserve inspect`: a model's signature on stdout, errors on stderr with a non-zero status.

mod common;

use std::process::{Command, Output};

use common::fixtures;
use serde_json::{Value, json};

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinserve"))
        .arg("inspect")
        .args(args)
        .output()
        .expect("cannot run pinserve")
}

fn fixture(model: &str) -> String {
    fixtures()
        .join(model)
        .join("1/model.onnx")
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn prints_a_table_with_dynamic_dims_as_minus_one() {
    let output = inspect(&[&fixture("churn_pipeline")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ROLE    NAME             DATATYPE  SHAPE\n\
         input   plan             BYTES     [-1, 1]\n\
         input   region           BYTES     [-1, 1]\n\
         input   tenure_months    FP32      [-1, 1]\n\
         input   monthly_charges  FP32      [-1, 1]\n\
         output  label            INT64     [-1]\n\
         output  probabilities    FP32      [-1, 2]\n"
    );
}

#[test]
fn prints_json_in_the_v2_metadata_form() {
    let output = inspect(&["--json", &fixture("fixed_batch")]);
    assert!(output.status.success());
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        document,
        json!({
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 32]}],
            "outputs": [{"name": "probability", "datatype": "FP32", "shape": [1, 1]}],
        })
    );
}

#[test]
fn an_invalid_model_is_an_error_not_a_crash() {
    let output = inspect(&[&fixture("broken")]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Protobuf parsing failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_missing_onnx_runtime_library_says_how_to_install_it() {
    let output = inspect(&[
        "--onnxruntime-lib",
        "/nonexistent/libonnxruntime.so",
        &fixture("tabular_mlp"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot load the ONNX Runtime library"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so"),
        "{stderr}"
    );
    assert!(
        stderr.contains("scripts/install-onnxruntime.sh"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn every_flag_is_explained_in_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_pinserve"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--model-repository",
        "--model-name",
        "--model-version",
        "--device",
        "--intra-op-threads",
        "--graph-optimization-level",
        "--onnxruntime-lib",
        "--max-body-bytes",
        "--drain-seconds",
        "--shutdown-grace-seconds",
        "--log-format",
        "--log-level",
    ] {
        assert!(help.contains(flag), "serve --help does not mention {flag}");
    }
    assert!(help.contains("[env: PINSERVE_MODEL_VERSION"), "{help}");
}
