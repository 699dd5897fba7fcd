//! The promotion committed and pushed with the `git` command line rather than libgit2: it is what
//! users already have, it honours their configuration (identity, signing, credential helpers,
//! SSH and proxy settings) as `git push` in a terminal does, and it needs no C library built into
//! pinserve.
//!
//! The commit is made with plumbing (a scratch index, `commit-tree`, `update-ref`) on a new
//! branch off HEAD, so the user's checkout, index and current branch are left untouched.

use std::path::{Path, PathBuf};

use tokio::{io::AsyncWriteExt, process::Command};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`git {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("{path} has uncommitted changes: commit or stash them, or promote without --commit")]
    Dirty { path: String },
    #[error(
        "branch {branch} exists and holds another change: delete it, or name another with --branch"
    )]
    BranchExists { branch: String },
}

/// A git work tree, at its top level.
pub(crate) struct Repo {
    top: PathBuf,
}

/// A command's input: environment and standard input.
#[derive(Default)]
struct Input<'a> {
    env: Vec<(&'a str, &'a Path)>,
    stdin: Option<&'a str>,
}

impl Repo {
    /// The repository holding `dir`, and `dir`'s path in it.
    pub(crate) async fn open(dir: &Path) -> Result<(Repo, String), GitError> {
        let here = Repo {
            top: dir.to_owned(),
        };
        let top = here.git(&["rev-parse", "--show-toplevel"]).await?;
        let prefix = here.git(&["rev-parse", "--show-prefix"]).await?;
        Ok((Repo { top: top.into() }, prefix))
    }

    /// `git ARGS` in the work tree: its standard output, trimmed.
    async fn git(&self, args: &[&str]) -> Result<String, GitError> {
        self.git_with(args, Input::default()).await
    }

    async fn git_with(&self, args: &[&str], input: Input<'_>) -> Result<String, GitError> {
        let output = self.output(args, input).await?;
        Ok(output.trim().to_owned())
    }

    /// `git ARGS`'s standard output as it is.
    async fn output(&self, args: &[&str], input: Input<'_>) -> Result<String, GitError> {
        let mut command = Command::new("git");
        command.current_dir(&self.top).args(args).kill_on_drop(true);
        command.envs(input.env.iter().copied());
        command.stdin(std::process::Stdio::piped());
        command.stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().map_err(GitError::Spawn)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        if let Some(text) = input.stdin {
            stdin
                .write_all(text.as_bytes())
                .await
                .map_err(GitError::Spawn)?;
        }
        drop(stdin);
        let output = child.wait_with_output().await.map_err(GitError::Spawn)?;
        if !output.status.success() {
            return Err(GitError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        String::from_utf8(output.stdout).map_err(|_| GitError::Failed {
            args: args.join(" "),
            stderr: "its output is not UTF-8".to_owned(),
        })
    }

    /// A file's text as HEAD holds it, provided the work tree and index hold the same.
    pub(crate) async fn committed(&self, path: &str) -> Result<String, GitError> {
        let pathspec = format!(":(top){path}");
        let dirty = self
            .git(&["status", "--porcelain", "--", &pathspec])
            .await?;
        if !dirty.is_empty() {
            return Err(GitError::Dirty {
                path: path.to_owned(),
            });
        }
        let object = format!("HEAD:{path}");
        self.output(&["show", &object], Input::default()).await
    }

    /// Commits HEAD's tree with `path` replaced by `text` on a new `branch`, and says whether it
    /// made a commit: a branch that already holds exactly this change on top of HEAD (a rerun)
    /// is kept as it is; one holding anything else is refused.
    pub(crate) async fn commit_on_branch(
        &self,
        branch: &str,
        path: &str,
        text: &str,
        message: &str,
    ) -> Result<bool, GitError> {
        let tree = self.tree_with(path, text).await?;
        let head = self.git(&["rev-parse", "HEAD"]).await?;
        let reference = format!("refs/heads/{branch}");
        let existing = self
            .git(&["rev-parse", "--verify", "--quiet", &reference])
            .await;
        if let Ok(existing) = existing {
            let of = |what: &str| format!("{existing}{what}");
            let same_tree = self.git(&["rev-parse", &of("^{tree}")]).await? == tree;
            let on_head = self.git(&["rev-parse", &of("^@")]).await? == head;
            return match same_tree && on_head {
                true => Ok(false),
                false => Err(GitError::BranchExists {
                    branch: branch.to_owned(),
                }),
            };
        }
        let input = Input {
            stdin: Some(message),
            ..Input::default()
        };
        let commit = self
            .git_with(&["commit-tree", &tree, "-p", &head], input)
            .await?;
        self.git(&["update-ref", &reference, &commit, ""]).await?;
        Ok(true)
    }

    /// HEAD's tree with `path` holding `text` (same file mode), built in a scratch index.
    async fn tree_with(&self, path: &str, text: &str) -> Result<String, GitError> {
        let stdin = Input {
            stdin: Some(text),
            ..Input::default()
        };
        let blob = self
            .git_with(&["hash-object", "-w", "--stdin"], stdin)
            .await?;
        let entry = self.git(&["ls-tree", "HEAD", "--", path]).await?;
        let mode = entry
            .split_whitespace()
            .next()
            .unwrap_or("100644")
            .to_owned();
        let index = self
            .git(&["rev-parse", "--git-path", "pinserve-promote.index"])
            .await?;
        let index = self.top.join(index);
        let scratch = || Input {
            env: vec![("GIT_INDEX_FILE", index.as_path())],
            stdin: None,
        };
        let built = async {
            self.git_with(&["read-tree", "HEAD"], scratch()).await?;
            let info = format!("{mode},{blob},{path}");
            self.git_with(&["update-index", "--cacheinfo", &info], scratch())
                .await?;
            self.git_with(&["write-tree"], scratch()).await
        }
        .await;
        let _ = std::fs::remove_file(&index);
        built
    }

    /// Pushes `branch` to `remote` under the same name; never forced.
    pub(crate) async fn push(&self, remote: &str, branch: &str) -> Result<(), GitError> {
        let refspec = format!("refs/heads/{branch}:refs/heads/{branch}");
        self.git(&["push", "--quiet", remote, &refspec]).await?;
        Ok(())
    }

    pub(crate) async fn remote_url(&self, remote: &str) -> Result<String, GitError> {
        self.git(&["remote", "get-url", remote]).await
    }
}
