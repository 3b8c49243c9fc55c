//! Outbound webhooks for partners (issue 17), as Standard Webhooks v1.
//!
//! Built so far, the parts every later one stands on:
//! - [`signature`]: the endpoint secrets (`whsec_...`) and the
//!   `webhook-signature` a receiver verifies, one per secret while a
//!   rotated secret is still in its grace period;
//! - [`target`]: where a webhook may be sent: in `production` mode only
//!   `https` to public addresses, checked after DNS resolution and before
//!   any connection, so a subscription cannot reach loopback, private,
//!   link-local or cloud metadata addresses;
//! - [`delivery`]: one attempt, `POST`ed signed to a checked target, and
//!   what the endpoint's answer means (delivered, retry later, gone).

pub mod delivery;
pub mod signature;
pub mod target;
