//! Reference profiles for the tests: data of tabular_mlp's 32 features, and `pinserve profile`
//! run on it.

use std::path::Path;

/// `rows` rows of tabular_mlp's features `f0`..`f31` as CSV (no target), deterministic: feature
/// `c` of row `r` is `((r * 7 + c * 13) % 100) / 100`.
pub fn write_tabular_csv(path: &Path, rows: usize) {
    let header: Vec<String> = (0..32).map(|c| format!("f{c}")).collect();
    let mut text = header.join(",") + "\n";
    for row in 0..rows {
        let values: Vec<String> = (0..32)
            .map(|c| format!("{}", ((row * 7 + c * 13) % 100) as f64 / 100.0))
            .collect();
        text += &(values.join(",") + "\n");
    }
    std::fs::write(path, text).unwrap();
}

/// Runs `pinserve profile MODEL --data DATA --out OUT` with `extra` arguments; it must succeed.
pub fn write_profile(model: &Path, data: &Path, out: &Path, extra: &[&str]) {
    let cache = tempfile::tempdir().unwrap();
    let output = super::pinserve()
        .arg("profile")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(extra)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", super::stderr(&output));
}

/// tabular_mlp's profile on 200 rows of [`write_tabular_csv`], in `dir`.
pub fn tabular_profile(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("train.csv");
    write_tabular_csv(&data, 200);
    let out = dir.join("reference.json");
    write_profile(&super::fixtures().join("tabular_mlp/1"), &data, &out, &[]);
    out
}
