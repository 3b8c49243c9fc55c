//! `erp-connect import orders FILE --partner ID [--dry-run]`: an order
//! file imported through a running process tier (`--process-url`, default
//! `experience.process_url`) exactly as `POST /partner/v1/order-batches`
//! imports it: streamed, then followed until done. Progress goes to
//! stderr, one result per row (the API's JSON lines) to stdout.

use std::{path::Path, time::Duration};

use erp_connect_proto::order_batches::v1::{
    self as pb, import_batch_chunk::Part, order_batch_service_client::OrderBatchServiceClient,
};
use experience_apis::partner::order_batches::RowResultView;
use platform::channel;
use tokio::io::AsyncReadExt;

use crate::{StartError, config::Config};

/// Bytes per message of the upload.
const CHUNK: usize = 64 * 1024;

/// Imports `file` for `partner`; returns how many rows were not accepted.
pub async fn orders(
    config: &Config,
    partner: &str,
    file: &Path,
    dry_run: bool,
    process_url: Option<&str>,
) -> Result<usize, StartError> {
    let url = process_url.unwrap_or(&config.experience.process_url);
    let token = crate::service_auth::service_token(config)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let tls = crate::internal_client_tls(config, stop).await?;
    let channel =
        channel::with_authorization(channel::connect_lazy(url, Duration::from_secs(600), tls.as_ref())?, move || {
            token.header()
        });
    let mut client = OrderBatchServiceClient::new(channel);
    let io = |e: std::io::Error| StartError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", file.display())));
    let mut input = tokio::fs::File::open(file).await.map_err(io)?;
    let format = match records_format(file) {
        "jsonl" => "jsonl",
        _ => "csv",
    };
    let start = pb::ImportBatchChunk {
        part: Some(Part::Start(pb::BatchStart {
            tenant: partner.to_owned(),
            format: format.into(),
            idempotency_key: String::new(),
            dry_run,
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportBatchChunk>(4);
    let upload = async move {
        let _ = tx.send(start).await;
        let mut sent: u64 = 0;
        loop {
            let mut buf = vec![0; CHUNK];
            let n = input.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            sent += n as u64;
            if tx.send(pb::ImportBatchChunk { part: Some(Part::Chunk(buf)) }).await.is_err() {
                return Ok(sent); // the process tier refused the file; its answer says why
            }
        }
        let _ = tx.send(pb::ImportBatchChunk { part: Some(Part::End(true)) }).await;
        Ok::<u64, std::io::Error>(sent)
    };
    let call = client.import_batch(tokio_stream::wrappers::ReceiverStream::new(rx));
    let (sent, answer) = tokio::join!(upload, call);
    let sent = sent.map_err(io)?;
    let batch = answer.map_err(|status| StartError::Import(status.message().to_owned()))?.into_inner();
    eprintln!("uploaded {sent} bytes: batch {} ({} rows)", batch.id, batch.rows);
    // A line whenever the counts or the status move: the last rows may be
    // counted before the batch is marked done, and "done" must still show.
    let mut last = (String::new(), -1);
    let batch = loop {
        let now = client
            .get_batch(pb::GetBatchRequest { tenant: partner.to_owned(), id: batch.id.clone() })
            .await
            .map_err(|status| StartError::Import(status.message().to_owned()))?
            .into_inner();
        let done = now.orders_accepted + now.rows_rejected + now.rows_quarantined;
        if (now.status.as_str(), done) != (last.0.as_str(), last.1) {
            eprintln!(
                "{}: {} orders accepted, {} rows rejected, {} quarantined, of {} rows",
                now.status, now.orders_accepted, now.rows_rejected, now.rows_quarantined, now.rows
            );
            last = (now.status.clone(), done);
        }
        if now.status == "done" {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut failed = 0;
    let mut after_row = 0;
    loop {
        let page = client
            .list_batch_results(pb::ListBatchResultsRequest {
                tenant: partner.to_owned(),
                id: batch.id.clone(),
                after_row,
                limit: 1000,
            })
            .await
            .map_err(|status| StartError::Import(status.message().to_owned()))?
            .into_inner();
        if page.results.is_empty() {
            break;
        }
        for row in page.results {
            after_row = row.row;
            let view = RowResultView::from(row);
            failed += usize::from(!matches!(view.status.as_str(), "accepted" | "valid"));
            println!("{}", serde_json::to_string(&view).unwrap_or_default());
        }
    }
    Ok(failed)
}

fn records_format(file: &Path) -> &'static str {
    match process_apis::partners::records::Format::of_file(file) {
        process_apis::partners::records::Format::JsonLines => "jsonl",
        process_apis::partners::records::Format::Csv => "csv",
    }
}
