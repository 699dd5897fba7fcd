//! The reference stage: text in, a [`ModelReference`] out (errors: [`RegistryError`]).
//!
//! Model references as users write them: `models:/NAME/VERSION`, `models:/NAME@ALIAS`,
//! `models:/NAME/STAGE`, MLflow 3 logged models (`models:/m-ID`), model repository roots and version directories on local disk or in
//! object storage (`s3://`, `gs://`, `az://`, `https://`), and direct model-file URLs.

use std::{fmt, path::PathBuf};

use url::Url;

use super::{
    RegistryError,
    redact::{redact_text, redact_url},
};

/// Where bytes live: a local path or a URL for object storage or HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote(Url),
}

impl Location {
    /// Parses a path, `file://` URL, or object-store / HTTP URL.
    pub(crate) fn parse(text: &str) -> Result<Location, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidReference {
            reference: redact_text(text),
            reason,
        };
        if !text.contains("://") {
            return if text.is_empty() {
                Err(invalid("it is empty".to_owned()))
            } else {
                Ok(Location::Local(PathBuf::from(text)))
            };
        }
        let url = Url::parse(text).map_err(|err| invalid(err.to_string()))?;
        match url.scheme() {
            "file" => url
                .to_file_path()
                .map(Location::Local)
                .map_err(|()| invalid("not a local file path".to_owned())),
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "adl" | "http" | "https" => {
                Ok(Location::Remote(url))
            }
            scheme => Err(invalid(format!(
                "unsupported scheme '{scheme}': use a path, file://, s3://, gs://, az://, https:// or models:/"
            ))),
        }
    }

    /// The location one path segment further down.
    pub(crate) fn join(&self, segment: &str) -> Location {
        match self {
            Location::Local(path) => Location::Local(path.join(segment)),
            Location::Remote(url) => {
                let mut url = url.clone();
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.pop_if_empty().push(segment);
                }
                Location::Remote(url)
            }
        }
    }

    /// The location one path segment further up (`None` at the top).
    pub(crate) fn parent(&self) -> Option<Location> {
        match self {
            Location::Local(path) => path
                .parent()
                .map(|parent| Location::Local(parent.to_path_buf())),
            Location::Remote(url) => {
                let mut url = url.clone();
                url.path_segments_mut().ok()?.pop_if_empty().pop();
                Some(Location::Remote(url))
            }
        }
    }

    /// The last `count` path segments, outermost first (a version directory's name and version).
    fn trailing_segments(&self, count: usize) -> Vec<String> {
        let segments: Vec<String> = match self {
            Location::Local(path) => path
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect(),
            Location::Remote(url) => url
                .path_segments()
                .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        segments[segments.len().saturating_sub(count)..].to_vec()
    }

    pub(crate) fn is_model_file(&self) -> bool {
        self.trailing_segments(1)
            .first()
            .is_some_and(|last| last.ends_with(".onnx"))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Remote(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// How a model version is chosen in the MLflow Model Registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Version(String),
    Alias(String),
    /// A legacy stage (`Production`, `Staging`, ...), or `latest`.
    Stage(String),
}

impl Selector {
    /// A version number pins the bytes; an alias or stage can move between restarts.
    pub(crate) fn is_pinned(&self) -> bool {
        matches!(self, Selector::Version(_))
    }
}

/// Version names as they are listed to a user: numbers in numeric order, then names in
/// alphabetical order.
pub(crate) fn sort_versions(names: &mut [String]) {
    names.sort_by_key(|name| (name.parse::<u64>().unwrap_or(u64::MAX), name.clone()));
}

/// What to serve, before any registry is contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelReference {
    /// `NAME/VERSION/` under a model repository root.
    Repository {
        root: Location,
        name: String,
        version: String,
    },
    /// A version in the MLflow Model Registry at `tracking` (a tracking server URL).
    Registry {
        tracking: Url,
        name: String,
        selector: Selector,
    },
    /// An MLflow 3 logged model (`models:/m-ID`) at `tracking`, registered or not. Its name is
    /// the logged model's own, known once resolved; its version is the id.
    LoggedModel { tracking: Url, model_id: String },
    /// A version directory or a single model file, named explicitly or by its path.
    Direct {
        location: Location,
        name: String,
        version: String,
    },
}

impl ModelReference {
    /// Parses `--model-uri`. `name` and `version` (from `--model`/`--version`) name a direct
    /// location whose path does not end in `NAME/VERSION[/model.onnx]`; `tracking` is the
    /// registry for `models:/` URIs.
    pub(crate) fn parse(
        uri: &str,
        name: Option<&str>,
        version: Option<&str>,
        tracking: Option<&Url>,
    ) -> Result<ModelReference, RegistryError> {
        if let Some(path) = uri.strip_prefix("models:/") {
            let tracking = tracking.ok_or_else(|| RegistryError::InvalidReference {
                reference: uri.to_owned(),
                reason: "models:/ URIs need the MLflow tracking server: set --registry-uri or MLFLOW_TRACKING_URI".to_owned(),
            })?;
            let tracking = tracking.clone();
            return Ok(match parse_models_uri(uri, path)? {
                ModelsUri::Registry(name, selector) => ModelReference::Registry {
                    tracking,
                    name,
                    selector,
                },
                ModelsUri::LoggedModel(model_id) => {
                    ModelReference::LoggedModel { tracking, model_id }
                }
            });
        }
        let location = Location::parse(uri)?;
        let directory_segments = if location.is_model_file() { 3 } else { 2 };
        let mut derived = location.trailing_segments(directory_segments);
        if directory_segments == 3 {
            derived.pop();
        }
        let derived_name = (derived.len() == 2).then(|| derived[0].clone());
        let derived_version = (derived.len() == 2).then(|| derived[1].clone());
        let (Some(name), Some(version)) = (
            name.map(str::to_owned).or(derived_name),
            version.map(str::to_owned).or(derived_version),
        ) else {
            return Err(RegistryError::InvalidReference {
                reference: location.to_string(),
                reason:
                    "cannot tell the model's name and version from it: pass --model and --version"
                        .to_owned(),
            });
        };
        Ok(ModelReference::Direct {
            location,
            name,
            version,
        })
    }

    /// Whether the reference names exact bytes (so a verified cache can be reused without
    /// asking the registry); aliases and stages must be resolved first.
    pub(crate) fn is_pinned(&self) -> bool {
        match self {
            ModelReference::Registry { selector, .. } => selector.is_pinned(),
            _ => true,
        }
    }

    /// Whether the files are on local disk (so `serve` loads them in place).
    pub(crate) fn is_local(&self) -> bool {
        match self {
            ModelReference::Repository { root: location, .. }
            | ModelReference::Direct { location, .. } => {
                matches!(location, Location::Local(_))
            }
            ModelReference::Registry { .. } | ModelReference::LoggedModel { .. } => false,
        }
    }

    /// What a download of this reference is recorded as (the registry included), so a cached
    /// download is reused only for the very same reference.
    pub(crate) fn cache_key(&self) -> String {
        match self {
            ModelReference::Registry { tracking, .. }
            | ModelReference::LoggedModel { tracking, .. } => {
                format!("{self} at {}", redact_url(tracking))
            }
            _ => self.to_string(),
        }
    }

    /// The model's name as the reference spells it; empty for a logged model, whose name is
    /// known only once it is resolved.
    pub(crate) fn name(&self) -> &str {
        match self {
            ModelReference::Repository { name, .. }
            | ModelReference::Registry { name, .. }
            | ModelReference::Direct { name, .. } => name,
            ModelReference::LoggedModel { .. } => "",
        }
    }

    /// The version, if the reference pins one.
    pub(crate) fn pinned_version(&self) -> Option<&str> {
        match self {
            ModelReference::Repository { version, .. } | ModelReference::Direct { version, .. } => {
                Some(version)
            }
            ModelReference::Registry {
                selector: Selector::Version(version),
                ..
            } => Some(version),
            ModelReference::LoggedModel { model_id, .. } => Some(model_id),
            ModelReference::Registry { .. } => None,
        }
    }
}

impl fmt::Display for ModelReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelReference::Repository {
                root,
                name,
                version,
            } => write!(f, "{root} (model '{name}' version '{version}')"),
            ModelReference::Registry { name, selector, .. } => match selector {
                Selector::Version(version) => write!(f, "models:/{name}/{version}"),
                Selector::Alias(alias) => write!(f, "models:/{name}@{alias}"),
                Selector::Stage(stage) => write!(f, "models:/{name}/{stage}"),
            },
            ModelReference::LoggedModel { model_id, .. } => write!(f, "models:/{model_id}"),
            ModelReference::Direct { location, .. } => write!(f, "{location}"),
        }
    }
}

/// What a `models:/` URI names.
enum ModelsUri {
    Registry(String, Selector),
    LoggedModel(String),
}

/// MLflow's prefix of logged-model ids. MLflow itself takes any single segment for an id; pinserve
/// asks for the prefix so that `models:/NAME` (a version forgotten) is not sent off as an id.
const LOGGED_MODEL_PREFIX: &str = "m-";

fn parse_models_uri(uri: &str, path: &str) -> Result<ModelsUri, RegistryError> {
    let invalid = |reason: &str| RegistryError::InvalidReference {
        reference: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let path = path.trim_start_matches('/');
    if let Some((name, alias)) = path.split_once('@') {
        check_name(name).map_err(invalid)?;
        check_name(alias).map_err(invalid)?;
        return Ok(ModelsUri::Registry(
            name.to_owned(),
            Selector::Alias(alias.to_owned()),
        ));
    }
    let Some((name, selector)) = path.split_once('/') else {
        return match path.strip_prefix(LOGGED_MODEL_PREFIX) {
            Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Ok(ModelsUri::LoggedModel(path.to_owned()))
            }
            _ => Err(invalid(EXPECTED_FORMS)),
        };
    };
    check_name(name).map_err(invalid)?;
    check_name(selector).map_err(invalid)?;
    let selector = if selector.bytes().all(|b| b.is_ascii_digit()) {
        Selector::Version(selector.to_owned())
    } else {
        Selector::Stage(selector.to_owned())
    };
    Ok(ModelsUri::Registry(name.to_owned(), selector))
}

const EXPECTED_FORMS: &str =
    "expected models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/STAGE or models:/m-ID";

fn check_name(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        Err("a part of it is empty")
    } else if part.contains(['/', '@']) {
        Err(EXPECTED_FORMS)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracking() -> Url {
        Url::parse("http://mlflow:5000").unwrap()
    }

    fn parse(uri: &str) -> Result<ModelReference, String> {
        ModelReference::parse(uri, None, None, Some(&tracking())).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_registry_uris() {
        let registry = |name: &str, selector| ModelReference::Registry {
            tracking: tracking(),
            name: name.to_owned(),
            selector,
        };
        assert_eq!(
            parse("models:/fraud/7"),
            Ok(registry("fraud", Selector::Version("7".into())))
        );
        assert_eq!(
            parse("models:/fraud@champion"),
            Ok(registry("fraud", Selector::Alias("champion".into())))
        );
        assert_eq!(
            parse("models:/fraud/Production"),
            Ok(registry("fraud", Selector::Stage("Production".into())))
        );
        assert_eq!(
            parse("models:///fraud/latest"),
            Ok(registry("fraud", Selector::Stage("latest".into())))
        );
        assert!(
            parse("models:/fraud")
                .unwrap_err()
                .contains("models:/NAME/VERSION")
        );
        assert!(parse("models:/fraud/7/extra").is_err());
        assert!(parse("models:/@x").is_err());
        let without_registry =
            ModelReference::parse("models:/fraud/7", None, None, None).unwrap_err();
        assert!(without_registry.to_string().contains("MLFLOW_TRACKING_URI"));
    }

    #[test]
    fn parses_logged_model_uris_and_keeps_their_id_as_the_version() {
        let logged = parse("models:/m-0123abcd").unwrap();
        assert_eq!(
            logged,
            ModelReference::LoggedModel {
                tracking: tracking(),
                model_id: "m-0123abcd".to_owned(),
            }
        );
        assert_eq!(logged.to_string(), "models:/m-0123abcd");
        assert_eq!(
            logged.cache_key(),
            "models:/m-0123abcd at http://mlflow:5000/"
        );
        assert_eq!(
            (logged.name(), logged.pinned_version()),
            ("", Some("m-0123abcd"))
        );
        assert!(logged.is_pinned() && !logged.is_local());
        for not_an_id in [
            "models:/m-",
            "models:/m-a_b",
            "models:/m-a.b",
            "models:/fraud",
        ] {
            let err = parse(not_an_id).unwrap_err();
            assert!(err.contains("models:/m-ID"), "{not_an_id}: {err}");
        }
        assert_eq!(
            parse("models:/m-1/2").unwrap(),
            ModelReference::Registry {
                tracking: tracking(),
                name: "m-1".to_owned(),
                selector: Selector::Version("2".into()),
            },
            "a registered model may be named like an id"
        );
    }

    #[test]
    fn names_direct_locations_by_their_last_segments() {
        let direct = parse("s3://bucket/models/fraud/7").unwrap();
        assert_eq!(
            (direct.name(), direct.pinned_version()),
            ("fraud", Some("7"))
        );
        let file = parse("https://host/models/fraud/7/model.onnx").unwrap();
        assert_eq!((file.name(), file.pinned_version()), ("fraud", Some("7")));
        let local = parse("/srv/models/churn/3/").unwrap();
        assert_eq!((local.name(), local.pinned_version()), ("churn", Some("3")));
        let err = parse("https://host/model.onnx").unwrap_err();
        assert!(err.contains("pass --model and --version"), "{err}");
        let named =
            ModelReference::parse("https://host/model.onnx", Some("m"), Some("2"), None).unwrap();
        assert_eq!((named.name(), named.pinned_version()), ("m", Some("2")));
    }

    #[test]
    fn cache_keys_name_the_registry() {
        let reference = parse("models:/fraud/7").unwrap();
        assert_eq!(
            reference.cache_key(),
            "models:/fraud/7 at http://mlflow:5000/"
        );
        assert!(!reference.is_local());
        assert!(parse("/srv/models/fraud/7").unwrap().is_local());
    }

    #[test]
    fn refuses_unknown_schemes() {
        assert!(
            parse("ftp://host/m/1")
                .unwrap_err()
                .contains("unsupported scheme 'ftp'")
        );
    }

    #[test]
    fn only_versions_are_pinned() {
        assert!(parse("models:/fraud/7").unwrap().is_pinned());
        assert!(!parse("models:/fraud@champion").unwrap().is_pinned());
        assert!(!parse("models:/fraud/Staging").unwrap().is_pinned());
        assert!(parse("gs://b/fraud/7").unwrap().is_pinned());
    }

    #[test]
    fn joins_segments_onto_urls_and_paths() {
        let root = Location::parse("s3://bucket/models/").unwrap();
        assert_eq!(
            root.join("fraud").join("7").to_string(),
            "s3://bucket/models/fraud/7"
        );
        let local = Location::parse("/srv/models").unwrap();
        assert_eq!(local.join("fraud").to_string(), "/srv/models/fraud");
        let version = Location::parse("s3://bucket/models/fraud/7/").unwrap();
        assert_eq!(
            version.parent().unwrap().to_string(),
            "s3://bucket/models/fraud"
        );
    }

    #[test]
    fn credentials_in_references_are_redacted() {
        let err = ModelReference::parse("https://user:secret@host/model.onnx", None, None, None)
            .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let unparsable = ModelReference::parse(
            "https://alice:s3cretpw@host:99999/m/1/model.onnx",
            None,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            unparsable.contains("invalid port") && !unparsable.contains("s3cretpw"),
            "{unparsable}"
        );
    }
}
