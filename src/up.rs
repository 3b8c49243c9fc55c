//! `erp-connect up`: every tier in one process with the embedded defaults.
//!
//! The tiers are composed in-process: the experience router sits behind the
//! gateway, and the process and system tiers are reached through in-process
//! gRPC channels, so the same generated clients, servers and contracts run
//! as in `serve` mode, minus the sockets. The process tier's gRPC API is
//! also served on its own port for internal callers.
//!
//! No service token travels between the tiers here: the experience tier's
//! calls never leave the process, so there is no network caller to tell
//! apart (`serve` mode checks them; see [`crate::service_auth`]).

use std::net::SocketAddr;

use platform::{channel, shutdown::Shutdown};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{StartError, config::Config};

/// Everything built and ready to serve.
pub struct App {
    config: Config,
    gateway: axum::Router,
    /// `[gateway.tls]`: HTTPS on the HTTP port.
    tls: Option<platform::tls::ServerTls>,
    process_grpc: tonic::service::Routes,
    process: process_apis::ProcessTier,
    /// Stops the process tier's background work (sagas, outbox, feed)
    /// when the app is dropped.
    _tasks: DropGuard,
}

impl App {
    /// Opens the embedded ERP (seeding it on first start), loads the dev
    /// identity provider and wires the tiers together. Binds nothing.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let system =
            system_apis::SystemTier::start(&config.erp, &config.payments, &config.crm, &config.data_dir).await?;
        let tasks = CancellationToken::new();
        let process = process_apis::ProcessTier::start(
            &config.process,
            &config.data_dir,
            channel::in_process_with_deadline(system.routes(), config.process.system_timeout),
            process_apis::Setup {
                webhooks: crate::webhook_settings(&config)?,
                partners: config.partners()?,
                files: config.files.clone(),
                master_data: config.master_data.clone(),
            },
            tasks.clone(),
        )
        .await?;
        let process_grpc = process.routes();
        let experience = experience_apis::router(
            experience_apis::Upstreams::new(channel::in_process_with_deadline(
                process_grpc.clone(),
                config.experience.process_timeout,
            ))
            .with_trace_url_template(config.experience.trace_url_template.as_deref())
            .with_custom_fields(config.custom_fields())
            .with_event_subject_prefix(&config.process.events.subject_prefix),
        );
        let (auth, dev_jwks) = crate::authenticator(&config)?;
        let router = gateway::with_cors(
            gateway::router_with_limits(
                auth,
                gateway::upstream::Upstream::InProcess(experience, config.gateway.upstream_timeout),
                dev_jwks,
                config.gateway.limits()?,
                config.gateway.deprecations(crate::forwarded_routes())?,
                crate::forwarded_routes(),
            ),
            &config.gateway.cors_origins,
        );
        let (gateway, tls) = crate::gateway_tls(&config, router, tasks.clone()).await?;
        Ok(Self { config, gateway, tls, process_grpc, process, _tasks: tasks.drop_guard() })
    }

    /// The process tier, e.g. to subscribe to order events.
    pub fn process(&self) -> &process_apis::ProcessTier {
        &self.process
    }

    /// Serves HTTP on `http` and the process APIs' gRPC on `grpc` until
    /// `shutdown`, then drains both.
    pub async fn serve(self, http: TcpListener, grpc: TcpListener, shutdown: Shutdown) -> Result<(), StartError> {
        let grace = self.config.shutdown_grace;
        let limits = self.config.gateway.http_limits();
        let http = platform::shutdown::serve_http(http, self.gateway, shutdown.clone(), grace, limits, self.tls);
        let grpc = platform::shutdown::serve_grpc(grpc, self.process_grpc, shutdown, grace, None);
        let (http, grpc) = tokio::join!(http, grpc);
        http?;
        grpc?;
        Ok(())
    }
}

/// What `up` prints on start: where it listens and how to get a dev token.
pub fn banner(config: &Config, http: SocketAddr, grpc: SocketAddr) -> String {
    let data_dir = config.data_dir.display();
    let scheme = if config.gateway.tls.is_some() { "https" } else { "http" };
    let mut text = format!(
        "erp-connect is up ({mode} mode, data in {data_dir})\n\
         \x20 HTTP API           {scheme}://{http}   (GET /healthz, /readyz)\n\
         \x20 process APIs gRPC  {grpc}   (reflection and grpc.health.v1 on)\n",
        mode = if config.mode == crate::config::Mode::Dev { "dev" } else { "production" },
    );
    if config.mode == crate::config::Mode::Dev {
        text.push_str(&format!(
            "  dev token          TOKEN=$(cargo run -q --release -- token --sub alice --scope catalog:read --data-dir {data_dir})\n\
             \x20 try                curl -H \"Authorization: Bearer $TOKEN\" {scheme}://{http}/web/v1/products\n"
        ));
    }
    text
}
