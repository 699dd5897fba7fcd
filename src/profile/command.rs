//! The `profile` command: fetch the model and the data as `eval` does, score every batch
//! through the serving path, and write the profile.

use std::path::Path;

use super::{
    build::{BuildError, FeatureStats, PredictionStats, Settings},
    format::{DatasetSummary, FORMAT, ModelSummary, ReferenceProfile, VERSION},
};
use crate::{
    config::ProfileConfig,
    eval::{
        data::{ColumnMapping, DataError, Dataset},
        scoring::{self, ScoreError, Scorer},
        task::{self, TaskError},
    },
    model::Tensor,
    registry::RegistryError,
};

#[derive(Debug, thiserror::Error)]
pub enum ProfileCommandError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}; name them with --task, --label-output and --score-output")]
    Task(#[from] TaskError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Profiles the data and writes the file; returns the profile written.
pub fn run(config: &ProfileConfig) -> Result<ReferenceProfile, ProfileCommandError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pinserve-profile")
        .build()
        .map_err(|source| ProfileCommandError::Write {
            path: "the async runtime".to_owned(),
            source,
        })?;
    let profile = runtime.block_on(profile(config))?;
    write_atomically(&config.out, &profile.to_json())?;
    Ok(profile)
}

async fn profile(config: &ProfileConfig) -> Result<ReferenceProfile, ProfileCommandError> {
    let args = &config.scoring;
    let (data, _downloaded) =
        scoring::open_data(&args.data, args.data_sha256(), &args.cache_dir, &args.fetch).await?;
    let reference = args.reference(&config.model)?;
    let artifact = scoring::obtain_model(&reference, &args.cache_dir, &args.fetch).await?;
    let scorer = Scorer::start(&artifact, &args.runtime, args.instances, args.batch_size).await?;
    let plan = task::infer(&scorer.signature, &args.overrides(None))?;
    let mapping = ColumnMapping {
        target: config.target.clone(),
        feature_columns: (!args.feature_columns.is_empty()).then(|| args.feature_columns.clone()),
        ignore: Vec::new(),
    };
    let dataset = Dataset::for_model(&data, &scorer.signature, &mapping)?;
    let settings = Settings {
        bins: usize::from(config.bins),
        max_categories: config.max_categories,
        sample_rows: usize::try_from(config.sample_rows).unwrap_or(usize::MAX),
        seed: config.seed,
    };
    let mut features = FeatureStats::new(&scorer.signature, &dataset.input_columns(), settings);
    let mut predictions = PredictionStats::new(&plan, settings);
    scorer
        .score(
            &dataset,
            &plan.outputs,
            |batch| -> Result<(), ProfileCommandError> {
                features.observe(&batch.inputs);
                Ok(())
            },
            |outputs: Vec<Tensor>, _| Ok(predictions.observe(&outputs)?),
        )
        .await?;
    let (rows, sampled_rows) = features.rows();
    tracing::info!(model = %artifact.name, version = %artifact.version, rows, sampled_rows, "profiled");
    Ok(ReferenceProfile {
        format: FORMAT.to_owned(),
        version: VERSION,
        model: ModelSummary {
            name: artifact.name.clone(),
            version: artifact.version.clone(),
            sha256: artifact
                .sha256
                .map(|digest| digest.to_string())
                .unwrap_or_default(),
        },
        dataset: DatasetSummary {
            path: data.shown().to_owned(),
            sha256: data.sha256.clone(),
            rows,
            sampled_rows,
        },
        features: features.finish(),
        predictions: predictions.finish(plan.task),
    })
}

/// Writes beside the destination and renames, so a reader never sees half a profile.
fn write_atomically(path: &Path, text: &str) -> Result<(), ProfileCommandError> {
    let error = |source| ProfileCommandError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(error)?;
    file.persist(path).map_err(|err| error(err.error))?;
    Ok(())
}
