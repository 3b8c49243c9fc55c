//! `CustomerService` over Tryton: customers are `party.party` records. The
//! external id is the party's `code`; the e-mail is its first
//! `party.contact_mechanism` of type `email` (and finding a customer by
//! e-mail searches those, case-insensitively); addresses are its
//! `party.address` records (id `address-<id>`); the credit limit is
//! `credit_limit_amount`, when a credit-limit module provides it (see
//! [`super::Setup`]). Creating a customer is idempotent through what
//! identifies it: a retry finds the party by its code, else its e-mail.
//! Custom fields of customers are fields of `party.party`.

use erp_connect_proto::{
    custom_fields::Entity,
    erp::v1::{Address, Customer},
    money::format as money,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    TrytonErp, parse_id,
    records::{Amount, Code, Id, decode},
    rpc::decimal,
};
use crate::erp::{CustomerKey, Error, NewCustomer};

/// `party.party` read for a customer (`credit_limit_amount` only when
/// Tryton has it).
#[derive(Debug, Deserialize)]
struct PartyRecord {
    name: String,
    code: Option<String>,
    addresses: Vec<i64>,
    contact_mechanisms: Vec<i64>,
    credit_limit_amount: Option<Amount>,
}

/// `party.contact_mechanism`: `type`, `value`.
#[derive(Debug, Deserialize)]
struct ContactRecord {
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
        let mut fields = vec!["name", "code", "addresses", "contact_mechanisms"];
        if credit_limits {
            fields.push("credit_limit_amount");
        }
        fields.extend(setup.custom.fields(Entity::Customer));
        let raw: Value = self.read_one("party.party", "customer", party_id, &fields).await?;
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
            external_id: party.code.unwrap_or_default(),
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
        self.customer(party).await?;
        self.rpc
            .call(
                "model.party.party.write",
                vec![json!([party]), json!({"addresses": [["create", [Self::address_create(address)]]]})],
            )
            .await?;
        self.customer(party).await
    }
}
