//! `erp-connect serve --target TIER`: one tier per process. Each tier reaches
//! the next over the network at the address in the configuration: gateway →
//! experience over HTTP, experience → process and process → system over
//! gRPC (HTTP/2, connections reused).
//!
//! With `[internal.tls]` each of these hops is TLS (HTTPS, gRPC over TLS)
//! with the configured CA, mutual if asked.
//!
//! The process tier admits only calls with a service JWT (reflection and
//! health excepted), and the experience tier sends its own on every call;
//! see [`crate::service_auth`].
//!
//! Every tier answers `GET /metrics` (Prometheus text, no credential) on its
//! own port; the gRPC tiers accept HTTP/1.1 beside HTTP/2 for it.

use std::net::SocketAddr;

use platform::{channel, shutdown::Shutdown};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{StartError, config::Config};

/// The tiers `serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The authenticating gateway (HTTP).
    Gateway,
    /// The experience APIs (HTTP).
    Experience,
    /// The process APIs (gRPC).
    Process,
    /// The system APIs (gRPC).
    System,
}

enum Server {
    /// With TLS on the gateway (`[gateway.tls]`).
    Http(axum::Router, Option<platform::tls::ServerTls>),
    /// With TLS between tiers (`[internal.tls]`).
    Grpc(tonic::service::Routes, Option<platform::tls::ServerTls>),
}

/// One tier, built and ready to serve.
pub struct Tier {
    grace: std::time::Duration,
    /// For HTTP tiers (the gateway, the experience tier).
    limits: platform::shutdown::HttpLimits,
    server: Server,
    /// Stops background work (the process tier's sagas) when dropped.
    _tasks: DropGuard,
}

impl Tier {
    /// Builds `target` from `config`. Binds nothing.
    pub async fn build(target: Target, config: &Config) -> Result<Self, StartError> {
        config.validate()?;
        config.validate_serve()?;
        let tasks = CancellationToken::new();
        let client_tls = crate::internal_client_tls(config, tasks.clone()).await?;
        let server_tls = match target {
            Target::Gateway => None,
            _ => crate::internal_server_tls(config, tasks.clone()).await?,
        };
        let server = match target {
            Target::System => {
                let system =
                    system_apis::SystemTier::start(&config.erp, &config.payments, &config.crm, &config.data_dir)
                        .await?;
                Server::Grpc(platform::metrics::grpc_with_endpoint(system.routes()), server_tls)
            }
            Target::Process => {
                let system = channel::connect_lazy(
                    &config.process.system_url,
                    config.process.system_timeout,
                    client_tls.as_ref(),
                )?;
                let auth = crate::service_auth::authenticator(config)?;
                let process = process_apis::ProcessTier::start(
                    &config.process,
                    &config.data_dir,
                    system,
                    process_apis::Setup {
                        webhooks: crate::webhook_settings(config)?,
                        partners: config.partners()?,
                        files: config.files.clone(),
                        master_data: config.master_data.clone(),
                    },
                    tasks.clone(),
                )
                .await?;
                // `/metrics` outside the service-token check: scrapers have none.
                Server::Grpc(
                    platform::metrics::grpc_with_endpoint(crate::service_auth::require_service_token(
                        process.routes(),
                        auth,
                        &config.process.service_subjects,
                    )),
                    server_tls,
                )
            }
            Target::Experience => {
                let token = crate::service_auth::service_token(config)?;
                let process = channel::with_authorization(
                    channel::connect_lazy(
                        &config.experience.process_url,
                        config.experience.process_timeout,
                        client_tls.as_ref(),
                    )?,
                    move || token.header(),
                );
                let router = experience_apis::router(
                    experience_apis::Upstreams::new(process)
                        .with_trace_url_template(config.experience.trace_url_template.as_deref())
                        .with_custom_fields(config.custom_fields())
                        .with_event_subject_prefix(&config.process.events.subject_prefix),
                );
                Server::Http(
                    platform::metrics::with_endpoint(experience_apis::require_signed_principal(
                        router,
                        crate::principal_signer(config)?,
                    )),
                    server_tls,
                )
            }
            Target::Gateway => {
                let (auth, dev_jwks) = crate::authenticator(config)?;
                let upstream = gateway::upstream::Upstream::http(
                    &config.gateway.experience_url,
                    crate::principal_signer(config)?,
                    config.gateway.upstream_timeout,
                    client_tls.as_ref(),
                )?;
                let router = gateway::with_cors(
                    gateway::router_with_limits(
                        auth,
                        upstream,
                        dev_jwks,
                        config.gateway.limits()?,
                        config.gateway.deprecations(crate::forwarded_routes())?,
                        crate::forwarded_routes(),
                    ),
                    &config.gateway.cors_origins,
                );
                let (router, tls) = crate::gateway_tls(config, router, tasks.clone()).await?;
                Server::Http(router, tls)
            }
        };
        Ok(Self {
            grace: config.shutdown_grace,
            limits: config.gateway.http_limits(),
            server,
            _tasks: tasks.drop_guard(),
        })
    }

    /// Serves on `listener` until `shutdown`, then drains.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> Result<(), StartError> {
        match self.server {
            Server::Http(router, tls) => {
                platform::shutdown::serve_http(listener, router, shutdown, self.grace, self.limits, tls).await?
            }
            Server::Grpc(routes, tls) => {
                platform::shutdown::serve_grpc(listener, routes, shutdown, self.grace, tls).await?
            }
        }
        Ok(())
    }
}

/// The configured listen address of `target`.
pub fn listen_addr(target: Target, config: &Config) -> SocketAddr {
    match target {
        Target::Gateway => config.gateway.listen,
        Target::Experience => config.experience.listen,
        Target::Process => config.process.listen,
        Target::System => config.system.listen,
    }
}
