//! `master_data.v1`: customer master data across the CRM (`crm.v1`) and
//! the ERP (`erp.v1`).
//!
//! Each customer field has one owning system (`[master_data.customer]
//! owners`). The [`sync`] follows both systems' change feeds: a change in
//! the owner becomes the golden record's value and is written to every
//! other linked system that carries the field; a change where the field is
//! not owned is written back to the owner's value (`owner_wins`) or held in
//! the quarantine for an operator (`quarantine`), counted and audited
//! either way. A customer new to one system that matches exactly one in
//! the other (same e-mail) is linked to it, not duplicated; an ambiguous
//! match waits in the quarantine. The cross-reference ([`store`]) is in the
//! process tier's database, so it survives restarts, and `Resync` rebuilds
//! it from both systems.
//!
//! - [`fields`]: the fields, the systems, who carries and owns what.
//! - [`store`]: golden records, links, quarantine, cursors.
//! - [`sync`]: the feeds, matching, propagation, conflicts, comparison.
//! - [`subject_rights`]: data-subject export and erasure.
//! - [`service`]: the gRPC service.
//! - [`metrics`]: conflicts and mismatches in `/metrics`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use erp_connect_proto::master_data::v1 as pb;
use platform::channel::GrpcChannel;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub mod fields;
pub mod metrics;
pub mod service;
pub mod store;
pub mod subject_rights;
pub mod sync;

use fields::{Field, SystemName};

use crate::order_to_cash::clock::now_ms;

/// `[master_data]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether the process tier synchronises customers between the CRM and
    /// the ERP and resolves order customers through them. Default true
    /// (the section's presence turns master data on; this turns it off
    /// again without deleting the section).
    pub enabled: bool,
    /// `[master_data.customer]`: owners and the conflict policy.
    pub customer: CustomerConfig,
    /// How often each change feed is read. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often owned fields are compared between systems (every linked
    /// customer read from every system). Default 10 min.
    #[serde(with = "humantime_serde")]
    pub compare_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            customer: CustomerConfig::default(),
            poll_interval: Duration::from_secs(1),
            compare_interval: Duration::from_secs(600),
        }
    }
}

/// `[master_data.customer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerConfig {
    /// Which system owns each field. Default: the CRM owns identity (name,
    /// e-mail, phone, addresses, VAT id), the ERP the credit limit. A field
    /// left out keeps its default owner.
    pub owners: BTreeMap<String, SystemName>,
    /// What a change to a field in a system that does not own it gets.
    pub on_conflict: OnConflict,
}

impl Default for CustomerConfig {
    fn default() -> Self {
        Self { owners: BTreeMap::new(), on_conflict: OnConflict::OwnerWins }
    }
}

/// The conflict policy.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// Written back to the owner's value.
    #[default]
    OwnerWins,
    /// Left as it is and held for an operator to accept or revert.
    Quarantine,
}

impl OnConflict {
    /// As in the configuration and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OnConflict::OwnerWins => "owner_wins",
            OnConflict::Quarantine => "quarantine",
        }
    }
}

impl Config {
    /// Master data switched off (no `[master_data]` section).
    pub fn off() -> Self {
        Self { enabled: false, ..Self::default() }
    }

    /// The owners, every field resolved; an unknown field, or an owner that
    /// does not carry its field, is an error naming it.
    pub fn owners(&self) -> Result<fields::Owners, String> {
        fields::Owners::new(&self.customer.owners)
    }

    /// Checks what types alone cannot, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        self.owners()?;
        if self.poll_interval.is_zero() || self.compare_interval.is_zero() {
            return Err("master_data.poll_interval and compare_interval must be more than 0s".into());
        }
        Ok(())
    }
}

/// Errors of master data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Its store failed.
    #[error("master data store: {0}")]
    Store(#[from] sqlx::Error),
    /// A system API answered with an error.
    #[error("{system}: {status}")]
    System {
        /// `crm` or `erp`.
        system: SystemName,
        /// The answer.
        status: tonic::Status,
    },
    /// No golden record, link or quarantine entry by that id.
    #[error("no {kind} {id:?}")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The request does not fit the record's state.
    #[error("{0}")]
    Precondition(String),
    /// The audit trail refused the entry.
    #[error("audit trail: {0}")]
    Audit(#[from] platform::audit::Error),
    /// The order store (export, erasure).
    #[error("order store: {0}")]
    Orders(#[from] crate::order_to_cash::store::Error),
    /// Master data is switched off (`[master_data] enabled = false`).
    #[error("master data is not enabled")]
    Disabled,
}

impl Error {
    pub(crate) fn system(system: SystemName) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Error::System { system, status }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound { .. } => tonic::Status::not_found(err.to_string()),
            Error::Invalid { field, message } => crate::grpc_status::invalid_argument(&[(field.to_owned(), message)]),
            Error::Precondition(message) => {
                crate::grpc_status::failed_precondition("MASTER_DATA", "master_data", message)
            }
            Error::Disabled => crate::grpc_status::failed_precondition(
                "MASTER_DATA_DISABLED",
                "master_data",
                "master data is not enabled in this deployment".into(),
            ),
            Error::System { system, status } => match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    tonic::Status::unavailable(format!("the {system} does not answer; try again later"))
                }
                _ => {
                    tracing::error!(%system, error = %status, "a system API refused a master data call");
                    tonic::Status::internal("a connected system refused the call")
                }
            },
            Error::Store(ref e) => {
                tracing::error!(error = %e, "master data store failed");
                tonic::Status::unavailable("the master data store is unavailable")
            }
            Error::Orders(ref e) => {
                tracing::error!(error = %e, "the order store failed for master data");
                tonic::Status::unavailable("the order store is unavailable")
            }
            Error::Audit(ref e) => {
                tracing::error!(error = %e, "master data audit failed");
                tonic::Status::unavailable("the audit trail is unavailable")
            }
        }
    }
}

/// What master data knows of a shopper (see [`MasterData::known_by_email`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The golden record.
    pub golden: String,
    /// The ERP customer linked to it, if any.
    pub erp_id: Option<String>,
    /// The name as its owner has it.
    pub name: String,
}

/// Master data in the process tier: the store, the system clients, the
/// settings. Cheap to clone.
#[derive(Clone)]
pub struct MasterData {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: store::Store,
    pub(crate) orders: crate::order_to_cash::store::Store,
    pub(crate) systems: sync::Systems,
    pub(crate) owners: fields::Owners,
    pub(crate) on_conflict: OnConflict,
    pub(crate) enabled: bool,
    pub(crate) config: Config,
    /// One synchronisation pass at a time in this replica (the worker, a
    /// resync, a saga's resolution): passes read, decide and write.
    pub(crate) pass: tokio::sync::Mutex<()>,
}

impl MasterData {
    /// Master data over the process tier's `database` and the system tier
    /// behind `system`; starts the feed worker when enabled, until `tasks`
    /// is cancelled.
    pub fn start(
        config: &Config,
        orders: crate::order_to_cash::store::Store,
        system: GrpcChannel,
        timeout: Duration,
        tasks: CancellationToken,
    ) -> Result<Self, String> {
        metrics::describe();
        let owners = config.owners()?;
        let master = Self {
            inner: Arc::new(Inner {
                store: store::Store::new(orders.database()),
                orders,
                systems: sync::Systems::new(system, timeout),
                owners,
                on_conflict: config.customer.on_conflict,
                enabled: config.enabled,
                config: config.clone(),
                pass: tokio::sync::Mutex::new(()),
            }),
        };
        if config.enabled {
            tokio::spawn(sync::run(master.clone(), tasks));
        }
        Ok(master)
    }

    /// Whether master data is on.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Whether the CRM owns who a customer is (its name or e-mail): orders
    /// then find their customer through the CRM first.
    pub fn crm_owns_identity(&self) -> bool {
        self.inner.enabled
            && (self.inner.owners.owner(Field::Email) == SystemName::Crm
                || self.inner.owners.owner(Field::Name) == SystemName::Crm)
    }

    /// The customer the CRM knows by `email` (exactly one, not erased), as
    /// the saga needs it: its golden record, the ERP customer linked to it
    /// if any, and its name as the owner has it. `None` when the CRM does
    /// not own identity, knows no such customer, or knows several (the
    /// order then creates or finds its ERP customer as without master
    /// data, and the feed decides).
    pub async fn known_by_email(&self, email: &str) -> Result<Option<Known>, Error> {
        if !self.crm_owns_identity() || email.is_empty() {
            return Ok(None);
        }
        let m = &self.inner;
        let found = sync::find_by_email(&m.systems, SystemName::Crm, email).await?;
        let [crm_id] = found.as_slice() else { return Ok(None) };
        let golden = match m.store.link_of(SystemName::Crm, crm_id).await? {
            Some(golden) => golden,
            None => match self.reconcile(SystemName::Crm, crm_id).await? {
                Some(golden) => golden,
                None => return Ok(None),
            },
        };
        if m.store.golden(&golden).await?.is_none_or(|g| g.erased_at.is_some()) {
            return Ok(None);
        }
        let erp_id = m.store.links(&golden).await?.into_iter().find(|(s, _)| *s == SystemName::Erp).map(|(_, id)| id);
        let name = m
            .store
            .fields(&golden)
            .await?
            .remove(&Field::Name)
            .and_then(|(v, _)| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Ok(Some(Known { golden, erp_id, name }))
    }

    /// Links the ERP customer an order created for a CRM-known shopper to
    /// its golden record at once (the feed would, by e-mail, later).
    pub async fn link_erp_customer(&self, golden: &str, erp_id: &str) -> Result<(), Error> {
        let linked = self.inner.store.link(golden, SystemName::Erp, erp_id, now_ms()).await?;
        let links = self.inner.store.links(&linked).await?;
        self.align_all(&linked, &links).await
    }

    /// The golden record an id names: `mdc_...`, or `crm:<id>` / `erp:<id>`
    /// (a system's customer not linked yet is reconciled first).
    pub async fn resolve_id(&self, id: &str) -> Result<String, Error> {
        let not_found = || Error::NotFound { kind: "customer", id: id.to_owned() };
        if id.starts_with("mdc_") {
            return match self.inner.store.golden(id).await? {
                Some(_) => Ok(id.to_owned()),
                None => Err(not_found()),
            };
        }
        let (system, system_id) = id
            .split_once(':')
            .and_then(|(s, rest)| Some((SystemName::parse(s)?, rest)))
            .filter(|(_, rest)| !rest.is_empty())
            .ok_or_else(|| Error::Invalid {
                field: "id",
                message: "a golden id (mdc_...) or crm:<id> / erp:<id>".into(),
            })?;
        if let Some(golden) = self.inner.store.link_of(system, system_id).await? {
            return Ok(golden);
        }
        if !self.inner.enabled {
            return Err(not_found());
        }
        let _one = self.inner.pass.lock().await;
        self.reconcile(system, system_id).await?.ok_or_else(not_found)
    }

    /// The golden record `golden` as `master_data.v1` has it.
    pub async fn golden_record(&self, golden: &str) -> Result<pb::GoldenCustomer, Error> {
        let m = &self.inner;
        let row =
            m.store.golden(golden).await?.ok_or_else(|| Error::NotFound { kind: "customer", id: golden.into() })?;
        let known = m.store.fields(golden).await?;
        let fields = Field::ALL
            .iter()
            .map(|field| {
                let (value, changed_at) = known.get(field).cloned().unwrap_or((serde_json::Value::Null, 0));
                pb::GoldenField {
                    field: field.as_str().into(),
                    value_json: if value.is_null() { String::new() } else { value.to_string() },
                    owner: m.owners.owner(*field).as_str().into(),
                    changed_at_ms: changed_at,
                }
            })
            .collect();
        let refs = m
            .store
            .links(golden)
            .await?
            .into_iter()
            .map(|(system, id)| pb::SystemRef { system: system.as_str().into(), id })
            .collect();
        Ok(pb::GoldenCustomer {
            id: row.id,
            fields,
            refs,
            created_at_ms: row.created_at,
            erased_at_ms: row.erased_at.unwrap_or_default(),
        })
    }

    /// The gRPC service.
    pub fn service(
        &self,
    ) -> erp_connect_proto::master_data::v1::master_data_service_server::MasterDataServiceServer<service::Service> {
        erp_connect_proto::master_data::v1::master_data_service_server::MasterDataServiceServer::new(service::Service {
            master: self.clone(),
        })
    }
}
