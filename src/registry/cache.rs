//! The directory `serve` fetches remote models into, `CACHE/NAME/VERSION/`, and how it is kept
//! from growing without end.
//!
//! Every process that fetches or loads a version from the cache first *claims* it: a shared
//! advisory lock (`flock`) on `CACHE/.pinserve-locks/NAME/VERSION`, held until the process exits,
//! and the lock file's modification time set to now, which records the version's last use. After
//! a version is ready, versions beyond `--cache-max-versions` or `--cache-max-bytes` are evicted,
//! least recently used first: each under an exclusive lock taken without waiting, so a version
//! some process (this one included) has claimed is skipped rather than pulled from under it.
//! Two processes that want the same version do not fetch it at once: each checks for an earlier
//! download and fetches under an exclusive lock on `CACHE/.pinserve-fetching/NAME/VERSION`, so
//! the second waits for the first and reuses what it wrote. Lock files are never deleted:
//! deleting one would let two processes lock two different files of the same name.

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use super::{fetch::IN_PROGRESS, manifest::MANIFEST_FILE};
use crate::metrics;

/// Below the cache, beside the model directories; hidden, so no model name is taken from it.
const LOCKS: &str = ".pinserve-locks";
/// The locks that let one process at a time fetch a version.
const FETCHING: &str = ".pinserve-fetching";
/// A version directory being deleted is first renamed to this prefix and its version, so a
/// deletion cut short never leaves a directory that looks like a (broken) download.
const EVICTING_PREFIX: &str = ".pinserve-evicting-";

/// The locks this process holds: a process serves (or scores) its version until it exits, so the
/// claim lasts as long, and the kernel drops it however the process ends.
static CLAIMS: Mutex<Vec<(PathBuf, File)>> = Mutex::new(Vec::new());

/// How much the cache may hold; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) max_versions: Option<usize>,
    pub(crate) max_bytes: Option<u64>,
}

impl Limits {
    fn allow(&self, versions: usize, bytes: u64) -> bool {
        self.max_versions.is_none_or(|max| versions <= max)
            && self.max_bytes.is_none_or(|max| bytes <= max)
    }
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    limits: Limits,
}

/// One process's right to fetch a version, until dropped.
#[derive(Debug)]
pub(crate) struct FetchLock {
    _file: File,
}

/// One version directory found in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) last_used: SystemTime,
    pub(crate) bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot claim {} in the model cache: {source}", path.display())]
pub struct ClaimError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Cache {
    pub(crate) fn new(dir: PathBuf, limits: Limits) -> Cache {
        Cache { dir, limits }
    }

    /// A cache nothing is evicted from (`eval` and `profile` fetch into it and never evict).
    pub(crate) fn unbounded(dir: &Path) -> Cache {
        Cache::new(dir.to_path_buf(), Limits::default())
    }

    /// `CACHE/NAME/VERSION`; names and versions are single path components (checked when the
    /// reference was built, or by the registry's own naming rules).
    pub(crate) fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.dir.join(safe(name)).join(safe(version))
    }

    fn lock_path(&self, name: &str, version: &str) -> PathBuf {
        self.dir.join(LOCKS).join(safe(name)).join(safe(version))
    }

    fn fetching_path(&self, name: &str, version: &str) -> PathBuf {
        self.dir.join(FETCHING).join(safe(name)).join(safe(version))
    }

    /// Waits until no other process is fetching `NAME/VERSION`, and keeps others from fetching
    /// it until the returned lock is dropped.
    pub(crate) async fn fetching(
        &self,
        name: &str,
        version: &str,
    ) -> Result<FetchLock, ClaimError> {
        let path = self.fetching_path(name, version);
        let shown = path.clone();
        let failed = |source| ClaimError {
            path: shown.clone(),
            source,
        };
        let file = tokio::task::spawn_blocking(move || {
            let file = open_lock(&path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|err| failed(std::io::Error::other(err)))?
        .map_err(failed)?;
        Ok(FetchLock { _file: file })
    }

    /// The name a version (a logged model's id, unique on its server) is cached under, found
    /// without asking the registry; `None` if it is not there, or under more than one name.
    pub(crate) fn name_of(&self, version: &str) -> Option<String> {
        let mut names = read_dir_names(&self.dir)
            .into_iter()
            .filter(|name| self.dir.join(name).join(safe(version)).is_dir());
        let name = names.next()?;
        names.next().is_none().then_some(name)
    }

    /// Claims `NAME/VERSION` for the life of this process and records its use now. Waits while
    /// an evictor deletes it (the caller then finds it gone and fetches it again).
    pub(crate) async fn claim(&self, name: &str, version: &str) -> Result<(), ClaimError> {
        let path = self.lock_path(name, version);
        let shown = path.clone();
        tokio::task::spawn_blocking(move || claim_blocking(path))
            .await
            .map_err(|err| ClaimError {
                path: shown,
                source: std::io::Error::other(err),
            })?
    }

    /// Evicts least recently used versions until the cache is within its limits, never
    /// `keep` (`NAME`, `VERSION`) nor a version another claim holds. Failures are logged: a
    /// cache that could not be trimmed still serves.
    pub(crate) async fn evict(&self, keep: (&str, &str)) {
        if self.limits == Limits::default() {
            return;
        }
        let cache = self.clone();
        let keep = (safe(keep.0), safe(keep.1));
        let evicted = tokio::task::spawn_blocking(move || {
            let entries = cache.entries();
            evict_until_within(entries, cache.limits, (&keep.0, &keep.1), |entry| {
                cache.remove(entry)
            })
        })
        .await;
        if let Err(err) = evicted {
            tracing::warn!(error = %err, "cache eviction failed");
        }
    }

    /// Every version directory pinserve wrote (a manifest, or a download in progress).
    fn entries(&self) -> Vec<Entry> {
        let mut entries = Vec::new();
        for name in read_dir_names(&self.dir) {
            for version in read_dir_names(&self.dir.join(&name)) {
                let dir = self.dir.join(&name).join(&version);
                if !(dir.join(MANIFEST_FILE).exists() || dir.join(IN_PROGRESS).exists()) {
                    continue;
                }
                let lock = self.lock_path(&name, &version);
                let last_used = modified(&lock).or_else(|| modified(&dir));
                entries.push(Entry {
                    bytes: size_of_tree(&dir),
                    last_used: last_used.unwrap_or(SystemTime::UNIX_EPOCH),
                    name: name.clone(),
                    version,
                });
            }
        }
        entries
    }

    /// Deletes one version if no process claims it; whether it is gone.
    fn remove(&self, entry: &Entry) -> bool {
        let (model, version) = (&entry.name, &entry.version);
        match self.delete_unclaimed(entry) {
            Ok(Deletion::Deleted) => {
                metrics::record_eviction(entry.bytes);
                tracing::info!(%model, %version, bytes = entry.bytes, "evicted the least recently used cached version");
                true
            }
            Ok(Deletion::AlreadyGone) => true,
            Ok(Deletion::InUse) => {
                tracing::info!(%model, %version, "not evicting a cached version in use");
                false
            }
            Err(err) => {
                tracing::warn!(%model, %version, error = %err, "could not evict a cached version");
                false
            }
        }
    }

    /// Under an exclusive lock, renames the version out of the way, then deletes it.
    fn delete_unclaimed(&self, entry: &Entry) -> std::io::Result<Deletion> {
        let Some(_lock) = exclusive(&self.lock_path(&entry.name, &entry.version))? else {
            return Ok(Deletion::InUse);
        };
        let dir = self.version_dir(&entry.name, &entry.version);
        if !dir.exists() {
            return Ok(Deletion::AlreadyGone);
        }
        let doomed = self
            .dir
            .join(&entry.name)
            .join(format!("{EVICTING_PREFIX}{}", entry.version));
        // What an earlier eviction cut short left behind; no process can be using it.
        if doomed.exists() {
            std::fs::remove_dir_all(&doomed)?;
        }
        std::fs::rename(&dir, &doomed)?;
        std::fs::remove_dir_all(&doomed)?;
        Ok(Deletion::Deleted)
    }
}

enum Deletion {
    Deleted,
    /// Another process evicted it since the cache was listed.
    AlreadyGone,
    InUse,
}

fn claim_blocking(path: PathBuf) -> Result<(), ClaimError> {
    let failed = |source| ClaimError {
        path: path.clone(),
        source,
    };
    let mut claims = CLAIMS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let claimed = claims.iter().find(|(held, _)| *held == path);
    let file = match claimed {
        Some((_, file)) => file,
        None => {
            let file = open_lock(&path).map_err(failed)?;
            file.lock_shared().map_err(failed)?;
            claims.push((path.clone(), file));
            &claims[claims.len() - 1].1
        }
    };
    // A file's time is a date, shared with other processes: the wall clock is the right one.
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    file.set_modified(now).map_err(failed)
}

/// An exclusive lock on `path` if no one else holds it, released when dropped.
fn exclusive(path: &Path) -> std::io::Result<Option<File>> {
    let file = open_lock(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(err)) => Err(err),
    }
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Removes the least recently used entries, skipping `keep` and those `remove` leaves (in use),
/// until `limits` allow what is left; returns those removed.
pub(crate) fn evict_until_within(
    mut entries: Vec<Entry>,
    limits: Limits,
    keep: (&str, &str),
    mut remove: impl FnMut(&Entry) -> bool,
) -> Vec<Entry> {
    let mut versions = entries.len();
    let mut bytes: u64 = entries.iter().map(|entry| entry.bytes).sum();
    entries.sort_by_key(|entry| entry.last_used);
    let mut removed = Vec::new();
    for entry in entries {
        if limits.allow(versions, bytes) {
            break;
        }
        if (entry.name.as_str(), entry.version.as_str()) == keep || !remove(&entry) {
            continue;
        }
        versions -= 1;
        bytes -= entry.bytes;
        removed.push(entry);
    }
    removed
}

fn safe(part: &str) -> String {
    part.replace(['/', '\\'], "_").replace("..", "_")
}

/// The directories in `dir` not hidden (locks, deletions under way, `eval`'s temporary files).
fn read_dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Bytes of the files below `dir`; links are counted as themselves, not followed.
fn size_of_tree(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let metadata = entry.path().symlink_metadata().ok()?;
            Some(if metadata.is_dir() {
                size_of_tree(&entry.path())
            } else {
                metadata.len()
            })
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn entry(name: &str, version: &str, age_seconds: u64, bytes: u64) -> Entry {
        Entry {
            name: name.to_owned(),
            version: version.to_owned(),
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 - age_seconds),
            bytes,
        }
    }

    fn versions(removed: &[Entry]) -> Vec<String> {
        removed
            .iter()
            .map(|e| format!("{}/{}", e.name, e.version))
            .collect()
    }

    fn limits(max_versions: Option<usize>, max_bytes: Option<u64>) -> Limits {
        Limits {
            max_versions,
            max_bytes,
        }
    }

    #[test]
    fn the_least_recently_used_go_first_until_the_count_is_within_the_limit() {
        let entries = vec![
            entry("a", "2", 10, 1),
            entry("a", "1", 30, 1),
            entry("b", "1", 20, 1),
            entry("c", "1", 5, 1),
        ];
        let removed = evict_until_within(entries, limits(Some(2), None), ("c", "1"), |_| true);
        assert_eq!(versions(&removed), ["a/1", "b/1"]);
    }

    #[test]
    fn the_kept_version_and_versions_in_use_are_skipped_for_the_next_oldest() {
        let entries = vec![
            entry("a", "1", 30, 1),
            entry("a", "2", 20, 1),
            entry("a", "3", 10, 1),
            entry("a", "4", 5, 1),
        ];
        let in_use = |e: &Entry| e.version != "2";
        let removed = evict_until_within(entries, limits(Some(3), None), ("a", "1"), in_use);
        assert_eq!(
            versions(&removed),
            ["a/3"],
            "1 is kept, 2 is in use, 3 goes"
        );
    }

    #[test]
    fn bytes_are_evicted_down_to_the_limit_and_the_kept_version_stays_even_if_larger() {
        let entries = vec![
            entry("a", "1", 30, 400),
            entry("a", "2", 20, 300),
            entry("a", "3", 10, 200),
            entry("a", "4", 1, 100),
        ];
        let removed =
            evict_until_within(entries.clone(), limits(None, Some(350)), ("a", "4"), |_| {
                true
            });
        assert_eq!(versions(&removed), ["a/1", "a/2"]);
        let removed = evict_until_within(entries, limits(Some(3), Some(50)), ("a", "4"), |_| true);
        assert_eq!(versions(&removed), ["a/1", "a/2", "a/3"]);
        let nothing = evict_until_within(
            vec![entry("a", "1", 1, 9)],
            limits(Some(1), Some(1)),
            ("a", "1"),
            |_| true,
        );
        assert!(nothing.is_empty());
    }

    #[test]
    fn within_the_limits_nothing_is_touched() {
        let entries = vec![entry("a", "1", 30, 10), entry("a", "2", 20, 10)];
        let removed = evict_until_within(entries, limits(Some(2), Some(20)), ("a", "2"), |_| {
            panic!("nothing is removed within the limits")
        });
        assert!(removed.is_empty());
    }

    /// A version directory as a finished download leaves it, last used `age` seconds ago.
    fn cached(cache: &Cache, name: &str, version: &str, age: u64) {
        let dir = cache.version_dir(name, version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), b"{}").unwrap();
        std::fs::write(dir.join("model.onnx"), vec![0u8; 100]).unwrap();
        let lock = open_lock(&cache.lock_path(name, version)).unwrap();
        #[allow(clippy::disallowed_methods)] // a file's time is a date
        let now = SystemTime::now();
        lock.set_modified(now - Duration::from_secs(age)).unwrap();
    }

    #[tokio::test]
    async fn a_version_another_process_holds_is_not_evicted_and_hidden_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf(), limits(Some(1), None));
        cached(&cache, "m", "1", 300);
        cached(&cache, "m", "2", 200);
        cached(&cache, "m", "3", 100);
        std::fs::create_dir_all(dir.path().join(".tmp-eval")).unwrap();
        std::fs::create_dir_all(dir.path().join("m/not-a-download")).unwrap();
        // Another process's claim: a lock of its own on the same file (flock locks conflict
        // between open files, in one process as between two).
        let other = open_lock(&cache.lock_path("m", "1")).unwrap();
        other.lock_shared().unwrap();
        cache.claim("m", "3").await.unwrap();

        cache.evict(("m", "3")).await;
        let left: Vec<bool> = ["1", "2", "3"]
            .iter()
            .map(|v| cache.version_dir("m", v).is_dir())
            .collect();
        assert_eq!(left, [true, false, true]);
        assert!(dir.path().join(".tmp-eval").is_dir());
        assert!(dir.path().join("m/not-a-download").is_dir());

        drop(other);
        cache.evict(("m", "3")).await;
        assert!(!cache.version_dir("m", "1").exists());
        assert!(cache.version_dir("m", "3").join("model.onnx").is_file());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_process_at_a_time_fetches_a_version() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::unbounded(dir.path());
        let first = cache.fetching("m", "1").await.unwrap();
        let free = |version| {
            exclusive(&cache.fetching_path("m", version))
                .unwrap()
                .is_some()
        };
        assert!(!free("1"), "m/1 is being fetched");
        assert!(free("2"), "another version is not");
        let other = cache.clone();
        let second = tokio::spawn(async move { other.fetching("m", "1").await.unwrap() });
        drop(first);
        let second = second.await.unwrap();
        assert!(!free("1"), "the second fetch of m/1 has it now");
        drop(second);
        assert!(free("1"));
    }

    #[tokio::test]
    async fn a_claim_records_the_use_and_a_logged_model_is_found_by_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::unbounded(dir.path());
        cached(&cache, "churn", "m-abc", 3_600);
        let before = modified(&cache.lock_path("churn", "m-abc")).unwrap();
        cache.claim("churn", "m-abc").await.unwrap();
        let after = modified(&cache.lock_path("churn", "m-abc")).unwrap();
        assert!(after > before + Duration::from_secs(3_000));
        assert_eq!(cache.name_of("m-abc").as_deref(), Some("churn"));
        assert_eq!(cache.name_of("m-def"), None);
    }
}
