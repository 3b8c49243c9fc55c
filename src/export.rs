//! `erp-connect export invoices|orders --since DATE [--until DATE]
//! [--format csv|jsonl] [--output FILE]`: the rows the scheduled exports
//! write (see `process_apis::exports`), for a time range, read from the
//! saga store of the configuration. To stdout, or to `FILE`: written under
//! a temporary name beside it and renamed when complete, so the file is
//! whole or absent.

use std::path::Path;

use process_apis::{
    exports::{self, Format, Kind, Span},
    order_to_cash::store::Store,
};

use crate::{StartError, config::Config};

/// `2026-12-01` (midnight UTC) or an RFC 3339 time, as unix ms.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    let at = humantime::parse_rfc3339_weak(&full)
        .map_err(|_| format!("{text:?} is neither a date (2026-12-01) nor a time (2026-12-01T08:00:00Z)"))?;
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// Writes the rows; returns how many.
pub async fn run(
    config: &Config,
    kind: Kind,
    format: Format,
    span: Span,
    output: Option<&Path>,
) -> Result<u64, StartError> {
    let store = Store::open(&config.process.database_url(&config.data_dir))
        .await
        .map_err(|e| process_apis::StartError::from(process_apis::order_to_cash::StartError::from(e)))?;
    let failed = |e: exports::Error| StartError::Export(e.to_string());
    let Some(path) = output else {
        let mut stdout = tokio::io::stdout();
        return Ok(exports::write(&store, kind, format, span, &mut stdout, "stdout").await.map_err(failed)?.rows);
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let io = |e: std::io::Error| StartError::Export(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::create(&temp).await.map_err(io)?;
    let written = exports::write(&store, kind, format, span, &mut file, &path.display().to_string()).await;
    let written = match written {
        Ok(written) => written,
        Err(err) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(failed(err));
        }
    };
    file.sync_all().await.map_err(io)?;
    tokio::fs::rename(&temp, path).await.map_err(io)?;
    Ok(written.rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_read_and_anything_else_refused() {
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000));
        assert!(parse_time("yesterday").expect_err("no").contains("neither a date"));
    }
}
