//! `erp-connect master-data resync`: the cross-reference of customer ids
//! rebuilt by a running process tier (`--process-url`, default
//! `experience.process_url`), as `POST /ops/v1/master-data/resync` does,
//! acting as `cli` on the audit trail.

use std::time::Duration;

use erp_connect_proto::{
    acting,
    master_data::v1::{ResyncRequest, master_data_service_client::MasterDataServiceClient},
};
use platform::channel;

use crate::{StartError, config::Config};

/// How long a resync may take: every customer of both systems is read.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(3600);

/// Asks the process tier to resync; prints what it found.
pub async fn resync(config: &Config, process_url: Option<&str>) -> Result<(), StartError> {
    let url = process_url.unwrap_or(&config.experience.process_url);
    let token = crate::service_auth::service_token(config)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let tls = crate::internal_client_tls(config, stop).await?;
    let channel =
        channel::with_authorization(channel::connect_lazy(url, RESYNC_TIMEOUT, tls.as_ref())?, move || token.header());
    let answer = MasterDataServiceClient::new(channel)
        .resync(acting::request(ResyncRequest {}, "cli"))
        .await
        .map_err(|status| StartError::MasterData(status.message().to_owned()))?
        .into_inner();
    println!("master data resynced: {} customers, {} links", answer.customers, answer.links);
    Ok(())
}
