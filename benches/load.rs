//! End-to-end load benchmark: pinserve next to raw ONNX Runtime and two Python peers, in one run.
//!
//! For each model it measures, one after the other on the same machine:
//! - **raw ONNX Runtime** in this process (the same library, intra-op threads as pinserve's
//!   default), one session, batch sizes 1 to 128: the ceiling any server can reach;
//! - **pinserve** (the release binary), v2 JSON, the binary tensor data extension, and gRPC
//!   (`ModelInfer` with `raw_input_contents`, over HTTP/2);
//! - **FastAPI** + uvicorn + onnxruntime (`benches/peers/fastapi_v2.py`, v2 JSON);
//! - **Seldon MLServer** with adaptive batching (`benches/peers/mlserver/`, v2 JSON);
//!
//! each driven by a closed-loop load generator (below: one thread, HTTP/1.1 keep-alive
//! connections, or HTTP/2 ones for gRPC, one request in flight per connection) at several concurrencies and request
//! sizes, reporting rows/s, p50 and p99 latency. The peers are installed by
//! `benches/peers/install.sh`, which this benchmark runs first.
//!
//! `cargo bench --bench load -- [KEY=VALUE ...]` with keys (defaults in brackets):
//! `models=` [tabular_mlp,compute_mlp], `peers=` [fastapi,mlserver] (`none` for none),
//! `seconds=` per run [5], `concurrency=` [1,8,64], `rows=` [1,8], `max_batch_size=` [64],
//! `flags=` extra pinserve flags [none], `fastapi_workers=` [2]. `soak=SECONDS` instead runs
//! only a soak: pinserve on the first model at full load (1-row JSON, concurrency 64), sampling
//! its resident set and timing `/health` probes. `ab=drift` instead runs only an A/B of drift
//! monitoring's cost ([`drift_ab`]), `rounds=` [9] pairs of cells per model.
//! `PINSERVE_BINARY=PATH` measures another build.
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark measures real time"
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Server, fixtures, golden, status_kib};
use ort::{session::Session, value::TensorRef};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WARMUP: Duration = Duration::from_secs(1);
const BATCH_SIZES: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

struct Options {
    models: Vec<String>,
    peers: Vec<String>,
    seconds: f64,
    concurrency: Vec<usize>,
    rows: Vec<usize>,
    max_batch_size: usize,
    /// Extra pinserve flags, for trying configurations.
    flags: Vec<String>,
    /// uvicorn worker processes for the FastAPI peer; each gets CPUs / workers intra-op threads.
    fastapi_workers: usize,
    soak: u64,
    /// An A/B to run instead of the comparison (`drift`), and its pairs of cells.
    ab: Option<String>,
    rounds: usize,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            models: vec!["tabular_mlp".into(), "compute_mlp".into()],
            peers: vec!["fastapi".into(), "mlserver".into()],
            seconds: 5.0,
            concurrency: vec![1, 8, 64],
            rows: vec![1, 8],
            max_batch_size: 64,
            flags: Vec::new(),
            fastapi_workers: 2,
            soak: 0,
            ab: None,
            rounds: 9,
        };
        let list = |value: &str| -> Vec<String> {
            value
                .split(',')
                .filter(|item| !item.is_empty() && *item != "none")
                .map(str::to_owned)
                .collect()
        };
        let numbers = |value: &str| -> Vec<usize> {
            list(value)
                .iter()
                .map(|item| item.parse().unwrap())
                .collect()
        };
        // cargo passes `--bench`; everything else is KEY=VALUE.
        for arg in std::env::args()
            .skip(1)
            .filter(|arg| !arg.starts_with("--"))
        {
            let (key, value) = arg
                .split_once('=')
                .unwrap_or_else(|| panic!("expected KEY=VALUE, got {arg}"));
            match key {
                "models" => options.models = list(value),
                "peers" => options.peers = list(value),
                "seconds" => options.seconds = value.parse().unwrap(),
                "concurrency" => options.concurrency = numbers(value),
                "rows" => options.rows = numbers(value),
                "max_batch_size" => options.max_batch_size = value.parse().unwrap(),
                "soak" => options.soak = value.parse().unwrap(),
                "ab" => {
                    assert_eq!(value, "drift", "the one A/B is ab=drift");
                    options.ab = Some(value.to_owned());
                }
                "rounds" => options.rounds = value.parse().unwrap(),
                "fastapi_workers" => options.fastapi_workers = value.parse().unwrap(),
                "flags" => options.flags = value.split_whitespace().map(str::to_owned).collect(),
                other => panic!("unknown key {other}"),
            }
        }
        options
    }
}

/// One request body, sent over and over.
#[derive(Clone)]
struct Load {
    path: String,
    body: Bytes,
    /// The binary extension's `Inference-Header-Content-Length`, when the body uses it.
    json_length: Option<usize>,
    rows: usize,
    /// A gRPC call (the body is one length-prefixed message) over HTTP/2, not HTTP/1.1.
    grpc: bool,
}

struct Outcome {
    rows_per_second: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    /// Share of one core the load generator itself used: on a small machine it competes with
    /// the server for CPU, and more so the faster the server is.
    generator_cpu: f64,
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// The model's single input: its name and the first golden row, as flat f32 values.
fn first_row(model: &str) -> (String, Vec<f32>) {
    let case = &golden(model)["cases"][0]["request"]["inputs"][0];
    let mut values = Vec::new();
    flatten(&case["data"], &mut values);
    (case["name"].as_str().unwrap().to_owned(), values)
}

fn flatten(value: &Value, out: &mut Vec<f32>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        number => out.push(number.as_f64().unwrap() as f32),
    }
}

fn json_load(model: &str, rows: usize) -> Load {
    let (name, row) = first_row(model);
    let data: Vec<f32> = row.iter().copied().cycle().take(row.len() * rows).collect();
    let body = json!({"inputs": [{"name": name, "shape": [rows, row.len()], "datatype": "FP32", "data": data}]});
    Load {
        path: format!("/v2/models/{model}/infer"),
        body: serde_json::to_vec(&body).unwrap().into(),
        json_length: None,
        rows,
        grpc: false,
    }
}

/// `rows` copies of the model's first golden row as little-endian FP32 bytes, as the binary
/// extension and gRPC's raw contents carry them: the input's name, the row's width, the bytes.
fn raw_rows(model: &str, rows: usize) -> (String, usize, Vec<u8>) {
    let (name, row) = first_row(model);
    let data = row
        .iter()
        .cycle()
        .take(row.len() * rows)
        .flat_map(|value| value.to_le_bytes())
        .collect();
    (name, row.len(), data)
}

fn binary_load(model: &str, rows: usize) -> Load {
    let (name, width, data) = raw_rows(model, rows);
    let header = json!({
        "inputs": [{"name": name, "shape": [rows, width], "datatype": "FP32",
                    "parameters": {"binary_data_size": data.len()}}],
        "parameters": {"binary_data_output": true},
    });
    let mut body = serde_json::to_vec(&header).unwrap();
    let json_length = body.len();
    body.extend(data);
    Load {
        path: format!("/v2/models/{model}/infer"),
        body: body.into(),
        json_length: Some(json_length),
        rows,
        grpc: false,
    }
}

/// `ModelInfer` with the rows in `raw_input_contents`, as Triton's gRPC client sends them.
fn grpc_load(model: &str, rows: usize) -> Load {
    use pinserve::protocol::grpc::pb::{ModelInferRequest, model_infer_request::InferInputTensor};
    use prost::Message;
    let (name, width, data) = raw_rows(model, rows);
    let request = ModelInferRequest {
        model_name: model.to_owned(),
        inputs: vec![InferInputTensor {
            name,
            datatype: "FP32".into(),
            shape: vec![rows as i64, width as i64],
            ..InferInputTensor::default()
        }],
        raw_input_contents: vec![data],
        ..ModelInferRequest::default()
    };
    let message = request.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend(message);
    Load {
        path: "/inference.GRPCInferenceService/ModelInfer".to_owned(),
        body: body.into(),
        json_length: None,
        rows,
        grpc: true,
    }
}

/// Closed loop: `concurrency` connections, each sending its next request when the previous
/// answer has arrived. Requests that start after the warm-up and end before the deadline count.
fn drive(address: SocketAddr, load: &Load, concurrency: usize, seconds: f64) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let measured = Duration::from_secs_f64(seconds);
    let cpu_before = thread_cpu_time();
    let start = Instant::now();
    let (from, until) = (start + WARMUP, start + WARMUP + measured);
    let per_connection = runtime.block_on(futures_util::future::join_all((0..concurrency).map(
        |_| async move {
            match load.grpc {
                true => grpc_connection(address, load, from, until).await,
                false => connection(address, load, from, until).await,
            }
        },
    )));
    let generator_cpu =
        (thread_cpu_time() - cpu_before).as_secs_f64() / start.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for (connection_latencies, connection_errors) in per_connection {
        latencies.extend(connection_latencies);
        errors += connection_errors;
    }
    latencies.sort_unstable();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Outcome {
        rows_per_second: (latencies.len() * load.rows) as f64 / seconds,
        p50: quantile(0.50),
        p99: quantile(0.99),
        errors,
        generator_cpu,
    }
}

/// One keep-alive connection sending `load` until `until`. The request's bytes are built once
/// and the response is parsed only as far as its status and `Content-Length`: a general HTTP
/// client (hyper's) cost about 8 µs of CPU per request here, which on a two-core machine is CPU
/// taken from the server being measured.
async fn connection(
    address: SocketAddr,
    load: &Load,
    from: Instant,
    until: Instant,
) -> (Vec<Duration>, usize) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut request = format!(
        "POST {} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        load.path,
        load.body.len()
    );
    if let Some(length) = load.json_length {
        request.push_str(&format!("inference-header-content-length: {length}\r\n"));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(&load.body);
    let mut buffer = Vec::with_capacity(64 << 10);
    let (mut latencies, mut errors) = (Vec::new(), 0);
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        stream.write_all(&request).await.unwrap();
        let (status, body_length) = read_response(&mut stream, &mut buffer).await;
        let done = Instant::now();
        if status != 200 || body_length == 0 {
            errors += 1;
        } else if sent >= from && done <= until {
            latencies.push(done - sent);
        }
    }
    (latencies, errors)
}

/// One HTTP/2 connection sending `load`'s gRPC call until `until`, one call at a time (as
/// [`connection`] does over HTTP/1.1), with h2 directly: a full gRPC client's layers would cost
/// CPU the server being measured needs. A call counts when its trailers say `grpc-status: 0`.
async fn grpc_connection(
    address: SocketAddr,
    load: &Load,
    from: Instant,
    until: Instant,
) -> (Vec<Duration>, usize) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let uri = format!("http://{address}{}", load.path);
    let (mut latencies, mut errors) = (Vec::new(), 0);
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        let request = http::Request::post(uri.as_str())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(load.body.clone(), true).unwrap();
        let answered = grpc_answer(response).await;
        let done = Instant::now();
        if !answered {
            errors += 1;
        } else if sent >= from && done <= until {
            latencies.push(done - sent);
        }
        client = client.ready().await.unwrap();
    }
    (latencies, errors)
}

/// Reads a gRPC answer to its trailers; whether it succeeded with a message.
async fn grpc_answer(response: h2::client::ResponseFuture) -> bool {
    let mut body = response.await.unwrap().into_body();
    let mut length = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        length += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    length > 0
        && trailers
            .get("grpc-status")
            .is_some_and(|status| status == "0")
}

/// Reads one response into `buffer` (cleared first): its status and body length.
async fn read_response(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) -> (u16, usize) {
    buffer.clear();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(header_length) = response.parse(buffer).unwrap() {
            let status = response.code.unwrap();
            let body_length: usize = response
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .map(|header| std::str::from_utf8(header.value).unwrap().parse().unwrap())
                .expect("the load generator needs Content-Length (no chunked responses)");
            while buffer.len() < header_length + body_length {
                read_more(stream, buffer).await;
            }
            return (status, body_length);
        }
        read_more(stream, buffer).await;
    }
}

async fn read_more(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>) {
    buffer.reserve(16 << 10);
    let read = stream.read_buf(buffer).await.unwrap();
    assert!(read > 0, "the server closed the connection");
}

/// Rows per second and median call time of one in-process session at each batch size.
fn raw_onnxruntime(model: &str, seconds: f64) -> Vec<(usize, f64, Duration)> {
    let environment = pinserve::model::runtime::environment(None).unwrap();
    let threads = pinserve::model::runtime::available_cpus();
    let mut session = Session::builder(environment)
        .unwrap()
        .with_intra_threads(threads)
        .unwrap()
        .commit_from_file(fixtures().join(model).join("1/model.onnx"))
        .unwrap();
    let (name, row) = first_row(model);
    let mut results = Vec::new();
    for batch in BATCH_SIZES {
        let data: Vec<f32> = row
            .iter()
            .copied()
            .cycle()
            .take(row.len() * batch)
            .collect();
        let mut call = || {
            let input = TensorRef::from_array_view(([batch, row.len()], data.as_slice())).unwrap();
            let outputs = session.run(ort::inputs![name.as_str() => input]).unwrap();
            let (_, values) = outputs[0].try_extract_tensor::<f32>().unwrap();
            std::hint::black_box(values[0]);
        };
        let warm_until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < warm_until {
            call();
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let began = Instant::now();
            call();
            times.push(began.elapsed());
        }
        let elapsed = start.elapsed().as_secs_f64();
        times.sort_unstable();
        results.push((
            batch,
            (times.len() * batch) as f64 / elapsed,
            times[times.len() / 2],
        ));
    }
    results
}

/// A Python peer server in its own process group, stopped (workers included) when dropped.
struct Peer {
    child: Child,
    address: SocketAddr,
    _workdir: Option<tempfile::TempDir>,
}

impl Peer {
    /// Starts `command` in a process group of its own and waits until `ready_path` answers 200.
    async fn start(
        mut command: Command,
        port: u16,
        workdir: Option<tempfile::TempDir>,
        ready_path: &str,
    ) -> Peer {
        let child = command
            .process_group(0)
            .stdout(Stdio::null())
            .spawn()
            .expect("the peers are installed by benches/peers/install.sh");
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let peer = Peer {
            child,
            address,
            _workdir: workdir,
        };
        wait_until_ok(&format!("http://{address}{ready_path}")).await;
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn wait_until_ok(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the peer did not become ready at {url}");
}

/// FastAPI: `workers` uvicorn processes sharing the CPUs for their intra-op threads (two
/// processes with one thread each on two cores: the usual way to use two cores from Python).
async fn start_fastapi(model: &str, workers: usize) -> Peer {
    let root = repository_root();
    let port = free_port();
    let mut command = Command::new(root.join(".venv-peers-fastapi/bin/uvicorn"));
    command
        .args([
            "--app-dir",
            "benches/peers",
            "fastapi_v2:app",
            "--workers",
            "2",
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--log-level", "warning", "--no-access-log"])
        .env("MODEL_PATH", fixtures().join(model).join("1/model.onnx"))
        .env("MODEL_NAME", model)
        .env(
            "INTRA_OP_THREADS",
            (pinserve::model::runtime::available_cpus() / workers)
                .max(1)
                .to_string(),
        )
        .current_dir(&root);
    Peer::start(command, port, None, "/v2/health/ready").await
}

/// MLServer with adaptive batching (`max_batch_size`, `max_batch_time` 1 ms). Inference runs in
/// the server process (`parallel_workers: 0`): MLServer 1.7.1's worker processes die at start
/// on this Python ("There is no current event loop").
async fn start_mlserver(model: &str, max_batch_size: usize) -> Peer {
    let root = repository_root();
    let workdir = tempfile::tempdir().unwrap();
    let port = free_port();
    let settings = json!({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0});
    std::fs::write(workdir.path().join("settings.json"), settings.to_string()).unwrap();
    let model_dir = workdir.path().join(model);
    std::fs::create_dir(&model_dir).unwrap();
    let model_settings = json!({
        "name": model,
        "implementation": "onnx_runtime.OnnxRuntimeModel",
        "parameters": {"uri": fixtures().join(model).join("1/model.onnx")},
        "max_batch_size": max_batch_size,
        "max_batch_time": 0.001,
    });
    std::fs::write(
        model_dir.join("model-settings.json"),
        model_settings.to_string(),
    )
    .unwrap();
    let mut command = Command::new(root.join(".venv-peers-mlserver/bin/mlserver"));
    command
        .arg("start")
        .arg(workdir.path())
        .env("PYTHONPATH", root.join("benches/peers/mlserver"))
        .env(
            "INTRA_OP_THREADS",
            pinserve::model::runtime::available_cpus().to_string(),
        )
        .current_dir(workdir.path())
        .stderr(Stdio::null());
    let ready = format!("/v2/models/{model}/ready");
    Peer::start(command, port, Some(workdir), &ready).await
}

async fn start_pinserve(model: &str, options: &Options, extra: &[&str]) -> Server {
    let max_batch = options.max_batch_size.to_string();
    let mut flags = vec!["--max-batch-size", max_batch.as_str()];
    flags.extend(options.flags.iter().map(String::as_str));
    flags.extend_from_slice(extra);
    let server = Server::start_fixture(model, "1", &flags);
    server.wait_ready().await;
    server
}

/// pinserve's own view of a run, from its metrics: rows per ONNX Runtime call, and the share of
/// the time ONNX Runtime was busy (`pinserve_inference_duration_seconds`).
struct BatchMeter {
    model: String,
    rows: f64,
    calls: f64,
    busy_seconds: f64,
    at: Instant,
}

struct ServerView {
    mean_batch: f64,
    busy: f64,
}

impl BatchMeter {
    fn new(model: &str) -> BatchMeter {
        BatchMeter {
            model: model.to_owned(),
            rows: 0.0,
            calls: 0.0,
            busy_seconds: 0.0,
            at: Instant::now(),
        }
    }

    fn series(metrics: &str, name: &str) -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }

    /// What happened since the previous call.
    async fn read(&mut self, server: &Server) -> ServerView {
        let metrics = server.metrics().await;
        let labels = format!(r#"{{model="{}",version="1"}}"#, self.model);
        let rows = Self::series(&metrics, &format!("pinserve_batch_size_sum{labels}"));
        let calls = Self::series(&metrics, &format!("pinserve_batch_size_count{labels}"));
        let busy_seconds = Self::series(
            &metrics,
            &format!("pinserve_inference_duration_seconds_sum{labels}"),
        );
        let view = ServerView {
            mean_batch: (rows - self.rows) / (calls - self.calls).max(1.0),
            busy: (busy_seconds - self.busy_seconds) / self.at.elapsed().as_secs_f64(),
        };
        (self.rows, self.calls, self.busy_seconds, self.at) =
            (rows, calls, busy_seconds, Instant::now());
        view
    }
}

fn print_header() {
    println!(
        "| server | body | rows/request | concurrency | rows/s | p50 (ms) | p99 (ms) | errors | rows per ORT call | ORT busy | generator CPU |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
}

fn print_row(
    server: &str,
    body: &str,
    load: &Load,
    concurrency: usize,
    outcome: &Outcome,
    view: Option<&ServerView>,
) {
    println!(
        "| {server} | {body} | {} | {concurrency} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {:.0}% |",
        load.rows,
        outcome.rows_per_second,
        outcome.p50.as_secs_f64() * 1e3,
        outcome.p99.as_secs_f64() * 1e3,
        outcome.errors,
        view.map_or(String::new(), |view| format!("{:.1}", view.mean_batch)),
        view.map_or(String::new(), |view| format!("{:.0}%", view.busy * 100.0)),
        outcome.generator_cpu * 100.0,
    );
}

/// Figures the goals are read from, keyed `server/body/rows/concurrency`.
type Results = BTreeMap<String, (f64, Duration, Duration)>;

fn record(results: &mut Results, key: String, outcome: &Outcome) {
    results.insert(key, (outcome.rows_per_second, outcome.p50, outcome.p99));
}

async fn bench_model(model: &str, options: &Options) {
    println!("\n### {model}\n");
    let raw = raw_onnxruntime(model, 1.5);
    println!(
        "Raw ONNX Runtime in process, {} intra-op threads:\n",
        pinserve::model::runtime::available_cpus()
    );
    println!("| batch | rows/s | median call (ms) |");
    println!("| --- | --- | --- |");
    for (batch, rows_per_second, median) in &raw {
        println!(
            "| {batch} | {rows_per_second:.0} | {:.3} |",
            median.as_secs_f64() * 1e3
        );
    }
    let best = raw.iter().map(|r| r.1).fold(0.0, f64::max);
    let single = raw[0].2;
    let mut results = Results::new();
    println!();
    print_header();

    let server = start_pinserve(model, options, &[]).await;
    let mut meter = BatchMeter::new(model);
    for (body, make) in [
        ("json", json_load as fn(&str, usize) -> Load),
        ("binary", binary_load),
        ("grpc", grpc_load),
    ] {
        for &rows in &options.rows {
            let load = make(model, rows);
            for &concurrency in &options.concurrency {
                let address = match load.grpc {
                    true => server.grpc_address(),
                    false => server.address,
                };
                let run_load = load.clone();
                let seconds = options.seconds;
                meter.read(&server).await;
                let outcome = tokio::task::spawn_blocking(move || {
                    drive(address, &run_load, concurrency, seconds)
                })
                .await
                .unwrap();
                let view = meter.read(&server).await;
                print_row("pinserve", body, &load, concurrency, &outcome, Some(&view));
                record(
                    &mut results,
                    format!("pinserve/{body}/{rows}/{concurrency}"),
                    &outcome,
                );
            }
        }
    }
    drop(server);

    for peer_name in &options.peers {
        let peer = match peer_name.as_str() {
            "fastapi" => start_fastapi(model, options.fastapi_workers).await,
            "mlserver" => start_mlserver(model, options.max_batch_size).await,
            other => panic!("unknown peer {other}"),
        };
        for &rows in &options.rows {
            let load = json_load(model, rows);
            for &concurrency in &options.concurrency {
                let address = peer.address;
                let run_load = load.clone();
                let seconds = options.seconds;
                let outcome = tokio::task::spawn_blocking(move || {
                    drive(address, &run_load, concurrency, seconds)
                })
                .await
                .unwrap();
                print_row(peer_name, "json", &load, concurrency, &outcome, None);
                record(
                    &mut results,
                    format!("{peer_name}/json/{rows}/{concurrency}"),
                    &outcome,
                );
            }
        }
    }
    print_goals(model, &results, best, single, &raw);
}

fn print_goals(
    model: &str,
    results: &Results,
    best_raw: f64,
    single_raw: Duration,
    raw: &[(usize, f64, Duration)],
) {
    let rows = |key: &str| results.get(key).map(|r| r.0);
    println!("\nRatios for {model} (same run):\n");
    let ratio = |label: &str, ours: Option<f64>, theirs: Option<f64>| {
        if let (Some(ours), Some(theirs)) = (ours, theirs) {
            println!(
                "- {label}: {:.2}x ({ours:.0} / {theirs:.0} rows/s)",
                ours / theirs
            );
        }
    };
    for peer in ["fastapi", "mlserver"] {
        ratio(
            &format!("pinserve JSON / {peer}, 1-row, concurrency 64"),
            rows("pinserve/json/1/64"),
            rows(&format!("{peer}/json/1/64")),
        );
    }
    ratio(
        "pinserve binary 1-row c64 / raw ONNX Runtime best",
        rows("pinserve/binary/1/64"),
        Some(best_raw),
    );
    ratio(
        "pinserve JSON 1-row c64 / raw ONNX Runtime best",
        rows("pinserve/json/1/64"),
        Some(best_raw),
    );
    for body in ["json", "binary"] {
        if let Some((_, p50, _)) = results.get(&format!("pinserve/{body}/1/1")) {
            println!(
                "- concurrency 1, 1-row {body}: p50 {:.3} ms vs raw single-row call {:.3} ms: +{:.3} ms",
                p50.as_secs_f64() * 1e3,
                single_raw.as_secs_f64() * 1e3,
                (p50.as_secs_f64() - single_raw.as_secs_f64()) * 1e3
            );
        }
        if let Some((_, _, p99)) = results.get(&format!("pinserve/{body}/1/64")) {
            let batch = raw
                .iter()
                .find(|r| r.0 >= 64)
                .map_or(Duration::ZERO, |r| r.2);
            println!(
                "- concurrency 64, 1-row {body}: p99 {:.3} ms vs max-batch-delay 1 ms + 2 x batch-64 call {:.3} ms = {:.3} ms",
                p99.as_secs_f64() * 1e3,
                batch.as_secs_f64() * 1e3,
                1.0 + 2.0 * batch.as_secs_f64() * 1e3
            );
        }
    }
}

/// Full load on pinserve for `seconds`, sampling its resident set every 10 s and timing a
/// `/health` probe every second (a probe that is slow under load restarts healthy pods).
async fn soak(model: &str, seconds: u64, options: &Options) {
    println!("\n### soak: {model}, 1-row JSON, concurrency 64, {seconds} s\n");
    let server = start_pinserve(model, options, &[]).await;
    let pid = server.pid();
    let address = server.address;
    let load = json_load(model, 1);
    let driver = tokio::task::spawn_blocking(move || drive(address, &load, 64, seconds as f64));
    println!("| elapsed (s) | RSS (MiB) | slowest /health in the last 10 s (ms) |");
    println!("| --- | --- | --- |");
    let started = Instant::now();
    let mut probes = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut tick = 0;
    while !driver.is_finished() {
        let probe = Instant::now();
        let (status, _) = server.get("/health").await;
        assert_eq!(status, 200, "/health under load");
        let took = probe.elapsed();
        probes.push(took);
        slowest = slowest.max(took);
        if tick % 10 == 0 {
            println!(
                "| {:.0} | {:.1} | {:.3} |",
                started.elapsed().as_secs_f64(),
                status_kib(pid, "VmRSS:") as f64 / 1024.0,
                slowest.as_secs_f64() * 1e3
            );
            slowest = Duration::ZERO;
        }
        tick += 1;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(took)).await;
    }
    let outcome = driver.await.unwrap();
    probes.sort_unstable();
    println!(
        "\n{:.0} rows/s, p50 {:.3} ms, p99 {:.3} ms, {} errors; /health probes: {}, median {:.3} ms, max {:.3} ms",
        outcome.rows_per_second,
        outcome.p50.as_secs_f64() * 1e3,
        outcome.p99.as_secs_f64() * 1e3,
        outcome.errors,
        probes.len(),
        probes[probes.len() / 2].as_secs_f64() * 1e3,
        probes[probes.len() - 1].as_secs_f64() * 1e3,
    );
}

/// Drift monitoring's cost: one pinserve without a reference profile (A) and one with (B), both
/// started before the first cell and driven one at a time with 1-row JSON at concurrency 64, A
/// then B in odd rounds and B then A in even ones, so that the machine's drift reaches both
/// alike. Per cell: rows/s from the load generator, and the server's CPU time (user + system,
/// from /proc) per row it scored over the whole cell: the drift thread's work shows there even
/// when the rows/s of neighbouring cells differ by more than it costs. Every row is binned
/// (`--drift-sample-rate 1`, the default), with the profile `pinserve profile` computes on 2000
/// rows of seeded uniform features.
async fn drift_ab(model: &str, options: &Options) {
    let dir = tempfile::tempdir().unwrap();
    let profile = drift_profile(model, dir.path());
    let plain = start_pinserve(model, options, &[]).await;
    let drifting = start_pinserve(
        model,
        options,
        &["--reference-profile", profile.to_str().unwrap()],
    )
    .await;
    println!(
        "\n### {model}: without (A) and with (B) a reference profile, 1-row JSON, concurrency 64\n"
    );
    println!("| round | A rows/s | B rows/s | B / A | A CPU µs/row | B CPU µs/row | B / A |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let load = json_load(model, 1);
    let (mut throughput, mut cpu) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let mut cells = [(0.0, 0.0); 2];
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let server = [&plain, &drifting][which];
            cells[which] = ab_cell(server, model, &load, options.seconds).await;
        }
        let [(a_rate, a_cpu), (b_rate, b_cpu)] = cells;
        throughput.push(b_rate / a_rate);
        cpu.push(b_cpu / a_cpu);
        println!(
            "| {round} | {a_rate:.0} | {b_rate:.0} | {:.3} | {a_cpu:.2} | {b_cpu:.2} | {:.3} |",
            b_rate / a_rate,
            b_cpu / a_cpu
        );
    }
    println!(
        "\nMedian B / A over {} rounds: rows/s {:.3}, CPU per row {:.3}",
        options.rounds,
        median(&mut throughput),
        median(&mut cpu)
    );
}

/// One cell of [`drift_ab`]: rows/s, and the server's CPU microseconds per scored row.
async fn ab_cell(server: &Server, model: &str, load: &Load, seconds: f64) -> (f64, f64) {
    let rows_before = scored_rows(server, model).await;
    let cpu_before = process_cpu(server.pid());
    let (address, run_load) = (server.address, load.clone());
    let outcome = tokio::task::spawn_blocking(move || drive(address, &run_load, 64, seconds))
        .await
        .unwrap();
    let cpu = process_cpu(server.pid()) - cpu_before;
    let rows = scored_rows(server, model).await - rows_before;
    assert_eq!(outcome.errors, 0, "errors in an A/B cell");
    (outcome.rows_per_second, cpu.as_secs_f64() * 1e6 / rows)
}

/// Rows the server has run through ONNX Runtime so far.
async fn scored_rows(server: &Server, model: &str) -> f64 {
    let metrics = server.metrics().await;
    BatchMeter::series(
        &metrics,
        &format!(r#"pinserve_batch_size_sum{{model="{model}",version="1"}}"#),
    )
}

/// User and system CPU time of process `pid` so far.
fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A reference profile of `model` (one FP32 input of K features) from `pinserve profile` on 2000
/// rows of seeded uniform values in [0, 1).
fn drift_profile(model: &str, dir: &Path) -> PathBuf {
    use rand::{Rng, SeedableRng};
    let width = first_row(model).1.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let header: Vec<String> = (0..width).map(|c| format!("f{c}")).collect();
    let mut text = header.join(",") + "\n";
    for _ in 0..2000 {
        let row: Vec<String> = (0..width)
            .map(|_| format!("{:.4}", rng.random::<f64>()))
            .collect();
        text += &(row.join(",") + "\n");
    }
    let data = dir.join("train.csv");
    std::fs::write(&data, text).unwrap();
    let out = dir.join("reference.json");
    common::profiles::write_profile(&fixtures().join(model).join("1"), &data, &out, &[]);
    out
}

fn install_peers(options: &Options) {
    if options.peers.is_empty() {
        return;
    }
    let script = repository_root().join("benches/peers/install.sh");
    let status = Command::new(&script).status().unwrap();
    assert!(status.success(), "{} failed", script.display());
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{} CPUs ({cpu}), load average {}",
        pinserve::model::runtime::available_cpus(),
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    )
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    install_peers(&options);
    println!("Machine: {}", machine());
    println!(
        "pinserve flags: --max-batch-size {} (others default: --max-batch-delay 1ms, --instances 1, intra-op threads = CPUs); {} s per run after {} s warm-up",
        options.max_batch_size,
        options.seconds,
        WARMUP.as_secs()
    );
    if options.soak > 0 {
        return soak(&options.models[0], options.soak, &options).await;
    }
    if options.ab.is_some() {
        for model in &options.models {
            drift_ab(model, &options).await;
        }
        return;
    }
    for model in &options.models {
        let model_file = fixtures().join(model).join("1/model.onnx");
        assert!(
            Path::new(&model_file).exists(),
            "{} is missing (compute_mlp: .venv/bin/python models-fixtures/generate.py --only compute_mlp)",
            model_file.display()
        );
        bench_model(model, &options).await;
    }
}
