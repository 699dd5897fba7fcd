//! `pinserve eval` at scale: a million rows of a tabular model through the serving path, next
//! to raw ONNX Runtime running the same batches from memory in this process (the ceiling), in
//! interleaved rounds of one run (a single pass takes a fraction of a second, and this
//! machine's speed moves more than the difference between them). Also the eval process's peak
//! resident memory next to the data file's size, and the cost of the bootstrap at that size.
//!
//! `cargo bench --bench eval -- [ROWS] [BATCH]` (defaults: 1000000 4096). The data is a Parquet
//! file of tabular_mlp's 32 features and a numeric target, written first (seeded).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{path::Path, sync::Arc, time::Instant};

use arrow_array::{ArrayRef, Float32Array, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ort::{session::Session, value::TensorRef};
use parquet::{arrow::ArrowWriter, file::properties::WriterProperties};
use pinserve::{
    eval::data::{ColumnMapping, Dataset},
    model::Model,
};
use rand::{Rng, SeedableRng};

const FEATURES: usize = 32;

/// Writes `rows` rows of seeded uniform features and a target, in row groups of 64 Ki rows.
fn write_data(path: &Path, rows: usize) {
    let mut fields: Vec<Field> = (0..FEATURES)
        .map(|i| Field::new(format!("f{i}"), DataType::Float32, false))
        .collect();
    fields.push(Field::new("target", DataType::Float64, false));
    let schema = Arc::new(Schema::new(fields));
    let file = std::fs::File::create(path).unwrap();
    // Row groups of 64 Ki rows, as the batches are written.
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1 << 16))
        .build();
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(properties)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let chunk = 1 << 16;
    for start in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - start);
        let mut columns: Vec<ArrayRef> = (0..FEATURES)
            .map(|_| {
                let values: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
                Arc::new(Float32Array::from(values)) as ArrayRef
            })
            .collect();
        let target: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
        columns.push(Arc::new(Float64Array::from(target)));
        writer
            .write(&RecordBatch::try_new(Arc::clone(&schema), columns).unwrap())
            .unwrap();
    }
    writer.close().unwrap();
}

/// One in-process session over in-memory batches: the ceiling eval is measured against.
struct RawSession {
    session: Session,
    data: Vec<f32>,
}

impl RawSession {
    /// A session with ONNX Runtime's own defaults (spinning threads) or, with `spinning` off,
    /// the intra-op settings `serve` and `eval` use by default; every core either way.
    fn new(batch: usize, spinning: bool) -> RawSession {
        let environment = pinserve::model::runtime::environment(None).unwrap();
        let session = Session::builder(environment)
            .unwrap()
            .with_intra_threads(pinserve::model::runtime::available_cpus())
            .unwrap()
            .with_intra_op_spinning(spinning)
            .unwrap()
            .commit_from_file(common::fixtures().join("tabular_mlp/1/model.onnx"))
            .unwrap();
        let data = (0..batch * FEATURES)
            .map(|i| (i % 97) as f32 / 97.0)
            .collect();
        let mut raw = RawSession { session, data };
        raw.run(batch);
        raw
    }

    fn run(&mut self, n: usize) {
        let input =
            TensorRef::from_array_view(([n, FEATURES], &self.data[..n * FEATURES])).unwrap();
        let outputs = self.session.run(ort::inputs!["features" => input]).unwrap();
        let (_, values) = outputs[0].try_extract_tensor::<f32>().unwrap();
        std::hint::black_box(values[0]);
    }

    /// Rows per second over `rows` rows in batches of `batch`.
    fn throughput(&mut self, rows: usize, batch: usize) -> f64 {
        let started = Instant::now();
        let mut left = rows;
        while left > 0 {
            let n = left.min(batch);
            self.run(n);
            left -= n;
        }
        rows as f64 / started.elapsed().as_secs_f64()
    }
}

/// Rows per second of reading and converting the file alone, as eval does it (no inference).
fn read_only(data: &Path, batch: usize) -> f64 {
    let model = common::fixtures().join("tabular_mlp/1/model.onnx");
    let signature = pinserve::model::OnnxModel::load(&model, &Default::default())
        .unwrap()
        .signature()
        .as_ref()
        .clone();
    let mapping = ColumnMapping {
        target: "target".to_owned(),
        ..ColumnMapping::default()
    };
    let dataset = Dataset::open(data, &signature, &mapping).unwrap();
    let started = Instant::now();
    let rows: usize = dataset
        .batches(batch)
        .unwrap()
        .map(|b| b.unwrap().rows)
        .sum();
    rows as f64 / started.elapsed().as_secs_f64()
}

struct EvalRun {
    seconds: f64,
    rows_per_second: f64,
    peak_mib: f64,
}

/// Runs the release binary's `eval` and reads its report, wall time and peak resident size.
fn run_eval(data: &Path, batch: usize, bootstrap: usize) -> EvalRun {
    let report = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    // Reaped by wait4 below, which also reports its peak resident size.
    #[allow(clippy::zombie_processes)]
    let child = common::pinserve()
        .arg("eval")
        .arg(common::fixtures().join("tabular_mlp/1"))
        .arg("--data")
        .arg(data)
        .args(["--target", "target", "--task", "regression"])
        .args(["--batch-size", &batch.to_string()])
        .args(["--bootstrap", &bootstrap.to_string()])
        .arg("--report-json")
        .arg(report.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for this child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else reaps.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert_eq!(status, 0, "pinserve eval failed");
    let seconds = started.elapsed().as_secs_f64();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.path()).unwrap()).unwrap();
    EvalRun {
        seconds,
        rows_per_second: report["latency"]["rows_per_second"].as_f64().unwrap(),
        peak_mib: usage.ru_maxrss as f64 / 1024.0,
    }
}

/// Rounds of each measurement, interleaved so that a change in the machine's speed during the
/// run reaches all of them alike; medians are reported.
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args = common::bench_args();
    let rows: usize = args.first().map_or(1_000_000, |a| a.parse().unwrap());
    let batch: usize = args.get(1).map_or(4096, |a| a.parse().unwrap());
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("tabular.parquet");
    write_data(&data, rows);
    let file_mib = std::fs::metadata(&data).unwrap().len() as f64 / f64::from(1 << 20);
    println!(
        "{rows} rows of tabular_mlp in Parquet ({file_mib:.0} MiB), batches of {batch}, \
         medians of {ROUNDS} interleaved rounds"
    );
    let mut spinning = RawSession::new(batch, true);
    let mut sleeping = RawSession::new(batch, false);
    let (mut raw, mut raw_sleeping, mut read, mut plain) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        raw.push(spinning.throughput(rows, batch));
        raw_sleeping.push(sleeping.throughput(rows, batch));
        read.push(read_only(&data, batch));
        plain.push(run_eval(&data, batch, 0));
    }
    let eval: Vec<f64> = plain.iter().map(|run| run.rows_per_second).collect();
    let ratios: Vec<f64> = eval.iter().zip(&raw).map(|(e, r)| e / r).collect();
    let raw_median = median(raw.clone());
    // One line per measurement: its median, its share of raw's median and its rounds' range.
    let line = |label: &str, values: &[f64]| {
        let (low, high) = values
            .iter()
            .fold((f64::MAX, 0.0_f64), |(l, h), &v| (l.min(v), h.max(v)));
        let value = median(values.to_vec());
        println!(
            "{label:<36}{value:>12.0} rows/s  ({:.2} of raw; rounds {low:.0}..{high:.0})",
            value / raw_median
        );
    };
    line("raw ONNX Runtime, from memory:", &raw);
    line("  the same, threads not spinning:", &raw_sleeping);
    line("reading and converting alone:", &read);
    line("pinserve eval, batched pass:", &eval);
    println!(
        "  eval / raw, round by round:       {}",
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let seconds = median(plain.iter().map(|run| run.seconds).collect());
    let peak = plain.iter().map(|run| run.peak_mib).fold(0.0, f64::max);
    println!("pinserve eval --bootstrap 0:        {seconds:>8.2} s wall, peak RSS {peak:.0} MiB");
    let bootstrapped = run_eval(&data, batch, 1000);
    println!(
        "pinserve eval --bootstrap 1000:     {:>8.2} s wall, peak RSS {:.0} MiB ({:.0} rows/s batched)",
        bootstrapped.seconds, bootstrapped.peak_mib, bootstrapped.rows_per_second
    );
}
