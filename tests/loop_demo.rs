//! The retraining loop on one machine, end to end: `scripts/loop-demo.sh` with this build's
//! pinserve, against real MLflow, Alertmanager, Prometheus and git (see the script and
//! k8s/README.md, "The loop on one machine"). It exits 0 only when every step happened as
//! described; here every check it printed must have passed, and none may be missing.

use std::process::Command;

/// What the demo checks, in order: a demo that stops early or skips a step fails here too.
const CHECKS: [&str; 24] = [
    "MLflow registered version 1",
    "main pins version 1 in staging",
    "the workflow succeeded",
    "evaluate passed the gate (exit 0)",
    "the alert step did not run",
    "one branch was pushed",
    "the branch changes only the version and the digest",
    "one pull request was asked for",
    "with the forge token",
    "the bumped overlay renders",
    "it pins version 2 with digest",
    "pinserve fetch with the pinned digest verified version 2",
    "serve --model-dir answers as version 2",
    "the workflow ended failed",
    "evaluate failed the gate (exit 3)",
    "promote did not run",
    "no branch was pushed, no pull request asked for",
    "Alertmanager holds PinserveModelRejected for version 3",
    "MLflow tags version 3 failed, its run holds the metrics",
    "Prometheus fires PinserveFeatureDrift for ['mean_radius']",
    "Alertmanager delivered it (firing, service churn-prediction)",
    "the Sensor's filter (k8s/pipelines/sensor.yaml) selects it",
    "and would not select it resolved",
    "it submits from CronWorkflow churn-prediction-retrain",
];

#[test]
fn the_loop_runs_from_training_to_promotion_rejection_and_a_drift_trigger() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(format!("{root}/scripts/loop-demo.sh"))
        .env("PINSERVE_BINARY", env!("CARGO_BIN_EXE_pinserve"))
        .output()
        .expect("cannot run scripts/loop-demo.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .split("== summary:")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let passed: Vec<&str> = summary
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("ok   "))
        .collect();
    assert_eq!(passed.len(), CHECKS.len(), "{summary}");
    for (line, check) in passed.iter().zip(CHECKS) {
        assert!(line.starts_with(check), "expected {check:?}, got {line:?}");
    }
    assert!(!summary.contains("FAIL"), "{summary}");
}
