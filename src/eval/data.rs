//! The held-out data: CSV or Parquet from a local file, read in record batches of a chosen
//! size (a million rows are never held at once) and mapped to model inputs as a columnar
//! `/predict` request maps them. A model with one 2-D input takes every feature column, in
//! file order, stacked into `[rows, features]`; a model with several inputs takes one column
//! per input, by name. Every mismatch is found when the file is opened, from its schema, and
//! named: missing, extra or wrongly typed columns, and (while reading) nulls.

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader, cast::AsArray, types};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{ArrowError, DataType as ArrowType, Schema};
use parquet::{
    arrow::{ProjectionMask, arrow_reader::ParquetRecordBatchReaderBuilder},
    errors::ParquetError,
};
use sha2::{Digest, Sha256};

use crate::model::{DataType, Dim, InputError, Signature, Tensor, TensorData, TensorSpec};

/// Rows read to infer a CSV file's column types; the types the model needs are then imposed.
const CSV_INFERENCE_ROWS: usize = 1000;

/// Which columns are what.
#[derive(Debug, Clone, Default)]
pub struct ColumnMapping {
    /// The column holding what the model should predict (none for data without one, such as a
    /// reference profile's).
    pub target: Option<String>,
    /// For a model with one 2-D input: its features, in this order (default: every other
    /// column, in file order).
    pub feature_columns: Option<Vec<String>>,
    /// Columns to skip (ids, timestamps) instead of refusing them as extra.
    pub ignore: Vec<String>,
}

/// One batch's target column.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Numeric(Vec<f64>),
    Labels(Vec<String>),
}

/// One batch: the model's inputs bound in signature order (what `Batcher::infer` takes).
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Vec<Tensor>,
    /// `None` when the mapping names no target.
    pub target: Option<Target>,
    pub rows: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Parquet,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: unknown data format; use a .csv or .parquet file")]
    UnknownFormat { path: String },
    #[error("{path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: ArrowError,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: ParquetError,
    },
    #[error("column '{column}' ({role}) is not in the file; its columns are {known}")]
    MissingColumn {
        column: String,
        role: String,
        known: String,
    },
    #[error("columns {columns} match no model input; ignore them explicitly to evaluate anyway")]
    ExtraColumns { columns: String },
    #[error("column '{column}' holds {found}, but input '{input}' takes {expected}")]
    WrongType {
        column: String,
        found: String,
        input: String,
        expected: String,
    },
    #[error("column '{column}' has a null at data row {row}; evaluation data must be complete")]
    Null { column: String, row: u64 },
    #[error("column '{column}': {message}")]
    Convert { column: String, message: String },
    #[error("input '{input}' takes {expected} features, but {found} columns are left: {columns}")]
    FeatureCount {
        input: String,
        expected: usize,
        found: usize,
        columns: String,
    },
    #[error("input '{input}' cannot be fed from columns: {reason}")]
    UnsupportedInput { input: String, reason: String },
    #[error(transparent)]
    Input(#[from] InputError),
}

/// Which file columns feed one model input.
#[derive(Debug, Clone)]
struct InputColumns {
    spec: TensorSpec,
    /// Positions in the projected record batches, and the columns' names.
    positions: Vec<usize>,
    names: Vec<String>,
    /// Several columns stacked into `[rows, features]`.
    stacked: bool,
}

/// An opened, checked data file.
#[derive(Debug, Clone)]
pub struct Dataset {
    path: PathBuf,
    /// The file as errors name it (its URL, when it was downloaded).
    shown: String,
    format: Format,
    /// The schema to read with (CSV: with the types the model needs).
    schema: Arc<Schema>,
    projection: Vec<usize>,
    inputs: Vec<InputColumns>,
    target: Option<(usize, String)>,
    signature: Signature,
    /// Hex SHA-256 of the file's bytes.
    #[cfg(test)]
    sha256: String,
    /// Data rows (a CSV header is not one).
    pub rows: u64,
}

fn quoted(names: &[&str]) -> String {
    let parts: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    parts.join(", ")
}

impl Format {
    /// The format a file's name says it has; `shown` names it in the error.
    pub(crate) fn of(path: &Path, shown: &str) -> Result<Format, DataError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        match extension.to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "parquet" | "pq" => Ok(Format::Parquet),
            _ => Err(DataError::UnknownFormat {
                path: shown.to_owned(),
            }),
        }
    }
}

/// Hashes every byte read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads what is left and returns the hex digest.
    fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(hex::encode(self.hasher.finalize()))
    }
}

/// A data file read once: its format, columns, digest and row count. Each model evaluated on
/// it (candidate and baseline) maps its columns from here without reading the file again.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    path: PathBuf,
    shown: String,
    format: Format,
    schema: Schema,
    pub(crate) sha256: String,
    pub(crate) rows: u64,
}

impl DataFile {
    /// The file as reports and errors name it (its URL, when it was downloaded).
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Reads `path`'s schema, and hashes and counts it (one streaming pass).
    pub(crate) fn read(path: &Path) -> Result<DataFile, DataError> {
        DataFile::read_as(path, &path.display().to_string())
    }

    /// [`DataFile::read`] of a local copy, named `shown` (where it came from) in errors.
    pub(crate) fn read_as(path: &Path, shown: &str) -> Result<DataFile, DataError> {
        let format = Format::of(path, shown)?;
        let (schema, sha256, rows) = match format {
            Format::Csv => csv_schema(path, shown)?,
            Format::Parquet => parquet_schema(path, shown)?,
        };
        Ok(DataFile {
            path: path.to_path_buf(),
            shown: shown.to_owned(),
            format,
            schema,
            sha256,
            rows,
        })
    }
}

impl Dataset {
    /// Opens `path`, checks its columns against `signature`, and hashes and counts it.
    pub fn open(
        path: &Path,
        signature: &Signature,
        mapping: &ColumnMapping,
    ) -> Result<Dataset, DataError> {
        Dataset::for_model(&DataFile::read(path)?, signature, mapping)
    }

    /// `file`'s columns checked against `signature` and mapped to its inputs.
    pub(crate) fn for_model(
        file: &DataFile,
        signature: &Signature,
        mapping: &ColumnMapping,
    ) -> Result<Dataset, DataError> {
        let (format, file_schema) = (file.format, &file.schema);
        let names: Vec<&str> = file_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let (target, chosen) = choose_columns(&names, signature, mapping)?;
        for (spec, columns) in &chosen {
            for &column in columns {
                check_type(
                    file_schema.field(column).data_type(),
                    names[column],
                    spec,
                    format,
                )?;
            }
        }
        let schema = match format {
            Format::Csv => Arc::new(csv_read_schema(file_schema, target, &chosen)),
            Format::Parquet => Arc::new(file_schema.clone()),
        };
        let mut projection: Vec<usize> = chosen.iter().flat_map(|(_, c)| c.clone()).collect();
        projection.extend(target);
        projection.sort_unstable();
        projection.dedup();
        let position = |column: usize| projection.binary_search(&column).expect("projected");
        let inputs = input_columns(&chosen, &names, position, is_stacked(signature));
        Ok(Dataset {
            target: target.map(|column| (position(column), names[column].to_owned())),
            path: file.path.clone(),
            shown: file.shown.clone(),
            format,
            schema,
            projection,
            inputs,
            signature: signature.clone(),
            #[cfg(test)]
            sha256: file.sha256.clone(),
            rows: file.rows,
        })
    }

    #[cfg(test)]
    fn format(&self) -> Format {
        self.format
    }

    /// For each model input, the columns that feed it.
    pub(crate) fn input_columns(&self) -> Vec<(&str, &[String])> {
        self.inputs
            .iter()
            .map(|input| (input.spec.name.as_str(), input.names.as_slice()))
            .collect()
    }

    /// The file's rows in batches of `batch_rows` (the last may be shorter).
    pub fn batches(&self, batch_rows: usize) -> Result<Batches<'_>, DataError> {
        let batch_rows = batch_rows.max(1);
        let file = File::open(&self.path).map_err(|source| self.io(source))?;
        let reader: Box<dyn RecordBatchReader + Send> = match self.format {
            Format::Csv => Box::new(
                arrow_csv::ReaderBuilder::new(Arc::clone(&self.schema))
                    .with_header(true)
                    .with_batch_size(batch_rows)
                    .with_projection(self.projection.clone())
                    .build(file)
                    .map_err(|source| self.arrow(source))?,
            ),
            Format::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|source| self.parquet(source))?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), self.projection.clone());
                Box::new(
                    builder
                        .with_projection(mask)
                        .with_batch_size(batch_rows)
                        .build()
                        .map_err(|source| self.parquet(source))?,
                )
            }
        };
        Ok(Batches {
            dataset: self,
            reader,
            offset: 0,
        })
    }

    fn io(&self, source: io::Error) -> DataError {
        DataError::Io {
            path: self.shown.clone(),
            source,
        }
    }

    fn arrow(&self, source: ArrowError) -> DataError {
        DataError::Arrow {
            path: self.shown.clone(),
            source,
        }
    }

    fn parquet(&self, source: ParquetError) -> DataError {
        DataError::Parquet {
            path: self.shown.clone(),
            source,
        }
    }
}

/// The batches of a [`Dataset`], converted to tensors as they are read.
pub struct Batches<'a> {
    dataset: &'a Dataset,
    reader: Box<dyn RecordBatchReader + Send>,
    offset: u64,
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.reader.next()? {
            Ok(batch) => batch,
            Err(source) => return Some(Err(self.dataset.arrow(source))),
        };
        let offset = self.offset;
        self.offset += batch.num_rows() as u64;
        Some(self.dataset.convert(&batch, offset))
    }
}

/// Each input's columns, by name and by position in the projected batches.
fn input_columns(
    chosen: &Chosen<'_>,
    names: &[&str],
    position: impl Fn(usize) -> usize,
    stacked: bool,
) -> Vec<InputColumns> {
    chosen
        .iter()
        .map(|(spec, columns)| InputColumns {
            stacked,
            positions: columns.iter().map(|&c| position(c)).collect(),
            names: columns.iter().map(|&c| names[c].to_owned()).collect(),
            spec: (*spec).clone(),
        })
        .collect()
}

/// The CSV file's inferred schema, hash and row count.
fn csv_schema(path: &Path, shown: &str) -> Result<(Schema, String, u64), DataError> {
    let io_error = |source| DataError::Io {
        path: shown.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let (schema, _) = arrow_csv::reader::Format::default()
        .with_header(true)
        .infer_schema(file, Some(CSV_INFERENCE_ROWS))
        .map_err(|source| DataError::Arrow {
            path: shown.to_owned(),
            source,
        })?;
    let mut records = csv::Reader::from_reader(Hashing::new(File::open(path).map_err(io_error)?));
    let mut record = csv::ByteRecord::new();
    let mut rows = 0u64;
    while records
        .read_byte_record(&mut record)
        .map_err(|err| io_error(err.into()))?
    {
        rows += 1;
    }
    let sha256 = records.into_inner().finish().map_err(io_error)?;
    Ok((schema, sha256, rows))
}

/// The Parquet file's schema, hash and row count (from its footer).
fn parquet_schema(path: &Path, shown: &str) -> Result<(Schema, String, u64), DataError> {
    let io_error = |source| DataError::Io {
        path: shown.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| DataError::Parquet {
            path: shown.to_owned(),
            source,
        })?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    let schema = builder.schema().as_ref().clone();
    let sha256 = Hashing::new(File::open(path).map_err(io_error)?)
        .finish()
        .map_err(io_error)?;
    Ok((schema, sha256, rows))
}

/// Whether the model takes all features stacked in one 2-D input.
fn is_stacked(signature: &Signature) -> bool {
    matches!(signature.inputs.as_slice(), [only] if only.dims.len() == 2)
}

fn column_index(names: &[&str], column: &str, role: &str) -> Result<usize, DataError> {
    names
        .iter()
        .position(|name| *name == column)
        .ok_or_else(|| DataError::MissingColumn {
            column: column.to_owned(),
            role: role.to_owned(),
            known: quoted(names),
        })
}

type Chosen<'s> = Vec<(&'s TensorSpec, Vec<usize>)>;

/// The target's column and, for each input in signature order, the columns that feed it.
fn choose_columns<'s>(
    names: &[&str],
    signature: &'s Signature,
    mapping: &ColumnMapping,
) -> Result<(Option<usize>, Chosen<'s>), DataError> {
    let target = mapping
        .target
        .as_deref()
        .map(|column| column_index(names, column, "the target"))
        .transpose()?;
    let mut skipped: Vec<usize> = target.into_iter().collect();
    for column in &mapping.ignore {
        skipped.push(column_index(names, column, "to ignore")?);
    }
    let chosen = if is_stacked(signature) {
        vec![stacked_features(
            names,
            &signature.inputs[0],
            mapping,
            &skipped,
        )?]
    } else {
        per_input_columns(names, signature, mapping, &skipped)?
    };
    Ok((target, chosen))
}

fn stacked_features<'s>(
    names: &[&str],
    spec: &'s TensorSpec,
    mapping: &ColumnMapping,
    skipped: &[usize],
) -> Result<(&'s TensorSpec, Vec<usize>), DataError> {
    let columns: Vec<usize> = match &mapping.feature_columns {
        Some(features) => features
            .iter()
            .map(|column| column_index(names, column, &format!("a feature of '{}'", spec.name)))
            .collect::<Result<_, _>>()?,
        None => (0..names.len()).filter(|c| !skipped.contains(c)).collect(),
    };
    if let Dim::Fixed(expected) = spec.dims[1]
        && expected != columns.len()
    {
        let chosen: Vec<&str> = columns.iter().map(|&c| names[c]).collect();
        return Err(DataError::FeatureCount {
            input: spec.name.clone(),
            expected,
            found: columns.len(),
            columns: quoted(&chosen),
        });
    }
    Ok((spec, columns))
}

fn per_input_columns<'s>(
    names: &[&str],
    signature: &'s Signature,
    mapping: &ColumnMapping,
    skipped: &[usize],
) -> Result<Chosen<'s>, DataError> {
    let mut chosen = Vec::with_capacity(signature.inputs.len());
    for spec in &signature.inputs {
        if mapping.feature_columns.is_some() {
            return Err(unsupported(
                spec,
                "feature columns apply to a model with one 2-D input",
            ));
        }
        if !matches!(
            spec.dims.as_slice(),
            [_] | [_, Dim::Fixed(1) | Dim::Dynamic(_)]
        ) {
            return Err(unsupported(
                spec,
                "one column feeds an input of shape [N] or [N, 1]",
            ));
        }
        let column = column_index(names, &spec.name, &format!("input '{}'", spec.name))?;
        chosen.push((spec, vec![column]));
    }
    let used: Vec<usize> = chosen.iter().flat_map(|(_, c)| c.clone()).collect();
    let extra: Vec<&str> = (0..names.len())
        .filter(|c| !used.contains(c) && !skipped.contains(c))
        .map(|c| names[c])
        .collect();
    if !extra.is_empty() {
        return Err(DataError::ExtraColumns {
            columns: quoted(&extra),
        });
    }
    Ok(chosen)
}

fn unsupported(spec: &TensorSpec, reason: &str) -> DataError {
    DataError::UnsupportedInput {
        input: spec.name.clone(),
        reason: reason.to_owned(),
    }
}

/// The Arrow type a column is converted to for an input of `datatype`.
fn arrow_type(datatype: DataType) -> Option<ArrowType> {
    Some(match datatype {
        DataType::Bool => ArrowType::Boolean,
        DataType::Uint8 => ArrowType::UInt8,
        DataType::Uint16 => ArrowType::UInt16,
        DataType::Uint32 => ArrowType::UInt32,
        DataType::Uint64 => ArrowType::UInt64,
        DataType::Int8 => ArrowType::Int8,
        DataType::Int16 => ArrowType::Int16,
        DataType::Int32 => ArrowType::Int32,
        DataType::Int64 => ArrowType::Int64,
        DataType::Fp16 => ArrowType::Float16,
        DataType::Fp32 => ArrowType::Float32,
        DataType::Fp64 => ArrowType::Float64,
        DataType::Bytes => ArrowType::Utf8,
        DataType::Bf16 => return None,
    })
}

fn is_text(found: &ArrowType) -> bool {
    match found {
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View => true,
        ArrowType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// Refuses a column whose values the input cannot take: strings for numbers, numbers for
/// strings (except in CSV, where every field is text), anything for BF16.
fn check_type(
    found: &ArrowType,
    column: &str,
    spec: &TensorSpec,
    format: Format,
) -> Result<(), DataError> {
    let fits = match spec.datatype {
        DataType::Bf16 => return Err(unsupported(spec, "BF16 inputs are not read from files")),
        DataType::Bytes => is_text(found) || format == Format::Csv,
        DataType::Bool => matches!(found, ArrowType::Boolean | ArrowType::Null),
        _ => found.is_numeric() || found == &ArrowType::Null,
    };
    if fits {
        return Ok(());
    }
    Err(DataError::WrongType {
        column: column.to_owned(),
        found: if is_text(found) {
            "strings".to_owned()
        } else {
            found.to_string()
        },
        input: spec.name.clone(),
        expected: spec.datatype.to_string(),
    })
}

/// The inferred schema with each input column read as its input's type, the target as
/// Float64 when numeric and strings otherwise, so a later row cannot change a column's type.
fn csv_read_schema(inferred: &Schema, target: Option<usize>, chosen: &Chosen<'_>) -> Schema {
    let mut fields: Vec<_> = inferred
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(ArrowType::Utf8)
                .with_nullable(true)
        })
        .collect();
    for (spec, columns) in chosen {
        let read_as = arrow_type(spec.datatype).expect("checked: not BF16");
        for &column in columns {
            fields[column] = fields[column].clone().with_data_type(read_as.clone());
        }
    }
    if let Some(target) = target
        && inferred.field(target).data_type().is_numeric()
    {
        fields[target] = fields[target].clone().with_data_type(ArrowType::Float64);
    }
    Schema::new(fields)
}

impl Dataset {
    fn convert(&self, batch: &RecordBatch, offset: u64) -> Result<Batch, DataError> {
        let named = self
            .inputs
            .iter()
            .map(|input| {
                Ok((
                    input.spec.name.clone(),
                    self.input_tensor(input, batch, offset)?,
                ))
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        let target = self
            .target
            .as_ref()
            .map(|(position, name)| target_values(batch.column(*position), name, offset))
            .transpose()?;
        Ok(Batch {
            inputs: self.signature.bind_inputs(named)?,
            target,
            rows: batch.num_rows(),
        })
    }

    fn input_tensor(
        &self,
        input: &InputColumns,
        batch: &RecordBatch,
        offset: u64,
    ) -> Result<Tensor, DataError> {
        let datatype = input.spec.datatype;
        let read_as = arrow_type(datatype).expect("checked: not BF16");
        // CSV cannot tell an empty string from a missing one: for strings, it is "".
        let empty_is_text = self.format == Format::Csv && datatype == DataType::Bytes;
        let columns = input
            .positions
            .iter()
            .zip(&input.names)
            .map(|(&position, name)| {
                let column = batch.column(position);
                if !empty_is_text {
                    check_nulls(column, name, offset)?;
                }
                cast_with_options(
                    column,
                    &read_as,
                    &CastOptions {
                        safe: false,
                        ..Default::default()
                    },
                )
                .map_err(|err| convert_error(name, err))
            })
            .collect::<Result<Vec<ArrayRef>, DataError>>()?;
        let rows = batch.num_rows();
        if input.stacked
            && let Some(data) = interleave_numeric(&columns, rows, datatype)
        {
            return Tensor::new(vec![rows, columns.len()], data)
                .map_err(|err| convert_error(&input.spec.name, err));
        }
        let (shape, array) = if input.stacked {
            (
                vec![rows, columns.len()],
                stack(&columns, rows).map_err(|err| convert_error(&input.spec.name, err))?,
            )
        } else if input.spec.dims.len() == 1 {
            (vec![rows], Arc::clone(&columns[0]))
        } else {
            (vec![rows, 1], Arc::clone(&columns[0]))
        };
        Tensor::new(shape, tensor_data(&array, datatype))
            .map_err(|err| convert_error(&input.spec.name, err))
    }
}

fn convert_error(column: &str, err: impl ToString) -> DataError {
    DataError::Convert {
        column: column.to_owned(),
        message: err.to_string(),
    }
}

/// Numeric columns (already cast to `datatype`) interleaved row-major straight into a tensor
/// buffer: one pass and one copy, where [`stack`]'s general interleave builds an index per value
/// and copies twice. `None` for the types it does not cover.
fn interleave_numeric(columns: &[ArrayRef], rows: usize, datatype: DataType) -> Option<TensorData> {
    fn rows_of<T: arrow_array::ArrowPrimitiveType>(
        columns: &[ArrayRef],
        rows: usize,
    ) -> Vec<T::Native> {
        let slices: Vec<&[T::Native]> = columns
            .iter()
            .map(|column| column.as_primitive::<T>().values().as_ref())
            .collect();
        let mut out = Vec::with_capacity(rows * slices.len());
        for row in 0..rows {
            out.extend(slices.iter().map(|values| values[row]));
        }
        out
    }
    Some(match datatype {
        DataType::Fp32 => TensorData::Fp32(rows_of::<types::Float32Type>(columns, rows)),
        DataType::Fp64 => TensorData::Fp64(rows_of::<types::Float64Type>(columns, rows)),
        DataType::Int64 => TensorData::Int64(rows_of::<types::Int64Type>(columns, rows)),
        DataType::Int32 => TensorData::Int32(rows_of::<types::Int32Type>(columns, rows)),
        _ => return None,
    })
}

/// Columns interleaved row-major: row 0's features, then row 1's, ...
fn stack(columns: &[ArrayRef], rows: usize) -> Result<ArrayRef, ArrowError> {
    let arrays: Vec<&dyn Array> = columns.iter().map(|c| c.as_ref()).collect();
    let indices: Vec<(usize, usize)> = (0..rows)
        .flat_map(|row| (0..arrays.len()).map(move |column| (column, row)))
        .collect();
    arrow_select::interleave::interleave(&arrays, &indices)
}

fn check_nulls(column: &ArrayRef, name: &str, offset: u64) -> Result<(), DataError> {
    let Some(nulls) = column.logical_nulls() else {
        return Ok(());
    };
    match nulls.iter().position(|valid| !valid) {
        Some(index) => Err(DataError::Null {
            column: name.to_owned(),
            row: offset + index as u64 + 1,
        }),
        None => Ok(()),
    }
}

fn primitive<T: arrow_array::ArrowPrimitiveType>(array: &ArrayRef) -> Vec<T::Native> {
    array.as_primitive::<T>().values().to_vec()
}

/// An array already cast to `arrow_type(datatype)`, as a tensor buffer.
fn tensor_data(array: &ArrayRef, datatype: DataType) -> TensorData {
    match datatype {
        DataType::Bool => TensorData::Bool(
            array
                .as_boolean()
                .iter()
                .map(|v| v.unwrap_or_default())
                .collect(),
        ),
        DataType::Uint8 => TensorData::Uint8(primitive::<types::UInt8Type>(array)),
        DataType::Uint16 => TensorData::Uint16(primitive::<types::UInt16Type>(array)),
        DataType::Uint32 => TensorData::Uint32(primitive::<types::UInt32Type>(array)),
        DataType::Uint64 => TensorData::Uint64(primitive::<types::UInt64Type>(array)),
        DataType::Int8 => TensorData::Int8(primitive::<types::Int8Type>(array)),
        DataType::Int16 => TensorData::Int16(primitive::<types::Int16Type>(array)),
        DataType::Int32 => TensorData::Int32(primitive::<types::Int32Type>(array)),
        DataType::Int64 => TensorData::Int64(primitive::<types::Int64Type>(array)),
        DataType::Fp16 => TensorData::Fp16(primitive::<types::Float16Type>(array)),
        DataType::Fp32 => TensorData::Fp32(primitive::<types::Float32Type>(array)),
        DataType::Fp64 => TensorData::Fp64(primitive::<types::Float64Type>(array)),
        DataType::Bytes => TensorData::Bytes(
            array
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or_default().to_owned())
                .collect(),
        ),
        DataType::Bf16 => unreachable!("BF16 inputs are refused when the file is opened"),
    }
}

/// The target as numbers (booleans as 0 and 1) or strings.
fn target_values(column: &ArrayRef, name: &str, offset: u64) -> Result<Target, DataError> {
    check_nulls(column, name, offset)?;
    let found = column.data_type();
    if found.is_numeric() {
        let values = cast_with_options(column, &ArrowType::Float64, &CastOptions::default())
            .map_err(|err| convert_error(name, err))?;
        return Ok(Target::Numeric(primitive::<types::Float64Type>(&values)));
    }
    if found == &ArrowType::Boolean {
        let flags = column.as_boolean().iter();
        return Ok(Target::Numeric(
            flags
                .map(|v| f64::from(u8::from(v.unwrap_or_default())))
                .collect(),
        ));
    }
    if is_text(found) {
        let text = cast_with_options(column, &ArrowType::Utf8, &CastOptions::default())
            .map_err(|err| convert_error(name, err))?;
        let labels = text
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_owned());
        return Ok(Target::Labels(labels.collect()));
    }
    Err(convert_error(
        name,
        format!("the target must hold numbers or strings, not {found}"),
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use arrow_array::{Float64Array, Int64Array, StringArray};
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::model::signature::examples::{one_input, two_inputs};

    proptest::proptest! {
        /// Row-major order for any row and column count, none included.
        #[test]
        fn numeric_columns_interleave_row_major(rows in 0usize..300, width in 0usize..5) {
            let columns: Vec<ArrayRef> = (0..width)
                .map(|c| {
                    let values = (0..rows).map(|r| (r * 10 + c) as i64);
                    Arc::new(Int64Array::from_iter_values(values)) as ArrayRef
                })
                .collect();
            let expected = (0..rows)
                .flat_map(|r| (0..width).map(move |c| (r * 10 + c) as i64))
                .collect();
            proptest::prop_assert_eq!(
                interleave_numeric(&columns, rows, DataType::Int64),
                Some(TensorData::Int64(expected))
            );
        }
    }

    fn stacked(features: usize) -> Signature {
        one_input("input", features, Vec::new())
    }

    fn per_column() -> Signature {
        Signature {
            inputs: two_inputs().inputs,
            outputs: Vec::new(),
        }
    }

    fn mapping(target: &str) -> ColumnMapping {
        ColumnMapping {
            target: Some(target.to_owned()),
            ..ColumnMapping::default()
        }
    }

    fn csv_file(text: &str) -> tempfile::TempPath {
        let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.into_temp_path()
    }

    #[test]
    fn csv_features_stack_in_file_order_in_batches() {
        let path = csv_file("a,y,b\n1,0,2\n3,1,4.5\n5,1,6\n");
        let dataset = Dataset::open(&path, &stacked(2), &mapping("y")).unwrap();
        assert_eq!(dataset.rows, 3);
        assert_eq!(
            dataset.sha256,
            hex::encode(Sha256::digest(std::fs::read(&path).unwrap()))
        );
        let batches: Vec<Batch> = dataset.batches(2).unwrap().map(Result::unwrap).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].inputs[0].shape(), [2, 2]);
        assert_eq!(
            batches[0].inputs[0].data(),
            &TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.5])
        );
        assert_eq!(batches[1].target, Some(Target::Numeric(vec![1.0])));
    }

    #[test]
    fn explicit_feature_columns_choose_and_order() {
        let path = csv_file("id,a,y,b\n7,1,0,2\n");
        let mapping = ColumnMapping {
            feature_columns: Some(vec!["b".to_owned(), "a".to_owned()]),
            ..mapping("y")
        };
        let dataset = Dataset::open(&path, &stacked(2), &mapping).unwrap();
        let batch = dataset.batches(10).unwrap().next().unwrap().unwrap();
        assert_eq!(batch.inputs[0].data(), &TensorData::Fp32(vec![2.0, 1.0]));
    }

    fn open_error(text: &str, signature: &Signature, mapping: &ColumnMapping) -> String {
        let path = csv_file(text);
        Dataset::open(&path, signature, mapping)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn column_problems_are_named() {
        let err = open_error("a,b\n1,2\n", &stacked(1), &mapping("y"));
        assert!(err.contains("'y' (the target) is not in the file"), "{err}");
        let err = open_error("a,y\nx,1\n", &stacked(1), &mapping("y"));
        assert!(
            err.contains("column 'a' holds strings, but input 'input' takes FP32"),
            "{err}"
        );
        let err = open_error("a,b,y\n1,2,1\n", &stacked(3), &mapping("y"));
        assert!(
            err.contains("takes 3 features, but 2 columns are left: 'a', 'b'"),
            "{err}"
        );
        let text = "plan,tenure,id,y\nbasic,3,9,1\n";
        let err = open_error(text, &per_column(), &mapping("y"));
        assert!(err.contains("columns 'id' match no model input"), "{err}");
        let ignoring = ColumnMapping {
            ignore: vec!["id".to_owned()],
            ..mapping("y")
        };
        assert!(Dataset::open(&csv_file(text), &per_column(), &ignoring).is_ok());
        let err = open_error("plan,y\nbasic,1\n", &per_column(), &mapping("y"));
        assert!(
            err.contains("'tenure' (input 'tenure') is not in the file"),
            "{err}"
        );
    }

    #[test]
    fn nulls_are_refused_with_their_row() {
        let path = csv_file("a,y\n1,0\n,1\n");
        let dataset = Dataset::open(&path, &stacked(1), &mapping("y")).unwrap();
        let err = dataset.batches(10).unwrap().next().unwrap().unwrap_err();
        assert!(
            err.to_string()
                .contains("column 'a' has a null at data row 2"),
            "{err}"
        );
    }

    #[test]
    fn string_columns_feed_string_inputs_and_labels() {
        let path = csv_file("plan,tenure,y\nbasic,3,yes\n,4,no\n");
        let dataset = Dataset::open(&path, &per_column(), &mapping("y")).unwrap();
        let batch = dataset.batches(10).unwrap().next().unwrap().unwrap();
        let plans = TensorData::Bytes(vec!["basic".to_owned(), String::new()]);
        assert_eq!(batch.inputs[0].data(), &plans);
        assert_eq!(batch.inputs[1].shape(), [2, 1]);
        let labels = vec!["yes".to_owned(), "no".to_owned()];
        assert_eq!(batch.target, Some(Target::Labels(labels)));
    }

    fn parquet_file(columns: Vec<(&str, ArrayRef)>) -> tempfile::TempPath {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = tempfile::Builder::new()
            .suffix(".parquet")
            .tempfile()
            .unwrap();
        let mut writer =
            ArrowWriter::try_new(file.reopen().unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        file.into_temp_path()
    }

    #[test]
    fn parquet_is_read_in_batches_with_its_own_types() {
        let plans: ArrayRef = Arc::new(StringArray::from(vec!["basic", "premium", "eu"]));
        let tenure: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let target: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 0.0, 1.0]));
        let path = parquet_file(vec![("plan", plans), ("y", target), ("tenure", tenure)]);
        let dataset = Dataset::open(&path, &per_column(), &mapping("y")).unwrap();
        assert_eq!((dataset.rows, dataset.format()), (3, Format::Parquet));
        let batches: Vec<Batch> = dataset.batches(2).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            batches[0].inputs[1].data(),
            &TensorData::Fp32(vec![1.0, 2.0])
        );
        assert_eq!(batches[1].target, Some(Target::Numeric(vec![1.0])));
    }

    #[test]
    fn parquet_numbers_do_not_feed_string_inputs() {
        let plans: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let tenure: ArrayRef = Arc::new(Float64Array::from(vec![1.0]));
        let target: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let path = parquet_file(vec![("plan", plans), ("tenure", tenure), ("y", target)]);
        let err = Dataset::open(&path, &per_column(), &mapping("y")).unwrap_err();
        assert!(
            err.to_string()
                .contains("column 'plan' holds Int64, but input 'plan' takes BYTES"),
            "{err}"
        );
    }
}
