//! `GET /mobile/v1/orders/{id}/events`: the order's status, pushed as
//! server-sent events (the WHATWG HTML "server-sent events" format) while
//! the app is open, instead of polled over a slow network.
//!
//! Each status the order reaches is one `status` event whose `id:` is its
//! place in the order's way through the statuses (1 for `accepted`, 2 for
//! the next, ...), so a client that lost its connection sends the last id
//! it saw as `Last-Event-ID` and gets exactly the statuses after it: none
//! missed, none repeated, even when several were reached while it was
//! away. The statuses come from the order's timeline, not from the moments
//! the process tier's `WatchOrder` happens to report, for the same reason.
//!
//! A comment line goes out at least every [`HEARTBEAT`] so proxies and
//! phones keep an idle stream open; the stream ends after a terminal status
//! (`completed`, `cancelled`, `rejected`). Responses are never compressed
//! (tower-http leaves `text/event-stream` alone): compression would hold
//! events back in its buffer.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use erp_connect_proto::order_to_cash::v1::{Order, OrderStatus, WatchOrderRequest};
use futures_util::{Stream, StreamExt, stream};
use http::HeaderMap;
use serde::Serialize;

use super::orders::MobileOrder;
use crate::{
    Upstreams,
    error::Error,
    extract::{Caller, ObjectId},
    openapi::ReadRefusals,
    orders::{self, rfc3339},
    web::{self, orders::TENANT},
};

/// Longest a stream stays silent: a heartbeat comment goes out after this.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// How soon a client should reconnect after losing the stream (`retry:`).
const RECONNECT: Duration = Duration::from_secs(2);

/// The data of one `status` event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusEvent {
    /// The status reached: `accepted`, `confirmed`, `invoiced`, `paid`,
    /// `shipped`, `completed`, `cancelled` or `rejected`.
    pub status: &'static str,
    /// When it was reached, RFC 3339 UTC.
    pub at: Option<String>,
    /// The order as it is now (which may be further along than `status`
    /// when statuses are replayed after a reconnect).
    pub order: MobileOrder,
}

/// The contract's statuses in the order an order can reach them; the three
/// terminal ones share the last place.
fn rank(step: &str) -> Option<u8> {
    Some(match step {
        "accepted" => 0,
        "confirmed" => 1,
        "invoiced" => 2,
        "paid" => 3,
        "shipped" => 4,
        "completed" | "cancelled" | "rejected" => 5,
        _ => return None,
    })
}

/// The statuses `order` has reached, oldest first, with when: its
/// timeline's status steps, each kept only if it moved the order forward
/// (the process tier records a late `invoiced` after `shipped`, say, but
/// the order stays shipped).
fn reached(order: &Order) -> Vec<(&'static str, Option<String>)> {
    let mut statuses = Vec::new();
    let mut last: Option<u8> = None;
    for entry in &order.timeline {
        let Some(rank) = rank(&entry.step) else { continue };
        if last.is_some_and(|last| rank <= last) {
            continue;
        }
        last = Some(rank);
        let status = orders::STATUSES.iter().copied().find(|s| *s == entry.step).unwrap_or("unknown");
        statuses.push((status, rfc3339(entry.at.as_ref())));
    }
    statuses
}

fn is_terminal(order: &Order) -> bool {
    matches!(
        OrderStatus::try_from(order.status),
        Ok(OrderStatus::Completed | OrderStatus::Cancelled | OrderStatus::Rejected)
    )
}

/// `Last-Event-ID`: the number of statuses the client has already seen.
fn seen(headers: &HeaderMap) -> Result<usize, Error> {
    let Some(value) = headers.get("last-event-id") else { return Ok(0) };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or(Error::InvalidHeader { header: "Last-Event-ID", message: "must be the id of an event this stream sent" })
}

/// The order's status as server-sent events: one `status` event per status reached, `id:` its place
/// (1 for accepted, ...); reconnect with `Last-Event-ID` to get only later ones. A comment at least every
/// 15 s; the stream ends after completed, cancelled or rejected.
#[utoipa::path(get, path = "/orders/{id}/events", tag = "mobile", operation_id = "watch_mobile_order",
    params(
        ("id" = String, Path, description = "Order id, ord_..."),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received",
            pattern = "^[0-9]+$")
    ),
    responses(
        (status = 200, description = "text/event-stream; each event's data is a StatusEvent", body = StatusEvent,
            content_type = "text/event-stream"),
        (status = 400, description = "A Last-Event-ID this stream did not send"),
        (status = 403, description = "Without scope orders:read"),
        (status = 404, description = "No such order of this customer"),
        ReadRefusals
    ),
    security(("bearer" = ["orders:read"]))
)]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn stream(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    ObjectId(id): ObjectId,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let seen = seen(&headers)?;
    let mut watch = orders::client(&upstreams)
        .watch_order(WatchOrderRequest { tenant: TENANT.to_owned(), order_id: id })
        .await
        .map_err(Error::lookup("no such order"))?
        .into_inner();
    // WatchOrder sends the order as it is first: whose it is is known before
    // anything is streamed.
    let first = match watch.message().await {
        Ok(Some(order)) => order,
        Ok(None) => return Err(Error::Process(tonic::Status::unavailable("the order's watch ended at once"))),
        Err(status) => return Err(Error::lookup("no such order")(status)),
    };
    if !web::orders::owns(&principal, &first) {
        return Err(Error::NotFound("no such order"));
    }
    Ok(event_stream(status_events(first, watch, seen)))
}

/// `events` as `text/event-stream`, with a heartbeat comment whenever
/// [`HEARTBEAT`] passes without an event.
fn event_stream(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")).into_response()
}

/// Where a stream is: the order not yet turned into events, the watch for
/// the next ones, how many statuses the client has, and whether it is over.
struct Progress<W> {
    next: Option<Order>,
    watch: W,
    sent: usize,
    over: bool,
}

/// The events for every status after the first `seen`, from `first` and
/// then each order `watch` reports; ends after a terminal status, or when
/// the watch ends (the process tier stopping: the client reconnects).
fn status_events(
    first: Order,
    watch: impl Stream<Item = Result<Order, tonic::Status>> + Send + Unpin + 'static,
    seen: usize,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let start = Progress { next: Some(first), watch, sent: seen, over: false };
    stream::unfold(start, |mut progress| async move {
        if progress.over {
            return None;
        }
        let order = match progress.next.take() {
            Some(order) => order,
            None => match progress.watch.next().await? {
                Ok(order) => order,
                Err(status) => {
                    tracing::warn!(code = ?status.code(), "order watch failed; the client will reconnect");
                    return None;
                }
            },
        };
        progress.over = is_terminal(&order);
        let statuses = reached(&order);
        let (already, total) = (progress.sent, statuses.len());
        let view = MobileOrder::from(order);
        let events: Vec<Result<Event, Infallible>> = statuses
            .into_iter()
            .enumerate()
            .skip(already)
            .map(|(index, (status, at))| {
                let data = StatusEvent { status, at, order: view.clone() };
                let event = Event::default().id((index + 1).to_string()).event("status").retry(RECONNECT);
                Ok(event.json_data(&data).unwrap_or_else(|_| Event::default().comment("unwritable event")))
            })
            .collect();
        progress.sent = already.max(total);
        Some((stream::iter(events), progress))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use erp_connect_proto::order_to_cash::v1::TimelineEntry;

    use super::*;

    fn order(status: OrderStatus, steps: &[&str]) -> Order {
        Order {
            id: "ord_1".into(),
            status: status as i32,
            timeline: steps.iter().map(|s| TimelineEntry { step: (*s).into(), ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_statuses_reached_skip_internal_steps_and_late_ones() {
        let shipped = order(
            OrderStatus::Shipped,
            &["accepted", "customer_found", "confirmed", "shipped", "invoiced", "payment_received", "paid"],
        );
        let names: Vec<_> = reached(&shipped).into_iter().map(|(s, _)| s).collect();
        assert_eq!(names, ["accepted", "confirmed", "shipped"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_sends_a_heartbeat_comment_within_15_seconds() {
        use http_body_util::BodyExt;
        let start = tokio::time::Instant::now();
        let mut body = event_stream(stream::pending()).into_body();
        for _ in 0..2 {
            let frame = body.frame().await.expect("a frame").expect("readable");
            assert_eq!(frame.into_data().expect("data"), ": heartbeat\n\n");
        }
        // Paused time: what the stream waited, not what the test did.
        assert_eq!(start.elapsed(), 2 * HEARTBEAT);
    }

    async fn ids_and_statuses(events: impl Stream<Item = Result<Event, Infallible>>) -> usize {
        events.count().await
    }

    #[tokio::test]
    async fn a_stream_resumed_after_an_id_sends_only_later_statuses_and_ends_when_the_order_does() {
        let paid = order(OrderStatus::Paid, &["accepted", "confirmed", "payment_captured", "paid"]);
        let completed = order(OrderStatus::Completed, &["accepted", "confirmed", "paid", "shipped", "completed"]);
        let never = order(OrderStatus::Completed, &["accepted"]);
        let watch = stream::iter(vec![Ok(completed), Ok(never)]);
        // Seen 2 (accepted, confirmed): paid from the first order, shipped
        // and completed from the next; the stream ends before the third.
        assert_eq!(ids_and_statuses(status_events(paid, watch, 2)).await, 3);
    }
}
