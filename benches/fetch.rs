//! Fetch benchmark: a ~110 MB model version from the local MLflow server, fetched by
//! `pinserve fetch` (resolve, download, hash, fsync, verify) next to `curl` downloading the same
//! files to disk, the load time measured alone (`serve --model-dir` on the fetched directory),
//! and `serve --model-uri` from an empty cache to ready.
//!
//! Needs the test services: `tests/support/services.sh start && source target/test-services/env`,
//! then `cargo bench --bench fetch -- [RUNS]` (default 5).
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark measures real time"
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{median, run_ok, time_to_ready, timed};

struct Registration {
    name: String,
    version: String,
    urls: Vec<String>,
    bytes: u64,
}

fn register(tracking: &str) -> Registration {
    // tests/support/services.sh start creates .venv-services.
    let output = run_ok(
        Command::new(".venv-services/bin/python")
            .args(["benches/register_large_model.py", tracking]),
    );
    let line = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let registered: Value = serde_json::from_str(&line).unwrap();
    let root = registered["root"].as_str().unwrap();
    let files = registered["files"].as_array().unwrap();
    Registration {
        name: registered["name"].as_str().unwrap().to_owned(),
        version: registered["version"].as_str().unwrap().to_owned(),
        urls: files
            .iter()
            .map(|file| {
                format!(
                    "{tracking}/api/2.0/mlflow-artifacts/artifacts/{root}/{}",
                    file["path"].as_str().unwrap()
                )
            })
            .collect(),
        bytes: files
            .iter()
            .map(|file| file["size"].as_u64().unwrap())
            .sum(),
    }
}

/// curl fetching every file of the version to disk over one connection; and the same plus an
/// fsync of each file, the durability `pinserve fetch` provides (it also hashes every byte).
fn curl(registration: &Registration) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("curl");
    command.args(["--silent", "--fail"]);
    for (index, url) in registration.urls.iter().enumerate() {
        command
            .arg("-o")
            .arg(dir.path().join(index.to_string()))
            .arg(url);
    }
    let downloaded = timed(&mut command);
    let started = Instant::now();
    for index in 0..registration.urls.len() {
        std::fs::File::open(dir.path().join(index.to_string()))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    (downloaded, downloaded + started.elapsed())
}

/// `pinserve fetch` from process start to exit, and its transfer phase alone (from its
/// "fetching" log line to "fetched and verified": download, hashing, fsync, verification).
fn fetch(
    registration: &Registration,
    tracking: &str,
    dest: &std::path::Path,
) -> (Duration, Duration) {
    let uri = format!("models:/{}/{}", registration.name, registration.version);
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_pinserve"))
        .args([
            "--log-format",
            "json",
            "fetch",
            "--model-uri",
            &uri,
            "--registry-uri",
            tracking,
        ])
        .args(["--dest", dest.to_str().unwrap()])
        .output()
        .unwrap();
    let total = started.elapsed();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{logs}");
    let logged_at = |message: &str| {
        logs.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["message"] == message)
            .and_then(|entry| humantime::parse_rfc3339(entry["timestamp"].as_str()?).ok())
            .unwrap_or_else(|| panic!("no '{message}' log line"))
    };
    let transfer = logged_at("fetched and verified")
        .duration_since(logged_at("fetching"))
        .unwrap();
    (total, transfer)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(5, |r| r.parse().unwrap());
    let tracking = std::env::var("PINSERVE_TEST_MLFLOW_URI").expect(
        "start the services: tests/support/services.sh start && source target/test-services/env",
    );
    let registration = register(&tracking);
    let megabytes = registration.bytes as f64 / 1e6;
    println!(
        "{} version {}: {} files, {megabytes:.1} MB, from MLflow at {tracking}; {runs} runs",
        registration.name,
        registration.version,
        registration.urls.len()
    );
    println!(
        "{:>4} {:>9} {:>13} {:>15} {:>15} {:>15} {:>22}",
        "run",
        "curl (s)",
        "curl + fsync",
        "pinserve fetch",
        "of it transfer",
        "load alone (s)",
        "serve --model-uri (s)"
    );
    let mut rows: Vec<[f64; 6]> = Vec::new();
    for run in 1..=runs {
        // Alternate which goes first, so that neither always meets the server just after the other.
        let dest = tempfile::tempdir().unwrap();
        let ((curl_time, durable_time), (fetch_time, transfer_time)) = if run % 2 == 1 {
            (
                curl(&registration),
                fetch(&registration, &tracking, dest.path()),
            )
        } else {
            let fetched = fetch(&registration, &tracking, dest.path());
            (curl(&registration), fetched)
        };
        let load = time_to_ready(&["--model-dir", dest.path().to_str().unwrap()], &[]).await;
        let cache = tempfile::tempdir().unwrap();
        let uri = format!("models:/{}/{}", registration.name, registration.version);
        let serve = time_to_ready(
            &[
                "--model-uri",
                &uri,
                "--cache-dir",
                cache.path().to_str().unwrap(),
            ],
            &[("MLFLOW_TRACKING_URI", tracking.clone())],
        )
        .await;
        let row = [
            curl_time,
            durable_time,
            fetch_time,
            transfer_time,
            load,
            serve,
        ]
        .map(|d| d.as_secs_f64());
        println!(
            "{run:>4} {:>9.3} {:>13.3} {:>15.3} {:>15.3} {:>15.3} {:>22.3}",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
        rows.push(row);
    }
    let column = |i: usize| median(rows.iter().map(|row| row[i]).collect());
    let [curl_s, durable_s, fetch_s, transfer_s, load_s, serve_s] = std::array::from_fn(column);
    println!(
        "median {curl_s:>7.3} {durable_s:>13.3} {fetch_s:>15.3} {transfer_s:>15.3} {load_s:>15.3} {serve_s:>22.3}"
    );
    let rate = |seconds: f64| megabytes / seconds;
    println!(
        "throughput (MB/s): curl {:.0}, curl + fsync {:.0}; pinserve fetch {:.0} end to end, {:.0} in its transfer phase",
        rate(curl_s),
        rate(durable_s),
        rate(fetch_s),
        rate(transfer_s)
    );
    println!(
        "pinserve fetch / curl: {:.0}% end to end, {:.0}% in the transfer phase; / (curl + fsync): {:.0}% and {:.0}% (goal: at least 90%)",
        100.0 * curl_s / fetch_s,
        100.0 * curl_s / transfer_s,
        100.0 * durable_s / fetch_s,
        100.0 * durable_s / transfer_s
    );
    println!(
        "serve --model-uri ready in {serve_s:.3} s; fetch + load alone = {:.3} s; difference {:+.0} ms (goal: within +200 ms)",
        fetch_s + load_s,
        1000.0 * (serve_s - fetch_s - load_s)
    );
}
