//! The customer fields master data keeps, the systems that hold them, and
//! who owns which. A system *carries* a field when its contract has it:
//! the CRM carries every field; the ERP (`erp.v1`) the name, the e-mail and
//! the credit limit (when it keeps credit limits). The ERP's addresses are
//! the delivery addresses orders add, not master data, so they are not
//! synchronised. A field's owner must carry it.
//!
//! Values are JSON: strings, and for `addresses` an array of
//! `{street, city, postal_code, country}` objects.

use std::{collections::BTreeMap, fmt};

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

/// A system master data connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemName {
    /// `crm.v1`.
    Crm,
    /// `erp.v1`.
    Erp,
}

impl SystemName {
    /// Both, CRM first.
    pub const ALL: [SystemName; 2] = [SystemName::Crm, SystemName::Erp];

    /// `crm` or `erp`.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemName::Crm => "crm",
            SystemName::Erp => "erp",
        }
    }

    /// From [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "crm" => Some(SystemName::Crm),
            "erp" => Some(SystemName::Erp),
            _ => None,
        }
    }

    /// The other one.
    pub fn other(self) -> Self {
        match self {
            SystemName::Crm => SystemName::Erp,
            SystemName::Erp => SystemName::Crm,
        }
    }
}

impl fmt::Display for SystemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A customer field master data keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Display name.
    Name,
    /// E-mail address, compared case-insensitively.
    Email,
    /// Phone number.
    Phone,
    /// VAT id, normalised by the CRM.
    VatId,
    /// Postal addresses, as a whole.
    Addresses,
    /// Credit limit, a decimal compared by value.
    CreditLimit,
}

impl Field {
    /// Every field, in the golden record's order.
    pub const ALL: [Field; 6] =
        [Field::Name, Field::Email, Field::Phone, Field::VatId, Field::Addresses, Field::CreditLimit];

    /// Its name in configuration, contracts and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::VatId => "vat_id",
            Field::Addresses => "addresses",
            Field::CreditLimit => "credit_limit",
        }
    }

    /// From [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// Whether `system` carries this field (see the module documentation).
    pub fn carried_by(self, system: SystemName) -> bool {
        match system {
            SystemName::Crm => true,
            SystemName::Erp => matches!(self, Field::Name | Field::Email | Field::CreditLimit),
        }
    }

    fn default_owner(self) -> SystemName {
        match self {
            Field::CreditLimit => SystemName::Erp,
            _ => SystemName::Crm,
        }
    }

    /// Whether two values of this field are the same: e-mail addresses
    /// regardless of case, credit limits by amount, the rest exactly.
    pub fn same(self, a: &Value, b: &Value) -> bool {
        match (self, a, b) {
            (Field::Email, Value::String(a), Value::String(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
            (Field::CreditLimit, Value::String(a), Value::String(b)) => {
                match (a.parse::<Decimal>(), b.parse::<Decimal>()) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => a == b,
                }
            }
            _ => a == b,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The owner of every field.
#[derive(Debug, Clone)]
pub struct Owners(BTreeMap<Field, SystemName>);

impl Owners {
    /// The defaults overridden by `configured` (field name → system).
    pub fn new(configured: &BTreeMap<String, SystemName>) -> Result<Self, String> {
        let mut owners: BTreeMap<Field, SystemName> = Field::ALL.iter().map(|f| (*f, f.default_owner())).collect();
        for (name, system) in configured {
            let field = Field::parse(name).ok_or_else(|| {
                let known = Field::ALL.map(Field::as_str).join(", ");
                format!("master_data.customer.owners: unknown field {name:?} (known: {known})")
            })?;
            if !field.carried_by(*system) {
                return Err(format!(
                    "master_data.customer.owners: {name} cannot be owned by {system}, which does not carry it"
                ));
            }
            owners.insert(field, *system);
        }
        Ok(Self(owners))
    }

    /// Who owns `field`.
    pub fn owner(&self, field: Field) -> SystemName {
        self.0.get(&field).copied().unwrap_or(field.default_owner())
    }
}

/// One system's customer as master data sees it: the fields it carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The fields this record carries, with their values.
    pub values: BTreeMap<Field, Value>,
    /// The e-mail to match it by, when it has one.
    pub email: Option<String>,
    /// Erased (a data-subject request): not synchronised any more.
    pub erased: bool,
}

impl Snapshot {
    /// The value of `field`, if carried.
    pub fn get(&self, field: Field) -> Option<&Value> {
        self.values.get(&field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owners_default_to_crm_for_identity_and_erp_for_terms_and_refuse_what_a_system_cannot_own() {
        let owners = Owners::new(&BTreeMap::new()).expect("defaults");
        assert_eq!(owners.owner(Field::Name), SystemName::Crm);
        assert_eq!(owners.owner(Field::CreditLimit), SystemName::Erp);
        let configured = BTreeMap::from([("name".to_owned(), SystemName::Erp)]);
        assert_eq!(Owners::new(&configured).expect("erp may own names").owner(Field::Name), SystemName::Erp);
        let unknown = BTreeMap::from([("payment_terms".to_owned(), SystemName::Erp)]);
        assert!(Owners::new(&unknown).expect_err("unknown").contains("unknown field \"payment_terms\""));
        let cannot = BTreeMap::from([("vat_id".to_owned(), SystemName::Erp)]);
        assert!(Owners::new(&cannot).expect_err("not carried").contains("does not carry it"));
    }

    #[test]
    fn emails_compare_without_case_and_credit_limits_by_amount() {
        assert!(Field::Email.same(&json!("Ada@Example.COM"), &json!("ada@example.com")));
        assert!(!Field::Name.same(&json!("Ada"), &json!("ada")));
        assert!(Field::CreditLimit.same(&json!("500"), &json!("500.00")));
        assert!(!Field::CreditLimit.same(&json!("500"), &json!("50.00")));
    }
}
