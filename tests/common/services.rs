//! The real registries `tests/support/services.sh` starts (MLflow, MLflow with basic auth, moto
//! S3) and what it registered in them. `scripts/test.sh` starts them and exports their
//! addresses; a test run without them fails and says how to start them.

use serde_json::Value;

pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the registries that scripts/test.sh starts \
             (or run `tests/support/services.sh start && source target/test-services/env`)"
        )
    })
}

pub fn mlflow_uri() -> String {
    var("PINSERVE_TEST_MLFLOW_URI")
}

/// What register_models.py registered, with expected requests and outputs per model version.
pub fn registered() -> Value {
    let path = var("PINSERVE_TEST_SERVICES");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The expected request and outputs for `model/version` (e.g. `tabular-mlp/2`).
pub fn expected(key: &str) -> (Value, Value) {
    let registered = registered();
    let case = &registered["expected"][key];
    assert!(
        case.is_object(),
        "registered.json has no expected case {key}"
    );
    (case["request"].clone(), case["outputs"].clone())
}
