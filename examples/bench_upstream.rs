//! The benchmark ladder's upstream (`bench/ladder.sh`): answers every request
//! with the same 1 KB JSON body. Alone, it is the ladder's baseline: the most
//! an HTTP server does on one core of this machine.
//!
//!   bench_upstream [ADDR]   (default 127.0.0.1:9000)

use axum::{Router, http::header, routing::any};

/// The response every step of the ladder carries: 1,024 bytes of JSON.
fn body() -> bytes::Bytes {
    let filler = "x".repeat(1024 - r#"{"id":"ord_bench","note":""}"#.len());
    bytes::Bytes::from(format!(r#"{{"id":"ord_bench","note":"{filler}"}}"#))
}

// One thread: the ladder pins each server to one core.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let body = body();
    assert_eq!(body.len(), 1024);
    let app = Router::new().fallback(any(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
    }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
