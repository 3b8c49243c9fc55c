//! Plumbing that every tier shares, and nothing else.
//!
//! Charter: this crate holds protocol and runtime pieces that would otherwise
//! be written four times — the problem+json error body, the gRPC channel
//! between tiers (over the network or in-process), the verified principal
//! the gateway hands to the experience tier, readiness probes and graceful
//! shutdown. It holds no business types (no orders, products or customers)
//! and no tier's logic; a tier crate may depend on it, never the reverse.
//!
//! # Layout
//! - [`backoff`]: the one backoff rule (exponential, capped, jittered) of
//!   every retry.
//! - [`problem`]: RFC 9457 `application/problem+json` bodies.
//! - [`channel`]: [`channel::GrpcChannel`], how one tier reaches the next.
//! - [`principal`]: who is calling, as verified by the gateway.
//! - [`health`]: `grpc.health.v1` answered by probing what a tier depends on.
//! - [`reflection`]: gRPC server reflection, `v1` and `v1alpha`.
//! - [`shutdown`]: SIGTERM/Ctrl-C handling and draining servers, and the
//!   HTTP server loop with its per-client limits.
//! - [`tls`]: TLS (and mTLS) on a listener and to the next tier,
//!   certificates reloaded when their files change.
//! - [`request_id`]: `x-request-id` on every HTTP response.
//! - [`telemetry`]: logs, OpenTelemetry spans and W3C trace context
//!   across tiers; [`log_line`], the JSON log line it writes.
//! - [`secret_file`]: dev-mode secrets created on first use.
//! - [`deadline`]: the caller's deadline (`grpc-timeout`), kept for the
//!   calls a tier makes on its behalf.
//! - [`database`]: opening, migrating and writing to a tier's own SQL
//!   database (SQLite or PostgreSQL).
//! - [`audit`]: the append-only, hash-chained audit trail in a tier's
//!   database, and its verification.
//! - [`metrics`]: the Prometheus recorder, `/metrics`, request metrics of
//!   the HTTP and gRPC tiers, and their short history for the overview.

pub mod audit;
pub mod backoff;
pub mod channel;
pub mod database;
pub mod deadline;
pub mod health;
pub mod log_line;
pub mod metrics;
pub mod principal;
pub mod problem;
pub mod reflection;
pub mod request_id;
pub mod secret_file;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
