//! The mobile experience API in `up` and `serve` mode: compact answers,
//! a retried tap that orders once, the order's status as server-sent events
//! (resumed with `Last-Event-ID`, closed at the end), and HTTP caching and
//! compression on reads.

mod harness;

use std::{io::Read, time::Duration};

use harness::{Running, assert_problem, get, post_json, send, spawn_serve, spawn_up};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

/// The web shop customer's scopes, which the mobile app's tokens carry.
const CUSTOMER_SCOPES: &str = "catalog:read orders:read orders:write";

/// Longest one event may take to arrive: a saga step on a busy machine.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

fn customer(app: &Running, subject: &str) -> String {
    harness::token_for(app.data_dir.path(), subject, None, Some(&format!("{subject}@example.com")), CUSTOMER_SCOPES)
}

fn card_order(sku: &str, quantity: i64) -> Value {
    json!({"lines": [{"sku": sku, "quantity": quantity}], "payment": {"method": "card", "token": "tok_visa"}})
}

#[tokio::test]
async fn mobile_answers_are_compact_and_a_retried_tap_orders_once_in_up_and_serve() {
    for app in [spawn_up().await, spawn_serve().await] {
        let mia = customer(&app, "mia");

        let products = get(&app.url("/mobile/v1/products"), Some(&mia)).await;
        assert_eq!(products.status, 200, "{}", products.text);
        let list = products.body["products"].as_array().expect("products");
        assert!(!list.is_empty() && list.len() <= 10, "a small default page: {}", products.text);
        for product in list {
            let keys: Vec<&str> = product.as_object().expect("object").keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 5, "{product}");
            for key in ["sku", "name", "price", "currency", "in_stock"] {
                assert!(keys.contains(&key), "{key} missing: {product}");
            }
        }
        let some = get(&app.url("/mobile/v1/products?fields=sku,in_stock&page_size=2"), Some(&mia)).await;
        assert_eq!(some.status, 200, "{}", some.text);
        assert_eq!(some.body["products"].as_array().map(Vec::len), Some(2), "{}", some.text);
        for product in some.body["products"].as_array().expect("products") {
            let mut keys: Vec<&str> = product.as_object().expect("object").keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["in_stock", "sku"], "{product}");
        }
        let bad = get(&app.url("/mobile/v1/products?fields=sku,description"), Some(&mia)).await;
        assert_problem(&bad, 400);
        assert_eq!(bad.body["errors"][0]["field"], "fields", "{}", bad.text);

        // A tap retried after a lost answer: the same key, the same order.
        let url = app.url("/mobile/v1/orders");
        let first = post_json(&url, &mia, &card_order("GADGET-1", 2), Some("tap-1")).await;
        assert_eq!(first.status, 201, "{}", first.text);
        let again = post_json(&url, &mia, &card_order("GADGET-1", 2), Some("tap-1")).await;
        assert_eq!(again.status, 201, "{}", again.text);
        let id = first.body["id"].as_str().expect("id").to_owned();
        assert_eq!(again.body["id"], id.as_str());
        assert_eq!(first.headers["location"], format!("/mobile/v1/orders/{id}").as_str());
        let mut keys: Vec<&str> = first.body.as_object().expect("order").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["created_at", "currency", "id", "lines", "payment", "status", "total", "updated_at"],
            "{}",
            first.text
        );
        assert_eq!(first.body["lines"], json!([{"sku": "GADGET-1", "quantity": 2, "amount": first.body["total"]}]));

        let mine = get(&app.url("/mobile/v1/orders"), Some(&mia)).await;
        assert_eq!(mine.status, 200, "{}", mine.text);
        let orders = mine.body["orders"].as_array().expect("orders");
        assert_eq!(orders.len(), 1, "one order for two taps: {}", mine.text);
        assert_eq!(orders[0]["id"], id.as_str());
        assert_eq!(orders[0]["items"], 2);
        // The web shop shows the same customer's same order.
        let web = get(&app.url(&format!("/web/v1/orders/{id}")), Some(&mia)).await;
        assert_eq!(web.status, 200, "{}", web.text);

        let one = get(&app.url(&format!("/mobile/v1/orders/{id}")), Some(&mia)).await;
        assert_eq!(one.status, 200, "{}", one.text);
        assert_eq!(one.body["id"], id.as_str());
        let other = customer(&app, "noah");
        assert_problem(&get(&app.url(&format!("/mobile/v1/orders/{id}")), Some(&other)).await, 404);
        assert_problem(&get(&app.url(&format!("/mobile/v1/orders/{id}/events")), Some(&other)).await, 404);
        assert_problem(&get(&app.url("/mobile/v1/orders/ord_nope/events"), Some(&mia)).await, 404);
        assert_problem(&get(&app.url("/mobile/v1/orders"), None).await, 401);
        let reader = harness::token_for(app.data_dir.path(), "mia", None, None, "catalog:read");
        assert_problem(&post_json(&url, &reader, &card_order("GADGET-1", 1), None).await, 403);
        app.stop_all().await;
    }
}

/// One server-sent event as a client reads it.
#[derive(Debug)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// A client's end of an event stream: what arrives, split into events.
struct EventStream {
    body: hyper::body::Incoming,
    buffer: String,
}

impl EventStream {
    /// Opens `path`, resuming after `last_event_id`; the answer's status and
    /// headers, and the stream when it is 200.
    async fn open(app: &Running, path: &str, bearer: &str, last_event_id: Option<&str>) -> (http::Response<()>, Self) {
        let client: Client<HttpConnector, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut request = http::Request::get(app.url(path))
            .header("authorization", format!("Bearer {bearer}"))
            .header("accept", "text/event-stream")
            // Asked for, but an event stream is never compressed.
            .header("accept-encoding", "gzip, br");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = client.request(request.body(Full::default()).expect("request")).await.expect("response");
        let (parts, body) = response.into_parts();
        (http::Response::from_parts(parts, ()), Self { body, buffer: String::new() })
    }

    /// The next event, or `None` once the server has closed the stream.
    /// Comments (the heartbeat) are skipped, as every client does.
    async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => id = Some(value.to_owned()),
                        "event" => event = Some(value.to_owned()),
                        "data" => data.push_str(value),
                        _ => {} // a comment (empty field), retry
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Some(Event { id, event, data });
                }
            }
            let frame = tokio::time::timeout(EVENT_DEADLINE, self.body.frame()).await.expect("an event in time");
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(bytes) = frame.expect("stream readable").into_data() {
                        self.buffer.push_str(std::str::from_utf8(&bytes).expect("utf-8"));
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn order_status_streams_as_events_resumes_after_a_drop_and_ends_with_the_order_in_up_and_serve() {
    for app in [spawn_up().await, spawn_serve().await] {
        let ava = customer(&app, "ava");
        let placed = post_json(&app.url("/mobile/v1/orders"), &ava, &card_order("GADGET-1", 1), None).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        let id = placed.body["id"].as_str().expect("id").to_owned();
        let path = format!("/mobile/v1/orders/{id}/events");

        let (head, mut stream) = EventStream::open(&app, &path, &ava, None).await;
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-type"], "text/event-stream");
        assert!(head.headers().get("content-encoding").is_none(), "{:?}", head.headers());
        let first = stream.next().await.expect("the first status");
        assert_eq!((first.id.as_deref(), first.event.as_deref()), (Some("1"), Some("status")), "{first:?}");
        assert_eq!(first.data["status"], "accepted");
        assert_eq!(first.data["order"]["id"], id.as_str());
        let mut seen = vec![first];
        // The connection drops; meanwhile the order gets paid.
        drop(stream);
        harness::wait_for_order(&app, &ava, &format!("/mobile/v1/orders/{id}"), "paid").await;

        let last = seen.last().and_then(|e| e.id.clone()).expect("an id");
        let (head, mut stream) = EventStream::open(&app, &path, &ava, Some(&last)).await;
        assert_eq!(head.status(), 200);
        while seen.last().is_none_or(|e| e.data["status"] != "paid") {
            seen.push(stream.next().await.expect("statuses up to paid"));
        }
        // The warehouse ships: the stream goes on to the end and closes.
        let web = format!("/web/v1/orders/{id}");
        let shipment = tokio::time::timeout(EVENT_DEADLINE, async {
            loop {
                let order = get(&app.url(&web), Some(&ava)).await;
                if let Some(shipment) = order.body["erp"]["shipments"][0].as_str() {
                    break shipment.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("a shipment for the paid order");
        let ops = app.token("ops");
        let url = app.url(&format!("/ops/v1/shipments/{shipment}/complete"));
        let request = http::Request::post(url).header("authorization", format!("Bearer {ops}"));
        let done = send(request.body(Full::default()).expect("request")).await;
        assert_eq!(done.status, 200, "{}", done.text);
        while let Some(event) = stream.next().await {
            seen.push(event);
        }

        let ids: Vec<String> = seen.iter().map(|e| e.id.clone().expect("id")).collect();
        let expected: Vec<String> = (1..=seen.len()).map(|n| n.to_string()).collect();
        assert_eq!(ids, expected, "every status once, in order: {seen:?}");
        let statuses: Vec<&str> = seen.iter().map(|e| e.data["status"].as_str().expect("status")).collect();
        assert_eq!(statuses[..2], ["accepted", "confirmed"], "{statuses:?}");
        assert!(statuses.contains(&"paid"), "{statuses:?}");
        assert_eq!(statuses[statuses.len() - 2..], ["shipped", "completed"], "{statuses:?}");
        assert_eq!(seen.last().map(|e| &e.data["order"]["status"]), Some(&json!("completed")));

        // After the end, resuming from the last id sends nothing and closes.
        let (head, mut stream) = EventStream::open(&app, &path, &ava, ids.last().map(String::as_str)).await;
        assert_eq!(head.status(), 200);
        assert!(stream.next().await.is_none(), "nothing after the last status");
        let bad = send(
            http::Request::get(app.url(&path))
                .header("authorization", format!("Bearer {ava}"))
                .header("last-event-id", "yesterday")
                .body(Full::default())
                .expect("request"),
        )
        .await;
        assert_problem(&bad, 400);
        app.stop_all().await;
    }
}

/// `GET` with extra headers; the raw body.
async fn get_raw(url: &str, bearer: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, Vec<u8>) {
    let client: Client<HttpConnector, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::get(url).header("authorization", format!("Bearer {bearer}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::default()).expect("request")).await.expect("response");
    let (parts, body) = response.into_parts();
    (parts.status.as_u16(), parts.headers, body.collect().await.expect("body").to_bytes().to_vec())
}

#[tokio::test]
async fn reads_carry_an_etag_answer_304_when_unchanged_and_compress_to_the_same_json_in_up_and_serve() {
    for app in [spawn_up().await, spawn_serve().await] {
        let leo = customer(&app, "leo");
        let placed = post_json(&app.url("/web/v1/orders"), &leo, &card_order("GADGET-1", 3), None).await;
        assert_eq!(placed.status, 201, "{}", placed.text);
        let id = placed.body["id"].as_str().expect("id");
        // Each audience's reads: the web shop, the app, a partner.
        let partner =
            harness::token_for(app.data_dir.path(), "acme-bot", Some("acme"), None, "catalog:read orders:read");
        for (path, bearer) in [
            ("/web/v1/products?page_size=50".to_owned(), leo.clone()),
            ("/mobile/v1/products".to_owned(), leo.clone()),
            (format!("/web/v1/orders/{id}"), leo.clone()),
            ("/partner/v1/products?page_size=50".to_owned(), partner.clone()),
        ] {
            let url = app.url(&path);
            let (status, headers, plain) = get_raw(&url, &bearer, &[]).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&plain));
            let etag = headers.get("etag").expect("an ETag").to_str().expect("ascii").to_owned();
            assert!(etag.starts_with("W/\""), "{path}: {etag}");
            assert_eq!(headers["cache-control"], "private, no-cache", "{path}");
            let json: Value = serde_json::from_slice(&plain).expect("JSON");

            let (status, headers, body) = get_raw(&url, &bearer, &[("if-none-match", &etag)]).await;
            if status == 200 {
                // An order may have moved on between the two reads; then
                // its tag must have changed with it.
                assert_ne!(headers["etag"], etag.as_str(), "{path}: changed, with the same tag");
            } else {
                assert_eq!(status, 304, "{path}");
                assert!(body.is_empty(), "{path}: a 304 has no body");
                assert_eq!(headers["etag"], etag.as_str());
            }
            let (status, _, _) = get_raw(&url, &bearer, &[("if-none-match", "W/\"someone-else\"")]).await;
            assert_eq!(status, 200, "{path}: another tag is no match");

            for (encoding, decode) in [("gzip", gunzip as fn(&[u8]) -> Vec<u8>), ("br", unbrotli)] {
                let (status, headers, body) = get_raw(&url, &bearer, &[("accept-encoding", encoding)]).await;
                assert_eq!(status, 200, "{path}");
                assert_eq!(headers["content-encoding"], encoding, "{path}");
                let decoded: Value = serde_json::from_slice(&decode(&body)).expect("JSON once decoded");
                if path.contains("/orders/") {
                    assert_eq!(decoded["id"], json["id"], "{path} {encoding}");
                } else {
                    assert_eq!(decoded, json, "{path} {encoding}");
                }
            }
        }
        app.stop_all().await;
    }
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out).expect("gzip");
    out
}

fn unbrotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli_decompressor::Decompressor::new(body, 4096).read_to_end(&mut out).expect("brotli");
    out
}
