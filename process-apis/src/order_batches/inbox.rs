//! The inbox folder (`files.inbox_dir`): a file dropped into
//! `<inbox>/<partner>/` (by an SFTP server, say) is imported as that
//! partner's order file, as `POST /partner/v1/order-batches` imports it,
//! then moved to `<inbox>/<partner>/done/` (every row accepted) or
//! `failed/`, with its results beside it as `<name>.results.jsonl`, one
//! JSON line per row as the API gives them, written last (a partner who
//! sees the results finds the file moved already). A file is taken only once it
//! has not changed for two seconds (an upload in progress is left alone),
//! and claimed by renaming it, so replicas sharing the folder import it
//! once. Names starting with `.` are ignored.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use erp_connect_proto::order_batches::v1::{self as pb, import_batch_chunk::Part};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{Error, Shared, service::receive_file, store::ResultRow};
use crate::partners::records::Format;

/// How long a file must stay unchanged before it is taken.
const SETTLED: Duration = Duration::from_secs(2);

/// Watches `dir` until `shutdown`.
pub async fn run(shared: Arc<Shared>, dir: PathBuf, interval: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(err) = scan(&shared, &dir).await {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot read the inbox");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn scan(shared: &Shared, dir: &Path) -> std::io::Result<()> {
    let mut partners = tokio::fs::read_dir(dir).await?;
    while let Some(partner) = partners.next_entry().await? {
        if !partner.file_type().await?.is_dir() {
            continue;
        }
        let Some(tenant) = partner.file_name().to_str().map(str::to_owned).filter(|n| !n.starts_with('.')) else {
            continue;
        };
        let mut files = tokio::fs::read_dir(partner.path()).await?;
        while let Some(file) = files.next_entry().await? {
            let name = file.file_name().to_string_lossy().into_owned();
            let meta = file.metadata().await?;
            let settled = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age >= SETTLED);
            if !meta.is_file() || name.starts_with('.') || !settled {
                continue;
            }
            // Claimed by renaming: whoever renames first imports it.
            let claimed = partner.path().join(format!(".importing-{name}"));
            if tokio::fs::rename(file.path(), &claimed).await.is_err() {
                continue;
            }
            match import(shared, &tenant, &claimed).await {
                Ok((batch, results)) => {
                    let ok = results.iter().all(|r| matches!(r.status.as_str(), "accepted" | "valid"));
                    let target = partner.path().join(if ok { "done" } else { "failed" });
                    tokio::fs::create_dir_all(&target).await?;
                    // The results last: whoever sees them finds the file moved.
                    tokio::fs::rename(&claimed, target.join(&name)).await?;
                    write_results(&target.join(format!("{name}.results.jsonl")), &results).await?;
                    tracing::info!(file = %name, tenant = %tenant, batch = %batch, rows = results.len(), ok, "inbox file imported");
                }
                Err(err) => {
                    // Not imported: back under its name, tried again later.
                    tracing::warn!(file = %name, tenant = %tenant, error = %err, "inbox file not imported");
                    tokio::fs::rename(&claimed, file.path()).await?;
                }
            }
        }
    }
    Ok(())
}

/// Imports `path` for `tenant` and waits for every row's result.
async fn import(shared: &Shared, tenant: &str, path: &Path) -> Result<(String, Vec<ResultRow>), Error> {
    let original = path.file_name().and_then(|n| n.to_str()).unwrap_or("").trim_start_matches(".importing-");
    let format = Format::of_file(Path::new(original));
    let start = pb::BatchStart {
        tenant: tenant.to_owned(),
        format: if format == Format::JsonLines { "jsonl" } else { "csv" }.into(),
        idempotency_key: String::new(),
        dry_run: false,
    };
    let mut file =
        tokio::fs::File::open(path).await.map_err(|e| Error::Unavailable(format!("{}: {e}", path.display())))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Part, Error>>(4);
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0; 64 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => {
                    let _ = tx.send(Ok(Part::End(true))).await;
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(Part::Chunk(buf))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Error::Unavailable(format!("reading the file: {e}")))).await;
                    return;
                }
            }
        }
    });
    let batch = receive_file(shared, &start, format, tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let _ = reader.await;
    let batch = batch?;
    loop {
        let now = shared.store.batch("", &batch.id).await?.ok_or(Error::NotFound("batch"))?;
        if now.status == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut results = Vec::new();
    loop {
        let page = shared.store.results(&batch.id, results.last().map_or(0, |r: &ResultRow| r.row), 1000).await?;
        if page.is_empty() {
            break;
        }
        results.extend(page);
    }
    Ok((batch.id, results))
}

/// The results file, complete or absent: written aside, then renamed.
async fn write_results(path: &Path, results: &[ResultRow]) -> std::io::Result<()> {
    let mut text = String::new();
    for r in results {
        text.push_str(&r.to_json_line());
        text.push('\n');
    }
    let aside = path.with_extension("jsonl.tmp");
    tokio::fs::write(&aside, text).await?;
    tokio::fs::rename(&aside, path).await
}
