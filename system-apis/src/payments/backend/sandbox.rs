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
//! | `tok_processingError` | a transient outage: the first attempt of an idempotency key fails with [`Error::ProviderUnavailable`] (retryable), a retry with that key is approved |
//! | anything else | [`Error::InvalidArgument`] |
//!
//! `tok_processingError` lets a caller test its retry path end to end: the
//! outage lasts exactly one attempt per key, as a real provider's blip would
//! when the caller retries with the same key. The keys that already failed
//! once are kept in memory only; after a restart a key fails once more,
//! which a caller that retries is built to absorb anyway.
//!
//! Captures, voids and refunds of an approved authorization always succeed:
//! the ledger has checked state and amounts before they get here. Apart from
//! that one set of keys the sandbox keeps no state, which makes it
//! idempotent by key.

use std::{collections::HashSet, sync::Mutex};

use crate::payments::{Authorization, Decision, Error, Operation, Provider};

/// Test-mode provider with deterministic test cards.
#[derive(Debug, Default)]
pub struct Sandbox {
    /// Idempotency keys whose `tok_processingError` attempt has failed
    /// once, so that their retry is approved. It grows by one key per such
    /// test payment, which a test mode can afford.
    failed_once: Mutex<HashSet<String>>,
}

impl Sandbox {
    /// A sandbox that has seen no outage yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn approve() -> Decision {
        Decision::Approved { provider_reference: format!("sbx_auth_{}", ulid::Ulid::new()) }
    }
}

/// Tokens the sandbox approves.
const APPROVED: &[&str] = &["tok_visa", "tok_mastercard", "tok_amex"];

/// Tokens the sandbox declines, with the decline code it gives.
const DECLINED: &[(&str, &str)] = &[
    ("tok_chargeDeclined", "generic_decline"),
    ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("tok_chargeDeclinedExpiredCard", "expired_card"),
];

/// The token whose first authorization attempt per key fails as a provider
/// outage would.
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
            return Ok(Self::approve());
        }
        if let Some((_, reason)) = DECLINED.iter().find(|(t, _)| *t == token) {
            return Ok(Decision::Declined { reason: (*reason).to_owned() });
        }
        if token == PROCESSING_ERROR {
            let first_attempt = self
                .failed_once
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(authorization.idempotency_key.clone());
            return if first_attempt {
                Err(Error::ProviderUnavailable(Box::new(ProcessingError)))
            } else {
                Ok(Self::approve())
            };
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
