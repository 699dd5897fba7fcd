//! `pinserve eval` at scale: a million rows through the serving path, for two tabular models
//! over the same 32 features: tabular_mlp (32-64-64-1, cheaper per row than decoding its
//! features from Parquet) and tabular_gbdt (100 boosted trees of depth 4, what tabular models
//! mostly are). Each is measured next to raw ONNX Runtime running the same rows in the same
//! batches from memory in this process (the ceiling), in interleaved rounds of one run (a single pass can take a
//! fraction of a second, and this machine's speed moves more than the difference between them).
//! Also the eval process's peak resident memory next to the data file's size, and the cost of
//! the bootstrap at that size.
//!
//! `cargo bench --bench eval -- [ROWS] [BATCH]` (defaults: 1000000 4096). The data is a Parquet
//! file of 32 uniform features and a 0/1 target that depends on four of them, written first
//! (seeded).
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark measures real time"
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::{path::Path, sync::Arc, time::Instant};

use arrow_array::{ArrayRef, Float32Array, Float64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use ort::{session::Session, value::TensorRef};
use parquet::{arrow::ArrowWriter, file::properties::WriterProperties};
use pinserve::{
    eval::data::{ColumnMapping, Dataset},
    model::{Model, TensorData},
};
use rand::{Rng, SeedableRng};
use support::median;

const FEATURES: usize = 32;

/// Rounds of each measurement, interleaved so that a change in the machine's speed during the
/// run reaches all of them alike; medians are reported.
const ROUNDS: usize = 5;

/// A model under measurement.
struct Subject {
    name: &'static str,
    /// `eval`'s task flags: tabular_mlp's probability is scored as a regression on the 0/1
    /// target; tabular_gbdt's classifier outputs are inferred.
    task: &'static [&'static str],
}

const SUBJECTS: [Subject; 2] = [
    Subject {
        name: "tabular_mlp",
        task: &["--task", "regression"],
    },
    Subject {
        name: "tabular_gbdt",
        task: &[],
    },
];

/// Writes `rows` rows of seeded uniform features and a 0/1 target, in row groups of 64 Ki rows
/// of uncompressed, dictionary-encoded columns: every value goes through a dictionary lookup,
/// the costliest of the encodings a writer picks for such columns to decode.
fn write_data(path: &Path, rows: usize) {
    let mut fields: Vec<Field> = (0..FEATURES)
        .map(|i| Field::new(format!("f{i}"), DataType::Float32, false))
        .collect();
    fields.push(Field::new("target", DataType::Float64, false));
    let schema = Arc::new(Schema::new(fields));
    let file = std::fs::File::create(path).unwrap();
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1 << 16))
        .build();
    let mut writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(properties)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let chunk = 1 << 16;
    for start in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - start);
        let features: Vec<Vec<f32>> = (0..FEATURES)
            .map(|_| (0..n).map(|_| rng.random::<f32>()).collect())
            .collect();
        let target: Vec<f64> = (0..n)
            .map(|row| {
                let [a, b, c, d] = [0, 1, 2, 3].map(|column| features[column][row]);
                let score = a + b * c - d + 0.5 * (rng.random::<f32>() - 0.5);
                f64::from(u8::from(score > 0.4))
            })
            .collect();
        let mut columns: Vec<ArrayRef> = features
            .into_iter()
            .map(|values| Arc::new(Float32Array::from(values)) as ArrayRef)
            .collect();
        columns.push(Arc::new(Float64Array::from(target)));
        writer
            .write(&RecordBatch::try_new(Arc::clone(&schema), columns).unwrap())
            .unwrap();
    }
    writer.close().unwrap();
}

fn model_file(subject: &Subject) -> std::path::PathBuf {
    common::fixtures().join(subject.name).join("1/model.onnx")
}

/// The file's features, row-major, in memory: what raw ONNX Runtime runs over. The same rows
/// as eval's, since a tree ensemble's speed depends on the values (the branches taken).
fn features_in_memory(data: &Path, batch: usize) -> Vec<f32> {
    let mut features = Vec::new();
    for batch in dataset(data).batches(batch).unwrap() {
        match batch.unwrap().inputs[0].data() {
            TensorData::Fp32(values) => features.extend_from_slice(values),
            other => panic!("FP32 features expected, got {}", other.datatype()),
        }
    }
    features
}

/// One in-process session over the data in memory: the ceiling eval is measured against.
struct RawSession {
    session: Session,
}

impl RawSession {
    /// A session with ONNX Runtime's own defaults (spinning threads) or, with `spinning` off,
    /// the intra-op settings `serve` and `eval` use by default; every core either way.
    fn new(subject: &Subject, spinning: bool) -> RawSession {
        let environment = pinserve::model::runtime::environment(None).unwrap();
        let session = Session::builder(environment)
            .unwrap()
            .with_intra_threads(pinserve::model::runtime::available_cpus())
            .unwrap()
            .with_intra_op_spinning(spinning)
            .unwrap()
            .commit_from_file(model_file(subject))
            .unwrap();
        RawSession { session }
    }

    fn run(&mut self, rows: &[f32]) {
        let input = TensorRef::from_array_view(([rows.len() / FEATURES, FEATURES], rows)).unwrap();
        let outputs = self.session.run(ort::inputs!["features" => input]).unwrap();
        std::hint::black_box(outputs.len());
    }

    /// Rows per second over `features` in batches of `batch` rows, after one warm-up batch.
    fn throughput(&mut self, features: &[f32], batch: usize) -> f64 {
        let mut batches = features.chunks(batch * FEATURES);
        self.run(batches.next().unwrap_or_default());
        let started = Instant::now();
        for rows in features.chunks(batch * FEATURES) {
            self.run(rows);
        }
        (features.len() / FEATURES) as f64 / started.elapsed().as_secs_f64()
    }
}

/// The data file mapped to the features input both models share.
fn dataset(data: &Path) -> Dataset {
    let signature =
        pinserve::model::OnnxModel::load(&model_file(&SUBJECTS[0]), &Default::default())
            .unwrap()
            .signature()
            .as_ref()
            .clone();
    let mapping = ColumnMapping {
        target: Some("target".to_owned()),
        ..ColumnMapping::default()
    };
    Dataset::open(data, &signature, &mapping).unwrap()
}

/// Rows per second of reading and converting the file alone, as eval does it (no inference).
fn read_only(data: &Path, batch: usize) -> f64 {
    let dataset = dataset(data);
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

/// Runs the release binary's `eval` with `extra` arguments and reads its report, wall time and
/// peak resident size.
fn run_eval(subject: &Subject, data: &Path, batch: usize, extra: &[&str]) -> EvalRun {
    let report = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    // Reaped by wait4 below, which also reports its peak resident size.
    #[allow(clippy::zombie_processes)]
    let child = common::pinserve()
        .arg("eval")
        .arg(common::fixtures().join(subject.name).join("1"))
        .arg("--data")
        .arg(data)
        .args(["--target", "target"])
        .args(subject.task)
        .args(["--batch-size", &batch.to_string()])
        .args(extra)
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

/// What one round measures for a model, each in rows per second.
#[derive(Default)]
struct Rounds {
    raw: Vec<f64>,
    raw_sleeping: Vec<f64>,
    eval: Vec<EvalRun>,
    eval_instances: Vec<EvalRun>,
}

/// Prints a model's medians, each as a share of raw's median with its rounds' range, and
/// every round's eval/raw ratio.
fn report(subject: &Subject, rounds: &Rounds, read: &[f64], instances: &str) {
    let raw_median = median(rounds.raw.clone());
    let line = |label: &str, values: &[f64]| {
        let (low, high) = values
            .iter()
            .fold((f64::MAX, 0.0_f64), |(l, h), &v| (l.min(v), h.max(v)));
        let value = median(values.to_vec());
        println!(
            "  {label:<40}{value:>12.0} rows/s  ({:.2} of raw; rounds {low:.0}..{high:.0})",
            value / raw_median
        );
    };
    let rates = |runs: &[EvalRun]| {
        runs.iter()
            .map(|run| run.rows_per_second)
            .collect::<Vec<_>>()
    };
    let ratios = |runs: &[EvalRun]| {
        let each: Vec<String> = rates(runs)
            .iter()
            .zip(&rounds.raw)
            .map(|(eval, raw)| format!("{:.2}", eval / raw))
            .collect();
        each.join(" ")
    };
    println!("{}:", subject.name);
    line("raw ONNX Runtime, from memory:", &rounds.raw);
    line("  the same, threads not spinning:", &rounds.raw_sleeping);
    line("reading and converting alone:", read);
    line("pinserve eval, batched pass:", &rates(&rounds.eval));
    line(
        &format!("pinserve eval --instances {instances}:"),
        &rates(&rounds.eval_instances),
    );
    println!(
        "  eval / raw, round by round:             {}",
        ratios(&rounds.eval)
    );
    println!(
        "  eval --instances {instances} / raw, round by round: {}",
        ratios(&rounds.eval_instances)
    );
    let seconds = median(rounds.eval.iter().map(|run| run.seconds).collect());
    println!("  pinserve eval --bootstrap 0: {seconds:.2} s wall");
}

/// `eval`'s peak resident size for `extra` arguments, measured before this process holds the
/// data in memory (a child's peak counts what it shared with its parent until exec).
fn memory(data: &Path, batch: usize, extra: &[&str]) {
    let run = run_eval(&SUBJECTS[0], data, batch, extra);
    println!(
        "{} {}: {:.2} s wall, peak RSS {:.0} MiB ({:.0} rows/s batched)",
        SUBJECTS[0].name,
        extra.join(" "),
        run.seconds,
        run.peak_mib,
        run.rows_per_second
    );
}

fn main() {
    let args = common::bench_args();
    let rows: usize = args.first().map_or(1_000_000, |a| a.parse().unwrap());
    let batch: usize = args.get(1).map_or(4096, |a| a.parse().unwrap());
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("tabular.parquet");
    write_data(&data, rows);
    let file_mib = std::fs::metadata(&data).unwrap().len() as f64 / f64::from(1 << 20);
    let instances = pinserve::model::runtime::available_cpus().to_string();
    println!(
        "{rows} rows in Parquet ({file_mib:.0} MiB), batches of {batch}, medians of {ROUNDS} \
         interleaved rounds; --instances {instances} gives each session 1 intra-op thread"
    );
    memory(&data, batch, &["--bootstrap", "0"]);
    memory(&data, batch, &["--bootstrap", "1000"]);
    let features = features_in_memory(&data, batch);
    let mut sessions: Vec<(RawSession, RawSession)> = SUBJECTS
        .iter()
        .map(|subject| {
            (
                RawSession::new(subject, true),
                RawSession::new(subject, false),
            )
        })
        .collect();
    let mut measured: Vec<Rounds> = SUBJECTS.iter().map(|_| Rounds::default()).collect();
    let mut read = Vec::new();
    let plain = ["--bootstrap", "0"];
    let spread = ["--bootstrap", "0", "--instances", &instances];
    for _ in 0..ROUNDS {
        read.push(read_only(&data, batch));
        for ((subject, (spinning, sleeping)), rounds) in
            SUBJECTS.iter().zip(&mut sessions).zip(&mut measured)
        {
            rounds.raw.push(spinning.throughput(&features, batch));
            rounds
                .raw_sleeping
                .push(sleeping.throughput(&features, batch));
            rounds.eval.push(run_eval(subject, &data, batch, &plain));
            rounds
                .eval_instances
                .push(run_eval(subject, &data, batch, &spread));
        }
    }
    for (subject, rounds) in SUBJECTS.iter().zip(&measured) {
        report(subject, rounds, &read, &instances);
    }
}
