//! Server-sent event streams held open: opens N order-status streams
//! (`GET /mobile/v1/orders/{id}/events`) against a running `up`, waits until
//! every one has had its first event, prints `open N`, and holds them until
//! its standard input closes. `bench/sse.sh` starts `up` on its own, reads
//! its resident memory before and while the streams are held, and writes
//! the table: how many streams 100 MB of memory holds.
//!
//! ```text
//! sse_bench BASE_URL TOKEN ORDER_ID STREAMS
//! ```
//!
//! A stream that ends or fails before the count is reached fails the run:
//! a figure with streams missing would flatter the server.

use std::{io::Read, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, token, order, streams] = args.as_slice() else {
        return Err("usage: sse_bench BASE_URL TOKEN ORDER_ID STREAMS".into());
    };
    let streams: usize = streams.parse()?;
    let url: hyper::Uri = format!("{base}/mobile/v1/orders/{order}/events").parse()?;
    // One connection per stream: an HTTP/1 stream holds its connection.
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http::<Empty<Bytes>>();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(streams);
    let mut held = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (client, url, first) = (client.clone(), url.clone(), first_tx.clone());
        let request = hyper::Request::get(url)
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream")
            .body(Empty::new())?;
        held.push(tokio::spawn(async move {
            let response = match client.request(request).await {
                Ok(response) if response.status() == 200 => response,
                Ok(response) => return first.send(Err(format!("status {}", response.status()))).await,
                Err(err) => return first.send(Err(err.to_string())).await,
            };
            let mut body = response.into_body();
            let mut told = false;
            // Read on until the stream ends; the first event is the order's
            // status so far (a line starting with `:` is a heartbeat).
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) if !told && frame.data_ref().is_some_and(|d| !d.is_empty() && d[0] != b':') => {
                        told = true;
                        first.send(Ok(())).await?;
                    }
                    Ok(_) => {}
                    Err(err) => return first.send(Err(err.to_string())).await,
                }
            }
            first.send(Err("the stream ended".into())).await
        }));
    }
    drop(first_tx);
    let mut open = 0;
    while open < streams {
        match tokio::time::timeout(Duration::from_secs(120), first_rx.recv()).await {
            Ok(Some(Ok(()))) => open += 1,
            Ok(Some(Err(err))) => return Err(format!("a stream failed after {open} opened: {err}").into()),
            Ok(None) | Err(_) => return Err(format!("only {open} of {streams} streams had an event").into()),
        }
    }
    println!("open {open}");
    // Hold them until told to let go (stdin closes), off the runtime's thread.
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    for stream in held {
        stream.abort();
    }
    Ok(())
}
