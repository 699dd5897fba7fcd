//! The real tools tests/k8s_manifests.rs drives: kubectl's kustomize renders, and three schema
//! validators judge each rendered object, one document per file:
//! - built-in kinds: `kubernetes-validate --strict` against the Kubernetes OpenAPI schemas it ships;
//! - Argo CD, Argo Rollouts and Argo Workflows kinds: `check-jsonschema` against the strict CRD
//!   schemas (`$PINSERVE_ARGO_SCHEMAS/jsonschema-strict`, see tests/k8s/argo-schemas/README.md);
//! - Argo Events kinds: `check-jsonschema` against Argo Events' JSON Schema, made strict here;
//! - KServe kinds: `check-jsonschema` against KServe's strict CRD schemas, beside Argo's;
//! - prometheus-operator kinds: `check-jsonschema` against schemas exported from
//!   prometheus-operator's CRDs by tests/k8s/prometheus_operator_schemas.py.
//!
//! scripts/test.sh installs kubectl when it is missing, builds the validators' environment
//! (.venv-k8s) and sets the variables; without them the tests fail and say what to install.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The Kubernetes version built-in kinds are validated against (kubernetes-validate ships 1.25 to
/// 1.37).
pub const KUBERNETES_VERSION: &str = "1.33.0";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn k8s_dir() -> PathBuf {
    repo().join("k8s")
}

fn kubectl() -> PathBuf {
    std::env::var_os("PINSERVE_KUBECTL").map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
}

/// A tool of the validators' environment (`PINSERVE_K8S_VENV`, default `.venv-k8s`).
fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("PINSERVE_K8S_VENV")
        .map_or_else(|| repo().join(".venv-k8s"), PathBuf::from);
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: create the validators' environment with \
         `source scripts/lib/python-venv.sh && ensure_venv .venv-k8s tests/k8s/requirements.txt` \
         (scripts/test.sh does)",
        tool.display()
    );
    tool
}

/// The folder of Argo's schemas: `$PINSERVE_ARGO_SCHEMAS`, defaulting as scripts/test.sh does to
/// ../shared/schemas beside the repository, else the vendored copy.
fn argo_schema_root() -> PathBuf {
    std::env::var_os("PINSERVE_ARGO_SCHEMAS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shared = repo().join("../shared/schemas");
            if shared.join("jsonschema-strict").is_dir() {
                shared
            } else {
                repo().join("tests/k8s/argo-schemas")
            }
        })
}

/// Argo's strict CRD schemas: `jsonschema-strict/` of [`argo_schema_root`].
fn argo_schemas() -> PathBuf {
    let dir = argo_schema_root().join("jsonschema-strict");
    assert!(
        dir.is_dir(),
        "{} is missing: PINSERVE_ARGO_SCHEMAS must name a folder holding jsonschema-strict/",
        dir.display()
    );
    dir
}

/// The Argo Events kinds, which have no CRD schema: their definitions in Argo Events' JSON
/// Schema.
const EVENTS_KINDS: [&str; 3] = ["EventSource", "Sensor", "EventBus"];

/// A strict schema of an Argo Events kind: Argo Events' JSON Schema with `additionalProperties:
/// false` on every definition that lists properties (but ObjectMeta, whose labels and
/// annotations are open), referring to the kind's definition. Written once per process.
fn events_schema(kind: &str) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let source = argo_schema_root().join("events-jsonschema.json");
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|err| panic!("{}: {err}", source.display()));
        let mut schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let definitions = schema["definitions"].as_object_mut().unwrap();
        for (name, definition) in definitions.iter_mut() {
            let definition = definition.as_object_mut().unwrap();
            if definition.contains_key("properties")
                && !definition.contains_key("additionalProperties")
                && !name.ends_with(".ObjectMeta")
            {
                definition.insert("additionalProperties".into(), false.into());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        for kind in EVENTS_KINDS {
            let strict = serde_json::json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "$ref": format!("#/definitions/io.argoproj.events.v1alpha1.{kind}"),
                "definitions": schema["definitions"],
            });
            std::fs::write(
                dir.path().join(format!("{kind}.json")),
                serde_json::to_vec(&strict).unwrap(),
            )
            .unwrap();
        }
        dir
    });
    dir.path().join(format!("{kind}.json"))
}

/// prometheus-operator's PodMonitor and PrometheusRule schemas, exported once per process.
fn prometheus_operator_schemas() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(venv_tool("python"))
            .arg(repo().join("tests/k8s/prometheus_operator_schemas.py"))
            .arg(dir.path())
            .output()
            .expect("cannot run the validators' Python");
        assert!(
            output.status.success(),
            "exporting prometheus-operator's schemas failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
    .path()
}

/// The documents of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| doc["kind"] == kind).collect()
}

/// The one document of `kind`; none or several fail the test.
pub fn one_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// pinserve's image, unpinned.
pub const PINSERVE_IMAGE: &str = "ghcr.io/pinserve/pinserve";

/// pinserve's image with the tag k8s/base/kustomization.yaml pins: the one tag every manifest
/// that runs pinserve (the services, the pipeline, the KServe runtime) must use.
pub fn pinned_image() -> String {
    let base = read_documents(&k8s_dir().join("base/kustomization.yaml")).remove(0);
    let image = base["images"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|image| image["name"] == PINSERVE_IMAGE)
        .expect("k8s/base pins no pinserve image");
    let tag = image["newTag"].as_str().expect("no newTag for pinserve");
    format!("{PINSERVE_IMAGE}:{tag}")
}

/// Every folder under k8s/ that holds a kustomization.yaml, sorted.
pub fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        if dir.join("kustomization.yaml").is_file() {
            found.push(dir.to_path_buf());
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(&k8s_dir(), &mut found);
    found.sort();
    found
}

/// The documents of a YAML stream, empty ones left out.
pub fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

pub fn read_documents(path: &Path) -> Vec<Value> {
    parse_documents(&std::fs::read_to_string(path).unwrap())
}

/// `kubectl kustomize DIR`, or kustomize's error.
pub fn try_render(dir: &Path) -> Result<Vec<Value>, String> {
    let output = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {}: {err}; install kubectl (scripts/test.sh does) or set \
                 PINSERVE_KUBECTL",
                kubectl().display()
            )
        });
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(parse_documents(&String::from_utf8(output.stdout).unwrap()))
}

/// A kustomization under k8s/ (e.g. "services/fraud-detection/staging") rendered; each folder is
/// rendered once per test process.
pub fn render(relative: &str) -> Vec<Value> {
    static RENDERED: OnceLock<std::sync::Mutex<BTreeMap<String, Vec<Value>>>> = OnceLock::new();
    let cache = RENDERED.get_or_init(Default::default);
    if let Some(docs) = cache.lock().unwrap().get(relative) {
        return docs.clone();
    }
    let docs = try_render(&k8s_dir().join(relative))
        .unwrap_or_else(|err| panic!("kubectl kustomize k8s/{relative} failed:\n{err}"));
    cache
        .lock()
        .unwrap()
        .insert(relative.to_owned(), docs.clone());
    docs
}

/// Which validator judges a document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Validator {
    Kubernetes,
    Schema(PathBuf),
}

fn validator_for(doc: &Value) -> Validator {
    let api_version = doc["apiVersion"]
        .as_str()
        .expect("a document without apiVersion");
    let kind = doc["kind"].as_str().expect("a document without kind");
    let schema = match api_version {
        "argoproj.io/v1alpha1" if EVENTS_KINDS.contains(&kind) => events_schema(kind),
        "argoproj.io/v1alpha1" => {
            argo_schemas().join(format!("{}-argoproj-v1alpha1.json", kind.to_lowercase()))
        }
        "serving.kserve.io/v1alpha1" | "serving.kserve.io/v1beta1" => argo_schemas().join(format!(
            "{}-serving-{}.json",
            kind.to_lowercase(),
            api_version.rsplit('/').next().unwrap()
        )),
        "monitoring.coreos.com/v1" => prometheus_operator_schemas()
            .join(format!("{}-monitoring-v1.json", kind.to_lowercase())),
        _ => return Validator::Kubernetes,
    };
    assert!(
        schema.is_file(),
        "no schema for {api_version} {kind}: {} is missing",
        schema.display()
    );
    Validator::Schema(schema)
}

pub fn describe(doc: &Value) -> String {
    format!(
        "{} {}/{}",
        doc["apiVersion"].as_str().unwrap_or("?"),
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Validates every document against its schema, strictly (unknown fields are errors); the
/// validators' complaints otherwise.
pub fn validate(docs: &[Value]) -> Result<(), String> {
    let mut groups: BTreeMap<Validator, Vec<&Value>> = BTreeMap::new();
    for doc in docs {
        groups.entry(validator_for(doc)).or_default().push(doc);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut failures = String::new();
    for (index, (validator, docs)) in groups.into_iter().enumerate() {
        let files: Vec<PathBuf> = docs
            .iter()
            .enumerate()
            .map(|(n, doc)| {
                let file = dir.path().join(format!("{index}-{n}.json"));
                std::fs::write(&file, serde_json::to_vec(doc).unwrap()).unwrap();
                file
            })
            .collect();
        let result = match &validator {
            Validator::Kubernetes => run_kubernetes_validate(&files),
            Validator::Schema(schema) => run_check_jsonschema(schema, &files),
        };
        if let Err(err) = result {
            let names: Vec<String> = docs.iter().map(|doc| describe(doc)).collect();
            failures += &format!("{validator:?} rejected one of {names:?}:\n{err}\n");
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// kubernetes-validate exits 0 and only warns for a kind it has no schema for, so each file must
/// also be reported as passed.
fn run_kubernetes_validate(files: &[PathBuf]) -> Result<(), String> {
    let output = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("cannot run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let passed = stdout
        .lines()
        .filter(|line| line.starts_with("INFO") && line.contains(" passed for resource "))
        .count();
    if output.status.success() && passed == files.len() {
        Ok(())
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The CRDs' patterns are Go regular expressions, closer to Python's than to ECMAScript's, hence
/// `--regex-variant python` for matching values.
fn run_check_jsonschema(schema: &Path, files: &[PathBuf]) -> Result<(), String> {
    let output = Command::new(venv_tool("check-jsonschema"))
        .args(["--regex-variant", "python", "--schemafile"])
        .arg(schema)
        .args(files)
        .output()
        .expect("cannot run check-jsonschema");
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
