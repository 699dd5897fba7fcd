//! `pinserve promote`: pins a model version and its digest in a k8s/services overlay, the way an
//! image digest pins a container's bytes, so that the git commit says exactly what will run.
//!
//! The overlay is checked before anything changes: it must pin one model, the one `--model`
//! names; an eval report must be for this version and have passed; every digest that is known
//! (`--sha256`, the registry's `sha256` tag, the report's) must agree. The change is then written
//! in place ([`overlay`]), or shown (`--dry-run`), or committed on a new branch, pushed and
//! proposed as a pull request ([`git`], [`forge`]). Promoting what is pinned already changes
//! nothing; rolling back is promoting an older version.

mod forge;
mod git;
pub(crate) mod overlay;
mod report;

use std::path::{Path, PathBuf};

use self::{
    forge::{Forge, PullRequest},
    git::Repo,
    overlay::{MODEL_SHA256, Overlay},
    report::Report,
};
pub(crate) use self::{
    forge::{ForgeError, ForgeKind},
    git::GitError,
    overlay::OverlayError,
    report::ReportError,
};
use crate::{
    config::PromoteConfig,
    registry::{
        Digest, RegistryError, Selector,
        mlflow::{METADATA_TIMEOUT, MlflowClient},
        retry::RetryPolicy,
    },
};

const KUSTOMIZATION: &str = "kustomization.yaml";

/// Why a promotion was refused or failed. Every refusal comes before anything changes; a push or
/// pull request that fails leaves the commit on its branch, where a rerun picks it up.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("{} is not a service overlay (k8s/services/SERVICE/ENV): {reason}", dir.display())]
    NotAnOverlay { dir: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Overlay { path: PathBuf, source: OverlayError },
    #[error("--model {given}, but the overlay pins model {pinned}")]
    OtherModel { given: String, pinned: String },
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("the digests disagree: {first_origin} says {first}, {origin} says {digest}")]
    DigestMismatch {
        first_origin: &'static str,
        first: Digest,
        origin: &'static str,
        digest: Digest,
    },
    #[error(
        "the overlay pins {MODEL_SHA256}, and version {version} needs its digest: give --sha256, \
         --sha256-from-registry or a --report with a sha256"
    )]
    NoDigest { version: String },
    #[error(
        "the overlay does not pin {MODEL_SHA256}: add its guarded patch (see k8s/README.md) to \
         pin a digest"
    )]
    NoDigestPin,
    #[error("--sha256-from-registry: {0}")]
    Registry(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("--open-pr: {0}")]
    Forge(#[from] ForgeError),
}

/// The overlay being promoted: where it is and what it pins now.
struct Target {
    service: String,
    env: String,
    path: PathBuf,
    overlay: Overlay,
}

/// The change a promotion makes.
struct Change {
    from: String,
    to: String,
    sha256: Option<String>,
    edited: Overlay,
}

/// Runs the promotion; what it prints on stdout (one summary line, after the diff for
/// `--dry-run`).
pub async fn run(config: &PromoteConfig) -> Result<String, PromoteError> {
    let (target, repo) = load(config).await?;
    let report = config.report.as_deref().map(Report::read).transpose()?;
    let change = plan(config, &target, report.as_ref()).await?;
    if change.edited.text() == target.overlay.text() {
        return Ok(format!(
            "{} {} already pins version {}{}: nothing to do",
            target.service,
            target.env,
            change.to,
            digest_note(&change)
        ));
    }
    let summary = summary(&target, &change);
    tracing::info!(
        service = target.service,
        env = target.env,
        from = change.from,
        to = change.to,
        sha256 = change.sha256,
        "promoting"
    );
    if config.dry_run {
        let shown = target.path.display().to_string();
        let diff = overlay::diff(&shown, target.overlay.text(), change.edited.text());
        return Ok(format!("{diff}would have {summary}"));
    }
    match repo {
        None => write(&target.path, change.edited.text()).map(|()| summary),
        Some(repo) => {
            let message = commit_message(&target, &change, report.as_ref());
            let record = Record::new(config, message)?;
            publish(config, &target, &change, &record, &repo).await
        }
    }
}

/// The overlay and what it pins: as committed at HEAD with `--commit` (the repository and the
/// overlay's folder in it come along), else as the file is now.
async fn load(config: &PromoteConfig) -> Result<(Target, Option<(Repo, String)>), PromoteError> {
    let (service, env) = service_and_env(&config.overlay)?;
    let path = config.overlay.join(KUSTOMIZATION);
    let repo = match config.commit {
        true => Some(Repo::open(&config.overlay).await?),
        false => None,
    };
    let text = match &repo {
        Some((repo, prefix)) => repo.committed(&format!("{prefix}{KUSTOMIZATION}")).await?,
        None => std::fs::read_to_string(&path).map_err(|err| overlay_error(&path, err))?,
    };
    let overlay = Overlay::parse(text).map_err(|source| PromoteError::Overlay {
        path: path.clone(),
        source,
    })?;
    let target = Target {
        service,
        env,
        path,
        overlay,
    };
    Ok((target, repo))
}

/// SERVICE and ENV: the overlay folder's parent's name and its own.
fn service_and_env(dir: &Path) -> Result<(String, String), PromoteError> {
    let not_an_overlay = |reason: String| PromoteError::NotAnOverlay {
        dir: dir.to_owned(),
        reason,
    };
    let full = dir
        .canonicalize()
        .map_err(|err| not_an_overlay(err.to_string()))?;
    let name = |path: Option<&Path>| {
        path.and_then(Path::file_name)
            .map(|name| name.to_string_lossy().into_owned())
    };
    match (name(full.parent()), name(Some(&full))) {
        (Some(service), Some(env)) => Ok((service, env)),
        _ => Err(not_an_overlay("it has no SERVICE/ENV folders".to_owned())),
    }
}

fn overlay_error(path: &Path, err: std::io::Error) -> PromoteError {
    PromoteError::Overlay {
        path: path.to_owned(),
        source: OverlayError::Unreadable(err.to_string()),
    }
}

/// Checks what is asked against the overlay and the report, and edits the overlay's text.
async fn plan(
    config: &PromoteConfig,
    target: &Target,
    report: Option<&Report>,
) -> Result<Change, PromoteError> {
    let pinned = target.overlay.name.value();
    if let Some(given) = config.model.as_deref().filter(|given| *given != pinned) {
        return Err(PromoteError::OtherModel {
            given: given.to_owned(),
            pinned: pinned.to_owned(),
        });
    }
    if let Some(report) = report {
        report.check(pinned, &config.version)?;
    }
    let digest = agreed_digest(config, pinned, report).await?;
    let from = target.overlay.version.value().to_owned();
    let sha256 = digest_to_write(&target.overlay, &config.version, digest)?;
    let edited = target
        .overlay
        .edit(&config.version, sha256.as_deref())
        .map_err(|source| PromoteError::Overlay {
            path: target.path.clone(),
            source,
        })?;
    let sha256 = edited.sha256.as_ref().map(|pin| pin.value().to_owned());
    Ok(Change {
        from,
        to: config.version.clone(),
        sha256,
        edited,
    })
}

/// The digest to write over the pinned one: none when it is unchanged or unknown and the
/// version stays; a new version of an overlay that pins digests must come with one.
fn digest_to_write(
    overlay: &Overlay,
    version: &str,
    digest: Option<Digest>,
) -> Result<Option<String>, PromoteError> {
    match (digest, overlay.sha256.as_ref()) {
        (Some(_), None) => Err(PromoteError::NoDigestPin),
        (None, Some(_)) if overlay.version.value() != version => Err(PromoteError::NoDigest {
            version: version.to_owned(),
        }),
        (Some(digest), Some(pin)) if pin.value().parse() == Ok(digest) => Ok(None),
        (digest, _) => Ok(digest.map(|digest| digest.to_string())),
    }
}

/// The digest every known source agrees on: `--sha256`, the registry's tag, the report's.
async fn agreed_digest(
    config: &PromoteConfig,
    model: &str,
    report: Option<&Report>,
) -> Result<Option<Digest>, PromoteError> {
    let mut known: Vec<(&'static str, Digest)> = Vec::new();
    if let Some(digest) = config.sha256 {
        known.push(("--sha256", digest));
    }
    if config.sha256_from_registry {
        known.push(("the registry", registry_digest(config, model).await?));
    }
    if let Some(digest) = report.and_then(Report::sha256) {
        known.push(("the report", digest));
    }
    let Some(&(first_origin, first)) = known.first() else {
        return Ok(None);
    };
    match known.iter().find(|(_, digest)| *digest != first) {
        Some(&(origin, digest)) => Err(PromoteError::DigestMismatch {
            first_origin,
            first,
            origin,
            digest,
        }),
        None => Ok(Some(first)),
    }
}

/// The `sha256` tag of the version in the MLflow Model Registry, read with the client `fetch`
/// uses (the same authentication variables apply).
async fn registry_digest(config: &PromoteConfig, model: &str) -> Result<Digest, PromoteError> {
    let failed = |message: String| PromoteError::Registry(message);
    let tracking = crate::config::tracking_uri(config.registry_uri.as_ref().map(url::Url::as_str))
        .map_err(|err| failed(err.to_string()))?
        .ok_or_else(|| failed("give --registry-uri or MLFLOW_TRACKING_URI".to_owned()))?;
    let client = MlflowClient::from_env(tracking, RetryPolicy::new(3), METADATA_TIMEOUT)
        .map_err(|err: RegistryError| failed(err.to_string()))?;
    let selector = Selector::Version(config.version.clone());
    let version = client
        .resolve(model, &selector)
        .await
        .map_err(|err| failed(format!("model {model} version {}: {err}", config.version)))?;
    let tag = version.tag("sha256").ok_or_else(|| {
        failed(format!(
            "model {model} version {} has no sha256 tag",
            config.version
        ))
    })?;
    tag.parse()
        .map_err(|err| failed(format!("its sha256 tag: {err}")))
}

/// Replaces the file through a sibling temporary file, so it is never seen half written.
fn write(path: &Path, text: &str) -> Result<(), PromoteError> {
    let failed = |source| PromoteError::Write {
        path: path.to_owned(),
        source,
    };
    let scratch = path.with_extension("yaml.pinserve-promote");
    std::fs::write(&scratch, text).map_err(failed)?;
    std::fs::rename(&scratch, path).map_err(failed)
}

fn is_rollback(change: &Change) -> bool {
    match (change.from.parse::<u64>(), change.to.parse::<u64>()) {
        (Ok(from), Ok(to)) => to < from,
        _ => false,
    }
}

/// The pinned digest, cut short as `git log --oneline` cuts commits.
fn digest_note(change: &Change) -> String {
    match change.sha256.as_deref().filter(|digest| !digest.is_empty()) {
        Some(digest) => format!(" (sha256 {}…)", digest.chars().take(12).collect::<String>()),
        None => " (sha256 not pinned)".to_owned(),
    }
}

/// `promoted fraud-detection staging: version 8 -> 9 (sha256 ab12…)`.
fn summary(target: &Target, change: &Change) -> String {
    let verb = if is_rollback(change) {
        "rolled back"
    } else {
        "promoted"
    };
    format!(
        "{verb} {} {}: version {} -> {}{}",
        target.service,
        target.env,
        change.from,
        change.to,
        digest_note(change)
    )
}

/// The commit's message: a title, the versions and digest, and the eval summary.
fn commit_message(target: &Target, change: &Change, report: Option<&Report>) -> String {
    let verb = if is_rollback(change) {
        "Roll back"
    } else {
        "Promote"
    };
    let (service, env) = (&target.service, &target.env);
    let model = target.overlay.name.value();
    let shown = |digest: Option<&str>| {
        let digest = digest.filter(|digest| !digest.is_empty());
        digest.unwrap_or("not pinned").to_owned()
    };
    let old_digest = shown(target.overlay.sha256.as_ref().map(|pin| pin.value()));
    let new_digest = shown(change.sha256.as_deref());
    let evaluation = report.map_or_else(
        || "No evaluation report was given.".to_owned(),
        Report::summary,
    );
    format!(
        "{verb} {service} {env} to model version {to}\n\n\
         {service} ({env}): model {model} version {from} -> {to}\n\
         sha256: {old_digest} -> {new_digest}\n\n\
         {evaluation}\n",
        from = change.from,
        to = change.to,
    )
}

/// What `--commit` and `--open-pr` write: the commit message, and the pull request's body
/// (`--report-md`, else the message's body).
struct Record {
    message: String,
    body: String,
}

impl Record {
    /// Read before anything changes, so a missing `--report-md` stops the promotion early.
    fn new(config: &PromoteConfig, message: String) -> Result<Record, PromoteError> {
        let body = match &config.report_md {
            Some(path) => std::fs::read_to_string(path).map_err(|err| {
                PromoteError::Report(ReportError::Unreadable {
                    path: path.clone(),
                    reason: err.to_string(),
                })
            })?,
            None => message
                .split_once("\n\n")
                .map_or("", |(_, body)| body)
                .to_owned(),
        };
        Ok(Record { message, body })
    }

    fn title(&self) -> &str {
        self.message.lines().next().unwrap_or_default()
    }
}

/// `--commit`, `--push` and `--open-pr`: the summary line grows with each step taken.
async fn publish(
    config: &PromoteConfig,
    target: &Target,
    change: &Change,
    record: &Record,
    (repo, prefix): &(Repo, String),
) -> Result<String, PromoteError> {
    let branch = config.branch.clone().unwrap_or_else(|| {
        format!(
            "pinserve/promote/{}-{}-{}",
            target.service, target.env, change.to
        )
    });
    let path = format!("{prefix}{KUSTOMIZATION}");
    let made = repo
        .commit_on_branch(&branch, &path, change.edited.text(), &record.message)
        .await?;
    tracing::info!(%branch, new_commit = made, "promotion committed");
    let committed = if made {
        "committed"
    } else {
        "already committed"
    };
    let mut summary = format!(
        "{}, {committed} on branch {branch}",
        summary(target, change)
    );
    let Some(remote) = &config.push else {
        return Ok(summary);
    };
    repo.push(remote, &branch).await?;
    summary += &format!(", pushed to {remote}");
    if let Some(kind) = config.open_pr {
        let opened = open_pull_request(config, kind, (repo, remote), &branch, record).await?;
        let verb = if opened.created {
            "opened"
        } else {
            "already open"
        };
        summary += &format!(", pull request {verb}: {}", opened.url);
    }
    Ok(summary)
}

/// The open pull request from `branch`, or a new one.
async fn open_pull_request(
    config: &PromoteConfig,
    kind: ForgeKind,
    (repo, remote): (&Repo, &str),
    branch: &str,
    record: &Record,
) -> Result<forge::Opened, PromoteError> {
    let repository = forge_repository(config, kind, repo, remote).await?;
    let api = config.forge_url.clone().expect("clap requires --forge-url");
    let base = config.pr_base.as_deref().expect("clap requires --pr-base");
    let pr = PullRequest {
        repo: &repository,
        head: branch,
        base,
        title: record.title(),
        body: &record.body,
    };
    tracing::info!(
        repository,
        branch,
        base,
        "looking up or opening the pull request"
    );
    Ok(Forge::from_env(kind, api)?.open(&pr).await?)
}

/// `--forge-repo`, else the repository the push remote's URL names.
async fn forge_repository(
    config: &PromoteConfig,
    kind: ForgeKind,
    repo: &Repo,
    remote: &str,
) -> Result<String, PromoteError> {
    if let Some(repository) = &config.forge_repo {
        return Ok(repository.clone());
    }
    let url = repo.remote_url(remote).await?;
    Ok(kind
        .repo_of_remote(&url)
        .ok_or(ForgeError::BadRepo { repo: url })?)
}
