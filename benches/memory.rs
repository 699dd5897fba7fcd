//! Memory benchmark: peak resident memory while the server takes maximum-size bodies, one at a
//! time and several at once, in each request format, for this build and (when
//! `PINSERVE_BASELINE_BINARY` names one) an earlier build, each request on a fresh server.
//!
//! `cargo bench --bench memory -- [BODY_MIB] [CONCURRENT]` (defaults: 64 3). The body limit is
//! set to the body size and the queue made long enough for every body's rows; the in-flight
//! budget is left at its default (two bodies), so this build refuses the third of three
//! concurrent bodies with 503 (counted in the table, with the reason printed below it). "after"
//! is the resident size a second after the last answer, once freed memory had time to go back.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{collections::BTreeSet, fmt::Write, path::PathBuf, time::Duration};

use common::{Server, status_kib};
use futures_util::future::join_all;

/// One request body and where it goes.
struct Format {
    name: &'static str,
    model: &'static str,
    path: &'static str,
    /// The `Inference-Header-Content-Length` of binary bodies.
    json_length: Option<usize>,
    body: Vec<u8>,
}

/// `/predict`, row form: rows of 32 zeros.
fn predict_json(size: usize) -> Format {
    let row = format!("[{}]", vec!["0"; 32].join(","));
    let rows = (size - 20) / (row.len() + 1);
    let mut body = String::from("{\"instances\": [");
    for index in 0..rows {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&row);
    }
    body.push_str("]}");
    Format {
        name: "/predict JSON",
        model: "tabular_mlp",
        path: "/predict",
        json_length: None,
        body: body.into_bytes(),
    }
}

/// v2 JSON: one flat FP32 tensor of zeros.
fn v2_json(size: usize) -> Format {
    let rows = (size - 200) / 64;
    let mut body = format!(
        r#"{{"inputs": [{{"name": "features", "datatype": "FP32", "shape": [{rows}, 32], "data": ["#
    );
    for index in 0..rows * 32 {
        body.push_str(if index == 0 { "0" } else { ",0" });
    }
    body.push_str("]}]}");
    Format {
        name: "v2 JSON",
        model: "tabular_mlp",
        path: "/v2/models/tabular_mlp/infer",
        json_length: None,
        body: body.into_bytes(),
    }
}

/// A binary-extension body: the JSON header, then each input's bytes.
fn binary_body(header: String, parts: &[Vec<u8>]) -> (Option<usize>, Vec<u8>) {
    let mut body = header.into_bytes();
    let json_length = body.len();
    for part in parts {
        body.extend_from_slice(part);
    }
    (Some(json_length), body)
}

/// v2 binary: one FP32 tensor.
fn v2_binary(size: usize) -> Format {
    let rows = (size - 300) / 128;
    let header = format!(
        r#"{{"inputs": [{{"name": "features", "datatype": "FP32", "shape": [{rows}, 32], "parameters": {{"binary_data_size": {}}}}}]}}"#,
        rows * 128
    );
    let (json_length, body) = binary_body(header, &[vec![0; rows * 128]]);
    Format {
        name: "v2 binary FP32",
        model: "tabular_mlp",
        path: "/v2/models/tabular_mlp/infer",
        json_length,
        body,
    }
}

/// v2 binary with BYTES: churn_pipeline's two string inputs and two FP32 inputs.
fn v2_binary_bytes(size: usize) -> Format {
    let strings = |value: &str, rows: usize| -> Vec<u8> {
        let mut element = (value.len() as u32).to_le_bytes().to_vec();
        element.extend_from_slice(value.as_bytes());
        element.repeat(rows)
    };
    let rows = (size - 600) / (9 + 6 + 4 + 4);
    let parts = [
        strings("basic", rows),
        strings("eu", rows),
        12f32.to_le_bytes().repeat(rows),
        70.5f32.to_le_bytes().repeat(rows),
    ];
    let input = |name: &str, datatype: &str, part: &Vec<u8>| {
        format!(
            r#"{{"name": "{name}", "datatype": "{datatype}", "shape": [{rows}, 1], "parameters": {{"binary_data_size": {}}}}}"#,
            part.len()
        )
    };
    let header = format!(
        r#"{{"inputs": [{}, {}, {}, {}]}}"#,
        input("plan", "BYTES", &parts[0]),
        input("region", "BYTES", &parts[1]),
        input("tenure_months", "FP32", &parts[2]),
        input("monthly_charges", "FP32", &parts[3]),
    );
    let (json_length, body) = binary_body(header, &parts);
    Format {
        name: "v2 binary BYTES",
        model: "churn_pipeline",
        path: "/v2/models/churn_pipeline/infer",
        json_length,
        body,
    }
}

struct Measured {
    idle_mib: f64,
    peak_mib: f64,
    after_mib: f64,
    answered: usize,
    refused: usize,
    reasons: BTreeSet<String>,
}

/// Serves `format.model` with `binary` and sends `concurrent` copies of its body at once.
async fn measure(binary: &PathBuf, format: &Format, concurrent: usize) -> Measured {
    // SAFETY: nothing else reads the environment while the server is being started; the
    // harness reads PINSERVE_BINARY once, to choose what to start.
    unsafe { std::env::set_var("PINSERVE_BINARY", binary) };
    let limit = format.body.len().to_string();
    let server = Server::fixture(
        format.model,
        &["--max-body-bytes", &limit, "--max-queue-rows", "1000000000"],
    )
    .await;
    let pid = server.pid();
    let idle = status_kib(pid, "VmRSS:");
    let sends = (0..concurrent).map(|_| {
        let mut request = server
            .client()
            .post(server.url(format.path))
            .header("content-type", "application/json")
            .body(format.body.clone());
        if let Some(length) = format.json_length {
            request = request.header("inference-header-content-length", length);
        }
        request.send()
    });
    let mut measured = Measured {
        idle_mib: 0.0,
        peak_mib: 0.0,
        after_mib: 0.0,
        answered: 0,
        refused: 0,
        reasons: BTreeSet::new(),
    };
    for response in join_all(sends).await {
        let response = response.unwrap_or_else(|err| panic!("{}: no answer: {err}", format.name));
        match response.status().as_u16() {
            200 => measured.answered += 1,
            503 => {
                measured.refused += 1;
                let reason = response.text().await.unwrap();
                measured.reasons.insert(reason);
                continue;
            }
            other => panic!(
                "{}: {other} {}",
                format.name,
                response.text().await.unwrap()
            ),
        }
        response.bytes().await.unwrap();
    }
    measured.idle_mib = idle as f64 / 1024.0;
    measured.peak_mib = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    tokio::time::sleep(Duration::from_secs(1)).await;
    measured.after_mib = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    measured
}

#[tokio::main]
async fn main() {
    let args = common::bench_args();
    let body_mib: usize = args.first().map_or(64, |a| a.parse().unwrap());
    let concurrent: usize = args.get(1).map_or(3, |a| a.parse().unwrap());
    let size = body_mib << 20;
    let mut builds = vec![("this build", common::binary())];
    if let Some(baseline) = std::env::var_os("PINSERVE_BASELINE_BINARY") {
        builds.insert(0, ("baseline", PathBuf::from(baseline)));
    }
    println!("bodies of {body_mib} MiB (--max-body-bytes), 1 and {concurrent} at once");
    println!(
        "{:<11} {:<16} {:>4} {:>9} {:>10} {:>10} {:>10} {:>8}",
        "build", "format", "sent", "200/503", "idle MiB", "peak MiB", "after MiB", "k"
    );
    let mut reasons = BTreeSet::new();
    for make in [predict_json, v2_json, v2_binary, v2_binary_bytes] {
        let format = make(size);
        for (build, binary) in &builds {
            for sent in [1, concurrent] {
                let m = measure(binary, &format, sent).await;
                // Peak above idle, per byte of the bodies that were taken in.
                let k = (m.peak_mib - m.idle_mib) / (m.answered.max(1) * body_mib) as f64;
                let mut line = String::new();
                write!(
                    line,
                    "{build:<11} {:<16} {sent:>4} {:>9} {:>10.0} {:>10.0} {:>10.0} {k:>8.1}",
                    format.name,
                    format!("{}/{}", m.answered, m.refused),
                    m.idle_mib,
                    m.peak_mib,
                    m.after_mib
                )
                .unwrap();
                println!("{line}");
                reasons.extend(m.reasons);
            }
        }
    }
    for reason in reasons {
        println!("503: {reason}");
    }
}
