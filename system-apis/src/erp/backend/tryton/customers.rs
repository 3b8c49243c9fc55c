//! `CustomerService` over Tryton: customers are `party.party` records. The
//! external id is the party's `code`; the e-mail is its first
//! `party.contact_mechanism` of type `email` (and finding a customer by
//! e-mail searches those, case-insensitively); addresses are its
//! `party.address` records (id `address-<id>`); the credit limit is
//! `credit_limit_amount`, when a credit-limit module provides it (see
//! [`super::Setup`]). Creating a customer is idempotent through what
//! identifies it: a retry finds the party by its code, else its e-mail.
//! Custom fields of customers are fields of `party.party`.
//!
//! Erasing a customer writes the party once (one Tryton transaction):
//! name `Erased customer`, code `erased-<id>` (Tryton requires a code),
//! contact mechanisms and identifiers deleted, addresses emptied and
//! deactivated rather than deleted (Tryton refuses to delete an address a
//! sale or invoice references), and the party deactivated. An inactive
//! party is hidden from Tryton's searches but not from `read`, so the
//! customer is read by id, inactive or not; an erased one reads without
//! its `erased-<id>` code.

use erp_connect_proto::{
    custom_fields::Entity,
    erp::v1::{Address, Customer, ErasureAction},
    money::format as money,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    TrytonErp, parse_id,
    records::{Amount, Code, Id, decode, flag},
    rpc::decimal,
};
use crate::erp::{
    CustomerChange, CustomerKey, ERASED_NAME, Error, NewCustomer, RETENTION_REASON, erased, erasure_action,
};

/// `party.party` read for a customer (`credit_limit_amount` only when
/// Tryton has it).
#[derive(Debug, Deserialize)]
struct PartyRecord {
    name: String,
    #[serde(deserialize_with = "flag")]
    active: bool,
    code: Option<String>,
    addresses: Vec<i64>,
    contact_mechanisms: Vec<i64>,
    credit_limit_amount: Option<Amount>,
}

impl PartyRecord {
    /// Whether the party is a customer erased by [`TrytonErp::erase_customer`]
    /// (a party a Tryton user merely deactivated is not).
    fn is_erased(&self) -> bool {
        !self.active && self.name == ERASED_NAME
    }
}

/// `party.contact_mechanism`: `id`, `type`, `value`.
#[derive(Debug, Deserialize)]
struct ContactRecord {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
    value: Option<String>,
}

/// `party.contact_mechanism` found by e-mail: `party`.
#[derive(Debug, Deserialize)]
struct ContactOf {
    party: i64,
}

/// `party.address`: `street`, `city`, `postal_code`, `country.code`.
#[derive(Debug, Deserialize)]
struct AddressRecord {
    id: i64,
    street: Option<String>,
    city: Option<String>,
    postal_code: Option<String>,
    #[serde(rename = "country.")]
    country: Option<Code>,
}

impl TrytonErp {
    /// The customer that is party `party_id`.
    pub(super) async fn customer(&self, party_id: i64) -> Result<Customer, Error> {
        let setup = self.setup().await?;
        let credit_limits = setup.capabilities.credit_limits;
        let mut fields = vec!["name", "code", "active", "addresses", "contact_mechanisms"];
        if credit_limits {
            fields.push("credit_limit_amount");
        }
        fields.extend(setup.custom.fields(Entity::Customer));
        let raw: Value = self.read_party(party_id, &fields).await?;
        let party: PartyRecord = decode("party.party", &raw)?;
        let mechanisms: Vec<ContactRecord> =
            self.read("party.contact_mechanism", &party.contact_mechanisms, &["type", "value"]).await?;
        let email = mechanisms.into_iter().find(|m| m.kind == "email").and_then(|m| m.value).unwrap_or_default();
        let addresses = self
            .read::<AddressRecord>(
                "party.address",
                &party.addresses,
                &["street", "city", "postal_code", "country.code"],
            )
            .await?
            .into_iter()
            .map(|a| Address {
                id: format!("address-{}", a.id),
                street: a.street.unwrap_or_default(),
                city: a.city.unwrap_or_default(),
                postal_code: a.postal_code.unwrap_or_default(),
                country: a.country.and_then(|c| c.code).unwrap_or_default(),
            })
            .collect();
        Ok(Customer {
            id: format!("party-{party_id}"),
            // The code an erasure leaves is Tryton's, not the caller's.
            external_id: if party.is_erased() { String::new() } else { party.code.unwrap_or_default() },
            name: party.name,
            email,
            currency: setup.company_currency.clone(),
            // Empty: the ERP keeps no credit limits (see Capabilities). A
            // party whose limit was never set (null) reads as zero.
            credit_limit: if credit_limits {
                money(party.credit_limit_amount.map_or(Decimal::ZERO, |a| a.0))
            } else {
                String::new()
            },
            addresses,
            custom_fields: setup.custom.read(Entity::Customer, &raw),
        })
    }

    /// Party `id`, inactive or not: a customer is read by id after it was
    /// erased (deactivated), and Tryton's search hides inactive records
    /// unless the domain names `active`.
    async fn read_party<T: serde::de::DeserializeOwned>(&self, id: i64, fields: &[&str]) -> Result<T, Error> {
        let found = self
            .rpc
            .call(
                "model.party.party.search",
                vec![json!([["id", "=", id], ["active", "in", [true, false]]]), json!(0), json!(1), Value::Null],
            )
            .await?;
        if decode::<Vec<i64>>("party.party", &found)?.is_empty() {
            return Err(Error::not_found("customer", format!("party-{id}")));
        }
        self.read("party.party", &[id], fields)
            .await?
            .pop()
            .ok_or_else(|| Error::not_found("customer", format!("party-{id}")))
    }

    /// The party a customer key names, if any.
    async fn party_by(&self, key: &CustomerKey) -> Result<Option<i64>, Error> {
        match key {
            CustomerKey::ExternalId(code) => {
                let found: Vec<Id> =
                    self.search_read("party.party", json!([["code", "=", code]]), Some(1), None, &["id"]).await?;
                Ok(found.first().map(|p| p.id))
            }
            CustomerKey::Email(email) => {
                let found: Vec<ContactOf> = self
                    .search_read(
                        "party.contact_mechanism",
                        json!([["type", "=", "email"], ["value", "ilike", email]]),
                        Some(1),
                        None,
                        &["party"],
                    )
                    .await?;
                Ok(found.first().map(|m| m.party))
            }
        }
    }

    fn address_create(address: &Address) -> Value {
        json!({"street": address.street, "city": address.city, "postal_code": address.postal_code})
    }

    pub(super) async fn get_customer(&self, id: &str) -> Result<Customer, Error> {
        self.customer(parse_id("customer", "party-", id)?).await
    }

    pub(super) async fn find_customer(&self, key: &CustomerKey) -> Result<Customer, Error> {
        let id = self.party_by(key).await?.ok_or_else(|| {
            Error::not_found(
                "customer",
                match key {
                    CustomerKey::ExternalId(v) | CustomerKey::Email(v) => v.clone(),
                },
            )
        })?;
        self.customer(id).await
    }

    pub(super) async fn create_customer(&self, new: &NewCustomer) -> Result<Customer, Error> {
        // Replays are found by what identifies the customer: its external id,
        // else its e-mail. The fingerprint is compared through the fields.
        let existing = match (&new.external_id, &new.email) {
            (Some(ext), _) => self.party_by(&CustomerKey::ExternalId(ext.clone())).await?,
            (None, Some(email)) => self.party_by(&CustomerKey::Email(email.clone())).await?,
            (None, None) => None,
        };
        if let Some(id) = existing {
            let customer = self.customer(id).await?;
            let same = customer.name == new.name
                && new.email.as_deref().is_none_or(|e| e.eq_ignore_ascii_case(&customer.email));
            return if same {
                Ok(customer)
            } else {
                Err(Error::IdempotencyConflict { key: new.idempotency_key.clone() })
            };
        }
        let mut party = json!({"name": new.name});
        if let Some(ext) = &new.external_id {
            party["code"] = json!(ext);
        }
        if let Some(email) = &new.email {
            party["contact_mechanisms"] = json!([["create", [{"type": "email", "value": email}]]]);
        }
        if !new.addresses.is_empty() {
            party["addresses"] =
                json!([["create", new.addresses.iter().map(Self::address_create).collect::<Vec<_>>()]]);
        }
        // In the create itself, not a write after it: a caller that died
        // between the two would find the party again, without its limit.
        if !new.credit_limit.is_zero() && self.setup().await?.capabilities.credit_limits {
            party["credit_limit_amount"] = decimal(new.credit_limit);
        }
        if let Value::Object(record) = &mut party {
            self.setup().await?.custom.write(Entity::Customer, &new.custom_fields, record);
        }
        let id = self.create("party.party", party).await?;
        self.customer(id).await
    }

    pub(super) async fn update_credit_limit(&self, id: &str, limit: Decimal) -> Result<Customer, Error> {
        let party = parse_id("customer", "party-", id)?;
        if !self.setup().await?.capabilities.credit_limits {
            return Err(Error::precondition(
                "NO_CREDIT_LIMITS",
                id,
                "this Tryton keeps no credit limits (activate sale_credit_limit or account_credit_limit)",
            ));
        }
        self.customer(party).await?;
        self.rpc
            .call("model.party.party.write", vec![json!([party]), json!({"credit_limit_amount": decimal(limit)})])
            .await?;
        self.customer(party).await
    }

    pub(super) async fn add_address(&self, id: &str, address: &Address) -> Result<Customer, Error> {
        let party = parse_id("customer", "party-", id)?;
        // An erased customer gets no personal data back.
        if self
            .read_party::<PartyRecord>(party, &["name", "code", "active", "addresses", "contact_mechanisms"])
            .await?
            .is_erased()
        {
            return Err(erased(id));
        }
        self.rpc
            .call(
                "model.party.party.write",
                vec![json!([party]), json!({"addresses": [["create", [Self::address_create(address)]]]})],
            )
            .await?;
        self.customer(party).await
    }

    pub(super) async fn update_customer(&self, id: &str, change: &CustomerChange) -> Result<Customer, Error> {
        let party_id = parse_id("customer", "party-", id)?;
        let party: PartyRecord =
            self.read_party(party_id, &["name", "code", "active", "addresses", "contact_mechanisms"]).await?;
        if party.is_erased() {
            return Err(erased(id));
        }
        // One write of the party, contact mechanisms included: one Tryton
        // transaction, and the party's write_date moves, which is what the
        // change feed polls (a write of the contact mechanism alone would
        // not show the customer as changed).
        let mut values = serde_json::Map::new();
        if let Some(name) = &change.name {
            values.insert("name".into(), json!(name));
        }
        if let Some(email) = &change.email {
            let mechanisms: Vec<ContactRecord> =
                self.read("party.contact_mechanism", &party.contact_mechanisms, &["type", "value"]).await?;
            let emails: Vec<i64> = mechanisms.iter().filter(|m| m.kind == "email").map(|m| m.id).collect();
            let action = match (email, emails.first()) {
                (Some(email), Some(first)) => json!([["write", [first], {"value": email}]]),
                (Some(email), None) => json!([["create", [{"type": "email", "value": email}]]]),
                // Every e-mail address goes, not only the first: the next one
                // would otherwise become the customer's e-mail.
                (None, _) if !emails.is_empty() => json!([["delete", emails]]),
                (None, _) => json!([]),
            };
            if let Some(email) = email
                && let Some(other) = self.party_by(&CustomerKey::Email(email.clone())).await?
                && other != party_id
            {
                return Err(Error::precondition(
                    "CUSTOMER_EXISTS",
                    format!("party-{other}"),
                    "another customer has this e-mail address",
                ));
            }
            values.insert("contact_mechanisms".into(), action);
        }
        self.rpc.call("model.party.party.write", vec![json!([party_id]), Value::Object(values)]).await?;
        self.customer(party_id).await
    }

    pub(super) async fn erase_customer(&self, id: &str) -> Result<(Customer, Vec<ErasureAction>), Error> {
        let party_id = parse_id("customer", "party-", id)?;
        let party: PartyRecord =
            self.read_party(party_id, &["name", "code", "active", "addresses", "contact_mechanisms"]).await?;
        // Inactive records too: what a Tryton user archived is personal data all the same.
        let all_of_party = json!([["party", "=", party_id]]);
        let (mut addresses, mut mechanisms, mut identifiers) = (Vec::new(), Vec::new(), Vec::new());
        let mut code_kept = false;
        // A repeat finds the party erased and writes nothing, so it is no
        // new change in the feed; a first erase that failed half-way wrote
        // nothing (it is one write) and runs again in full.
        if !party.is_erased() {
            addresses =
                self.search_read_inactive_too::<Id>("party.address", all_of_party.clone(), None, None, &["id"]).await?;
            mechanisms = self
                .search_read_inactive_too::<Id>("party.contact_mechanism", all_of_party.clone(), None, None, &["id"])
                .await?;
            identifiers =
                self.search_read_inactive_too::<Id>("party.identifier", all_of_party, None, None, &["id"]).await?;
            let ids = |records: &[Id]| records.iter().map(|r| r.id).collect::<Vec<_>>();
            let mut values = json!({
                "name": ERASED_NAME,
                // Required by Tryton, so replaced rather than cleared; unique per party.
                "code": format!("erased-{party_id}"),
                "active": false,
            });
            if !mechanisms.is_empty() {
                values["contact_mechanisms"] = json!([["delete", ids(&mechanisms)]]);
            }
            if !identifiers.is_empty() {
                values["identifiers"] = json!([["delete", ids(&identifiers)]]);
            }
            if !addresses.is_empty() {
                values["addresses"] = json!([["write", ids(&addresses), self.emptied_address().await?]]);
            }
            let written = self.rpc.call("model.party.party.write", vec![json!([party_id]), values.clone()]).await;
            if let Err(err) = written {
                // Tryton 8.2 refuses to change the code of a party that has
                // documents ("You are not allowed to modify the field Code");
                // 8.0 allows it. The rest is erased all the same, and the
                // code is hidden: erp.v1 reads an erased party without it,
                // and Tryton's searches skip the inactive party.
                let err = Error::from(err);
                if !matches!(err, Error::FailedPrecondition { reason: "ERP_REJECTED", .. }) {
                    return Err(err);
                }
                if let Value::Object(record) = &mut values {
                    record.remove("code");
                }
                self.rpc.call("model.party.party.write", vec![json!([party_id]), values]).await?;
                code_kept = true;
            }
        }
        let sales = self.count("sale.sale", json!([["party", "=", party_id]])).await?;
        let invoices = self.count("account.invoice", json!([["party", "=", party_id]])).await?;
        let actions = vec![
            erasure_action("name", "anonymised", "", 0),
            erasure_action("email", "removed", "", 0),
            if code_kept {
                erasure_action(
                    "external_id",
                    "kept",
                    "Tryton refuses to change this party's code; it is hidden from reads and searches",
                    0,
                )
            } else {
                erasure_action("external_id", "removed", "", 0)
            },
            erasure_action("contact_mechanisms", "removed", "", mechanisms.len()),
            erasure_action("identifiers", "removed", "", identifiers.len()),
            erasure_action(
                "addresses",
                "anonymised",
                "emptied and deactivated, not deleted: Tryton keeps the addresses its sales and invoices reference",
                addresses.len(),
            ),
            erasure_action("customer", "deactivated", "", 0),
            erasure_action("sales_orders", "kept", RETENTION_REASON, sales),
            erasure_action("invoices", "kept", RETENTION_REASON, invoices),
        ];
        Ok((self.customer(party_id).await?, actions))
    }

    /// The values that empty a `party.address`: every text field of it that
    /// this Tryton has (the structured street fields came with Tryton 7),
    /// and `active` false.
    async fn emptied_address(&self) -> Result<Value, Error> {
        const TEXT: &[&str] = &[
            "street",
            "street_name",
            "building_name",
            "building_number",
            "unit_number",
            "floor_number",
            "room_number",
            "post_box",
            "post_office",
            "private_bag",
            "city",
            "postal_code",
            "party_name",
            "attn",
        ];
        const LINKS: &[&str] = &["country", "subdivision"];
        let known = self.rpc.call("model.party.address.fields_get", vec![json!([])]).await?;
        let mut values = serde_json::Map::new();
        for field in TEXT.iter().filter(|f| known.get(**f).is_some()) {
            values.insert((*field).to_owned(), json!(""));
        }
        for field in LINKS.iter().filter(|f| known.get(**f).is_some()) {
            values.insert((*field).to_owned(), Value::Null);
        }
        values.insert("active".into(), json!(false));
        Ok(Value::Object(values))
    }

    /// How many records of `model` match `domain`, inactive ones hidden as Tryton does.
    async fn count(&self, model: &str, domain: Value) -> Result<usize, Error> {
        let n = self.rpc.call(&format!("model.{model}.search_count"), vec![domain]).await?;
        Ok(decode::<u64>(model, &n)?.try_into().unwrap_or(usize::MAX))
    }
}
