//! Importing a batch: its pending rows, one order (the rows sharing an
//! `external_ref`) at a time, through the partner's mapping, its rules and
//! the order-to-cash `PlaceOrder` path. An order's idempotency key is its
//! reference, so a row sent again never makes a second order. What fails
//! goes to the quarantine with the original records and every reason
//! (a dry run only reports it). A system that does not answer leaves the
//! rows pending: the batch is taken up again after a pause.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use erp_connect_proto::order_to_cash::v1 as o2c;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    Shared, metrics,
    store::{BatchRow, Outcome, PendingRow, Quarantined, Reason},
};
use crate::{
    order_to_cash::clock,
    partners::mapping::{FieldError, Mapped},
};

/// Rows read at a time.
const PAGE: i64 = 1000;
/// Orders of a page being placed at once.
const IN_FLIGHT: usize = 16;
/// How long a replica holds a batch between progress reports.
const LEASE: Duration = Duration::from_secs(60);

/// Claims batches to import until `shutdown`.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let owner = format!("importer_{}", ulid::Ulid::new());
    loop {
        let now = clock::now_ms();
        let claimed = shared.store.claim(&owner, now, now + LEASE.as_millis() as i64).await;
        let wait = match claimed {
            Ok(Some(batch)) => match import(&shared, &owner, &batch, &shutdown).await {
                Ok(()) => Duration::ZERO,
                Err(err) => {
                    tracing::warn!(batch = %batch.id, error = %err, "batch import paused; it resumes where it stopped");
                    RETRY
                }
            },
            Ok(None) => shared.poll_interval,
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim an order batch");
                RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake.notified() => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The pause after a failure (store, or a system that does not answer).
const RETRY: Duration = Duration::from_secs(2);

/// Why an import stopped; it resumes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// A system the orders need did not answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Another replica took the batch over.
    #[error("the lease was lost")]
    LeaseLost,
}

async fn import(shared: &Shared, owner: &str, batch: &BatchRow, shutdown: &CancellationToken) -> Result<(), Error> {
    let mut after = (String::new(), 0_i64);
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let rows = shared.store.pending(&batch.id, (&after.0, after.1), PAGE).await?;
        let full = rows.len() as i64 == PAGE;
        let mut groups: Vec<Vec<PendingRow>> = Vec::new();
        for row in rows {
            match groups.last_mut() {
                Some(group) if group[0].external_ref == row.external_ref => group.push(row),
                _ => groups.push(vec![row]),
            }
        }
        // A full page may end inside an order: its rows wait for the next page.
        if full && groups.len() > 1 {
            groups.pop();
        }
        if groups.is_empty() {
            shared.store.finish(&batch.id, clock::now_ms()).await?;
            return Ok(());
        }
        // Orders are placed a few at a time (each waits mostly on the
        // store), and their results recorded in file order.
        let source = format!("batch:{}", batch.id);
        let mut placing = Vec::with_capacity(groups.len());
        for group in &groups {
            let records: Vec<Result<BTreeMap<String, String>, String>> = group
                .iter()
                .map(|r| r.record.clone().and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string())))
                .collect();
            let external_ref = group[0].external_ref.clone();
            let source = source.clone();
            placing.push(async move {
                decide(shared, &batch.tenant, &source, &external_ref, &records, batch.dry_run).await
            });
        }
        let decisions: Vec<_> = futures_util::stream::iter(placing).buffered(IN_FLIGHT).collect().await;
        for (group, decided) in groups.iter().zip(decisions) {
            let decided = decided?;
            let rows: Vec<i64> = group.iter().map(|r| r.row).collect();
            let outcome = Outcome {
                rows: &rows,
                status: decided.status,
                order_id: &decided.order_id,
                errors: decided.errors,
                quarantine: decided.quarantine,
            };
            shared.store.settle(&batch.id, &outcome).await?;
            metrics::records(&batch.tenant, "batch", outcome.status, rows.len());
        }
        let last = groups.last().and_then(|g| g.last()).map(|r| (r.external_ref.clone(), r.row)).unwrap_or_default();
        after = last;
        let now = clock::now_ms();
        if !shared.store.extend(&batch.id, owner, now + LEASE.as_millis() as i64).await? {
            return Err(Error::LeaseLost);
        }
    }
}

/// What became of one order's records.
pub struct Decided {
    /// `accepted`, `valid`, `rejected`, `quarantined`.
    pub status: &'static str,
    /// The order, when accepted.
    pub order_id: String,
    /// Per record, why not.
    pub errors: Vec<Vec<Reason>>,
    /// The quarantine entry, when one is written.
    pub quarantine: Option<Quarantined>,
}

/// Maps, checks and (unless `dry_run`) places one order of `records`.
pub async fn decide(
    shared: &Shared,
    tenant: &str,
    source: &str,
    external_ref: &str,
    records: &[Result<BTreeMap<String, String>, String>],
    dry_run: bool,
) -> Result<Decided, Error> {
    let mapping = shared.partners.mapping_or_identity(tenant);
    // A transform runs on a thread of its own and may block up to its deadline.
    let transformed: Vec<Option<Result<BTreeMap<String, String>, FieldError>>> = if mapping.has_transform() {
        let (partners, tenant, records) = (shared.partners.clone(), tenant.to_owned(), records.to_vec());
        tokio::task::spawn_blocking(move || {
            let mapping = partners.mapping_or_identity(&tenant);
            records.iter().map(|r| r.as_ref().ok().map(|r| mapping.transform(r).map(|t| t.into_owned()))).collect()
        })
        .await
        .map_err(|e| Error::Unavailable(format!("the transform's task failed: {e}")))?
    } else {
        vec![None; records.len()]
    };
    let reasons_of = |errs: Vec<FieldError>| -> Vec<Reason> {
        errs.into_iter()
            .map(|e| Reason { field: e.field, rule: e.rule.unwrap_or_default().to_owned(), message: e.message })
            .collect()
    };
    let mut mapped = Vec::with_capacity(records.len());
    let mut errors: Vec<Vec<Reason>> = Vec::with_capacity(records.len());
    for (record, transformed) in records.iter().zip(transformed) {
        let result = match (record, transformed) {
            (Err(why), _) => Err(vec![Reason { message: format!("is not a record: {why}"), ..Reason::default() }]),
            (Ok(_), Some(Err(error))) => Err(reasons_of(vec![error])),
            (Ok(_), Some(Ok(record))) => mapping.map(&record).map_err(reasons_of),
            (Ok(record), None) => mapping.map(record).map_err(reasons_of),
        };
        match result {
            Ok(m) => {
                mapped.push(m);
                errors.push(Vec::new());
            }
            Err(reasons) => errors.push(reasons),
        }
    }
    // A replayed record names its order itself, through the transform if any.
    let external_ref = match mapped.first() {
        Some(first) if external_ref.trim().is_empty() => first.external_ref.as_str(),
        _ => external_ref,
    };
    if external_ref.trim().is_empty() {
        // A record the transform refused has no reference to miss.
        for row in errors.iter_mut().filter(|row| !row.iter().any(|r| r.rule == "transform")) {
            row.push(Reason {
                field: "external_ref".into(),
                message: "is required: it names the order".into(),
                ..Reason::default()
            });
        }
    }
    let failed = |stage: &'static str, errors: Vec<Vec<Reason>>| {
        let reasons: Vec<Reason> = errors.iter().flatten().cloned().collect();
        let errors = errors
            .into_iter()
            .map(|row| {
                if row.is_empty() {
                    vec![Reason { message: "another row of this order was refused".into(), ..Reason::default() }]
                } else {
                    row
                }
            })
            .collect();
        failure(tenant, source, stage, external_ref, records, reasons, errors, dry_run)
    };
    if errors.iter().any(|e| !e.is_empty()) {
        return Ok(failed("mapping", errors));
    }
    let request = place_request(tenant, external_ref, &mapped);
    let service = &shared.orders;
    let placed = if dry_run {
        service.prepare(&request).await.map(|prepared| match prepared {
            crate::order_to_cash::service::Prepared::Replay(order) => order.id,
            crate::order_to_cash::service::Prepared::New { .. } => String::new(),
        })
    } else {
        service.place(request).await.map(|order| order.id)
    };
    match placed {
        Ok(order_id) => Ok(Decided {
            status: if dry_run { "valid" } else { "accepted" },
            order_id,
            errors: vec![Vec::new(); records.len()],
            quarantine: None,
        }),
        Err(err) => {
            use crate::order_to_cash::Error as O;
            let (stage, reasons) = match err {
                O::Invalid(fields) => ("validation", fields.into_iter().map(|(f, m)| reason(&f, &m)).collect()),
                O::KeyReused => (
                    "order",
                    vec![Reason {
                        field: "external_ref".into(),
                        message: "this reference was used for another order of this partner".into(),
                        ..Reason::default()
                    }],
                ),
                O::NotFound(what) => {
                    ("validation", vec![Reason { message: format!("no such {what}"), ..Reason::default() }])
                }
                O::Precondition { description, .. } => {
                    ("order", vec![Reason { message: description, ..Reason::default() }])
                }
                other => return Err(Error::Unavailable(other.to_string())),
            };
            Ok(failed(stage, vec![reasons; records.len()]))
        }
    }
}

/// A refusal: reported (dry run) or quarantined with the original records.
#[allow(clippy::too_many_arguments)]
fn failure(
    tenant: &str,
    source: &str,
    stage: &'static str,
    external_ref: &str,
    records: &[Result<BTreeMap<String, String>, String>],
    reasons: Vec<Reason>,
    errors: Vec<Vec<Reason>>,
    dry_run: bool,
) -> Decided {
    let quarantine = (!dry_run).then(|| Quarantined {
        id: format!("qua_{}", ulid::Ulid::new()),
        tenant: tenant.to_owned(),
        source: source.to_owned(),
        stage: stage.to_owned(),
        external_ref: external_ref.to_owned(),
        records: records
            .iter()
            .map(|r| {
                r.as_ref().map_or_else(
                    |why| serde_json::json!({"_unreadable": why}).to_string(),
                    |r| serde_json::to_string(r).unwrap_or_default(),
                )
            })
            .collect(),
        reasons,
        status: "open".into(),
        created_at: clock::now_ms(),
        ..Quarantined::default()
    });
    Decided { status: if dry_run { "rejected" } else { "quarantined" }, order_id: String::new(), errors, quarantine }
}

/// A refusal of `PlaceOrder` as a record's reason: its field in a record's
/// terms, and the rule that starts its message (`rule: message`).
fn reason(field: &str, message: &str) -> Reason {
    let field = match field {
        f if f.starts_with("lines[") && f.ends_with(".quantity") => "quantity".to_owned(),
        f if f.starts_with("lines[") && f.ends_with(".sku") => "sku".to_owned(),
        f if f.starts_with("ship_to.") => f.replace('.', "_"),
        f => f.to_owned(),
    };
    match message.split_once(": ") {
        Some((rule, text)) if crate::partners::rules::RULES.contains(&rule) => {
            Reason { field, rule: rule.to_owned(), message: text.to_owned() }
        }
        _ => Reason { field, rule: String::new(), message: message.to_owned() },
    }
}

/// The `PlaceOrder` of one order's mapped records, for the partner.
fn place_request(tenant: &str, external_ref: &str, lines: &[Mapped]) -> o2c::PlaceOrderRequest {
    let first = lines.first().cloned().unwrap_or_default();
    let payment = match first.payment.strip_prefix("card:") {
        Some(token) => o2c::place_order_request::Payment::CardToken(token.to_owned()),
        None => o2c::place_order_request::Payment::OnAccount(true),
    };
    let ship_to = (!first.ship_to_street.is_empty() || !first.ship_to_country.is_empty()).then(|| o2c::ShipTo {
        street: first.ship_to_street.clone(),
        city: first.ship_to_city.clone(),
        postal_code: first.ship_to_postal_code.clone(),
        country: first.ship_to_country.clone(),
    });
    o2c::PlaceOrderRequest {
        // One key per reference: sending a row again never makes a second order.
        idempotency_key: format!("import:{external_ref}"),
        tenant: tenant.to_owned(),
        customer: Some(o2c::CustomerRef {
            external_id: format!("partner:{tenant}"),
            email: String::new(),
            name: tenant.to_owned(),
        }),
        external_ref: external_ref.to_owned(),
        lines: lines
            .iter()
            .map(|l| o2c::OrderLine { sku: l.sku.clone(), quantity: l.quantity, ..o2c::OrderLine::default() })
            .collect(),
        payment: Some(payment),
        ship_to,
        ..o2c::PlaceOrderRequest::default()
    }
}
