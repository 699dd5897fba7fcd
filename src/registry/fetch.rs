//! The fetch stage: a [`Plan`] and a directory in, the files verified in it and its
//! [`Manifest`] out (errors: [`FetchError`]).
//!
//! Downloading a plan into a directory so that the directory only ever holds a complete,
//! verified model or nothing pinserve will load:
//!
//! - each file streams into a temporary name while its SHA-256 is computed, is fsynced, checked
//!   against the expected digest, and only then renamed into place;
//! - `pinserve.json` is written last; without it the directory is incomplete and is discarded
//!   by the next fetch;
//! - connection errors, 429 and 5xx are retried with backoff, and a body that stalls or breaks
//!   off resumes with a range request where the server supports one;
//! - the whole fetch is bounded by a timeout, so an init container never hangs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{
    Expected, Plan, PlannedFile, RelativePath,
    digest::Digest,
    manifest::{Manifest, ManifestError, ManifestFile, sync_dir},
    progress::Progress,
    redact::error_chain,
    retry::{RetryPolicy, gave_up},
    signed,
    sink::Sink,
    source::{TransferError, within},
};
use crate::{metrics::ModelLabels, signing::Policy};

/// Marks a directory as a fetch in progress, so the next fetch knows it may clear it.
pub(crate) const IN_PROGRESS: &str = ".pinserve-fetch";
const PARTIAL_PREFIX: &str = ".pinserve-partial-";
/// Files downloaded at once: small files (MLmodel, environment files) then cost no wall time
/// next to the weights, and one slow file does not hold up the rest.
const CONCURRENT_DOWNLOADS: usize = 4;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub(crate) retry: RetryPolicy,
    /// Bound on the whole fetch, listings and retries included.
    pub(crate) timeout: Duration,
    /// A body that delivers no bytes for this long is abandoned and resumed.
    pub(crate) stall_timeout: Duration,
    /// The most bytes written for a file whose size the plan does not know.
    pub(crate) max_bytes: u64,
    /// Who must have signed a version's files; checked before the manifest is written.
    pub(crate) signing: Option<crate::signing::Policy>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{path}: {source}")]
    Transfer { path: String, source: TransferError },
    #[error(
        "{path}: sha256 {found} does not match the expected {expected} (from {origin}); refusing to use it"
    )]
    DigestMismatch {
        path: String,
        expected: Digest,
        found: Digest,
        origin: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: not empty and not a pinserve download; refusing to clear it (fetch into an empty directory)",
        dir.display()
    )]
    NotOurs { dir: PathBuf },
    #[error("the fetch did not finish within {0:?} (--fetch-timeout)")]
    Timeout(Duration),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The signing policy refused the downloaded files; no manifest vouches for them.
    #[error(transparent)]
    Signature(#[from] crate::signing::SigningError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an earlier download must be to be reused instead of fetched again: one that `same`
/// accepts (the same reference, or the same plan), whose recorded digests agree with every
/// digest expected of it. The digests are a field of their own so that no reuse can skip them.
pub(crate) struct Wanted {
    pub(crate) same: Box<dyn Fn(&Manifest) -> bool + Send>,
    pub(crate) digests: Vec<WantedDigest>,
}

/// A digest a file of a reusable download must have recorded.
#[derive(Debug, Clone)]
pub(crate) struct WantedDigest {
    /// `None`: the manifest's model file (before planning, its name is not known yet).
    pub(crate) file: Option<RelativePath>,
    pub(crate) expected: Expected,
}

impl Wanted {
    /// The first expected digest `manifest` does not record, described for the log.
    fn contradiction(&self, manifest: &Manifest) -> Option<String> {
        self.digests.iter().find_map(|wanted| {
            let path = wanted.file.as_ref().unwrap_or(&manifest.model_file);
            let recorded = manifest.files.iter().find(|file| &file.path == path);
            match recorded {
                Some(file) if file.sha256 == wanted.expected.digest => None,
                Some(file) => Some(format!(
                    "{path}: recorded sha256 {}, expected {} (from {})",
                    file.sha256, wanted.expected.digest, wanted.expected.origin
                )),
                None => Some(format!(
                    "{path}: not in the earlier download, expected {} (from {})",
                    wanted.expected.digest, wanted.expected.origin
                )),
            }
        })
    }
}

/// A complete, verified download in `dest` that is the `wanted` one, signed as `signing`
/// requires.
pub(crate) fn cached(dest: &Path, wanted: &Wanted, signing: Option<&Policy>) -> Option<Manifest> {
    let manifest = match Manifest::read(dest) {
        Ok(Some(manifest)) if (wanted.same)(&manifest) => manifest,
        Ok(Some(manifest)) => {
            tracing::info!(
                dir = %dest.display(),
                cached = format!("{} {}", manifest.model, manifest.version),
                "the cache holds another model version; fetching"
            );
            return None;
        }
        Ok(None) => return None,
        Err(err) => {
            tracing::warn!(error = %err, "unreadable cache manifest; fetching again");
            return None;
        }
    };
    if let Some(contradiction) = wanted.contradiction(&manifest) {
        tracing::info!(dir = %dest.display(), %contradiction, "the earlier download does not have the expected digest; fetching again");
        return None;
    }
    if let Err(err) = manifest.verify(dest, true) {
        tracing::warn!(error = %err, "the cache does not match its manifest; fetching again");
        return None;
    }
    match signed::verify(signing, dest, &signed::known_digests(&manifest)) {
        Ok(signed) => Some(Manifest { signed, ..manifest }),
        Err(err) => {
            tracing::warn!(error = %err, "the earlier download's signature does not verify; fetching again");
            None
        }
    }
}

/// Downloads every file of `plan` into `dest` and writes the manifest.
pub(crate) async fn fetch(
    plan: &Plan,
    dest: &Path,
    options: &FetchOptions,
    labels: &ModelLabels,
) -> Result<Manifest, FetchError> {
    let started = Instant::now();
    let result = tokio::time::timeout(options.timeout, fetch_all(plan, dest, options, labels))
        .await
        .unwrap_or(Err(FetchError::Timeout(options.timeout)));
    labels.record_fetch(
        started.elapsed().as_secs_f64(),
        if result.is_ok() { "ok" } else { "error" },
    );
    result
}

async fn fetch_all(
    plan: &Plan,
    dest: &Path,
    options: &FetchOptions,
    labels: &ModelLabels,
) -> Result<Manifest, FetchError> {
    prepare_destination(dest)?;
    let marker = dest.join(IN_PROGRESS);
    std::fs::write(&marker, plan.reference.as_bytes()).map_err(io_error(&marker))?;
    let progress = Progress::new(labels, plan.total_size());
    let mut manifest = Manifest::new(
        plan.name.clone(),
        plan.version.clone(),
        plan.reference.clone(),
        plan.source.clone(),
        plan.model_file.clone(),
    );
    manifest.signature = plan.signature.clone();
    let downloads = futures_util::stream::iter(plan.files.iter().enumerate())
        .map(|(index, file)| download(file, dest, index, options, &progress))
        .buffer_unordered(CONCURRENT_DOWNLOADS)
        .collect::<Vec<_>>()
        .await;
    progress.finish();
    for downloaded in downloads {
        manifest
            .files
            .push(downloaded.inspect_err(|_| discard_partials(dest))?);
    }
    manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
    // Every file is fsynced before its rename; one sync per directory makes the renames durable
    // before the manifest that vouches for them is written.
    let mut directories: Vec<PathBuf> = manifest
        .files
        .iter()
        .filter_map(|file| file.path.under(dest).parent().map(Path::to_path_buf))
        .collect();
    directories.sort();
    directories.dedup();
    for directory in directories {
        sync_dir(&directory).map_err(io_error(&directory))?;
    }
    let known = signed::known_digests(&manifest);
    manifest.signed = signed::verify_off_runtime(options.signing.as_ref(), dest, known).await?;
    manifest.write(dest)?;
    std::fs::remove_file(&marker).map_err(io_error(&marker))?;
    sync_dir(dest).map_err(io_error(dest))?;
    Ok(manifest)
}

/// Removes the temporary files of a failed fetch (best effort: the next fetch clears them too).
fn discard_partials(dest: &Path) {
    let Ok(entries) = std::fs::read_dir(dest) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(PARTIAL_PREFIX)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Creates `dest`, or clears a previous (partial or outdated) pinserve download in it. A
/// directory with other contents is never touched.
fn prepare_destination(dest: &Path) -> Result<(), FetchError> {
    std::fs::create_dir_all(dest).map_err(io_error(dest))?;
    let entries: Vec<_> = std::fs::read_dir(dest)
        .map_err(io_error(dest))?
        .collect::<Result<_, _>>()
        .map_err(io_error(dest))?;
    let ours = entries.iter().any(|entry| {
        let name = entry.file_name();
        name == super::manifest::MANIFEST_FILE || name == IN_PROGRESS
    });
    if entries.is_empty() {
        return Ok(());
    }
    if !ours {
        return Err(FetchError::NotOurs {
            dir: dest.to_path_buf(),
        });
    }
    for entry in entries {
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io_error(&path))?.is_dir();
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_error(&path))?;
    }
    Ok(())
}

/// The state of one file's download, kept across attempts so an attempt can resume.
struct Partial {
    sink: Sink,
    written: u64,
}

async fn download(
    file: &PlannedFile,
    dest: &Path,
    index: usize,
    options: &FetchOptions,
    progress: &Progress,
) -> Result<ManifestFile, FetchError> {
    let shown = file.path.to_string();
    let temporary = dest.join(format!("{PARTIAL_PREFIX}{index}"));
    let mut partial = Partial {
        sink: Sink::create(&temporary).map_err(io_error(&temporary))?,
        written: 0,
    };
    let mut delays = options.retry.delays();
    let outcome = loop {
        match transfer(file, &mut partial, options, progress).await {
            Err(err) if err.is_transient() => {
                let Some(delay) = options.retry.next_delay(&mut delays, err.retry_after()) else {
                    break Err(gave_up(err, &options.retry));
                };
                tracing::warn!(file = %shown, error = %error_chain(&err), resume_at = partial.written, retry_in = ?delay, "download interrupted; retrying");
                tokio::time::sleep(delay).await;
            }
            result => break result,
        }
    };
    // The writer's own error (a full disk, say) explains a failed write better than the write.
    let written = partial.sink.finish().await.map_err(io_error(&temporary))?;
    outcome.map_err(|err| transfer_error(&shown, err))?;
    if let Some(expected) = &file.expected
        && expected.digest != written.digest
    {
        let _ = std::fs::remove_file(&temporary);
        return Err(FetchError::DigestMismatch {
            path: shown,
            expected: expected.digest,
            found: written.digest,
            origin: expected.origin.clone(),
        });
    }
    let target = file.path.under(dest);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    std::fs::rename(&temporary, &target).map_err(io_error(&target))?;
    if file.expected.is_none() {
        tracing::debug!(file = %shown, sha256 = %written.digest, "no expected digest for this file; recorded the computed one");
    }
    Ok(ManifestFile {
        path: file.path.clone(),
        size: written.size,
        sha256: written.digest,
    })
}

fn transfer_error(path: &str, source: TransferError) -> FetchError {
    FetchError::Transfer {
        path: path.to_owned(),
        source,
    }
}

/// One attempt: continues from `partial.written` (or from zero when the server ignores the
/// range) until the body ends, it breaks off, or no byte arrives within the stall timeout.
async fn transfer(
    file: &PlannedFile,
    partial: &mut Partial,
    options: &FetchOptions,
    progress: &Progress,
) -> Result<(), TransferError> {
    if file
        .size
        .is_some_and(|size| size > 0 && partial.written == size)
    {
        return Ok(());
    }
    let stall = options.stall_timeout;
    let opened = within(stall, file.source.open(partial.written)).await?;
    if opened.offset != partial.written {
        if opened.offset != 0 {
            return Err(TransferError::transient(format!(
                "asked to resume at byte {}, the server answered from byte {}",
                partial.written, opened.offset
            )));
        }
        restart(partial, progress).await?;
    }
    let limit = file
        .size
        .map_or(Limit::MaxBytes(options.max_bytes), Limit::Listed);
    limit.check(partial.written + opened.length.unwrap_or(0))?;
    let mut bytes = opened.bytes;
    while let Some(chunk) = within(stall, async { bytes.next().await.transpose() }).await? {
        let length = chunk.len() as u64;
        limit.check(partial.written + length)?;
        partial
            .sink
            .write(&chunk)
            .await
            .map_err(|_| writer_stopped())?;
        partial.written += length;
        progress.received(length);
    }
    match file.size {
        Some(size) if partial.written < size => Err(TransferError::transient(format!(
            "the body ended after {} of {size} bytes",
            partial.written
        ))),
        _ => Ok(()),
    }
}

/// How large a file may grow: the size its listing gave, else `--fetch-max-bytes`. A body
/// that would pass it is refused before its bytes are written, so an endless body cannot fill
/// the disk.
#[derive(Clone, Copy)]
enum Limit {
    Listed(u64),
    MaxBytes(u64),
}

impl Limit {
    fn check(self, bytes: u64) -> Result<(), TransferError> {
        match self {
            Limit::Listed(size) if bytes > size => Err(TransferError::Fatal(format!(
                "the server sends more than the {size} bytes the listing said"
            ))),
            Limit::MaxBytes(max) if bytes > max => Err(TransferError::Fatal(format!(
                "the file is larger than {max} bytes (--fetch-max-bytes; the listing gave no size); refusing to write more"
            ))),
            _ => Ok(()),
        }
    }
}

/// Starts a file over (the server ignored a range request).
async fn restart(partial: &mut Partial, progress: &Progress) -> Result<(), TransferError> {
    partial.sink.restart().await.map_err(|_| writer_stopped())?;
    progress.restarted(partial.written);
    partial.written = 0;
    Ok(())
}

fn writer_stopped() -> TransferError {
    TransferError::Fatal("cannot write the download".to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::source::FileSource;

    pub(crate) fn labels() -> ModelLabels {
        ModelLabels {
            model: "m".into(),
            version: "1".into(),
        }
    }

    /// Reuse of what `same` accepts, whose model file has `model_digest` if one is given.
    fn wanted(
        same: impl Fn(&Manifest) -> bool + Send + 'static,
        model_digest: Option<Digest>,
    ) -> Wanted {
        Wanted {
            same: Box::new(same),
            digests: model_digest
                .map(|digest| WantedDigest {
                    file: None,
                    expected: Expected {
                        digest,
                        origin: "test".into(),
                    },
                })
                .into_iter()
                .collect(),
        }
    }

    pub(crate) fn options() -> FetchOptions {
        FetchOptions {
            retry: RetryPolicy::new(0),
            timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(5),
            max_bytes: 1 << 20,
            signing: None,
        }
    }

    /// A plan of `files`, written into `source_dir`; the model file expects `expected`.
    pub(crate) fn local_plan(
        source_dir: &Path,
        files: &[(&str, &[u8])],
        expected: Option<Digest>,
    ) -> Plan {
        let files = files
            .iter()
            .map(|(name, content)| {
                std::fs::write(source_dir.join(name), content).unwrap();
                PlannedFile {
                    path: RelativePath::new(name).unwrap(),
                    source: FileSource::Local(source_dir.join(name)),
                    size: Some(content.len() as u64),
                    expected: expected
                        .filter(|_| *name == "model.onnx")
                        .map(|digest| Expected {
                            digest,
                            origin: "test".into(),
                        }),
                }
            })
            .collect();
        Plan {
            name: "m".into(),
            version: "1".into(),
            reference: "m/1".into(),
            source: source_dir.display().to_string(),
            model_file: RelativePath::new("model.onnx").unwrap(),
            files,
            signature: None,
            local_dir: None,
        }
    }

    #[tokio::test]
    async fn downloads_verifies_and_writes_the_manifest_last() {
        let source = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let plan = local_plan(
            source.path(),
            &[("model.onnx", b"graph"), ("weights.bin", b"w")],
            Some(Digest::of_bytes(b"graph")),
        );
        let manifest = fetch(&plan, dest.path(), &options(), &labels())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dest.path().join("model.onnx")).unwrap(),
            b"graph"
        );
        assert_eq!(Manifest::read(dest.path()).unwrap().unwrap(), manifest);
        assert_eq!(manifest.files.len(), 2);
        assert!(!dest.path().join(IN_PROGRESS).exists());
        assert!(cached(dest.path(), &wanted(|m| m.version == "1", None), None).is_some());
        assert!(cached(dest.path(), &wanted(|m| m.version == "2", None), None).is_none());
    }

    #[tokio::test]
    async fn a_digest_mismatch_leaves_no_model_behind() {
        let source = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let plan = local_plan(
            source.path(),
            &[("model.onnx", b"tampered")],
            Some(Digest::of_bytes(b"graph")),
        );
        let err = fetch(&plan, dest.path(), &options(), &labels())
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&Digest::of_bytes(b"graph").to_string()),
            "{message}"
        );
        assert!(
            message.contains(&Digest::of_bytes(b"tampered").to_string()),
            "{message}"
        );
        assert!(!dest.path().join("model.onnx").exists());
        assert!(Manifest::read(dest.path()).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_partial_download_is_cleared_but_foreign_directories_are_not() {
        let source = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        std::fs::write(dest.path().join(IN_PROGRESS), b"earlier").unwrap();
        std::fs::write(dest.path().join("stale.bin"), b"half").unwrap();
        let plan = local_plan(source.path(), &[("model.onnx", b"graph")], None);
        fetch(&plan, dest.path(), &options(), &labels())
            .await
            .unwrap();
        assert!(!dest.path().join("stale.bin").exists());

        let foreign = tempfile::tempdir().unwrap();
        std::fs::write(foreign.path().join("precious.txt"), b"keep me").unwrap();
        let err = fetch(&plan, foreign.path(), &options(), &labels())
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::NotOurs { .. }), "{err}");
        assert!(foreign.path().join("precious.txt").exists());
    }

    /// A complete download of a one-file plan whose model is `graph`.
    async fn fetched_graph() -> (tempfile::TempDir, tempfile::TempDir) {
        let source = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let plan = local_plan(source.path(), &[("model.onnx", b"graph")], None);
        fetch(&plan, dest.path(), &options(), &labels())
            .await
            .unwrap();
        (source, dest)
    }

    #[tokio::test]
    async fn a_tampered_cache_is_not_reused() {
        let (_source, dest) = fetched_graph().await;
        std::fs::write(dest.path().join("model.onnx"), b"GRAPH").unwrap();
        assert!(cached(dest.path(), &wanted(|_| true, None), None).is_none());
    }

    #[tokio::test]
    async fn a_download_whose_digests_contradict_the_expected_ones_is_not_reused() {
        let (_source, dest) = fetched_graph().await;
        let right = Digest::of_bytes(b"graph");
        assert!(cached(dest.path(), &wanted(|_| true, Some(right)), None).is_some());
        let wrong = Digest::of_bytes(b"other");
        assert!(cached(dest.path(), &wanted(|_| true, Some(wrong)), None).is_none());
    }
}
