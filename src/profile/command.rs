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
        task::{self, TaskError, TaskPlan},
    },
    model::{Signature, Tensor},
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
    #[error(
        "cannot tell which outputs are predictions; name them with --task, --label-output and --score-output"
    )]
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
    let plan = prediction_plan(config, &scorer.signature)?;
    let mapping = ColumnMapping {
        target: config.target.clone(),
        feature_columns: (!args.feature_columns.is_empty()).then(|| args.feature_columns.clone()),
        ignore: Vec::new(),
    };
    let dataset = Dataset::for_model(&data, &scorer.signature, &mapping)?;
    let settings = Settings {
        bins: usize::from(config.bins),
        max_categories: usize::from(config.max_categories),
        sample_rows: usize::try_from(config.sample_rows).unwrap_or(usize::MAX),
        seed: config.seed,
    };
    let mut features = FeatureStats::new(&scorer.signature, &dataset.input_columns(), settings);
    let mut predictions = plan
        .as_ref()
        .map(|plan| PredictionStats::new(plan, settings));
    // Without predictions to profile, the first output is asked for: a model call needs one.
    let outputs = plan.as_ref().map_or(vec![0], |plan| plan.outputs.clone());
    scorer
        .score(
            &dataset,
            &outputs,
            |batch| -> Result<(), ProfileCommandError> {
                features.observe(&batch.inputs);
                Ok(())
            },
            |outputs: Vec<Tensor>, _| match &mut predictions {
                Some(predictions) => Ok(predictions.observe(&outputs)?),
                None => Ok(()),
            },
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
        predictions: match (predictions, plan) {
            (Some(predictions), Some(plan)) => predictions.finish(plan.task),
            _ => Vec::new(),
        },
    })
}

/// Which outputs are predictions, as `eval` decides it. Outputs that are neither a classifier's
/// nor a regressor's (an embedding, say) leave only the features to profile, unless the flags
/// named the task or outputs, which must then fit.
fn prediction_plan(
    config: &ProfileConfig,
    signature: &Signature,
) -> Result<Option<TaskPlan>, ProfileCommandError> {
    let args = &config.scoring;
    match task::infer(signature, &args.overrides(None)) {
        Ok(plan) => Ok(Some(plan)),
        Err(err)
            if args.task.is_none()
                && args.label_output.is_none()
                && args.score_output.is_none() =>
        {
            tracing::warn!(reason = %err, "predictions are not profiled, the features are");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
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
    // Readable by others, as a file written in place would be (a temporary file is 0600).
    let mut file = tempfile::Builder::new()
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(error)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(error)?;
    file.persist(path).map_err(|err| error(err.error))?;
    Ok(())
}
