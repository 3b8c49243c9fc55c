//! `erp-connect audit verify`: walks every audit trail the configuration
//! names (see `platform::audit`) and prints, per trail, the rows checked
//! or the first row that does not hold.
//!
//! There are two trails, each kept in the same transaction as the actions
//! it records: the gateway's (API keys; `gateway.database_url` or
//! `<data_dir>/gateway.db`) and the process tier's (webhook endpoints,
//! quarantine decisions; `process.database_url` or
//! `<data_dir>/process.db`). Opening a store migrates it, so a store never
//! used gets an empty trail, which holds.

use platform::audit::{self, Verdict};

use crate::{StartError, config::Config};

/// Verifies both trails, prints one line per trail on stdout; `Ok(true)`
/// when both hold.
pub async fn verify(config: &Config) -> Result<bool, StartError> {
    let keys = gateway::key_store::KeyStore::open(config.gateway.database_url.as_deref(), &config.data_dir).await?;
    let gateway = keys.audit_verify().await?;
    let process = process_apis::order_to_cash::store::Store::open(&config.process.database_url(&config.data_dir))
        .await
        .map_err(|e| StartError::Process(process_apis::order_to_cash::StartError::Store(e).into()))?;
    let process = audit::verify(&process.database()).await?;
    let mut holds = true;
    for (trail, verdict) in [("gateway", gateway), ("process", process)] {
        match verdict {
            Verdict::Intact { rows } => println!("{trail}: {rows} rows checked, chain intact"),
            Verdict::Broken { seq, rows_ok, reason } => {
                holds = false;
                println!("{trail}: BROKEN at seq {seq} ({rows_ok} rows before it hold): {reason}");
            }
        }
    }
    Ok(holds)
}
