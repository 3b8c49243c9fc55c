//! Custom fields: ERP fields outside the contracts, mapped by each
//! deployment onto named, typed fields of an entity (`[[erp.custom_fields]]`
//! in the config file) and carried as `map<string, erp.v1.CustomValue>`.
//!
//! Every tier reads the same definitions: the system tier maps them to the
//! ERP's fields and checks values against them, the experience tier turns
//! JSON into typed values (422 for an unknown, read-only or ill-typed one)
//! and shows each field only to the audiences listed. The rules live here
//! once so that the tiers cannot disagree about what a valid value is.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::erp::v1::{CustomFieldDefinition, CustomValue, custom_value::Value};

/// Longest string value accepted, in characters.
pub const MAX_STRING_CHARS: usize = 2000;
/// Most custom fields one entity may configure.
pub const MAX_PER_ENTITY: usize = 50;
/// The audiences an experience API serves.
pub const AUDIENCES: &[&str] = &["web", "mobile", "partner", "ops"];

/// What a custom field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// A customer (Tryton `party.party`).
    Customer,
    /// A sales order (`sale.sale`).
    SalesOrder,
    /// A line of a sales order (`sale.line`).
    OrderLine,
    /// A product (`product.product`).
    Product,
}

impl Entity {
    /// The name in the config file and in `erp.v1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Customer => "customer",
            Entity::SalesOrder => "sales_order",
            Entity::OrderLine => "order_line",
            Entity::Product => "product",
        }
    }
}

/// The type of a custom field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text, at most [`MAX_STRING_CHARS`] characters.
    String,
    /// A 64-bit integer.
    Integer,
    /// A decimal, as a string in JSON ("12.50"), never a float.
    Decimal,
    /// `true` or `false`.
    Boolean,
    /// An ISO 8601 calendar date, "2026-12-06".
    Date,
}

impl FieldType {
    /// The name in the config file and in `erp.v1`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
        }
    }

    /// Checks that `value` is a well-formed value of this type.
    pub fn check(self, value: &CustomValue) -> Result<(), String> {
        match (self, value.value.as_ref()) {
            (FieldType::String, Some(Value::StringValue(s))) if s.chars().count() <= MAX_STRING_CHARS => Ok(()),
            (FieldType::String, Some(Value::StringValue(_))) => {
                Err(format!("must be at most {MAX_STRING_CHARS} characters"))
            }
            (FieldType::Integer, Some(Value::IntegerValue(_))) | (FieldType::Boolean, Some(Value::BooleanValue(_))) => {
                Ok(())
            }
            (FieldType::Decimal, Some(Value::DecimalValue(d))) if is_decimal(d) => Ok(()),
            (FieldType::Decimal, Some(Value::DecimalValue(_))) => {
                Err("must be a decimal string, e.g. \"12.50\"".into())
            }
            (FieldType::Date, Some(Value::DateValue(d))) if is_date(d) => Ok(()),
            (FieldType::Date, Some(Value::DateValue(_))) => Err("must be a date, e.g. \"2026-12-06\"".into()),
            _ => Err(format!("must be a {} value", self.as_str())),
        }
    }

    /// A JSON value of this type as a [`CustomValue`]: strings and dates as
    /// JSON strings, decimals as decimal strings, integers as JSON integers.
    pub fn from_json(self, json: &Json) -> Result<CustomValue, String> {
        let value = match (self, json) {
            (FieldType::String, Json::String(s)) => Value::StringValue(s.clone()),
            (FieldType::Integer, Json::Number(n)) if n.as_i64().is_some() => {
                Value::IntegerValue(n.as_i64().unwrap_or(0))
            }
            (FieldType::Decimal, Json::String(s)) => Value::DecimalValue(s.clone()),
            (FieldType::Boolean, Json::Bool(b)) => Value::BooleanValue(*b),
            (FieldType::Date, Json::String(s)) => Value::DateValue(s.clone()),
            (FieldType::Integer, _) => return Err("must be an integer".into()),
            (FieldType::Decimal, _) => return Err("must be a decimal string, e.g. \"12.50\"".into()),
            (FieldType::Date, _) => return Err("must be a date string, e.g. \"2026-12-06\"".into()),
            (t, _) => return Err(format!("must be a {}", t.as_str())),
        };
        let value = CustomValue { value: Some(value) };
        self.check(&value)?;
        Ok(value)
    }
}

/// A value as JSON, the inverse of [`FieldType::from_json`].
pub fn to_json(value: &CustomValue) -> Json {
    match &value.value {
        Some(Value::StringValue(s) | Value::DecimalValue(s) | Value::DateValue(s)) => Json::String(s.clone()),
        Some(Value::IntegerValue(i)) => Json::from(*i),
        Some(Value::BooleanValue(b)) => Json::Bool(*b),
        None => Json::Null,
    }
}

/// Digits with at most one decimal point and an optional leading minus, as
/// an exact decimal holds them: no exponent, no spaces.
fn is_decimal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    !whole.is_empty() && all_digits(whole) && all_digits(fraction) && s.parse::<rust_decimal::Decimal>().is_ok()
}

/// `YYYY-MM-DD` naming a day of the proleptic Gregorian calendar.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num =
        |r: std::ops::Range<usize>| s.get(r).filter(|p| p.bytes().all(|c| c.is_ascii_digit()))?.parse::<u32>().ok();
    let (Some(year), Some(month), Some(day)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    year >= 1 && (1..=days).contains(&day)
}

/// One `[[erp.custom_fields]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// What it belongs to.
    pub entity: Entity,
    /// Its name in `erp.v1` and in REST payloads: lowercase letters,
    /// digits and `_`, starting with a letter, at most 64 characters.
    pub name: String,
    /// The ERP model's field; `field.key` for a key of a `Dict` field
    /// (Tryton `product.product.attributes` with `product_attribute`).
    /// The embedded ERP stores values by `name` and ignores it.
    pub erp_field: String,
    /// The type of its values.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Callers may set it when creating the entity. Default false.
    #[serde(default)]
    pub writable: bool,
    /// The experience APIs that show it (`web`, `mobile`, `partner`, `ops`).
    /// Default none: it is kept in the ERP and in `erp.v1` only.
    #[serde(default)]
    pub audiences: Vec<String>,
}

impl Definition {
    /// The ERP field and, for a key of a `Dict` field, the key.
    pub fn erp_path(&self) -> (&str, Option<&str>) {
        match self.erp_field.split_once('.') {
            Some((field, key)) => (field, Some(key)),
            None => (&self.erp_field, None),
        }
    }

    /// Whether `audience` sees it.
    pub fn shown_to(&self, audience: &str) -> bool {
        self.audiences.iter().any(|a| a == audience)
    }

    /// As `erp.v1` lists it in `Capabilities`.
    pub fn to_proto(&self) -> CustomFieldDefinition {
        CustomFieldDefinition {
            entity: self.entity.as_str().into(),
            name: self.name.clone(),
            r#type: self.field_type.as_str().into(),
            writable: self.writable,
        }
    }
}

/// Why a set of custom field values was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("custom_fields.{name}: {message}")]
pub struct Refusal {
    /// The field.
    pub name: String,
    /// What is wrong, for the caller.
    pub message: String,
}

/// Every configured custom field, looked up by entity and name.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    all: Vec<Definition>,
}

impl Definitions {
    /// Checks what types alone cannot (names, duplicates, audiences, the
    /// ERP field's form) and keeps `all`.
    pub fn new(all: Vec<Definition>) -> Result<Self, String> {
        let mut seen = HashMap::<(Entity, &str), ()>::new();
        for d in &all {
            let at = format!("erp.custom_fields {} {:?}", d.entity.as_str(), d.name);
            let name_ok = d.name.len() <= 64
                && d.name.starts_with(|c: char| c.is_ascii_lowercase())
                && d.name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if !name_ok {
                return Err(format!("{at}: name must be lowercase letters, digits and _, starting with a letter"));
            }
            if seen.insert((d.entity, &d.name), ()).is_some() {
                return Err(format!("{at}: configured twice"));
            }
            let field_ok = |p: &str| {
                !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') && !p.starts_with('_')
            };
            let erp_ok = match d.erp_path() {
                (field, None) => field_ok(field),
                (field, Some(key)) => field_ok(field) && field_ok(key),
            };
            if !erp_ok {
                return Err(format!("{at}: erp_field {:?} must be a field name, or field.key for a Dict", d.erp_field));
            }
            if let Some(a) = d.audiences.iter().find(|a| !AUDIENCES.contains(&a.as_str())) {
                return Err(format!("{at}: unknown audience {a:?} (one of {})", AUDIENCES.join(", ")));
            }
        }
        for entity in [Entity::Customer, Entity::SalesOrder, Entity::OrderLine, Entity::Product] {
            if all.iter().filter(|d| d.entity == entity).count() > MAX_PER_ENTITY {
                return Err(format!("erp.custom_fields: more than {MAX_PER_ENTITY} for {}", entity.as_str()));
            }
        }
        Ok(Self { all })
    }

    /// All of them, in configuration order.
    pub fn all(&self) -> &[Definition] {
        &self.all
    }

    /// Those of `entity`.
    pub fn of(&self, entity: Entity) -> impl Iterator<Item = &Definition> {
        self.all.iter().filter(move |d| d.entity == entity)
    }

    /// The definition of `name` on `entity`.
    pub fn get(&self, entity: Entity, name: &str) -> Option<&Definition> {
        self.of(entity).find(|d| d.name == name)
    }

    /// Checks values a caller wants written to a new `entity`: each names a
    /// writable field and has its type.
    pub fn check_writable(&self, entity: Entity, values: &HashMap<String, CustomValue>) -> Result<(), Refusal> {
        for (name, value) in values {
            let refuse = |message: String| Refusal { name: name.clone(), message };
            let def = self.get(entity, name).ok_or_else(|| refuse(format!("no {} custom field", entity.as_str())))?;
            if !def.writable {
                return Err(refuse("is read-only".into()));
            }
            def.field_type.check(value).map_err(refuse)?;
        }
        Ok(())
    }

    /// A JSON object sent by `audience` as the typed values of `entity`:
    /// only writable fields the audience sees may be set.
    pub fn from_json(
        &self,
        entity: Entity,
        audience: &str,
        object: &serde_json::Map<String, Json>,
    ) -> Result<HashMap<String, CustomValue>, Refusal> {
        let mut values = HashMap::with_capacity(object.len());
        for (name, json) in object {
            let refuse = |message: String| Refusal { name: name.clone(), message };
            let def = self.get(entity, name).filter(|d| d.shown_to(audience)).ok_or_else(|| {
                refuse(format!("is not a custom field of this {}", entity.as_str().replace('_', " ")))
            })?;
            if !def.writable {
                return Err(refuse("is read-only".into()));
            }
            if json.is_null() {
                continue;
            }
            values.insert(name.clone(), def.field_type.from_json(json).map_err(refuse)?);
        }
        Ok(values)
    }

    /// The values of `entity` that `audience` sees, as a JSON object,
    /// ordered by name.
    pub fn to_json(
        &self,
        entity: Entity,
        audience: &str,
        values: &HashMap<String, CustomValue>,
    ) -> serde_json::Map<String, Json> {
        let mut shown: Vec<_> =
            values.iter().filter(|(name, _)| self.get(entity, name).is_some_and(|d| d.shown_to(audience))).collect();
        shown.sort_by(|a, b| a.0.cmp(b.0));
        shown.into_iter().map(|(name, value)| (name.clone(), to_json(value))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs() -> Definitions {
        let toml_free = |entity, name: &str, field_type, writable, audiences: &[&str]| Definition {
            entity,
            name: name.into(),
            erp_field: "comment".into(),
            field_type,
            writable,
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
        };
        Definitions::new(vec![
            toml_free(Entity::SalesOrder, "delivery_note", FieldType::String, true, &["partner", "ops"]),
            toml_free(Entity::SalesOrder, "ship_by", FieldType::Date, true, &["partner"]),
            toml_free(Entity::SalesOrder, "erp_score", FieldType::Integer, false, &["partner"]),
            toml_free(Entity::Product, "hs_code", FieldType::String, false, &["partner"]),
        ])
        .expect("valid definitions")
    }

    fn string(s: &str) -> CustomValue {
        CustomValue { value: Some(Value::StringValue(s.into())) }
    }

    #[test]
    fn values_are_checked_against_their_type() {
        assert!(FieldType::Date.check(&CustomValue { value: Some(Value::DateValue("2024-02-29".into())) }).is_ok());
        for bad in ["2023-02-29", "2026-13-01", "2026-1-01", "26-12-06", "2026-12-00", "2026-12-06T00:00"] {
            assert!(
                FieldType::Date.check(&CustomValue { value: Some(Value::DateValue(bad.into())) }).is_err(),
                "{bad}"
            );
        }
        assert!(FieldType::Decimal.check(&CustomValue { value: Some(Value::DecimalValue("12.50".into())) }).is_ok());
        assert!(FieldType::Decimal.check(&CustomValue { value: Some(Value::DecimalValue("1e3".into())) }).is_err());
        assert!(FieldType::Integer.check(&string("3")).is_err());
        assert!(FieldType::String.check(&string(&"x".repeat(MAX_STRING_CHARS + 1))).is_err());
        assert!(FieldType::Boolean.check(&CustomValue { value: None }).is_err());
    }

    #[test]
    fn json_from_an_audience_becomes_typed_values_or_a_refusal_naming_the_field() {
        let d = defs();
        let body = serde_json::json!({"delivery_note": "gate 4", "ship_by": "2026-12-24"});
        let values =
            d.from_json(Entity::SalesOrder, "partner", body.as_object().expect("an object")).expect("accepted");
        assert_eq!(values["delivery_note"], string("gate 4"));
        assert_eq!(values["ship_by"].value, Some(Value::DateValue("2026-12-24".into())));
        let refusal = |body: serde_json::Value, audience| {
            d.from_json(Entity::SalesOrder, audience, body.as_object().expect("an object")).expect_err("refused")
        };
        assert_eq!(refusal(serde_json::json!({"nope": "x"}), "partner").name, "nope");
        // The web shop does not see ship_by, so for it the field does not exist.
        assert!(refusal(serde_json::json!({"ship_by": "2026-12-24"}), "web").message.contains("not a custom field"));
        assert_eq!(refusal(serde_json::json!({"erp_score": 3}), "partner").message, "is read-only");
        assert!(refusal(serde_json::json!({"ship_by": 20261224}), "partner").message.contains("date"));
    }

    #[test]
    fn each_audience_sees_only_its_fields() {
        let d = defs();
        let values = HashMap::from([("hs_code".to_owned(), string("8471.30"))]);
        assert_eq!(d.to_json(Entity::Product, "partner", &values)["hs_code"], "8471.30");
        assert!(d.to_json(Entity::Product, "web", &values).is_empty());
        let values = HashMap::from([("delivery_note".to_owned(), string("gate 4"))]);
        assert!(d.check_writable(Entity::SalesOrder, &values).is_ok());
        let read_only = HashMap::from([("hs_code".to_owned(), string("1"))]);
        assert_eq!(d.check_writable(Entity::Product, &read_only).expect_err("refused").message, "is read-only");
    }

    #[test]
    fn bad_definitions_are_refused_naming_the_entry() {
        let base = defs().all()[0].clone();
        let with = |f: &dyn Fn(&mut Definition)| {
            let mut d = base.clone();
            f(&mut d);
            Definitions::new(vec![d]).expect_err("refused")
        };
        assert!(with(&|d| d.name = "Delivery".into()).contains("\"Delivery\""));
        assert!(with(&|d| d.erp_field = "a.b.c".into()).contains("erp_field"));
        assert!(with(&|d| d.audiences = vec!["shop".into()]).contains("unknown audience \"shop\""));
        assert!(Definitions::new(vec![base.clone(), base]).expect_err("refused").contains("twice"));
    }
}
