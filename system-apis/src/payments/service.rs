//! `payments.v1.PaymentService` over a [`Ledger`]: request validation (so
//! the ledger and every provider see only well-formed input) and the one
//! conversion of [`Error`] into `tonic::Status`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use erp_connect_proto::payments::v1::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, Payment, RefundRequest, VoidRequest,
    payment_service_server::{PaymentService, PaymentServiceServer},
};
use prost::Message;
use rust_decimal::Decimal;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    Authorization, Error, Provider,
    ledger::{Action, FollowUp, Ledger, NewPayment},
};

/// Longest idempotency key, payment id, token or reference accepted.
const MAX_KEY_LEN: usize = 200;
/// Most decimal places of an amount.
const MONEY_SCALE: usize = 2;
/// Most digits before the decimal point: far beyond any real payment, and
/// well inside what `Decimal` holds.
const MAX_WHOLE_DIGITS: usize = 12;
/// How long a caller should wait before retrying an `UNAVAILABLE` call.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// `ErrorInfo.domain` of this API's errors.
const ERROR_DOMAIN: &str = "payments.v1";

/// The `payments.v1` gRPC service over `ledger`.
pub fn server<P: Provider>(ledger: Arc<Ledger<P>>) -> PaymentServiceServer<PaymentApi<P>> {
    PaymentServiceServer::new(PaymentApi { ledger })
}

/// Implements `payments.v1.PaymentService`; built by [`server`].
pub struct PaymentApi<P> {
    ledger: Arc<Ledger<P>>,
}

impl<P> Clone for PaymentApi<P> {
    fn clone(&self) -> Self {
        Self { ledger: self.ledger.clone() }
    }
}

/// A non-blank identifier of bounded length, taken as given (a key that
/// differs in whitespace is another key).
fn required(field: &'static str, value: &str) -> Result<String, Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    optional(field, value)
}

fn optional(field: &'static str, value: &str) -> Result<String, Error> {
    if value.len() > MAX_KEY_LEN || value.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("must be at most {MAX_KEY_LEN} printable characters")));
    }
    Ok(value.to_owned())
}

/// An ISO 4217 code: three upper-case ASCII letters.
fn currency(value: &str) -> Result<String, Error> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_owned())
    } else {
        Err(Error::invalid("currency", "must be an ISO 4217 code in upper case, such as EUR"))
    }
}

/// A positive decimal string with at most two places, written plainly
/// (`12.50`; not `+1`, `1e3`, `12.`, `.5`).
fn amount(value: &str) -> Result<Decimal, Error> {
    let (whole, fraction) = match value.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (value, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !fraction.is_none_or(digits) {
        return Err(Error::invalid("amount", "must be a decimal number such as 12.50"));
    }
    if fraction.is_some_and(|f| f.len() > MONEY_SCALE) {
        return Err(Error::invalid("amount", format!("must have at most {MONEY_SCALE} decimal places")));
    }
    if whole.trim_start_matches('0').len() > MAX_WHOLE_DIGITS {
        return Err(Error::invalid("amount", format!("must have at most {MAX_WHOLE_DIGITS} digits before the point")));
    }
    let parsed: Decimal =
        value.parse().map_err(|_| Error::invalid("amount", "must be a decimal number such as 12.50"))?;
    if parsed.is_zero() {
        return Err(Error::invalid("amount", "must be more than zero"));
    }
    Ok(parsed)
}

/// Empty means "all there is" (documented per rpc).
fn optional_amount(value: &str) -> Result<Option<Decimal>, Error> {
    if value.is_empty() { Ok(None) } else { amount(value).map(Some) }
}

/// The encoded request with its idempotency key cleared: a replay must match it.
fn fingerprint(message: &impl Message) -> String {
    URL_SAFE_NO_PAD.encode(message.encode_to_vec())
}

fn validate_authorize(req: AuthorizeRequest) -> Result<NewPayment, Error> {
    let authorization = Authorization {
        idempotency_key: required("idempotency_key", &req.idempotency_key)?,
        payment_token: required("payment_token", &req.payment_token)?,
        currency: currency(&req.currency)?,
        amount: amount(&req.amount)?,
        reference: optional("reference", &req.reference)?,
    };
    let fingerprint = fingerprint(&AuthorizeRequest { idempotency_key: String::new(), ..req });
    Ok(NewPayment { authorization, fingerprint })
}

fn follow_up(key: &str, payment_id: &str, amount: &str, fingerprint: String) -> Result<FollowUp, Error> {
    Ok(FollowUp {
        idempotency_key: required("idempotency_key", key)?,
        payment_id: required("payment_id", payment_id)?,
        amount: optional_amount(amount)?,
        fingerprint,
    })
}

#[tonic::async_trait]
impl<P: Provider> PaymentService for PaymentApi<P> {
    async fn authorize(&self, request: Request<AuthorizeRequest>) -> Result<Response<Payment>, Status> {
        let new = validate_authorize(request.into_inner())?;
        Ok(Response::new(self.ledger.authorize(&new).await?))
    }

    async fn capture(&self, request: Request<CaptureRequest>) -> Result<Response<Payment>, Status> {
        let req = request.into_inner();
        let print = fingerprint(&CaptureRequest { idempotency_key: String::new(), ..req.clone() });
        let call = follow_up(&req.idempotency_key, &req.payment_id, &req.amount, print)?;
        Ok(Response::new(self.ledger.follow_up(Action::Capture, &call).await?))
    }

    async fn void(&self, request: Request<VoidRequest>) -> Result<Response<Payment>, Status> {
        let req = request.into_inner();
        let print = fingerprint(&VoidRequest { idempotency_key: String::new(), ..req.clone() });
        let call = follow_up(&req.idempotency_key, &req.payment_id, "", print)?;
        Ok(Response::new(self.ledger.follow_up(Action::Void, &call).await?))
    }

    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<Payment>, Status> {
        let req = request.into_inner();
        let print = fingerprint(&RefundRequest { idempotency_key: String::new(), ..req.clone() });
        let call = follow_up(&req.idempotency_key, &req.payment_id, &req.amount, print)?;
        Ok(Response::new(self.ledger.follow_up(Action::Refund, &call).await?))
    }

    async fn get_payment(&self, request: Request<GetPaymentRequest>) -> Result<Response<Payment>, Status> {
        let id = required("payment_id", &request.into_inner().payment_id)?;
        Ok(Response::new(self.ledger.get(&id).await?))
    }
}

/// `UNAVAILABLE` with a retry hint and a reason telling who is down.
fn unavailable(reason: &str, message: &str) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(RETRY_AFTER));
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::Unavailable, message, details)
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { field, message } => Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid {field}: {message}"),
                ErrorDetails::with_bad_request_violation(field, message),
            ),
            Error::NotFound { id } => Status::with_error_details(
                Code::NotFound,
                format!("no payment {id:?}"),
                ErrorDetails::with_resource_info("payment", id, "", ""),
            ),
            Error::FailedPrecondition { reason, payment_id, message } => Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(reason, payment_id, message),
            ),
            Error::IdempotencyConflict { key } => Status::with_error_details(
                Code::AlreadyExists,
                "this idempotency key was used for a different request",
                ErrorDetails::with_bad_request_violation("idempotency_key", format!("{key:?} is already used")),
            ),
            err @ Error::ProviderUnavailable(_) => {
                tracing::warn!(error = %err, cause = ?std::error::Error::source(&err), "payment provider unavailable");
                unavailable("PROVIDER_UNAVAILABLE", "the payment provider is unavailable; retry later")
            }
            err @ Error::StoreUnavailable(_) => {
                tracing::warn!(error = %err, cause = ?std::error::Error::source(&err), "payments ledger unavailable");
                unavailable("STORE_UNAVAILABLE", "payments are unavailable; retry later")
            }
            err => {
                tracing::error!(error = %err, cause = ?std::error::Error::source(&err), "payments call failed");
                Status::internal("the payments call failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use erp_connect_proto::payments::v1::{PaymentStatus, payment_service_client::PaymentServiceClient};
    use platform::channel::GrpcChannel;

    use super::*;
    use crate::payments::{Config, Decision, Payments, backend::sandbox::Sandbox};

    type Client = PaymentServiceClient<GrpcChannel>;

    /// The payments API over a ledger in `dir`, called through a gRPC client
    /// in process (encoding, status codes and details as over the wire).
    async fn open(dir: &Path) -> (Client, Payments) {
        let payments = Payments::open(&Config::default(), dir).await.expect("open the payments ledger");
        let client = PaymentServiceClient::new(platform::channel::in_process(payments.routes()));
        (client, payments)
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temporary data directory")
    }

    fn authorize_request(key: &str, token: &str, amount: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            idempotency_key: key.into(),
            payment_token: token.into(),
            currency: "EUR".into(),
            amount: amount.into(),
            reference: "ord_test".into(),
        }
    }

    async fn authorize(client: &mut Client, key: &str, token: &str, amount: &str) -> Result<Payment, Status> {
        client.authorize(authorize_request(key, token, amount)).await.map(Response::into_inner)
    }

    async fn capture(client: &mut Client, key: &str, id: &str, amount: &str) -> Result<Payment, Status> {
        let req = CaptureRequest { idempotency_key: key.into(), payment_id: id.into(), amount: amount.into() };
        client.capture(req).await.map(Response::into_inner)
    }

    async fn refund(client: &mut Client, key: &str, id: &str, amount: &str) -> Result<Payment, Status> {
        let req = RefundRequest { idempotency_key: key.into(), payment_id: id.into(), amount: amount.into() };
        client.refund(req).await.map(Response::into_inner)
    }

    async fn void(client: &mut Client, key: &str, id: &str) -> Result<Payment, Status> {
        client.void(VoidRequest { idempotency_key: key.into(), payment_id: id.into() }).await.map(Response::into_inner)
    }

    fn status(payment: &Payment) -> PaymentStatus {
        PaymentStatus::try_from(payment.status).expect("a known status")
    }

    /// The code and the `PreconditionFailure` type of a refused call.
    fn precondition(result: Result<Payment, Status>) -> String {
        let status = result.expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        let details = status.get_error_details();
        let violation = &details.precondition_failure().expect("precondition details").violations[0];
        violation.r#type.clone()
    }

    fn bad_field(result: Result<Payment, Status>) -> String {
        let status = result.expect_err("rejected");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.get_error_details().bad_request().expect("bad request details").field_violations[0].field.clone()
    }

    #[tokio::test]
    async fn payments_authorize_capture_refund_succeeds() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;

        let authorized = authorize(&mut client, "a-1", "tok_visa", "100.5").await.expect("authorized");
        assert!(authorized.id.starts_with("pay_"), "{}", authorized.id);
        assert_eq!(status(&authorized), PaymentStatus::Authorized);
        assert_eq!((authorized.amount.as_str(), authorized.captured_amount.as_str()), ("100.50", "0.00"));
        assert_eq!((authorized.reference.as_str(), authorized.provider.as_str()), ("ord_test", "sandbox"));
        assert!(authorized.provider_reference.starts_with("sbx_"));

        let captured = capture(&mut client, "c-1", &authorized.id, "80").await.expect("captured");
        assert_eq!(status(&captured), PaymentStatus::Captured);
        assert_eq!(captured.captured_amount, "80.00");

        let partly = refund(&mut client, "r-1", &authorized.id, "30.25").await.expect("partial refund");
        assert_eq!((status(&partly), partly.refunded_amount.as_str()), (PaymentStatus::Captured, "30.25"));
        let refunded = refund(&mut client, "r-2", &authorized.id, "").await.expect("refund of the rest");
        assert_eq!((status(&refunded), refunded.refunded_amount.as_str()), (PaymentStatus::Refunded, "80.00"));

        let got = client.get_payment(GetPaymentRequest { payment_id: authorized.id.clone() }).await.expect("get");
        assert_eq!(got.into_inner(), refunded);
        assert_eq!(precondition(refund(&mut client, "r-3", &authorized.id, "").await), "PAYMENT_NOT_REFUNDABLE");
    }

    #[tokio::test]
    async fn payments_declined_card_is_a_declined_payment() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        for (token, reason) in [
            ("tok_chargeDeclined", "generic_decline"),
            ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
            ("tok_chargeDeclinedExpiredCard", "expired_card"),
        ] {
            let declined = authorize(&mut client, token, token, "10.00").await.expect("a result, not an error");
            assert_eq!(status(&declined), PaymentStatus::Declined, "{token}");
            assert_eq!(declined.decline_reason, reason);
            assert!(declined.provider_reference.is_empty());
            let again = authorize(&mut client, token, token, "10.00").await.expect("replayed");
            assert_eq!(again, declined);
            assert_eq!(precondition(capture(&mut client, "c", &declined.id, "").await), "PAYMENT_NOT_AUTHORIZED");
        }
    }

    #[tokio::test]
    async fn payments_processing_error_fails_once_per_key_then_a_retry_is_approved() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        let outage = authorize(&mut client, "p-1", "tok_processingError", "10.00").await.expect_err("an outage");
        assert_eq!(outage.code(), Code::Unavailable);
        let details = outage.get_error_details();
        assert_eq!(details.retry_info().and_then(|r| r.retry_delay), Some(RETRY_AFTER));
        assert_eq!(details.error_info().map(|i| i.reason.as_str()), Some("PROVIDER_UNAVAILABLE"));
        assert!(!outage.message().contains("sandbox"), "no internal text: {}", outage.message());

        // The retry with the same key and request gets past the outage, once
        // and for all: a replay answers the recorded payment.
        let paid = authorize(&mut client, "p-1", "tok_processingError", "10.00").await.expect("the retry");
        assert_eq!(status(&paid), PaymentStatus::Authorized);
        assert!(paid.provider_reference.starts_with("sbx_"));
        let replay = authorize(&mut client, "p-1", "tok_processingError", "10.00").await.expect("a replay");
        assert_eq!(replay, paid);

        // Each key has its own outage; a failed attempt records nothing, so
        // the key stays free for another request.
        let other = authorize(&mut client, "p-2", "tok_processingError", "10.00").await.expect_err("outage");
        assert_eq!(other.code(), Code::Unavailable);
        let card = authorize(&mut client, "p-2", "tok_visa", "12.00").await.expect("the key is still free");
        assert_eq!((status(&card), card.amount.as_str()), (PaymentStatus::Authorized, "12.00"));

        // A restarted sandbox has forgotten the keys: the first attempt fails again.
        let new = validate_authorize(authorize_request("p-3", "tok_processingError", "1")).expect("valid");
        let restarted = Sandbox::new();
        assert!(restarted.authorize(&new.authorization).await.expect_err("first attempt").is_retryable());
        assert!(restarted.authorize(&new.authorization).await.is_ok_and(|d| matches!(d, Decision::Approved { .. })));
        let unknown = validate_authorize(authorize_request("p-4", "tok_nope", "1")).expect("valid");
        assert!(!restarted.authorize(&unknown.authorization).await.expect_err("unknown").is_retryable());
    }

    #[tokio::test]
    async fn payments_unknown_token_is_invalid_argument() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        assert_eq!(bad_field(authorize(&mut client, "u-1", "tok_unknown", "1.00").await), "payment_token");
        assert_eq!(bad_field(authorize(&mut client, "u-2", "", "1.00").await), "payment_token");
        assert_eq!(bad_field(authorize(&mut client, "", "tok_visa", "1.00").await), "idempotency_key");
    }

    #[tokio::test]
    async fn payments_bad_amounts_and_currencies_are_invalid_argument() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        let bad_amounts =
            ["10.001", "-1", "abc", "0", "0.00", "", "1e3", "+1", " 1", "10.", ".5", "1,00", "1000000000000"];
        for (i, bad) in bad_amounts.into_iter().enumerate() {
            let result = authorize(&mut client, &format!("amt-{i}"), "tok_visa", bad).await;
            assert_eq!(bad_field(result), "amount", "{bad:?}");
        }
        for (i, bad) in ["eur", "EURO", "", "E1R", "EU"].into_iter().enumerate() {
            let mut req = authorize_request(&format!("cur-{i}"), "tok_visa", "1.00");
            req.currency = bad.into();
            assert_eq!(bad_field(client.authorize(req).await.map(Response::into_inner)), "currency", "{bad:?}");
        }
        let ok = authorize(&mut client, "ok", "tok_visa", "999999999999.99").await.expect("the largest amount");
        assert_eq!(ok.amount, "999999999999.99");
        assert_eq!(bad_field(capture(&mut client, "c-bad", &ok.id, "10.001").await), "amount");
        assert_eq!(bad_field(refund(&mut client, "r-bad", &ok.id, "-1").await), "amount");
    }

    #[tokio::test]
    async fn payments_capture_over_authorized_is_refused() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        let payment = authorize(&mut client, "a", "tok_visa", "50.00").await.expect("authorized");
        assert_eq!(precondition(capture(&mut client, "c-1", &payment.id, "50.01").await), "AMOUNT_EXCEEDS_AUTHORIZED");
        let captured = capture(&mut client, "c-2", &payment.id, "").await.expect("all of it");
        assert_eq!(captured.captured_amount, "50.00");
        assert_eq!(precondition(capture(&mut client, "c-3", &payment.id, "1").await), "PAYMENT_NOT_AUTHORIZED");
        assert_eq!(precondition(refund(&mut client, "r-1", &payment.id, "50.01").await), "AMOUNT_EXCEEDS_REFUNDABLE");

        let missing = capture(&mut client, "c-4", "pay_missing", "").await.expect_err("no such payment");
        assert_eq!(missing.code(), Code::NotFound);
    }

    #[tokio::test]
    async fn payments_void_only_before_capture() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        let captured = authorize(&mut client, "a-1", "tok_visa", "20.00").await.expect("authorized");
        capture(&mut client, "c-1", &captured.id, "").await.expect("captured");
        assert_eq!(precondition(void(&mut client, "v-1", &captured.id).await), "PAYMENT_NOT_AUTHORIZED");

        let held = authorize(&mut client, "a-2", "tok_mastercard", "20.00").await.expect("authorized");
        let voided = void(&mut client, "v-2", &held.id).await.expect("voided");
        assert_eq!(status(&voided), PaymentStatus::Voided);
        assert_eq!(precondition(capture(&mut client, "c-2", &held.id, "").await), "PAYMENT_NOT_AUTHORIZED");
        assert_eq!(precondition(void(&mut client, "v-3", &held.id).await), "PAYMENT_NOT_AUTHORIZED");
    }

    #[tokio::test]
    async fn payments_replay_returns_the_first_answer() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        let first = authorize(&mut client, "a", "tok_visa", "10.00").await.expect("authorized");
        let again = authorize(&mut client, "a", "tok_visa", "10.00").await.expect("replayed");
        assert_eq!(again, first, "the same payment, not a second one");

        let captured = capture(&mut client, "c", &first.id, "").await.expect("captured");
        refund(&mut client, "r", &first.id, "").await.expect("refunded");
        // Replays answer what the first call answered, not the payment's state now.
        assert_eq!(capture(&mut client, "c", &first.id, "").await.expect("replayed"), captured);
        assert_eq!(authorize(&mut client, "a", "tok_visa", "10.00").await.expect("replayed"), first);
    }

    #[tokio::test]
    async fn payments_same_key_with_another_request_is_refused() {
        let dir = tempdir();
        let (mut client, _payments) = open(dir.path()).await;
        let first = authorize(&mut client, "k", "tok_visa", "10.00").await.expect("authorized");
        for result in [
            authorize(&mut client, "k", "tok_visa", "10.01").await,
            authorize(&mut client, "k", "tok_amex", "10.00").await,
            capture(&mut client, "k", &first.id, "").await,
        ] {
            let status = result.expect_err("refused");
            assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
            let field = status.get_error_details().bad_request().expect("details").field_violations[0].field.clone();
            assert_eq!(field, "idempotency_key");
        }
    }

    #[tokio::test]
    async fn payments_replay_after_reopening_the_database() {
        let dir = tempdir();
        let (first, captured) = {
            let (mut client, payments) = open(dir.path()).await;
            let first = authorize(&mut client, "a", "tok_visa", "12.34").await.expect("authorized");
            let captured = capture(&mut client, "c", &first.id, "").await.expect("captured");
            payments.close().await;
            (first, captured)
        };
        assert!(dir.path().join("payments.db").is_file());
        let (mut client, _payments) = open(dir.path()).await;
        assert_eq!(authorize(&mut client, "a", "tok_visa", "12.34").await.expect("replayed"), first);
        assert_eq!(capture(&mut client, "c", &first.id, "").await.expect("replayed"), captured);
        let conflict = authorize(&mut client, "a", "tok_visa", "99.00").await.expect_err("another request");
        assert_eq!(conflict.code(), Code::AlreadyExists);
        let now = client.get_payment(GetPaymentRequest { payment_id: first.id }).await.expect("get").into_inner();
        assert_eq!(status(&now), PaymentStatus::Captured);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn payments_concurrent_duplicates_make_one_payment() {
        let dir = tempdir();
        let (client, payments) = open(dir.path()).await;
        let calls = (0..8).map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { authorize(&mut client, "dup", "tok_visa", "5.00").await })
        });
        let mut ids = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            ids.push(call.await.expect("task").expect("authorized").id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "{ids:?}");
        payments.close().await;

        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("payments.db")),
        )
        .await
        .expect("open the ledger");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments").fetch_one(&pool).await.expect("count");
        assert_eq!(rows, 1);
        pool.close().await;
    }

    /// The same ledger on PostgreSQL: replays, refusals and racing
    /// duplicates behave as on SQLite.
    #[tokio::test]
    async fn payments_ledger_on_postgres_behaves_as_on_sqlite() {
        let scratch = platform::database::ScratchPostgres::create("payments_test").await;
        let dir = tempdir();
        let config = Config { database_url: Some(scratch.url()), ..Config::default() };
        let payments = Payments::open(&config, dir.path()).await.expect("open the ledger on PostgreSQL");
        let mut client = PaymentServiceClient::new(platform::channel::in_process(payments.routes()));

        let authorized = authorize(&mut client, "a-1", "tok_visa", "20.00").await.expect("authorized");
        let captured = capture(&mut client, "c-1", &authorized.id, "15").await.expect("captured");
        assert_eq!((status(&captured), captured.captured_amount.as_str()), (PaymentStatus::Captured, "15.00"));
        assert_eq!(authorize(&mut client, "a-1", "tok_visa", "20.00").await.expect("replayed"), authorized);
        let conflict = authorize(&mut client, "a-1", "tok_visa", "21.00").await.expect_err("another request");
        assert_eq!(conflict.code(), Code::AlreadyExists);
        assert_eq!(precondition(capture(&mut client, "c-2", &authorized.id, "").await), "PAYMENT_NOT_AUTHORIZED");
        let declined = authorize(&mut client, "d-1", "tok_chargeDeclined", "5.00").await.expect("declined");
        assert_eq!(status(&declined), PaymentStatus::Declined);

        let calls: Vec<_> = (0..8)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move { authorize(&mut client, "dup", "tok_visa", "5.00").await })
            })
            .collect();
        let mut ids = Vec::new();
        for call in calls {
            ids.push(call.await.expect("task").expect("authorized").id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "one payment for racing duplicates: {ids:?}");
        payments.close().await;
    }

    #[tokio::test]
    async fn payments_get_unknown_payment_is_not_found() {
        let dir = tempdir();
        let (mut client, payments) = open(dir.path()).await;
        assert!(payments.is_ready().await);
        let status = client.get_payment(GetPaymentRequest { payment_id: "pay_nope".into() }).await.expect_err("none");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.get_error_details().resource_info().map(|r| r.resource_name.as_str()), Some("pay_nope"));
    }

    #[test]
    fn payments_config_defaults_to_sandbox_and_rejects_unknown_keys() {
        let config: Config = serde_json::from_str("{}").expect("defaults");
        assert_eq!(config.provider, crate::payments::ProviderKind::Sandbox);
        assert!(config.database_url.is_none() && config.validate().is_ok());
        assert!(serde_json::from_str::<Config>(r#"{"provider": "sandbox", "colour": 1}"#).is_err());
        assert!(serde_json::from_str::<Config>(r#"{"provider": "stripe"}"#).is_err());
        let postgres: Config = serde_json::from_str(r#"{"database_url": "postgres://x"}"#).expect("parses");
        assert!(postgres.validate().is_ok());
        let mysql: Config = serde_json::from_str(r#"{"database_url": "mysql://u:secret@x/db"}"#).expect("parses");
        assert!(mysql.validate().is_err_and(|e| !e.contains("secret")), "rejected, without the password");
    }
}
