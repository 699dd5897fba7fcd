//! What a reference names in the tracking server: a registered model version (by number, alias
//! or stage) or an MLflow 3 logged model (by id), and where its files are.

use serde::Deserialize;

use super::client::{MISSING, MlflowClient};
use crate::registry::{
    redact::error_chain,
    reference::{Selector, sort_versions},
    source::TransferError,
};

/// A registered model version, as `model-versions/get` returns it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ModelVersion {
    pub(crate) version: String,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Tag {
    pub(crate) key: String,
    pub(crate) value: String,
}

impl ModelVersion {
    pub(crate) fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|tag| tag.key == key)
            .map(|tag| tag.value.as_str())
    }
}

/// An MLflow 3 logged model, as `logged-models/{id}` returns its `info`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoggedModel {
    pub(crate) model_id: String,
    pub(crate) name: String,
    pub(crate) artifact_uri: String,
    /// `LOGGED_MODEL_READY` once its artifacts are complete.
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) tags: Vec<Tag>,
}

/// A logged model's status once its artifacts are all uploaded.
const LOGGED_MODEL_READY: &str = "LOGGED_MODEL_READY";

/// One version of a registered model, named directly: the two endpoints that answer with a
/// single `model_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Named<'a> {
    Number(&'a str),
    Alias(&'a str),
}

impl<'a> Named<'a> {
    /// The endpoint that answers for this name, and the query parameter it is given as.
    fn endpoint(self) -> (&'static str, (&'static str, &'a str)) {
        match self {
            Named::Number(number) => ("api/2.0/mlflow/model-versions/get", ("version", number)),
            Named::Alias(alias) => ("api/2.0/mlflow/registered-models/alias", ("alias", alias)),
        }
    }
}

impl MlflowClient {
    /// The model version a selector names.
    pub(crate) async fn resolve(
        &self,
        name: &str,
        selector: &Selector,
    ) -> Result<ModelVersion, TransferError> {
        match selector {
            Selector::Version(number) => self.named_version(name, Named::Number(number)).await,
            Selector::Alias(alias) => self.named_version(name, Named::Alias(alias)).await,
            Selector::Stage(stage) => self.latest_in_stage(name, stage).await,
        }
    }

    /// A version by number or alias; when the registry says it does not exist, the versions
    /// that do are said with it.
    async fn named_version(
        &self,
        name: &str,
        named: Named<'_>,
    ) -> Result<ModelVersion, TransferError> {
        #[derive(Deserialize)]
        struct One {
            model_version: ModelVersion,
        }
        let (path, selector) = named.endpoint();
        match self
            .get_json::<One>(path, &[("name", name), selector])
            .await
        {
            Ok(one) => Ok(one.model_version),
            Err(err) if err.code() == Some(MISSING) => Err(TransferError::NotInRegistry {
                answer: Box::new(err),
                versions: self.versions_of(name).await,
            }),
            Err(err) => Err(err),
        }
    }

    /// The newest version in a stage (`latest`: in any stage).
    async fn latest_in_stage(
        &self,
        name: &str,
        stage: &str,
    ) -> Result<ModelVersion, TransferError> {
        #[derive(Deserialize)]
        struct Many {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let mut query = vec![("name", name)];
        if !stage.eq_ignore_ascii_case("latest") {
            query.push(("stages", stage));
        }
        let many: Many = self
            .get_json(
                "api/2.0/mlflow/registered-models/get-latest-versions",
                &query,
            )
            .await?;
        many.model_versions
            .into_iter()
            .max_by_key(|version| version.version.parse::<u64>().unwrap_or(0))
            .ok_or_else(|| {
                TransferError::Fatal(format!("model '{name}' has no version in stage '{stage}'"))
            })
    }

    /// The versions of `name` the registry holds (MLflow's search of model versions), said for
    /// an error message; a registry that cannot tell is said to, without failing.
    async fn versions_of(&self, name: &str) -> String {
        #[derive(Deserialize)]
        struct Found {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let found = self
            .get_json::<Found>(
                "api/2.0/mlflow/model-versions/search",
                &[("filter", &filter), ("max_results", "1000")],
            )
            .await;
        let mut versions: Vec<String> = match found {
            Ok(found) => found
                .model_versions
                .into_iter()
                .map(|v| v.version)
                .collect(),
            Err(err) => {
                return format!("its versions could not be listed: {}", error_chain(&err));
            }
        };
        if versions.is_empty() {
            return format!("the registry has no versions of a model named '{name}'");
        }
        sort_versions(&mut versions);
        format!("the versions of '{name}' are: {}", versions.join(", "))
    }

    /// The logged model `model_id`. One still uploading (or failed) is refused: its artifacts
    /// may be incomplete, and a copy taken now would be cached as if it were the model.
    pub(crate) async fn logged_model(&self, model_id: &str) -> Result<LoggedModel, TransferError> {
        #[derive(Deserialize)]
        struct Answer {
            model: Model,
        }
        #[derive(Deserialize)]
        struct Model {
            info: LoggedModel,
        }
        // The id is `m-` and alphanumerics (checked when the reference was parsed): a segment.
        let path = format!("api/2.0/mlflow/logged-models/{model_id}");
        let answer: Answer = self.get_json(&path, &[]).await?;
        let logged = answer.model.info;
        if !logged.status.is_empty() && logged.status != LOGGED_MODEL_READY {
            return Err(TransferError::Fatal(format!(
                "logged model {model_id} is {}, not {LOGGED_MODEL_READY}: its artifacts may be incomplete",
                logged.status
            )));
        }
        Ok(logged)
    }

    /// Where the version's files are: `mlflow-artifacts:/...` or an object-store URL.
    pub(crate) async fn download_uri(
        &self,
        name: &str,
        version: &str,
    ) -> Result<String, TransferError> {
        #[derive(Deserialize)]
        struct DownloadUri {
            artifact_uri: String,
        }
        let answer: DownloadUri = self
            .get_json(
                "api/2.0/mlflow/model-versions/get-download-uri",
                &[("name", name), ("version", version)],
            )
            .await?;
        Ok(answer.artifact_uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_and_an_alias_ask_their_own_endpoint_with_their_own_parameter() {
        assert_eq!(
            Named::Number("3").endpoint(),
            ("api/2.0/mlflow/model-versions/get", ("version", "3"))
        );
        assert_eq!(
            Named::Alias("champion").endpoint(),
            (
                "api/2.0/mlflow/registered-models/alias",
                ("alias", "champion")
            )
        );
    }
}
