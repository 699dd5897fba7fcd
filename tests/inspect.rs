//! `pinserve inspect`: a model's signature on stdout, errors on stderr with a non-zero status.

mod common;

use std::process::Output;

use common::fixtures;
use serde_json::{Value, json};

fn inspect(args: &[&str]) -> Output {
    common::pinserve()
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
fn json_output_ends_with_a_newline() {
    let output = inspect(&["--json", &fixture("fixed_batch")]);
    assert!(output.status.success());
    assert!(
        output.stdout.ends_with(b"}\n"),
        "{:?}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// A version directory is described through the model file `serve` would load from it.
#[test]
fn a_version_directory_is_described_by_the_model_file_in_it() {
    let file = inspect(&[&fixture("churn_pipeline")]);
    let directory = fixtures().join("churn_pipeline/1");
    let output = inspect(&[directory.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, file.stdout);
}

#[test]
fn a_directory_without_a_model_says_so() {
    let empty = tempfile::tempdir().unwrap();
    let output = inspect(&[empty.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no ONNX model"), "{stderr}");
}

/// The system loader's own reason reaches the message, not only "cannot load".
#[test]
fn a_library_that_cannot_be_loaded_keeps_the_loaders_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"not an ELF file").unwrap();
    let output = inspect(&[
        "--onnxruntime-lib",
        not_a_library.to_str().unwrap(),
        &fixture("tabular_mlp"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid ELF header") || stderr.contains("file too short"),
        "{stderr}"
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
    let output = common::pinserve()
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
