//! Reads a labelled or unlabelled table of numeric features from CSV (plain or gzip, told
//! apart by the gzip magic bytes): the input of `settlewatch eval` and `train --data FILE`.
//! Every cell that is not a finite number is an error naming its line and column.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ndarray::Array2;

/// Cells (rows × feature columns) one dataset may hold: 1.6 GB of `f64`.
pub const CELLS_MAX: usize = 200_000_000;

/// A table of feature rows, with labels if a label column was named.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub feature_names: Vec<String>,
    pub rows: Array2<f64>,
    /// `true` = anomaly. Present when a label column was read.
    pub labels: Option<Vec<bool>>,
}

/// Which columns to read as what.
#[derive(Clone, Debug, Default)]
pub struct DatasetOptions {
    /// The 0/1 label column; it must exist when named.
    pub label_column: Option<String>,
    /// Columns that are neither features nor the label (ids, text); they must exist.
    pub ignore_columns: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: line {line}: {reason}")]
    Csv { path: String, line: u64, reason: String },
    #[error("{path}: no column named {column:?} (columns: {columns})")]
    MissingColumn { path: String, column: String, columns: String },
    #[error("{path}: line {line}, column {column:?}: {value:?} is not a finite number{hint}")]
    NotNumeric { path: String, line: u64, column: String, value: String, hint: &'static str },
    #[error("{path}: line {line}, column {column:?}: label {value:?} is not 0 or 1")]
    BadLabel { path: String, line: u64, column: String, value: String },
    #[error("{path}: {reason}")]
    Shape { path: String, reason: String },
}

/// Reads `path` (CSV with a header row, optionally gzip-compressed).
pub fn load_csv(path: &Path, options: &DatasetOptions) -> Result<Dataset, DatasetError> {
    let name = path.display().to_string();
    let io = |source| DatasetError::Io { path: name.clone(), source };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let mut magic = [0u8; 2];
    let read = file.read(&mut magic).map_err(io)?;
    let prefix = std::io::Cursor::new(magic[..read].to_vec());
    let stream: Box<dyn Read> = if read == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(prefix.chain(file)))
    } else {
        Box::new(prefix.chain(file))
    };
    read_csv(&name, stream, options)
}

/// Reads CSV from any reader; `name` is used in errors.
pub fn read_csv(name: &str, input: impl Read, options: &DatasetOptions) -> Result<Dataset, DatasetError> {
    let csv_error = |error: csv::Error| DatasetError::Csv {
        path: name.to_string(),
        line: error.position().map_or(0, |position| position.line()),
        reason: error.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(input);
    let header: Vec<String> =
        reader.headers().map_err(csv_error)?.iter().map(|column| column.trim().trim_matches('"').to_string()).collect();
    let find = |column: &str| {
        header.iter().position(|name| name == column).ok_or_else(|| DatasetError::MissingColumn {
            path: name.to_string(),
            column: column.to_string(),
            columns: header.join(","),
        })
    };
    let label_index = options.label_column.as_deref().map(find).transpose()?;
    let ignored = options.ignore_columns.iter().map(|column| find(column)).collect::<Result<Vec<_>, _>>()?;
    let feature_indices: Vec<usize> =
        (0..header.len()).filter(|index| Some(*index) != label_index && !ignored.contains(index)).collect();
    if feature_indices.is_empty() {
        return Err(DatasetError::Shape { path: name.to_string(), reason: "no feature columns".into() });
    }
    let mut values = Vec::new();
    let mut labels = label_index.map(|_| Vec::new());
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_error)? {
        let line = record.position().map_or(0, |position| position.line());
        if values.len() + feature_indices.len() > CELLS_MAX {
            let reason = format!("more than {CELLS_MAX} cells; sample the file first");
            return Err(DatasetError::Shape { path: name.to_string(), reason });
        }
        for &index in &feature_indices {
            let cell = record.get(index).unwrap_or("").trim();
            match cell.parse::<f64>() {
                Ok(value) if value.is_finite() => values.push(value),
                _ => {
                    let hint = if options.ignore_columns.is_empty() && cell.parse::<f64>().is_err() {
                        " (an id or text column can be skipped with --ignore-column)"
                    } else {
                        ""
                    };
                    return Err(DatasetError::NotNumeric {
                        path: name.to_string(),
                        line,
                        column: header[index].clone(),
                        value: cell.to_string(),
                        hint,
                    });
                }
            }
        }
        if let (Some(index), Some(labels)) = (label_index, labels.as_mut()) {
            let cell = record.get(index).unwrap_or("").trim();
            labels.push(match cell.parse::<f64>() {
                Ok(0.0) => false,
                Ok(1.0) => true,
                _ => {
                    return Err(DatasetError::BadLabel {
                        path: name.to_string(),
                        line,
                        column: header[index].clone(),
                        value: cell.to_string(),
                    })
                }
            });
        }
    }
    let n_rows = values.len() / feature_indices.len();
    if n_rows == 0 {
        return Err(DatasetError::Shape { path: name.to_string(), reason: "no data rows".into() });
    }
    let rows = Array2::from_shape_vec((n_rows, feature_indices.len()), values).expect("rows × columns cells");
    let feature_names = feature_indices.iter().map(|&index| header[index].clone()).collect();
    Ok(Dataset { feature_names, rows, labels })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn options(label: &str) -> DatasetOptions {
        DatasetOptions { label_column: Some(label.into()), ignore_columns: vec![] }
    }

    #[test]
    fn reads_features_and_labels() {
        let data = read_csv("t", "f0,f1,label\n1,2.5,0\n-3,4e2,1\n".as_bytes(), &options("label")).unwrap();
        assert_eq!(data.feature_names, ["f0", "f1"]);
        assert_eq!(data.rows, ndarray::array![[1.0, 2.5], [-3.0, 400.0]]);
        assert_eq!(data.labels, Some(vec![false, true]));
    }

    #[test]
    fn reads_gzip_by_magic_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.csv.gz");
        let mut encoder = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
        encoder.write_all(b"a,b,y\n1,2,1\n3,4,0\n").unwrap();
        encoder.finish().unwrap();
        let data = load_csv(&path, &options("y")).unwrap();
        assert_eq!(data.rows.dim(), (2, 2));
        assert_eq!(data.labels, Some(vec![true, false]));
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let error = read_csv("t", "id,x,label\nabc,1,0\n".as_bytes(), &options("label")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "t: line 2, column \"id\": \"abc\" is not a finite number \
             (an id or text column can be skipped with --ignore-column)"
        );
        let error = read_csv("t", "x,label\n1,2\n".as_bytes(), &options("label")).unwrap_err();
        assert_eq!(error.to_string(), "t: line 2, column \"label\": label \"2\" is not 0 or 1");
        let error = read_csv("t", "x\n1\n".as_bytes(), &options("label")).unwrap_err();
        assert!(error.to_string().contains("no column named \"label\""), "{error}");
        let error = read_csv("t", "x,label\ninf,0\n".as_bytes(), &options("label")).unwrap_err();
        assert!(error.to_string().contains("\"inf\" is not a finite number"), "{error}");
    }

    #[test]
    fn ignored_columns_are_skipped() {
        let options = DatasetOptions { label_column: None, ignore_columns: vec!["id".into()] };
        let data = read_csv("t", "id,x\nabc,1\n".as_bytes(), &options).unwrap();
        assert_eq!(data.feature_names, ["x"]);
        assert_eq!(data.labels, None);
    }

    #[test]
    fn reads_a_shared_reference_dataset() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/WBC.csv.gz");
        if !path.exists() {
            eprintln!("skipping: {} is not on this machine", path.display());
            return;
        }
        let data = load_csv(&path, &options("label")).unwrap();
        assert_eq!(data.rows.dim(), (223, 9));
        assert_eq!(data.labels.unwrap().iter().filter(|&&label| label).count(), 10);
    }
}
