//! Records as partners send them in files: CSV (a header row naming the
//! fields; `,` or `;` between them, whichever the header uses) or JSON
//! lines (one object a line). Read as a stream, a record at a time, each as
//! field name → text, for [`super::mapping::Mapping::map`].

use std::{collections::BTreeMap, io::Read};

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/csv`.
    Csv,
    /// `application/x-ndjson`.
    JsonLines,
}

impl Format {
    /// The format of a file named `name`: `.jsonl`, `.ndjson` are JSON lines.
    pub fn of_file(name: &std::path::Path) -> Self {
        match name.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson") => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// One record: its fields, or why the line is not a record.
pub type Record = Result<BTreeMap<String, String>, String>;

/// The records of `input`, one at a time (row 1 is the first record).
pub fn read(input: impl Read + 'static, format: Format) -> Box<dyn Iterator<Item = Record>> {
    match format {
        Format::JsonLines => {
            use std::io::BufRead;
            let lines = std::io::BufReader::new(input).lines();
            Box::new(lines.filter(|l| l.as_ref().map_or(true, |l| !l.trim().is_empty())).map(|line| {
                let line = line.map_err(|e| format!("cannot read the line: {e}"))?;
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&line).map_err(|_| "is not a JSON object".to_owned())?;
                Ok(object
                    .into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect())
            }))
        }
        Format::Csv => {
            let mut input = std::io::BufReader::new(input);
            // The header decides the delimiter: a partner writing decimal
            // commas separates fields with semicolons.
            let mut header = Vec::new();
            let delimiter = match std::io::BufRead::read_until(&mut input, b'\n', &mut header) {
                Ok(_)
                    if header.iter().filter(|b| **b == b';').count()
                        > header.iter().filter(|b| **b == b',').count() =>
                {
                    b';'
                }
                _ => b',',
            };
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(std::io::Cursor::new(header).chain(input));
            let names: Vec<String> = match reader.headers() {
                Ok(h) => h.iter().map(str::to_owned).collect(),
                Err(e) => return Box::new(std::iter::once(Err(format!("the header does not parse: {e}")))),
            };
            Box::new(reader.into_records().map(move |row| {
                let row = row.map_err(|e| format!("does not parse as CSV: {e}"))?;
                if row.len() != names.len() {
                    return Err(format!("has {} fields where the header names {}", row.len(), names.len()));
                }
                Ok(names.iter().cloned().zip(row.iter().map(str::to_owned)).filter(|(_, v)| !v.is_empty()).collect())
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &'static str, format: Format) -> Vec<Record> {
        read(text.as_bytes(), format).collect()
    }

    #[test]
    fn csv_with_semicolons_and_decimal_commas_and_json_lines_read_alike() {
        let csv = all("external_ref;sku;quantity\nPO-1;ACME-0042;2,0\nPO-2;X\n", Format::Csv);
        assert_eq!(csv[0].as_ref().expect("row 1")["quantity"], "2,0");
        assert!(csv[1].as_ref().expect_err("row 2").contains("2 fields"), "{:?}", csv[1]);
        let json = all("{\"external_ref\": \"PO-1\", \"quantity\": 2}\n\nnot json\n", Format::JsonLines);
        assert_eq!(json.len(), 2);
        assert_eq!(json[0].as_ref().expect("row 1")["quantity"], "2");
        assert!(json[1].is_err());
    }
}
