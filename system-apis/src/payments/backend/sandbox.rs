//! The `sandbox` provider: a payment provider's test mode, in process.
//!
//! Outcomes depend only on the card token, like a real provider's test
//! cards, so tests and demos can steer every path of a payment flow:
//!
//! | token | authorize |
//! |---|---|
//! | `tok_visa`, `tok_mastercard`, `tok_amex` | approved |
//! | `tok_chargeDeclined` | declined, `generic_decline` |
//! | `tok_chargeDeclinedInsufficientFunds` | declined, `insufficient_funds` |
//! | `tok_chargeDeclinedExpiredCard` | declined, `expired_card` |
//! | `tok_processingError` | [`Error::ProviderUnavailable`] (retryable) |
//! | anything else | [`Error::InvalidArgument`] |
//!
//! Captures, voids and refunds of an approved authorization always succeed:
//! the ledger has checked state and amounts before they get here. The
//! sandbox keeps no state, which makes it trivially idempotent by key.

use crate::payments::{Authorization, Decision, Error, Operation, Provider};

/// Test-mode provider with deterministic test cards.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sandbox;

/// Tokens the sandbox approves.
const APPROVED: &[&str] = &["tok_visa", "tok_mastercard", "tok_amex"];

/// Tokens the sandbox declines, with the decline code it gives.
const DECLINED: &[(&str, &str)] = &[
    ("tok_chargeDeclined", "generic_decline"),
    ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("tok_chargeDeclinedExpiredCard", "expired_card"),
];

/// The token whose authorization fails as a provider outage would.
const PROCESSING_ERROR: &str = "tok_processingError";

/// The simulated outage, kept as the error's source for the logs.
#[derive(Debug, thiserror::Error)]
#[error("sandbox processing error (test token {PROCESSING_ERROR})")]
struct ProcessingError;

impl Provider for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn authorize(&self, authorization: &Authorization) -> Result<Decision, Error> {
        let token = authorization.payment_token.as_str();
        if APPROVED.contains(&token) {
            return Ok(Decision::Approved { provider_reference: format!("sbx_auth_{}", ulid::Ulid::new()) });
        }
        if let Some((_, reason)) = DECLINED.iter().find(|(t, _)| *t == token) {
            return Ok(Decision::Declined { reason: (*reason).to_owned() });
        }
        if token == PROCESSING_ERROR {
            return Err(Error::ProviderUnavailable(Box::new(ProcessingError)));
        }
        Err(Error::invalid(
            "payment_token",
            "unknown sandbox test token; use tok_visa, tok_mastercard, tok_amex, tok_chargeDeclined, \
             tok_chargeDeclinedInsufficientFunds, tok_chargeDeclinedExpiredCard or tok_processingError",
        ))
    }

    async fn capture(&self, _operation: &Operation<'_>) -> Result<(), Error> {
        Ok(())
    }

    async fn void(&self, _operation: &Operation<'_>) -> Result<(), Error> {
        Ok(())
    }

    async fn refund(&self, _operation: &Operation<'_>) -> Result<(), Error> {
        Ok(())
    }

    async fn is_ready(&self) -> bool {
        true
    }
}
