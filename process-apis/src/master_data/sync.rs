//! Following the CRM's and the ERP's change feeds, and what a change
//! does.
//!
//! A changed customer is read from its system ([`read`]). Unlinked, it is
//! matched by e-mail against the other system ([`link_new`]): no match
//! gives a golden record of its own; exactly one match links it to that
//! customer's golden record (a new one when the match was unlinked too);
//! several matches, or a match whose golden record already has a customer
//! in this system, wait in the quarantine as a duplicate. Linked, its owned
//! fields become the golden values ([`ingest`]) and are written to every
//! other linked customer that carries them ([`align`]); a field it does
//! not own that differs from the golden value is a conflict, written back
//! (`owner_wins`) or quarantined ([`enforce`]). A customer just linked is
//! aligned without conflicts: its differences predate the link.
//!
//! Writes by this module carry the origin [`ORIGIN`] in the CRM, whose
//! feed entries with it are skipped; the ERP's feed has no origin, so the
//! echo of a write is read and found equal to the golden record. One
//! replica follows the feeds at a time (a PostgreSQL advisory lock).

use std::{collections::BTreeMap, time::Duration};

use erp_connect_proto::{
    crm::v1 as crm,
    erp::v1::{self as erp, Aggregate},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::{
    Error, MasterData, OnConflict,
    fields::{Field, Snapshot, SystemName},
    metrics,
    store::{Links, Quarantined},
};
use crate::order_to_cash::clock::now_ms;
pub use crate::order_to_cash::saga::Systems;

/// The origin of this module's writes in the CRM's feed, and its actor on
/// the audit trail.
pub const ORIGIN: &str = "master-data";

/// Changes read from a feed per call.
const PAGE: i32 = 500;

/// The advisory lock key of the feed follower ("md-sync" in ASCII).
const SYNC_LOCK: i64 = 0x006d_642d_7379_6e63;

/// Reads `system`'s customer `id`; `None` when the system has no such
/// customer.
pub async fn read(systems: &Systems, system: SystemName, id: &str) -> Result<Option<Snapshot>, Error> {
    let answer = match system {
        SystemName::Crm => {
            let request = systems.request(crm::GetCustomerRequest { id: id.to_owned() });
            systems.call(systems.crm().get_customer(request)).await.map(|r| r.customer.map(|c| crm_snapshot(&c)))
        }
        SystemName::Erp => {
            let request = systems.request(erp::GetCustomerRequest { id: id.to_owned() });
            systems.call(systems.customers().get_customer(request)).await.map(|c| Some(erp_snapshot(&c)))
        }
    };
    match answer {
        Ok(snapshot) => Ok(snapshot),
        Err(status) if status.code() == Code::NotFound => Ok(None),
        Err(status) => Err(Error::System { system, status }),
    }
}

/// The CRM's customer as master data sees it.
pub fn crm_snapshot(c: &crm::Customer) -> Snapshot {
    let addresses: Vec<Value> = c
        .addresses
        .iter()
        .map(|a| json!({"street": a.street, "city": a.city, "postal_code": a.postal_code, "country": a.country}))
        .collect();
    let values = BTreeMap::from([
        (Field::Name, json!(c.name)),
        (Field::Email, json!(c.email)),
        (Field::Phone, json!(c.phone)),
        (Field::VatId, json!(c.vat_id)),
        (Field::Addresses, Value::Array(addresses)),
        (Field::CreditLimit, json!(c.credit_limit)),
    ]);
    Snapshot { values, email: Some(c.email.clone()).filter(|e| !e.is_empty()), erased: c.erased_at.is_some() }
}

/// The ERP's customer as master data sees it: no credit limit when the
/// ERP keeps none.
pub fn erp_snapshot(c: &erp::Customer) -> Snapshot {
    let mut values = BTreeMap::from([(Field::Name, json!(c.name)), (Field::Email, json!(c.email))]);
    if !c.credit_limit.is_empty() {
        values.insert(Field::CreditLimit, json!(c.credit_limit));
    }
    Snapshot { values, email: Some(c.email.clone()).filter(|e| !e.is_empty()), erased: false }
}

/// Writes `changes` to `system`'s customer `id`.
pub async fn write(systems: &Systems, system: SystemName, id: &str, changes: &[(Field, Value)]) -> Result<(), Error> {
    if changes.is_empty() {
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    match system {
        SystemName::Crm => {
            let mut request = crm::UpdateCustomerRequest {
                id: id.to_owned(),
                idempotency_key: format!("md-{}", ulid::Ulid::new()),
                update_mask: Some(prost_types::FieldMask {
                    paths: changes.iter().map(|(f, _)| f.as_str().to_owned()).collect(),
                }),
                origin: ORIGIN.to_owned(),
                ..Default::default()
            };
            for (field, value) in changes {
                match field {
                    Field::Name => request.name = text(value),
                    Field::Email => request.email = text(value),
                    Field::Phone => request.phone = text(value),
                    Field::VatId => request.vat_id = text(value),
                    Field::CreditLimit => request.credit_limit = text(value),
                    Field::Addresses => request.addresses = crm_addresses(value),
                }
            }
            systems.call(systems.crm().update_customer(systems.request(request))).await.map(|_| ())
        }
        SystemName::Erp => {
            let (limits, others): (Vec<_>, Vec<_>) = changes.iter().partition(|(f, _)| *f == Field::CreditLimit);
            if !others.is_empty() {
                let mut request = erp::UpdateCustomerRequest {
                    id: id.to_owned(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: others.iter().map(|(f, _)| f.as_str().to_owned()).collect(),
                    }),
                    ..Default::default()
                };
                for (field, value) in &others {
                    match field {
                        Field::Name => request.name = text(value),
                        Field::Email => request.email = text(value),
                        _ => {}
                    }
                }
                systems
                    .call(systems.customers().update_customer(systems.request(request)))
                    .await
                    .map_err(Error::system(system))?;
            }
            match limits.first() {
                Some((_, value)) if !text(value).is_empty() => {
                    let request = erp::UpdateCreditLimitRequest { id: id.to_owned(), credit_limit: text(value) };
                    systems.call(systems.customers().update_credit_limit(systems.request(request))).await.map(|_| ())
                }
                _ => Ok(()),
            }
        }
    }
    .map_err(Error::system(system))
}

fn crm_addresses(value: &Value) -> Vec<crm::Address> {
    let text = |a: &Value, k: &str| a.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    value
        .as_array()
        .map(|all| {
            all.iter()
                .map(|a| crm::Address {
                    id: String::new(),
                    street: text(a, "street"),
                    city: text(a, "city"),
                    postal_code: text(a, "postal_code"),
                    country: text(a, "country"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ids of `system`'s customers with `email` (not erased).
pub async fn find_by_email(systems: &Systems, system: SystemName, email: &str) -> Result<Vec<String>, Error> {
    match system {
        SystemName::Crm => {
            let request =
                crm::FindCustomersRequest { key: Some(crm::find_customers_request::Key::Email(email.into())) };
            let found = systems
                .call(systems.crm().find_customers(systems.request(request)))
                .await
                .map_err(Error::system(system))?;
            Ok(found.customers.into_iter().filter(|c| c.erased_at.is_none()).map(|c| c.id).collect())
        }
        SystemName::Erp => {
            let request = erp::FindCustomerRequest { key: Some(erp::find_customer_request::Key::Email(email.into())) };
            match systems.call(systems.customers().find_customer(systems.request(request))).await {
                Ok(c) => Ok(vec![c.id]),
                Err(status) if status.code() == Code::NotFound => Ok(vec![]),
                Err(status) => Err(Error::System { system, status }),
            }
        }
    }
}

impl MasterData {
    /// What a change of `system`'s customer `id` does (see the module
    /// documentation); returns its golden record, unless it waits in the
    /// quarantine or is gone.
    pub async fn reconcile(&self, system: SystemName, id: &str) -> Result<Option<String>, Error> {
        let m = &self.inner;
        let Some(snapshot) = read(&m.systems, system, id).await? else { return Ok(None) };
        let (golden, new_link) = match m.store.link_of(system, id).await? {
            Some(golden) => (golden, false),
            None if snapshot.erased => return Ok(None),
            None => match self.link_new(system, id, &snapshot).await? {
                Some(golden) => (golden, true),
                None => return Ok(None),
            },
        };
        if m.store.golden(&golden).await?.is_some_and(|g| g.erased_at.is_some()) {
            return Ok(Some(golden));
        }
        let links = m.store.links(&golden).await?;
        if new_link {
            self.align_all(&golden, &links).await?;
            return Ok(Some(golden));
        }
        let changed = self.ingest(&golden, system, &snapshot).await?;
        self.enforce(&golden, system, id, &snapshot).await?;
        for (other, other_id) in &links {
            if (*other, other_id.as_str()) == (system, id) || changed.is_empty() {
                continue;
            }
            if let Some(theirs) = read(&m.systems, *other, other_id).await? {
                self.align(&golden, *other, other_id, &theirs, Some(&changed)).await?;
            }
        }
        Ok(Some(golden))
    }

    /// Links a customer new to master data (see the module documentation).
    async fn link_new(&self, system: SystemName, id: &str, snapshot: &Snapshot) -> Result<Option<String>, Error> {
        let m = &self.inner;
        if m.store.open_entry("duplicate", system, id, "").await?.is_some() {
            return Ok(None);
        }
        let now = now_ms();
        let other = system.other();
        let matches = match &snapshot.email {
            Some(email) => find_by_email(&m.systems, other, email).await?,
            None => vec![],
        };
        match matches.as_slice() {
            [] => Ok(Some(m.store.create_linked(system, id, now).await?)),
            [one] => {
                let golden = match m.store.link_of(other, one).await? {
                    Some(golden) => golden,
                    None => m.store.create_linked(other, one, now).await?,
                };
                let links = m.store.links(&golden).await?;
                if let Some((_, taken)) = links.iter().find(|(s, _)| *s == system) {
                    let reason = format!(
                        "matches {other} customer {one} by e-mail, whose golden record already has {system} customer {taken}"
                    );
                    self.hold_duplicate(system, id, vec![golden], reason).await?;
                    return Ok(None);
                }
                Ok(Some(m.store.link(&golden, system, id, now).await?))
            }
            several => {
                let mut candidates = Vec::new();
                for one in several {
                    candidates.push(match m.store.link_of(other, one).await? {
                        Some(golden) => golden,
                        None => m.store.create_linked(other, one, now).await?,
                    });
                }
                candidates.dedup();
                let reason = format!("matches {} {other} customers by e-mail", several.len());
                self.hold_duplicate(system, id, candidates, reason).await?;
                Ok(None)
            }
        }
    }

    async fn hold_duplicate(
        &self,
        system: SystemName,
        id: &str,
        candidates: Vec<String>,
        reason: String,
    ) -> Result<(), Error> {
        let entry = Quarantined {
            id: format!("mdq_{}", ulid::Ulid::new()),
            kind: "duplicate".into(),
            subject_system: system,
            subject_id: id.to_owned(),
            candidates,
            field: String::new(),
            value: "null".into(),
            owner_value: "null".into(),
            reason,
            status: "open".into(),
            golden_id: String::new(),
            created_at: now_ms(),
            resolved_at: None,
            resolved_by: None,
        };
        // Ids only on the trail: it is kept for good, personal data is not.
        let detail = json!({"kind": "duplicate", "system": system.as_str(), "id": id, "candidates": entry.candidates});
        let audit = platform::audit::Entry {
            actor: ORIGIN,
            action: "master_data.duplicate_quarantined",
            object: &entry.id,
            detail,
        };
        self.inner.store.quarantine(&entry, &audit).await?;
        metrics::quarantined("duplicate");
        tracing::info!(entry = %entry.id, %system, customer = id, "possible duplicate customer held for review");
        Ok(())
    }

    /// Records `system`'s values of the fields it owns as the golden ones;
    /// returns the fields whose golden value changed.
    async fn ingest(&self, golden: &str, system: SystemName, snapshot: &Snapshot) -> Result<Vec<Field>, Error> {
        let m = &self.inner;
        let known = m.store.fields(golden).await?;
        let mut changed = Vec::new();
        for (field, value) in &snapshot.values {
            if m.owners.owner(*field) != system {
                continue;
            }
            if known.get(field).is_some_and(|(v, _)| field.same(v, value)) {
                continue;
            }
            m.store.set_field(golden, *field, value, now_ms()).await?;
            changed.push(*field);
        }
        Ok(changed)
    }

    /// Writes the golden values of `only` (else of every field) that
    /// `system`'s customer carries, does not own and holds otherwise.
    async fn align(
        &self,
        golden: &str,
        system: SystemName,
        id: &str,
        snapshot: &Snapshot,
        only: Option<&[Field]>,
    ) -> Result<(), Error> {
        let m = &self.inner;
        let known = m.store.fields(golden).await?;
        let writes: Vec<(Field, Value)> = known
            .into_iter()
            .filter(|(field, _)| only.is_none_or(|o| o.contains(field)) && m.owners.owner(*field) != system)
            .filter_map(|(field, (value, _))| match snapshot.get(field) {
                Some(theirs) if !field.same(theirs, &value) => Some((field, value)),
                _ => None,
            })
            .collect();
        if !writes.is_empty() {
            write(&m.systems, system, id, &writes).await?;
            let names: Vec<&str> = writes.iter().map(|(f, _)| f.as_str()).collect();
            tracing::info!(golden, %system, customer = id, fields = ?names, "owner's values written");
        }
        Ok(())
    }

    /// Every linked customer's owned values in, then the golden values out
    /// to all of them: after a link, a merge or a resync.
    pub(crate) async fn align_all(&self, golden: &str, links: &Links) -> Result<(), Error> {
        let m = &self.inner;
        let mut snapshots = Vec::new();
        for (system, id) in links {
            if let Some(snapshot) = read(&m.systems, *system, id).await? {
                snapshots.push((*system, id.clone(), snapshot));
            }
        }
        // Owners first, in link order: the first linked record of the
        // owning system is the owner's voice.
        for field in Field::ALL {
            let owner = m.owners.owner(field);
            if let Some((_, _, snapshot)) = snapshots.iter().find(|(s, _, _)| *s == owner)
                && let Some(value) = snapshot.get(field)
            {
                let known = m.store.fields(golden).await?;
                if !known.get(&field).is_some_and(|(v, _)| field.same(v, value)) {
                    m.store.set_field(golden, field, value, now_ms()).await?;
                }
            }
        }
        for (system, id, snapshot) in &snapshots {
            self.align(golden, *system, id, snapshot, None).await?;
        }
        Ok(())
    }

    /// A field `system`'s customer does not own and holds otherwise than
    /// the golden record: written back or held, per the policy.
    async fn enforce(&self, golden: &str, system: SystemName, id: &str, snapshot: &Snapshot) -> Result<(), Error> {
        let m = &self.inner;
        let known = m.store.fields(golden).await?;
        for (field, value) in &snapshot.values {
            let owner = m.owners.owner(*field);
            if owner == system {
                continue;
            }
            let Some((golden_value, _)) = known.get(field) else { continue };
            if field.same(value, golden_value) {
                continue;
            }
            metrics::conflict(*field, m.on_conflict);
            let detail = json!({
                "golden": golden, "system": system.as_str(), "id": id, "field": field.as_str(),
                "owner": owner.as_str(), "policy": m.on_conflict.as_str(),
            });
            match m.on_conflict {
                OnConflict::OwnerWins => {
                    write(&m.systems, system, id, &[(*field, golden_value.clone())]).await?;
                    let audit = platform::audit::Entry {
                        actor: ORIGIN,
                        action: "master_data.conflict_reverted",
                        object: golden,
                        detail,
                    };
                    platform::audit::append_alone(m.store.database(), &audit, now_ms()).await?;
                    tracing::warn!(golden, %system, customer = id, %field, %owner,
                        "a field changed where it is not owned; the owner's value was written back");
                }
                OnConflict::Quarantine => {
                    // Held already, with this value: once is enough.
                    let open = m.store.open_entry("conflict", system, id, field.as_str()).await?;
                    if open.is_some_and(|o| serde_json::from_str::<Value>(&o.value).is_ok_and(|v| v == *value)) {
                        continue;
                    }
                    let entry = Quarantined {
                        id: format!("mdq_{}", ulid::Ulid::new()),
                        kind: "conflict".into(),
                        subject_system: system,
                        subject_id: id.to_owned(),
                        candidates: vec![],
                        field: field.as_str().to_owned(),
                        value: value.to_string(),
                        owner_value: golden_value.to_string(),
                        reason: format!("{field} changed in {system}, which does not own it ({owner} does)"),
                        status: "open".into(),
                        golden_id: golden.to_owned(),
                        created_at: now_ms(),
                        resolved_at: None,
                        resolved_by: None,
                    };
                    let audit = platform::audit::Entry {
                        actor: ORIGIN,
                        action: "master_data.conflict_quarantined",
                        object: &entry.id,
                        detail,
                    };
                    m.store.quarantine(&entry, &audit).await?;
                    metrics::quarantined("conflict");
                    tracing::warn!(golden, %system, customer = id, %field, entry = %entry.id,
                        "a field changed where it is not owned; held for review");
                }
            }
        }
        Ok(())
    }

    /// Reads both feeds from where they were left and reconciles every
    /// customer they name; returns how many changes were read.
    pub async fn pass(&self) -> Result<usize, Error> {
        let _one = self.inner.pass.lock().await;
        Ok(self.follow_crm().await? + self.follow_erp().await?)
    }

    async fn follow_crm(&self) -> Result<usize, Error> {
        let m = &self.inner;
        let mut cursor = m.orders.cursor("master_data:crm").await?;
        let mut read_total = 0;
        loop {
            let request = crm::ListChangesRequest { after_cursor: cursor.clone(), limit: PAGE };
            let page = m
                .systems
                .call(m.systems.crm().list_changes(m.systems.request(request)))
                .await
                .map_err(Error::system(SystemName::Crm))?;
            read_total += page.changes.len();
            let mut seen = Vec::new();
            for change in &page.changes {
                if change.origin != ORIGIN && !seen.contains(&change.customer_id) {
                    seen.push(change.customer_id.clone());
                }
            }
            for id in seen {
                self.reconcile(SystemName::Crm, &id).await?;
            }
            let done = page.next_cursor == cursor || page.changes.len() < PAGE as usize;
            m.orders.set_cursor("master_data:crm", &page.next_cursor).await?;
            cursor = page.next_cursor;
            if done {
                return Ok(read_total);
            }
        }
    }

    async fn follow_erp(&self) -> Result<usize, Error> {
        let m = &self.inner;
        let mut cursor = m.orders.cursor("master_data:erp").await?;
        let mut read_total = 0;
        loop {
            let request = erp::ListChangesRequest { since_cursor: cursor.clone(), limit: PAGE };
            let page = m
                .systems
                .call(m.systems.changes().list_changes(m.systems.request(request)))
                .await
                .map_err(Error::system(SystemName::Erp))?;
            read_total += page.changes.len();
            let mut seen = Vec::new();
            for change in &page.changes {
                if change.aggregate == Aggregate::Customer as i32 && !seen.contains(&change.id) {
                    seen.push(change.id.clone());
                }
            }
            for id in seen {
                self.reconcile(SystemName::Erp, &id).await?;
            }
            let done = page.next_cursor == cursor || page.changes.len() < PAGE as usize;
            m.orders.set_cursor("master_data:erp", &page.next_cursor).await?;
            cursor = page.next_cursor;
            if done {
                return Ok(read_total);
            }
        }
    }

    /// Reads both feeds again from their beginnings (every customer
    /// reconciled and, where unlinked, matched), then links' values are
    /// aligned and compared. Links an operator made are kept.
    pub async fn resync(&self) -> Result<(i64, i64), Error> {
        {
            let _one = self.inner.pass.lock().await;
            for feed in ["master_data:crm", "master_data:erp"] {
                self.inner.orders.set_cursor(feed, "").await?;
            }
        }
        self.pass().await?;
        let mut after = String::new();
        loop {
            let page = self.inner.store.goldens(&after, 200).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for golden in page.iter().filter(|g| g.erased_at.is_none()) {
                let links = self.inner.store.links(&golden.id).await?;
                self.align_all(&golden.id, &links).await?;
            }
        }
        self.compare().await?;
        Ok(self.inner.store.counts().await?)
    }

    /// Compares every linked customer's carried, non-owned fields with the
    /// golden values and records the mismatches per field.
    pub async fn compare(&self) -> Result<Vec<super::store::Accuracy>, Error> {
        let m = &self.inner;
        let mut mismatches: BTreeMap<Field, i64> = Field::ALL.iter().map(|f| (*f, 0)).collect();
        let mut customers = 0;
        let mut after = String::new();
        loop {
            let page = m.store.goldens(&after, 200).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for golden in page.iter().filter(|g| g.erased_at.is_none()) {
                customers += 1;
                let known = m.store.fields(&golden.id).await?;
                for (system, id) in m.store.links(&golden.id).await? {
                    let Some(snapshot) = read(&m.systems, system, &id).await? else { continue };
                    for (field, (value, _)) in &known {
                        if m.owners.owner(*field) != system
                            && snapshot.get(*field).is_some_and(|theirs| !field.same(theirs, value))
                        {
                            *mismatches.entry(*field).or_default() += 1;
                        }
                    }
                }
            }
        }
        let now = now_ms();
        let results: Vec<_> = mismatches
            .into_iter()
            .map(|(field, n)| super::store::Accuracy {
                field: field.as_str().to_owned(),
                mismatches: n,
                compared_at: now,
                customers,
            })
            .collect();
        m.store.save_accuracy(&results).await?;
        metrics::compared(&results, now);
        Ok(results)
    }
}

/// The feed follower: one replica at a time reads both feeds every
/// `poll_interval` and compares every `compare_interval`, until `tasks`
/// is cancelled. A system that does not answer is retried next tick.
pub async fn run(master: MasterData, tasks: CancellationToken) {
    let config = master.inner.config.clone();
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lock = None;
    let mut next_compare = tokio::time::Instant::now() + config.compare_interval.min(Duration::from_secs(30));
    let mut failing = false;
    loop {
        tokio::select! {
            () = tasks.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(held) = lock.as_mut()
            && !platform::database::ReplicaLock::is_held(held).await
        {
            lock = None;
        }
        if lock.is_none() {
            lock = master.inner.store.database().try_replica_lock(SYNC_LOCK).await.ok().flatten();
            if lock.is_none() {
                continue;
            }
        }
        let result = async {
            master.pass().await?;
            if tokio::time::Instant::now() >= next_compare {
                next_compare = tokio::time::Instant::now() + config.compare_interval;
                master.compare().await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("master data follows the CRM and ERP feeds again");
            }
            Ok(()) => {}
            // Once per outage, not once per tick.
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(error = %err, "master data could not follow the feeds; retrying");
            }
            Err(_) => {}
        }
    }
}
