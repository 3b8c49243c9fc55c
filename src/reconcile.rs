//! `erp-connect reconcile`: checks the order-to-cash invariants (see
//! `process_apis::order_to_cash::reconcile`) against the saga store, the
//! ERP and the payments API, and prints a report.
//!
//! The system APIs are reached at `--system-url` when given (a running
//! system tier), else through a system tier opened in this process on the
//! same configuration (the embedded ERP's files, or the Tryton server).

use std::time::Duration;

use platform::channel;
use process_apis::order_to_cash::{reconcile, saga::Systems, store::Store};

use crate::{StartError, config::Config};

/// A saga that has not moved for this long is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(300);
/// An event unpublished for longer than this breaks the outbox invariant.
const PUBLISH_WITHIN: Duration = Duration::from_secs(30);

/// Runs the checks, prints the report on stdout; `Ok(true)` when every
/// invariant holds.
pub async fn run(config: &Config, system_url: Option<&str>) -> Result<bool, StartError> {
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let system = match system_url {
        Some(url) => {
            let tls = crate::internal_client_tls(config, stop).await?;
            channel::connect_lazy(url, config.process.system_timeout, tls.as_ref())?
        }
        None => {
            let tier =
                system_apis::SystemTier::start(&config.erp, &config.payments, &config.crm, &config.data_dir).await?;
            channel::in_process(tier.routes())
        }
    };
    let store = Store::open(&config.process.database_url(&config.data_dir))
        .await
        .map_err(|e| process_apis::StartError::from(process_apis::order_to_cash::StartError::from(e)))?;
    let systems = Systems::new(system, config.process.system_timeout);
    let report = reconcile::run(&store, &systems, STUCK_AFTER, PUBLISH_WITHIN).await?;
    let statuses = report.by_status.iter().map(|(status, n)| format!("{status} {n}")).collect::<Vec<_>>().join(", ");
    println!("orders checked: {} ({})", report.orders, if statuses.is_empty() { "none" } else { &statuses });
    for violation in &report.violations {
        println!("VIOLATION {violation}");
    }
    println!("{}", if report.holds() { "all invariants hold" } else { "invariants broken" });
    Ok(report.holds())
}
