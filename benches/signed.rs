//! What verifying a model signature costs: a version signed with the real `model_signing`
//! (compute_mlp plus a filler file, `MB` megabytes in all) is fetched from a model repository,
//! fetched again into the same directory (the earlier download is checked and reused), and
//! served from the fetched directory, with and without `--signature-public-key`. With
//! `PINSERVE_COMPARE_BINARY=PATH`, that build's signed fetches run too, alternated run by run
//! with this build's, so the two compare as ratios measured together.
//!
//! `cargo bench --bench signed -- [RUNS] [MB]` (defaults 5 and 400). Needs `.venv-signing`
//! (scripts/test.sh creates it) and the compute_mlp fixture (`.venv/bin/python
//! models-fixtures/generate.py --only compute_mlp`).
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
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use support::{median, run_ok, time_to_ready, timed};

const MODEL: &str = "compute_mlp";

/// A model repository holding one signed version, and the signer's public key.
struct Signed {
    _material: tempfile::TempDir,
    repository: tempfile::TempDir,
    public_key: String,
}

/// Runs `tests/support/sign_model.py` in `.venv-signing` (which scripts/test.sh creates).
fn sign_model(args: &[&Path]) {
    run_ok(
        Command::new(".venv-signing/bin/python")
            .arg("tests/support/sign_model.py")
            .args(args),
    );
}

/// `megabytes` of bytes that do not compress (so no layer below can shortcut them).
fn write_filler(path: &Path, megabytes: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut chunk = vec![0_u8; 1 << 20];
    for _ in 0..megabytes {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
}

fn signed_version(megabytes: usize) -> Signed {
    let material = tempfile::tempdir().unwrap();
    sign_model(&[Path::new("keys"), material.path()]);
    let repository = tempfile::tempdir().unwrap();
    let version = repository.path().join(MODEL).join("1");
    std::fs::create_dir_all(&version).unwrap();
    let model = common::fixtures().join(MODEL).join("1/model.onnx");
    std::fs::copy(&model, version.join("model.onnx")).unwrap();
    let model_mb = std::fs::metadata(&model).unwrap().len() as usize >> 20;
    write_filler(
        &version.join("weights.bin"),
        megabytes.saturating_sub(model_mb),
    );
    sign_model(&[
        Path::new("key"),
        material.path(),
        &version,
        &version.join("model.sig"),
    ]);
    let public_key = material.path().join("signer.pub");
    Signed {
        public_key: public_key.to_str().unwrap().to_owned(),
        _material: material,
        repository,
    }
}

/// One `pinserve fetch` of the version into `dest`, process start to exit.
fn fetch(binary: &Path, signed: &Signed, dest: &Path, flags: &[&str]) -> Duration {
    timed(
        Command::new(binary)
            .arg("fetch")
            .args([
                "--model-repository",
                signed.repository.path().to_str().unwrap(),
            ])
            .args(["--model", MODEL, "--version", "1"])
            .args(["--dest", dest.to_str().unwrap()])
            .args(flags),
    )
}

/// Fetch, fetch again, and (for this build) time to ready from the fetched directory.
async fn measure(binary: &Path, signed: &Signed, flags: &[&str], serve: bool) -> [f64; 3] {
    let dest = tempfile::tempdir().unwrap();
    let first = fetch(binary, signed, dest.path(), flags);
    let again = fetch(binary, signed, dest.path(), flags);
    let ready = if serve {
        let mut args = vec!["--model-dir", dest.path().to_str().unwrap()];
        args.extend_from_slice(flags);
        time_to_ready(&args, &[]).await.as_secs_f64()
    } else {
        f64::NAN
    };
    [first.as_secs_f64(), again.as_secs_f64(), ready]
}

#[tokio::main]
async fn main() {
    let args = common::bench_args();
    let runs: usize = args.first().map_or(5, |r| r.parse().unwrap());
    let megabytes: usize = args.get(1).map_or(400, |m| m.parse().unwrap());
    let signed = signed_version(megabytes);
    let key = ["--signature-public-key", signed.public_key.as_str()];
    let this = PathBuf::from(env!("CARGO_BIN_EXE_pinserve"));
    let compared = std::env::var_os("PINSERVE_COMPARE_BINARY").map(PathBuf::from);
    let mut variants: Vec<(String, &Path, &[&str], bool)> = vec![
        ("this build, no signature flag".to_owned(), &this, &[], true),
        ("this build, signed".to_owned(), &this, &key, true),
    ];
    if let Some(other) = &compared {
        variants.push((format!("{}, signed", other.display()), other, &key, false));
    }
    println!(
        "{MODEL} + filler, {megabytes} MB signed with model_signing's key method; {runs} runs"
    );
    let mut rows = vec![Vec::new(); variants.len()];
    for run in 0..runs {
        // Rotate which goes first, so that none always meets a cold or a warm page cache.
        for offset in 0..variants.len() {
            let index = (run + offset) % variants.len();
            let (_, binary, flags, serve) = &variants[index];
            rows[index].push(measure(binary, &signed, flags, *serve).await);
        }
    }
    println!(
        "{:<48} {:>10} {:>14} {:>16}",
        "median of runs", "fetch (s)", "fetch again (s)", "serve to ready (s)"
    );
    for ((label, ..), measured) in variants.iter().zip(&rows) {
        let column = |i: usize| median(measured.iter().map(|row| row[i]).collect());
        println!(
            "{label:<48} {:>10.3} {:>14.3} {:>16.3}",
            column(0),
            column(1),
            column(2)
        );
    }
}
