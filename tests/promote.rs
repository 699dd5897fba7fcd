//! `pinserve promote` with real git and kustomize: a copy of the repository's k8s/ tree committed
//! in a scratch repository, a bare repository as its remote over file:// and over `git daemon`
//! on loopback, and kubectl's kustomize rendering what promote wrote.
//!
//! No forge can run here, so pull requests go to the one fake of this suite, [`FakeForge`]: an
//! axum server on 127.0.0.1:0 implementing exactly the endpoints pinserve documents (GitHub and
//! Gitea `GET`/`POST /repos/{owner}/{repo}/pulls`, GitLab `GET`/`POST
//! /projects/{id}/merge_requests`) and checking each call's method, path, token header and JSON
//! body as the forges would refuse a wrong one.

mod common;
// Only the renderer is used here; the validators are tests/k8s_manifests.rs's.
#[allow(dead_code)]
mod k8s;

use std::{
    collections::HashMap,
    ffi::OsStr,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path as UrlPath, Query, State},
    http::{HeaderMap, Method, StatusCode},
    routing::get,
};
use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;

use common::{pinserve_async, stderr};

const STAGING: &str = "k8s/services/fraud-detection/staging";
const OVERLAY_FILE: &str = "k8s/services/fraud-detection/staging/kustomization.yaml";
/// What k8s/ pins for fraud-detection in staging: version 8, the tabular_mlp fixture's digest.
const PINNED: &str = "5cd1b1708b47b75aa785694abd47daf3e9c168b62ffc052bf805d7e5909e4192";
const DIGEST_9: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const DIGEST_7: &str = "7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730";
const BRANCH_9: &str = "pinserve/promote/fraud-detection-staging-9";
const TOKEN: &str = "tok-s3cr3t-never-logged";

/// A deployment repository: k8s/ committed on `main`, pushed to a bare `origin`.
struct Deploy {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    /// Where bare remotes live: `acme/deploy.git` below it.
    remotes: PathBuf,
}

impl Deploy {
    fn new() -> Deploy {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("deploy");
        let remotes = dir.path().join("remotes");
        copy_tree(&k8s::k8s_dir(), &repo.join("k8s"));
        git(&repo, &["init", "--quiet", "--initial-branch=main"]);
        for (key, value) in [
            ("user.name", "Promoter"),
            ("user.email", "promoter@example.com"),
            ("commit.gpgsign", "false"),
        ] {
            git(&repo, &["config", key, value]);
        }
        git(&repo, &["add", "k8s"]);
        git(&repo, &["commit", "--quiet", "-m", "k8s"]);
        let bare = remotes.join("acme/deploy.git");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "--quiet", "--bare"]);
        let url = format!("file://{}", bare.display());
        git(&repo, &["remote", "add", "origin", &url]);
        git(&repo, &["push", "--quiet", "origin", "main"]);
        Deploy {
            _dir: dir,
            repo,
            remotes,
        }
    }

    fn bare(&self) -> PathBuf {
        self.remotes.join("acme/deploy.git")
    }

    fn git(&self, args: &[&str]) -> String {
        git(&self.repo, args)
    }

    /// `pinserve promote ARGS` in the repository, tokens for the fake forge set.
    fn command(&self, args: &[impl AsRef<OsStr>]) -> tokio::process::Command {
        let mut command = pinserve_async();
        command.current_dir(&self.repo).arg("promote").args(args);
        for variable in ["GITHUB_TOKEN", "GITLAB_TOKEN", "GITEA_TOKEN"] {
            command.env(variable, TOKEN);
        }
        command.env_remove("MLFLOW_TRACKING_URI");
        command
    }

    async fn promote(&self, args: &[impl AsRef<OsStr>]) -> Output {
        self.command(args).output().await.unwrap()
    }

    fn overlay_text(&self) -> String {
        std::fs::read_to_string(self.repo.join(OVERLAY_FILE)).unwrap()
    }

    /// Writes an eval report `name` beside the repository; its path.
    fn report(&self, name: &str, report: Value) -> String {
        let path = self.remotes.with_file_name(name);
        std::fs::write(&path, report.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `git ARGS` in `dir`, with no user or system configuration; its trimmed output.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", stderr(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "promote failed ({:?}):\n{}",
        output.status.code(),
        stderr(output)
    );
}

/// The refusal's exit code and its message, which must contain `wanted`.
fn assert_refused(output: &Output, code: i32, wanted: &str) {
    assert_eq!(output.status.code(), Some(code), "{}", stderr(output));
    assert!(
        stderr(output).contains(wanted),
        "expected {wanted:?} in:\n{}",
        stderr(output)
    );
    assert!(stdout(output).is_empty(), "{}", stdout(output));
}

/// The fetch-model init container's environment in the rendered overlay.
fn rendered_env(overlay: &Path) -> HashMap<String, String> {
    let docs = k8s::try_render(overlay).unwrap_or_else(|err| panic!("kustomize: {err}"));
    let rollout = docs.iter().find(|doc| doc["kind"] == "Rollout").unwrap();
    let init = &rollout["spec"]["template"]["spec"]["initContainers"][0];
    let env = init["env"].as_sequence().unwrap();
    let text = |value: &Yaml| value.as_str().unwrap_or_default().to_owned();
    env.iter()
        .map(|var| (text(&var["name"]), text(&var["value"])))
        .collect()
}

#[tokio::test]
async fn promotes_in_place_with_a_two_line_diff_that_renders() {
    let deploy = Deploy::new();
    let before = deploy.overlay_text();
    let output = deploy
        .promote(&["--overlay", STAGING, "--version", "9", "--sha256", DIGEST_9])
        .await;
    assert_success(&output);
    assert_eq!(
        stdout(&output),
        "promoted fraud-detection staging: version 8 -> 9 (sha256 9f86d081884c…)\n"
    );
    assert_eq!(
        deploy.git(&["diff", "--numstat"]),
        format!("2\t2\t{OVERLAY_FILE}")
    );
    let expected = before
        .replace("value: \"8\"", "value: \"9\"")
        .replace(PINNED, DIGEST_9);
    assert_eq!(deploy.overlay_text(), expected);
    let env = rendered_env(&deploy.repo.join(STAGING));
    assert_eq!(env["MODEL_NAME"], "fraud-detection");
    assert_eq!(env["MODEL_VERSION"], "9");
    assert_eq!(env["MODEL_SHA256"], DIGEST_9);
    assert!(!stderr(&output).contains(TOKEN), "a token reached the logs");
}

#[tokio::test]
async fn dry_run_prints_the_diff_and_changes_nothing() {
    let deploy = Deploy::new();
    let args = ["--overlay", STAGING, "--version", "9", "--sha256", DIGEST_9];
    let output = deploy.promote(&[&args[..], &["--dry-run"]].concat()).await;
    assert_success(&output);
    let printed = stdout(&output);
    assert!(
        printed.contains("-        value: \"8\"\n+        value: \"9\"\n"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("+        value: \"{DIGEST_9}\"\n")),
        "{printed}"
    );
    assert!(printed.ends_with(
        "would have promoted fraud-detection staging: version 8 -> 9 (sha256 9f86d081884c…)\n"
    ));
    assert_eq!(deploy.git(&["status", "--porcelain"]), "");
    // The diff is the change itself: applied, it is what promote writes.
    let diff = printed.rsplit_once("would have").unwrap().0;
    let mut apply = Command::new("git")
        .current_dir(&deploy.repo)
        .args(["apply", "--unidiff-zero", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(diff.as_bytes())
        .unwrap();
    assert!(apply.wait().unwrap().success());
    let applied = deploy.overlay_text();
    deploy.git(&["checkout", "--", OVERLAY_FILE]);
    assert_success(&deploy.promote(&args).await);
    assert_eq!(deploy.overlay_text(), applied);
}

#[tokio::test]
async fn promoting_what_is_pinned_changes_nothing() {
    let deploy = Deploy::new();
    for extra in [&[][..], &["--commit"][..]] {
        let args = ["--overlay", STAGING, "--version", "8", "--sha256", PINNED];
        let output = deploy.promote(&[&args[..], extra].concat()).await;
        assert_success(&output);
        assert_eq!(
            stdout(&output),
            "fraud-detection staging already pins version 8 (sha256 5cd1b1708b47…): nothing to do\n"
        );
    }
    // Without a digest, the pinned one stays.
    let output = deploy
        .promote(&["--overlay", STAGING, "--version", "8"])
        .await;
    assert_success(&output);
    assert_eq!(deploy.git(&["status", "--porcelain"]), "");
    assert_eq!(deploy.git(&["branch", "--list"]), "* main");
}

#[tokio::test]
async fn rolling_back_is_promoting_an_older_version() {
    let deploy = Deploy::new();
    let args = ["--overlay", STAGING, "--version", "7", "--sha256", DIGEST_7];
    let output = deploy.promote(&args).await;
    assert_success(&output);
    assert_eq!(
        stdout(&output),
        "rolled back fraud-detection staging: version 8 -> 7 (sha256 7d865e959b24…)\n"
    );
    assert_eq!(
        rendered_env(&deploy.repo.join(STAGING))["MODEL_VERSION"],
        "7"
    );
}

impl Deploy {
    /// `pinserve promote` of staging to version 9, with `extra`.
    async fn promote_9(&self, extra: &[&str]) -> Output {
        let mut args = vec!["--overlay", STAGING, "--version", "9"];
        args.extend_from_slice(extra);
        self.promote(&args).await
    }
}

#[tokio::test]
async fn refuses_another_model_or_a_version_without_its_digest() {
    let deploy = Deploy::new();
    let before = deploy.overlay_text();
    let output = deploy
        .promote_9(&["--sha256", DIGEST_9, "--model", "churn-prediction"])
        .await;
    assert_refused(
        &output,
        1,
        "--model churn-prediction, but the overlay pins model fraud-detection",
    );
    let output = deploy.promote_9(&[]).await;
    assert_refused(&output, 1, "version 9 needs its digest");
    let output = deploy.promote_9(&["--sha256-from-registry"]).await;
    assert_refused(
        &output,
        1,
        "--sha256-from-registry: give --registry-uri or MLFLOW_TRACKING_URI",
    );
    assert_eq!(deploy.overlay_text(), before);
}

#[tokio::test]
async fn refuses_a_report_for_another_version_or_that_failed_or_another_digest() {
    let deploy = Deploy::new();
    let before = deploy.overlay_text();
    let report = |model: &str, version: &str, passed: bool, sha256: &str| {
        let name = format!("{model}-{version}-{passed}-{}.json", &sha256[..4]);
        let report = json!({"model": model, "version": version, "sha256": sha256,
                            "passed": passed, "metrics": {"auc": 0.91}});
        deploy.report(&name, report)
    };
    for (file, wanted) in [
        (
            report("churn-prediction", "9", true, DIGEST_9),
            "is for model churn-prediction version 9, not for fraud-detection version 9",
        ),
        (
            report("fraud-detection", "10", true, DIGEST_9),
            "is for model fraud-detection version 10",
        ),
        (
            report("fraud-detection", "9", false, DIGEST_9),
            "did not pass",
        ),
    ] {
        assert_refused(&deploy.promote_9(&["--report", &file]).await, 1, wanted);
    }
    let file = report("fraud-detection", "9", true, DIGEST_7);
    let output = deploy
        .promote_9(&["--report", &file, "--sha256", DIGEST_9])
        .await;
    assert_refused(
        &output,
        1,
        &format!("the digests disagree: --sha256 says {DIGEST_9}, the report says {DIGEST_7}"),
    );
    assert_eq!(deploy.overlay_text(), before);
}

/// Usage errors are clap's, with its exit code.
#[tokio::test]
async fn usage_errors_exit_with_2() {
    let deploy = Deploy::new();
    for (extra, wanted) in [
        (&["--push", "origin"][..], "--commit"),
        (
            &["--commit", "--push", "origin", "--open-pr", "github"],
            "--forge-url",
        ),
        (
            &["--sha256", DIGEST_9, "--sha256-from-registry"],
            "cannot be used with",
        ),
        (&["--dry-run", "--commit"], "cannot be used with"),
    ] {
        assert_refused(&deploy.promote_9(extra).await, 2, wanted);
    }
    let output = deploy
        .promote(&["--overlay", STAGING, "--version", "../9"])
        .await;
    assert_refused(&output, 2, "not a model version");
}

#[tokio::test]
async fn refuses_an_overlay_that_does_not_pin_exactly_one_model() {
    let deploy = Deploy::new();
    let twice = deploy.overlay_text()
        + "      - op: test\n        path: /spec/template/spec/initContainers/0/env/3/name\n        value: MODEL_NAME\n\
           \x20     - op: replace\n        path: /spec/template/spec/initContainers/0/env/3/value\n        value: another-model\n";
    std::fs::write(deploy.repo.join(OVERLAY_FILE), &twice).unwrap();
    let args = ["--overlay", STAGING, "--version", "9", "--sha256", DIGEST_9];
    let output = deploy.promote(&args).await;
    assert_refused(
        &output,
        1,
        "it pins MODEL_NAME 2 times; an overlay must pin exactly one model",
    );
    let output = deploy
        .promote(&["--overlay", "k8s/overlays/staging", "--version", "9"])
        .await;
    assert_refused(&output, 1, "it pins MODEL_NAME 0 times");
    // With --commit, the committed overlay is promoted, so uncommitted edits are refused.
    let output = deploy.promote(&[&args[..], &["--commit"]].concat()).await;
    assert_refused(&output, 1, "has uncommitted changes");
    assert_eq!(deploy.overlay_text(), twice);
}

/// Which forge a [`FakeForge`] route plays.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Github,
    Gitea,
    Gitlab,
}

/// One API call the fake received.
#[derive(Debug, Clone)]
struct Call {
    kind: Kind,
    method: Method,
    repo: String,
    query: HashMap<String, String>,
    body: Value,
}

#[derive(Clone, Default)]
struct FakeForge {
    calls: Arc<Mutex<Vec<Call>>>,
    open: Arc<Mutex<Vec<Value>>>,
}

impl FakeForge {
    /// Serves GitHub under /api/v3, Gitea under /api/v1 and GitLab under /api/v4.
    async fn start() -> (FakeForge, SocketAddr) {
        let forge = FakeForge::default();
        let pulls = |kind| {
            move |state: State<FakeForge>,
                  method: Method,
                  UrlPath((owner, repo)): UrlPath<(String, String)>,
                  query: Query<HashMap<String, String>>,
                  headers: HeaderMap,
                  body: Bytes| async move {
                state.0.answer(
                    kind,
                    method,
                    format!("{owner}/{repo}"),
                    query.0,
                    &headers,
                    &body,
                )
            }
        };
        let merge_requests = move |state: State<FakeForge>,
                                   method: Method,
                                   UrlPath(id): UrlPath<String>,
                                   query: Query<HashMap<String, String>>,
                                   headers: HeaderMap,
                                   body: Bytes| async move {
            state
                .0
                .answer(Kind::Gitlab, method, id, query.0, &headers, &body)
        };
        let app = Router::new()
            .route(
                "/api/v3/repos/{owner}/{repo}/pulls",
                get(pulls(Kind::Github)).post(pulls(Kind::Github)),
            )
            .route(
                "/api/v1/repos/{owner}/{repo}/pulls",
                get(pulls(Kind::Gitea)).post(pulls(Kind::Gitea)),
            )
            .route(
                "/api/v4/projects/{id}/merge_requests",
                get(merge_requests).post(merge_requests),
            )
            .with_state(forge.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (forge, address)
    }

    fn answer(
        &self,
        kind: Kind,
        method: Method,
        repo: String,
        query: HashMap<String, String>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (StatusCode, Json<Value>) {
        let (header, expected) = match kind {
            Kind::Github => ("authorization", format!("Bearer {TOKEN}")),
            Kind::Gitea => ("authorization", format!("token {TOKEN}")),
            Kind::Gitlab => ("private-token", TOKEN.to_owned()),
        };
        if headers.get(header).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "Bad credentials"})),
            );
        }
        if repo != "acme/deploy" {
            return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"})));
        }
        let body: Value = if method == Method::POST {
            serde_json::from_slice(body).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        self.calls.lock().unwrap().push(Call {
            kind,
            method: method.clone(),
            repo,
            query: query.clone(),
            body: body.clone(),
        });
        match method {
            Method::GET => (StatusCode::OK, Json(self.list(kind, &query))),
            _ => self.create(kind, body),
        }
    }

    /// Open pull requests, filtered as the forge filters them: Gitea ignores `head`.
    fn list(&self, kind: Kind, query: &HashMap<String, String>) -> Value {
        let state = query.get("state").map(String::as_str);
        let wanted_state = if kind == Kind::Gitlab {
            "opened"
        } else {
            "open"
        };
        let open = self.open.lock().unwrap();
        let listed: Vec<Value> = open
            .iter()
            .filter(|pr| state == Some(wanted_state) && pr["kind"] == format!("{kind:?}"))
            .filter(|pr| match kind {
                Kind::Github => query.get("head").is_some_and(|head| {
                    *head == format!("acme:{}", pr["head"]["ref"].as_str().unwrap())
                }),
                Kind::Gitea => true,
                Kind::Gitlab => query
                    .get("source_branch")
                    .is_some_and(|b| pr["source_branch"] == b.as_str()),
            })
            .cloned()
            .collect();
        Value::from(listed)
    }

    fn create(&self, kind: Kind, body: Value) -> (StatusCode, Json<Value>) {
        let fields: &[&str] = match kind {
            Kind::Gitlab => &["source_branch", "target_branch", "title", "description"],
            _ => &["head", "base", "title", "body"],
        };
        if !fields
            .iter()
            .all(|field| body[field].as_str().is_some_and(|v| !v.is_empty()))
        {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"message": "Validation Failed"})),
            );
        }
        let mut open = self.open.lock().unwrap();
        let number = open.len() + 1;
        let created = match kind {
            Kind::Gitlab => {
                json!({"kind": "Gitlab", "iid": number, "source_branch": body["source_branch"],
                                   "web_url": format!("https://gitlab.example/acme/deploy/-/merge_requests/{number}")})
            }
            _ => {
                json!({"kind": format!("{kind:?}"), "number": number, "head": {"ref": body["head"]},
                        "html_url": format!("https://forge.example/acme/deploy/pull/{number}")})
            }
        };
        open.push(created.clone());
        (StatusCode::CREATED, Json(created))
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// `git daemon` serving `base` (receive-pack on, so pushes work) on a free loopback port.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        // git daemon cannot report a kernel-chosen port, so a free one is found first.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("git")
            .args([
                "daemon",
                "--verbose",
                "--export-all",
                "--enable=receive-pack",
                "--reuseaddr",
                "--informative-errors",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start git daemon");
        // With --verbose, git daemon logs "Ready to rumble" once it listens; the rest of its log
        // is drained so that it never blocks writing it.
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = log
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("Ready to rumble"));
        assert!(ready, "git daemon exited before listening on {port}");
        std::thread::spawn(move || log.for_each(drop));
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Promotes staging to version 9 with `extra`, committed, pushed to `remote`, and proposed on
/// `forge` at `api` for main.
fn pull_request_args(remote: &str, forge: &str, api: &str, extra: &[&str]) -> Vec<String> {
    let common = [
        "--overlay",
        STAGING,
        "--version",
        "9",
        "--commit",
        "--push",
        remote,
    ];
    let forge = ["--open-pr", forge, "--forge-url", api, "--pr-base", "main"];
    [&common[..], &forge, extra]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// The commit on `branch` in the bare remote, and its change against main.
fn pushed(deploy: &Deploy, branch: &str) -> (String, String) {
    let bare = deploy.bare();
    let message = git(&bare, &["log", "-1", "--format=%B", branch]);
    let numstat = git(&bare, &["diff", "--numstat", "main", branch]);
    (message, numstat)
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_pushes_and_opens_one_pull_request_on_github() {
    let deploy = Deploy::new();
    let (forge, address) = FakeForge::start().await;
    let report = deploy.report(
        "eval-report.json",
        json!({"model": "fraud-detection", "version": 9, "sha256": DIGEST_9,
                                      "passed": true, "metrics": {"auc": 0.93}}),
    );
    let api = format!("http://{address}/api/v3");
    let args = pull_request_args("origin", "github", &api, &["--report", &report]);
    let output = deploy.promote(&args).await;
    assert_success(&output);
    assert_eq!(
        stdout(&output),
        format!(
            "promoted fraud-detection staging: version 8 -> 9 (sha256 9f86d081884c…), committed on branch {BRANCH_9}, pushed to origin, pull request opened: https://forge.example/acme/deploy/pull/1\n"
        )
    );
    let (message, numstat) = pushed(&deploy, BRANCH_9);
    assert_eq!(numstat, format!("2\t2\t{OVERLAY_FILE}"));
    assert_eq!(
        message,
        format!(
            "Promote fraud-detection staging to model version 9\n\n\
             fraud-detection (staging): model fraud-detection version 8 -> 9\n\
             sha256: {PINNED} -> {DIGEST_9}\n\n\
             Evaluation (eval-report.json): passed\n  metrics.auc: 0.93"
        )
    );
    // The checkout is left as it was: on main, clean.
    assert_eq!(
        deploy.git(&["status", "--porcelain", "--branch"]),
        "## main"
    );
    let calls = forge.calls();
    assert_eq!(
        calls.iter().map(|c| c.method.clone()).collect::<Vec<_>>(),
        [Method::GET, Method::POST]
    );
    assert_eq!(calls[0].query["head"], format!("acme:{BRANCH_9}"));
    assert_eq!(calls[0].query["base"], "main");
    let body = &calls[1].body;
    assert_eq!(
        (body["head"].as_str(), body["base"].as_str()),
        (Some(BRANCH_9), Some("main"))
    );
    assert_eq!(
        body["title"],
        "Promote fraud-detection staging to model version 9"
    );
    assert!(body["body"].as_str().unwrap().contains("metrics.auc: 0.93"));
    assert!(!stderr(&output).contains(TOKEN), "a token reached the logs");

    let again = deploy.promote(&args).await;
    assert_success(&again);
    assert!(stdout(&again).contains(&format!("already committed on branch {BRANCH_9}, pushed to origin, pull request already open: https://forge.example/acme/deploy/pull/1")), "{}", stdout(&again));
    let calls = forge.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[2].method, Method::GET);
    assert!(
        calls
            .iter()
            .all(|c| c.kind == Kind::Github && c.repo == "acme/deploy")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opens_one_gitlab_merge_request_over_git_daemon() {
    let deploy = Deploy::new();
    let daemon = GitDaemon::start(&deploy.remotes);
    let url = format!("git://127.0.0.1:{}/acme/deploy.git", daemon.port);
    deploy.git(&["remote", "add", "daemon", &url]);
    let (forge, address) = FakeForge::start().await;
    let api = format!("http://{address}/api/v4");
    let args = pull_request_args("daemon", "gitlab", &api, &["--sha256", DIGEST_9]);
    let output = deploy.promote(&args).await;
    assert_success(&output);
    assert!(
        stdout(&output).ends_with(
            "pushed to daemon, pull request opened: https://gitlab.example/acme/deploy/-/merge_requests/1\n"
        ),
        "{}",
        stdout(&output)
    );
    let (message, numstat) = pushed(&deploy, BRANCH_9);
    assert_eq!(numstat, format!("2\t2\t{OVERLAY_FILE}"));
    assert!(
        message.contains("No evaluation report was given."),
        "{message}"
    );
    let again = deploy.promote(&args).await;
    assert_success(&again);
    let calls = forge.calls();
    let methods: Vec<Method> = calls.iter().map(|c| c.method.clone()).collect();
    assert_eq!(
        methods,
        [Method::GET, Method::POST, Method::GET],
        "{calls:?}"
    );
    assert_eq!(calls[0].query["state"], "opened");
    assert_eq!(calls[0].query["source_branch"], BRANCH_9);
    let body = &calls[1].body;
    assert_eq!(
        (
            body["source_branch"].as_str(),
            body["target_branch"].as_str()
        ),
        (Some(BRANCH_9), Some("main"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opens_a_gitea_pull_request_with_the_markdown_report() {
    let deploy = Deploy::new();
    let (forge, address) = FakeForge::start().await;
    let markdown = deploy.remotes.with_file_name("eval-report.md");
    std::fs::write(
        &markdown,
        "## Evaluation\n\n| metric | value |\n|---|---|\n| auc | 0.93 |\n",
    )
    .unwrap();
    let api = format!("http://{address}/api/v1");
    let extra = [
        "--sha256",
        DIGEST_9,
        "--branch",
        "promote-9",
        "--report-md",
        markdown.to_str().unwrap(),
    ];
    let args = pull_request_args("origin", "gitea", &api, &extra);
    assert_success(&deploy.promote(&args).await);
    assert_success(&deploy.promote(&args).await);
    let calls = forge.calls();
    assert_eq!(
        calls.iter().filter(|c| c.method == Method::POST).count(),
        1,
        "{calls:?}"
    );
    assert!(
        calls[1].body["body"]
            .as_str()
            .unwrap()
            .starts_with("## Evaluation\n")
    );
    assert_eq!(calls[1].body["head"], "promote-9");
    assert_eq!(
        pushed(&deploy, "promote-9").1,
        format!("2\t2\t{OVERLAY_FILE}")
    );
}

#[tokio::test]
async fn a_branch_holding_another_change_is_not_overwritten() {
    let deploy = Deploy::new();
    deploy.git(&["branch", BRANCH_9]);
    let args = [
        "--overlay",
        STAGING,
        "--version",
        "9",
        "--sha256",
        DIGEST_9,
        "--commit",
    ];
    let output = deploy.promote(&args).await;
    assert_refused(
        &output,
        1,
        &format!("branch {BRANCH_9} exists and holds another change"),
    );
}
