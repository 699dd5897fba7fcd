//! Pull requests on GitHub, Gitea and GitLab (a merge request there), over their REST APIs:
//! GitHub and Gitea `GET`/`POST /repos/{owner}/{repo}/pulls`, GitLab
//! `GET`/`POST /projects/{id}/merge_requests`. An open pull request from the same branch is
//! looked up first, so a rerun answers with it instead of opening a second one.
//!
//! Tokens come from `GITHUB_TOKEN`, `GITLAB_TOKEN` or `GITEA_TOKEN` and are sent as the forge
//! expects (`Authorization: Bearer`, `PRIVATE-TOKEN`, `Authorization: token`), marked sensitive
//! and never logged.

use std::time::Duration;

use clap::ValueEnum;
use reqwest::{
    Method,
    header::{HeaderName, HeaderValue},
};
use serde_json::{Value, json};
use url::Url;

/// Which forge hosts the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ForgeKind {
    Github,
    Gitlab,
    Gitea,
}

impl ForgeKind {
    fn token_variable(self) -> &'static str {
        match self {
            ForgeKind::Github => "GITHUB_TOKEN",
            ForgeKind::Gitlab => "GITLAB_TOKEN",
            ForgeKind::Gitea => "GITEA_TOKEN",
        }
    }

    /// The repository a remote URL names: OWNER/REPO on GitHub and Gitea, the whole project
    /// path (groups nest) on GitLab. Takes `https://host/o/r.git`, `ssh://git@host/o/r.git`,
    /// `git@host:o/r.git` and `file:///srv/o/r.git` alike.
    pub(crate) fn repo_of_remote(self, remote: &str) -> Option<String> {
        let path = match Url::parse(remote) {
            Ok(url) if url.scheme().len() > 1 => url.path().to_owned(),
            _ => remote.split_once(':')?.1.to_owned(),
        };
        let path = path.trim_matches('/');
        let path = path.strip_suffix(".git").unwrap_or(path);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let keep = match self {
            ForgeKind::Gitlab => segments.len(),
            ForgeKind::Github | ForgeKind::Gitea => 2,
        };
        (segments.len() >= 2).then(|| segments[segments.len() - keep..].join("/"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{variable} is not set: opening a pull request needs a token")]
    NoToken { variable: &'static str },
    #[error("{variable} is not a valid HTTP header value")]
    BadToken { variable: &'static str },
    #[error("'{repo}' is not OWNER/REPO; name the repository with --forge-repo")]
    BadRepo { repo: String },
    /// `call` is `METHOD URL`; URLs carry no token.
    #[error("{call}: {message}")]
    Request { call: String, message: String },
}

/// What to open: from `head` into `base` of `repo`.
pub(crate) struct PullRequest<'a> {
    pub(crate) repo: &'a str,
    pub(crate) head: &'a str,
    pub(crate) base: &'a str,
    pub(crate) title: &'a str,
    pub(crate) body: &'a str,
}

/// A pull request's address, and whether this run opened it.
pub(crate) struct Opened {
    pub(crate) url: String,
    pub(crate) created: bool,
}

pub(crate) struct Forge {
    kind: ForgeKind,
    api: Url,
    auth: (HeaderName, HeaderValue),
    http: reqwest::Client,
}

/// Forges answer in seconds; one that does not within this is down.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Forge {
    pub(crate) fn from_env(kind: ForgeKind, api: Url) -> Result<Forge, ForgeError> {
        let variable = kind.token_variable();
        let token = std::env::var(variable)
            .ok()
            .filter(|token| !token.is_empty())
            .ok_or(ForgeError::NoToken { variable })?;
        let (name, value) = match kind {
            ForgeKind::Github => (reqwest::header::AUTHORIZATION, format!("Bearer {token}")),
            ForgeKind::Gitea => (reqwest::header::AUTHORIZATION, format!("token {token}")),
            ForgeKind::Gitlab => (HeaderName::from_static("private-token"), token),
        };
        let mut value =
            HeaderValue::try_from(value).map_err(|_| ForgeError::BadToken { variable })?;
        value.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!("pinserve/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .build()
            .map_err(|err| ForgeError::Request {
                call: format!("client for {api}"),
                message: err.to_string(),
            })?;
        Ok(Forge {
            kind,
            api,
            auth: (name, value),
            http,
        })
    }

    /// The open pull request from `pr.head`, or a new one.
    pub(crate) async fn open(&self, pr: &PullRequest<'_>) -> Result<Opened, ForgeError> {
        if let Some(url) = self.find_open(pr).await? {
            return Ok(Opened {
                url,
                created: false,
            });
        }
        let (segments, body) = match self.kind {
            ForgeKind::Gitlab => (
                self.project(pr.repo, "merge_requests"),
                json!({"source_branch": pr.head, "target_branch": pr.base,
                       "title": pr.title, "description": pr.body}),
            ),
            _ => (
                self.repository(pr.repo, "pulls")?,
                json!({"head": pr.head, "base": pr.base, "title": pr.title, "body": pr.body}),
            ),
        };
        let created = self.call(Method::POST, &segments, &[], Some(body)).await?;
        let url = self.web_url(&created).unwrap_or_default();
        Ok(Opened { url, created: true })
    }

    /// The address of the open pull request from `pr.head` into `pr.base`, if there is one.
    /// The list is also filtered here: Gitea ignores the `head` query parameter.
    async fn find_open(&self, pr: &PullRequest<'_>) -> Result<Option<String>, ForgeError> {
        let (segments, query) = match self.kind {
            ForgeKind::Gitlab => (
                self.project(pr.repo, "merge_requests"),
                [
                    ("state", "opened".to_owned()),
                    ("source_branch", pr.head.to_owned()),
                    ("target_branch", pr.base.to_owned()),
                ],
            ),
            _ => {
                let owner = pr.repo.split('/').next().unwrap_or_default();
                (
                    self.repository(pr.repo, "pulls")?,
                    [
                        ("state", "open".to_owned()),
                        ("head", format!("{owner}:{}", pr.head)),
                        ("base", pr.base.to_owned()),
                    ],
                )
            }
        };
        let listed = self.call(Method::GET, &segments, &query, None).await?;
        let found = listed
            .as_array()
            .into_iter()
            .flatten()
            .find(|item| self.head_of(item) == pr.head);
        Ok(found.and_then(|item| self.web_url(item)))
    }

    /// The branch a listed pull request comes from.
    fn head_of<'a>(&self, item: &'a Value) -> &'a Value {
        match self.kind {
            ForgeKind::Gitlab => &item["source_branch"],
            _ => &item["head"]["ref"],
        }
    }

    fn web_url(&self, item: &Value) -> Option<String> {
        let key = match self.kind {
            ForgeKind::Gitlab => "web_url",
            _ => "html_url",
        };
        item[key].as_str().map(str::to_owned)
    }

    fn repository(&self, repo: &str, what: &str) -> Result<Vec<String>, ForgeError> {
        let bad = || ForgeError::BadRepo {
            repo: repo.to_owned(),
        };
        let (owner, name) = repo.split_once('/').ok_or_else(bad)?;
        if owner.is_empty() || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(["repos", owner, name, what].map(str::to_owned).to_vec())
    }

    /// GitLab names a project by its id or its URL-encoded path: one path segment either way.
    fn project(&self, repo: &str, what: &str) -> Vec<String> {
        ["projects", repo, what].map(str::to_owned).to_vec()
    }

    /// One API call: the JSON answer of a 2xx, else an error with the forge's own message.
    async fn call(
        &self,
        method: Method,
        segments: &[String],
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, ForgeError> {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .map_err(|()| self.error(&method, &self.api, "not a base URL".to_owned()))?
            .pop_if_empty()
            .extend(segments);
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (k, v)));
        let (name, value) = &self.auth;
        let mut request = self.http.request(method.clone(), url.clone());
        request = request.header(name, value.clone());
        request = request.header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let fail = |message: String| self.error(&method, &url, message);
        let response = request.send().await.map_err(|err| fail(err.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|err| fail(err.to_string()))?;
        if !status.is_success() {
            let excerpt: String = text.chars().take(500).collect();
            return Err(fail(format!("{status}: {excerpt}")));
        }
        serde_json::from_str(&text).map_err(|err| fail(format!("unreadable answer: {err}")))
    }

    fn error(&self, method: &Method, url: &Url, message: String) -> ForgeError {
        ForgeError::Request {
            call: format!("{method} {url}"),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_come_from_remote_urls() {
        let github = ForgeKind::Github;
        for remote in [
            "https://github.com/acme/deploy.git",
            "https://github.com/acme/deploy",
            "git@github.com:acme/deploy.git",
            "ssh://git@github.com:22/acme/deploy.git",
            "file:///srv/git/acme/deploy.git",
            "git://127.0.0.1:9418/acme/deploy.git",
        ] {
            assert_eq!(
                github.repo_of_remote(remote).as_deref(),
                Some("acme/deploy"),
                "{remote}"
            );
        }
        assert_eq!(
            ForgeKind::Gitlab
                .repo_of_remote("https://gitlab.com/acme/ml/deploy.git")
                .as_deref(),
            Some("acme/ml/deploy")
        );
        assert_eq!(github.repo_of_remote("https://github.com/deploy"), None);
    }
}
