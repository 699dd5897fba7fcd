//! The reference profile's file format (`reference.json`, version 1): what the training data
//! looked like to the model, feature by feature, and what the model predicted on it. Serving
//! compares live traffic with it; nothing in it is a raw row.
//!
//! A numeric distribution is a list of interior bin `edges` `e1 < e2 < ... < eB-1` and one
//! `fraction` per bin: bin 0 holds values below `e1`, bin i values in `[ei, ei+1)`, the last bin
//! values from `eB-1` up. Fractions count the values that are not missing and add up to 1.

use std::{collections::HashSet, path::Path};

use serde::{Deserialize, Serialize};

use crate::model::{DataType, Dim, Signature};

/// The `format` every profile names, so a stray JSON file is not taken for one.
pub(crate) const FORMAT: &str = "pinserve-reference-profile";
/// The version this build writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Where a profile lives in a model version's directory, beside `model.onnx`.
pub(crate) const FILE_NAME: &str = "reference.json";

/// How far the fractions of a distribution may add up from 1 (they are rounded in JSON).
const FRACTION_TOLERANCE: f64 = 1e-6;

/// The most bins or listed categories a column may have (what `profile --bins` and
/// `--max-categories` allow): serve keeps a bin index per row in 16 bits and a series per bin.
pub(crate) const MAX_BINS: usize = 1001;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceProfile {
    pub(crate) format: String,
    pub(crate) version: u32,
    /// The model version the profile was computed with.
    pub model: ModelSummary,
    /// The data it was computed from.
    pub dataset: DatasetSummary,
    pub features: Vec<FeatureProfile>,
    pub predictions: Vec<PredictionProfile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSummary {
    pub name: String,
    pub version: String,
    pub(crate) sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSummary {
    pub(crate) path: String,
    pub(crate) sha256: String,
    pub rows: u64,
    /// Rows the bins and fractions were computed from: all of them, or a uniform sample.
    pub sampled_rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FeatureKind {
    Numeric,
    Categorical,
}

/// One feature: a column of the data, which is one column of a model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    /// The data's column name.
    pub name: String,
    /// The model input it feeds, and its position along the input's second dimension (0 for
    /// an input of shape [N] or [N, 1]).
    pub input: String,
    pub index: usize,
    pub(crate) kind: FeatureKind,
    /// Missing values (NaN; an empty string for a categorical feature) among all rows.
    pub missing_rate: f64,
    /// For a numeric feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Bins>,
    /// For a categorical feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Categories>,
}

/// A numeric distribution: quantile bins and the range seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bins {
    pub edges: Vec<f64>,
    pub fractions: Vec<f64>,
    pub min: f64,
    pub max: f64,
}

/// The most frequent categories, and what all the others add up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Categories {
    pub top: Vec<Share>,
    pub other: f64,
}

/// A category or class and its share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub(crate) value: String,
    pub(crate) fraction: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PredictionKind {
    /// Predicted class labels.
    Classes,
    /// A score or value per row, binned.
    Scores,
}

/// What the model predicted on the data, for one output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionProfile {
    pub output: String,
    pub(crate) kind: PredictionKind,
    /// For scores of shape [N, C]: the column binned (a binary classifier's positive class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<Share>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Bins>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the reference profile {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a reference profile: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("the reference profile does not match the model: {0}")]
    Mismatch(String),
}

impl Bins {
    /// The bin `value` falls in (see the module's documentation); NaN has none.
    pub(crate) fn bin_of(&self, value: f64) -> Option<usize> {
        (!value.is_nan()).then(|| self.edges.partition_point(|edge| *edge <= value))
    }

    fn check(&self, what: &str) -> Result<(), String> {
        if self.fractions.len() != self.edges.len() + 1 {
            return Err(format!(
                "{what}: {} edges need {} fractions, not {}",
                self.edges.len(),
                self.edges.len() + 1,
                self.fractions.len()
            ));
        }
        if !self.edges.windows(2).all(|pair| pair[0] < pair[1])
            || self.edges.iter().any(|edge| !edge.is_finite())
        {
            return Err(format!(
                "{what}: edges must be finite and strictly increasing"
            ));
        }
        check_fractions(what, self.fractions.iter().copied())
    }
}

fn check_fractions(what: &str, fractions: impl Iterator<Item = f64>) -> Result<(), String> {
    let mut sum = 0.0;
    for (count, fraction) in fractions.enumerate() {
        if count == MAX_BINS {
            return Err(format!("{what}: more than {MAX_BINS} bins or categories"));
        }
        if !(0.0..=1.0).contains(&fraction) {
            return Err(format!(
                "{what}: fraction {fraction} is not between 0 and 1"
            ));
        }
        sum += fraction;
    }
    // A feature whose every value is missing has no fractions to add up.
    if sum != 0.0 && (sum - 1.0).abs() > FRACTION_TOLERANCE {
        return Err(format!("{what}: fractions add up to {sum}, not 1"));
    }
    Ok(())
}

impl ReferenceProfile {
    /// Reads and checks the profile at `path`.
    pub fn read(path: &Path) -> Result<ReferenceProfile, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| ProfileError::Io {
            path: shown.clone(),
            source,
        })?;
        let profile: ReferenceProfile =
            serde_json::from_slice(&text).map_err(|source| ProfileError::Json {
                path: shown.clone(),
                source,
            })?;
        profile.check().map_err(|reason| ProfileError::Invalid {
            path: shown,
            reason,
        })?;
        Ok(profile)
    }

    /// The profile as its file holds it.
    pub(crate) fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a profile is plain data");
        text.push('\n');
        text
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is '{}', not '{FORMAT}'", self.format));
        }
        if self.version != VERSION {
            return Err(format!(
                "version {} of the format; this pinserve reads version {VERSION}",
                self.version
            ));
        }
        let mut seen = HashSet::new();
        for feature in &self.features {
            if !seen.insert((feature.input.as_str(), feature.index)) {
                return Err(format!(
                    "input '{}' column {} is profiled twice",
                    feature.input, feature.index
                ));
            }
            feature.check()?;
        }
        for prediction in &self.predictions {
            prediction.check()?;
        }
        Ok(())
    }

    /// Refuses a profile whose features are not the model's inputs: an input it does not have,
    /// a column beyond the input's width, a categorical feature of a numeric input or the
    /// reverse, or an input column left out; and predictions of an output it does not have.
    pub fn check_against(&self, signature: &Signature) -> Result<(), ProfileError> {
        let mismatch = |reason: String| Err(ProfileError::Mismatch(reason));
        for feature in &self.features {
            let Some(spec) = signature.inputs.iter().find(|i| i.name == feature.input) else {
                return mismatch(format!(
                    "feature '{}' is of input '{}', which the model does not have",
                    feature.name, feature.input
                ));
            };
            if feature.index >= input_width(&spec.dims).unwrap_or(usize::MAX) {
                return mismatch(format!(
                    "feature '{}' is column {} of input '{}', which has {:?} columns",
                    feature.name,
                    feature.index,
                    feature.input,
                    input_width(&spec.dims)
                ));
            }
            let categorical = spec.datatype == DataType::Bytes;
            if categorical != (feature.kind == FeatureKind::Categorical) {
                return mismatch(format!(
                    "feature '{}' is {:?} in the profile, but input '{}' is {}",
                    feature.name, feature.kind, feature.input, spec.datatype
                ));
            }
        }
        for spec in &signature.inputs {
            let profiled = self
                .features
                .iter()
                .filter(|f| f.input == spec.name)
                .count();
            if let Some(width) = input_width(&spec.dims)
                && profiled != width
            {
                return mismatch(format!(
                    "input '{}' has {width} columns, the profile describes {profiled}",
                    spec.name
                ));
            }
        }
        for prediction in &self.predictions {
            if !signature
                .outputs
                .iter()
                .any(|o| o.name == prediction.output)
            {
                return mismatch(format!(
                    "predictions of output '{}', which the model does not have",
                    prediction.output
                ));
            }
        }
        Ok(())
    }
}

/// Columns of one row of an input: 1 for [N] and [N, 1], the second dimension for [N, K];
/// `None` when it is dynamic.
fn input_width(dims: &[Dim]) -> Option<usize> {
    match dims {
        [_] => Some(1),
        [_, Dim::Fixed(width)] => Some(*width),
        _ => None,
    }
}

impl FeatureProfile {
    fn check(&self) -> Result<(), String> {
        let what = format!("feature '{}'", self.name);
        check_fractions(&what, std::iter::once(self.missing_rate))?;
        match (self.kind, &self.bins, &self.categories) {
            (FeatureKind::Numeric, Some(bins), None) => bins.check(&what),
            (FeatureKind::Categorical, None, Some(categories)) => check_fractions(
                &what,
                categories
                    .top
                    .iter()
                    .map(|share| share.fraction)
                    .chain([categories.other]),
            ),
            _ => Err(format!(
                "{what}: a numeric feature has bins, a categorical one categories"
            )),
        }
    }
}

impl PredictionProfile {
    fn check(&self) -> Result<(), String> {
        let what = format!("predictions of '{}'", self.output);
        match (self.kind, &self.classes, &self.bins) {
            (PredictionKind::Classes, Some(classes), None) => {
                check_fractions(&what, classes.iter().map(|share| share.fraction))
            }
            (PredictionKind::Scores, None, Some(bins)) => bins.check(&what),
            _ => Err(format!("{what}: classes have classes, scores bins")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::signature::examples::{column, matrix};

    fn bins(edges: Vec<f64>, fractions: Vec<f64>) -> Bins {
        Bins {
            edges,
            fractions,
            min: 0.0,
            max: 10.0,
        }
    }

    #[test]
    fn values_fall_in_the_bin_their_edges_say() {
        let bins = bins(vec![1.0, 2.0, 3.0], vec![0.25; 4]);
        let found: Vec<_> = [-5.0, 0.99, 1.0, 1.5, 2.0, 3.0, 99.0, f64::NAN]
            .into_iter()
            .map(|v| bins.bin_of(v))
            .collect();
        assert_eq!(
            found,
            [
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(2),
                Some(3),
                Some(3),
                None
            ]
        );
    }

    #[test]
    fn malformed_bins_are_named() {
        let cases = [
            (bins(vec![1.0], vec![1.0]), "1 edges need 2 fractions"),
            (bins(vec![2.0, 1.0], vec![0.5, 0.25, 0.25]), "strictly"),
            (bins(vec![1.0], vec![0.5, 0.6]), "add up to"),
            (bins(vec![1.0], vec![-0.5, 1.5]), "not between 0 and 1"),
            (
                bins(
                    (0..MAX_BINS).map(|edge| edge as f64).collect(),
                    vec![0.0; MAX_BINS + 1],
                ),
                "more than 1001 bins",
            ),
        ];
        for (bins, expected) in cases {
            let err = bins.check("f").unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    fn profile() -> ReferenceProfile {
        ReferenceProfile {
            format: FORMAT.to_owned(),
            version: VERSION,
            model: ModelSummary {
                name: "m".into(),
                version: "1".into(),
                sha256: String::new(),
            },
            dataset: DatasetSummary {
                path: "train.csv".into(),
                sha256: String::new(),
                rows: 4,
                sampled_rows: 4,
            },
            features: ["a", "b"]
                .into_iter()
                .enumerate()
                .map(|(index, name)| FeatureProfile {
                    name: name.into(),
                    input: "x".into(),
                    index,
                    kind: FeatureKind::Numeric,
                    missing_rate: 0.0,
                    bins: Some(bins(vec![1.0], vec![0.5, 0.5])),
                    categories: None,
                })
                .collect(),
            predictions: vec![PredictionProfile {
                output: "y".into(),
                kind: PredictionKind::Scores,
                column: None,
                classes: None,
                bins: Some(bins(vec![0.5], vec![0.5, 0.5])),
            }],
        }
    }

    fn signature(width: usize, datatype: DataType, output: &str) -> Signature {
        Signature {
            inputs: vec![matrix("x", datatype, width)],
            outputs: vec![column(output, DataType::Fp32)],
        }
    }

    #[test]
    fn a_profile_round_trips_and_matches_its_model() {
        let profile = profile();
        let text = profile.to_json();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &text).unwrap();
        let read = ReferenceProfile::read(file.path()).unwrap();
        assert_eq!(read, profile);
        read.check_against(&signature(2, DataType::Fp32, "y"))
            .unwrap();
    }

    #[test]
    fn a_mismatch_says_what_does_not_match() {
        let profile = profile();
        let cases = [
            (
                signature(3, DataType::Fp32, "y"),
                "has 3 columns, the profile describes 2",
            ),
            (signature(1, DataType::Fp32, "y"), "column 1 of input 'x'"),
            (
                signature(2, DataType::Bytes, "y"),
                "is Numeric in the profile",
            ),
            (signature(2, DataType::Fp32, "z"), "output 'y'"),
        ];
        for (signature, expected) in cases {
            let err = profile.check_against(&signature).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn other_files_and_versions_are_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        for (text, expected) in [
            (
                r#"{"format": "x"}"#.to_owned(),
                "is not a reference profile",
            ),
            (
                profile().to_json().replace(FORMAT, "other"),
                "format is 'other'",
            ),
            (
                profile()
                    .to_json()
                    .replace("\"version\": 1", "\"version\": 2"),
                "version 2 of the format",
            ),
        ] {
            std::fs::write(file.path(), text).unwrap();
            let err = ReferenceProfile::read(file.path()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
