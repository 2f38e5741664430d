//! `-o table|json|yaml` rendering.

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::{Error, Result};

/// Renders `value` as JSON or YAML; `table` is rendered by the caller.
pub fn structured<T: Serialize>(value: &T, format: OutputFormat) -> Result<String> {
    match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(Error::encode("the output as JSON")),
        OutputFormat::Yaml => {
            serde_yaml::to_string(value).map_err(Error::encode("the output as YAML"))
        }
        // Programming error: table output is rendered by each command.
        OutputFormat::Table => Err(Error::Usage("this command renders its table itself".into())),
    }
}

/// A plain text table: a header row and rows, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("   ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}
