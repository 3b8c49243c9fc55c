//! The deployment's custom fields on Tryton models: each definition is
//! checked against the model's `fields_get` when the connector first talks
//! to Tryton (an unknown field or a type that cannot hold the configured
//! one is [`Error::Misconfigured`], naming it), and then read from and
//! written to the records it belongs to.
//!
//! Entities and their models: customer → `party.party`, sales order →
//! `sale.sale`, order line → `sale.line`, product → `product.product`. A
//! `field.key` definition is one key of a `Dict` field (for example
//! `product.product.attributes` with `product_attribute`); the key must be
//! a record of the field's schema model (`product.attribute`), whose type
//! is checked the same way.

use std::collections::HashMap;

use erp_connect_proto::{
    custom_fields::{Definitions, Entity, FieldType},
    erp::v1::{CustomValue, custom_value::Value as Typed},
};
use serde_json::{Map, Value, json};

use super::rpc::{self, Client, as_decimal, decimal};
use crate::erp::Error;

/// Fields the connector writes itself on each model: a custom field on one
/// of them would be overwritten, or would break how the connector finds
/// its own records again.
const RESERVED: &[(&str, &[&str])] = &[
    ("party.party", &["name", "code", "addresses", "contact_mechanisms", "credit_limit_amount"]),
    ("sale.sale", &["party", "reference", "description", "lines", "state", "currency", "warehouse", "payment_term"]),
    ("sale.line", &["product", "quantity", "unit", "unit_price", "taxes", "type", "sale"]),
    ("product.product", &["code"]),
];

/// The Tryton model of `entity`.
pub fn model(entity: Entity) -> &'static str {
    match entity {
        Entity::Customer => "party.party",
        Entity::SalesOrder => "sale.sale",
        Entity::OrderLine => "sale.line",
        Entity::Product => "product.product",
    }
}

/// One definition as it maps onto Tryton.
#[derive(Debug, Clone)]
struct Mapped {
    entity: Entity,
    name: String,
    field: String,
    key: Option<String>,
    field_type: FieldType,
    /// Tryton's type of the field (or of the Dict key): `char`, `numeric`...
    tryton_type: String,
}

/// Every definition, checked against the connected Tryton.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    mapped: Vec<Mapped>,
}

/// Whether a Tryton field of `tryton` type holds values of `ours`.
fn compatible(ours: FieldType, tryton: &str) -> bool {
    match ours {
        FieldType::String => matches!(tryton, "char" | "text" | "selection"),
        FieldType::Integer => tryton == "integer",
        FieldType::Decimal => matches!(tryton, "numeric" | "float"),
        FieldType::Boolean => tryton == "boolean",
        FieldType::Date => tryton == "date",
    }
}

impl Mapping {
    /// Checks `definitions` against Tryton's models through `rpc`.
    pub async fn discover(rpc: &Client, definitions: &Definitions) -> Result<Self, Error> {
        let mut fields_of: HashMap<&str, Value> = HashMap::new();
        let mut mapped = Vec::with_capacity(definitions.all().len());
        for d in definitions.all() {
            let model = model(d.entity);
            if !fields_of.contains_key(model) {
                let fields = rpc.call(&format!("model.{model}.fields_get"), vec![json!([])]).await?;
                fields_of.insert(model, fields);
            }
            let (field, key) = d.erp_path();
            let at = || format!("erp.custom_fields {} {:?}: {model}.{}", d.entity.as_str(), d.name, d.erp_field);
            if RESERVED.iter().any(|(m, reserved)| *m == model && reserved.contains(&field)) {
                return Err(Error::Misconfigured(format!("{}: erp-connect writes this field itself", at())));
            }
            let Some(info) = fields_of[model].get(field) else {
                return Err(Error::Misconfigured(format!("{}: the Tryton model has no such field", at())));
            };
            let tryton_type = info.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
            let tryton_type = match key {
                None => tryton_type,
                Some(key) => {
                    if tryton_type != "dict" {
                        return Err(Error::Misconfigured(format!("{}: {field} is a {tryton_type}, not a Dict", at())));
                    }
                    dict_key_type(rpc, info, key).await?.ok_or_else(|| {
                        Error::Misconfigured(format!("{}: the Dict has no key {key:?} in its schema", at()))
                    })?
                }
            };
            if !compatible(d.field_type, &tryton_type) {
                return Err(Error::Misconfigured(format!(
                    "{}: a Tryton {tryton_type} cannot hold a {} custom field",
                    at(),
                    d.field_type.as_str()
                )));
            }
            if d.writable && info.get("readonly").and_then(Value::as_bool).unwrap_or(false) && key.is_none() {
                return Err(Error::Misconfigured(format!("{}: writable, but the Tryton field is read-only", at())));
            }
            mapped.push(Mapped {
                entity: d.entity,
                name: d.name.clone(),
                field: field.to_owned(),
                key: key.map(str::to_owned),
                field_type: d.field_type,
                tryton_type,
            });
        }
        Ok(Self { mapped })
    }

    fn of(&self, entity: Entity) -> impl Iterator<Item = &Mapped> {
        self.mapped.iter().filter(move |m| m.entity == entity)
    }

    /// The fields to read for `entity` besides the connector's own.
    pub fn fields(&self, entity: Entity) -> Vec<&str> {
        let mut fields: Vec<&str> = self.of(entity).map(|m| m.field.as_str()).collect();
        fields.sort_unstable();
        fields.dedup();
        fields
    }

    /// The custom field values of a `record` of `entity` read with [`Self::fields`].
    pub fn read(&self, entity: Entity, record: &Value) -> HashMap<String, CustomValue> {
        self.of(entity)
            .filter_map(|m| {
                let raw = record.get(&m.field)?;
                let raw = match &m.key {
                    Some(key) => raw.get(key)?,
                    None => raw,
                };
                Some((m.name.clone(), from_tryton(m.field_type, raw)?))
            })
            .collect()
    }

    /// Adds `values` (checked writable by the service) to the create values
    /// `record` of `entity`.
    pub fn write(&self, entity: Entity, values: &HashMap<String, CustomValue>, record: &mut Map<String, Value>) {
        for m in self.of(entity) {
            let Some(value) = values.get(&m.name) else { continue };
            let value = to_tryton(&m.tryton_type, value);
            match &m.key {
                None => {
                    record.insert(m.field.clone(), value);
                }
                Some(key) => {
                    let dict = record.entry(m.field.clone()).or_insert_with(|| json!({}));
                    if let Some(dict) = dict.as_object_mut() {
                        dict.insert(key.clone(), value);
                    }
                }
            }
        }
    }
}

/// The Tryton type of `key` in the Dict field described by `info`, from
/// its schema model (`name`, `type_` as in Tryton's `DictSchemaMixin`).
async fn dict_key_type(rpc: &Client, info: &Value, key: &str) -> Result<Option<String>, Error> {
    let Some(schema) = info.get("schema_model").and_then(Value::as_str) else { return Ok(None) };
    let found = rpc
        .call(
            &format!("model.{schema}.search_read"),
            vec![json!([["name", "=", key]]), json!(0), json!(1), Value::Null, json!(["type_"])],
        )
        .await?;
    Ok(found.get(0).and_then(|r| r.get("type_")).and_then(Value::as_str).map(str::to_owned))
}

/// A value Tryton answered, as a custom value of `ours`; `None` when empty.
fn from_tryton(ours: FieldType, raw: &Value) -> Option<CustomValue> {
    let value = match ours {
        FieldType::String => Typed::StringValue(raw.as_str().filter(|s| !s.is_empty())?.to_owned()),
        FieldType::Integer => Typed::IntegerValue(raw.as_i64()?),
        FieldType::Decimal => Typed::DecimalValue(as_decimal(raw)?.normalize().to_string()),
        FieldType::Boolean => Typed::BooleanValue(raw.as_bool()?),
        FieldType::Date => {
            let part = |k: &str| raw.get(k).and_then(Value::as_i64);
            Typed::DateValue(format!("{:04}-{:02}-{:02}", part("year")?, part("month")?, part("day")?))
        }
    };
    Some(CustomValue { value: Some(value) })
}

/// A custom value as Tryton's JSON-RPC takes it for a field of `tryton_type`.
fn to_tryton(tryton_type: &str, value: &CustomValue) -> Value {
    match &value.value {
        Some(Typed::StringValue(s)) => json!(s),
        Some(Typed::IntegerValue(i)) => json!(i),
        Some(Typed::BooleanValue(b)) => json!(b),
        Some(Typed::DecimalValue(d)) => {
            let d = d.parse().unwrap_or_default();
            if tryton_type == "float" { json!(rust_decimal::prelude::ToPrimitive::to_f64(&d)) } else { decimal(d) }
        }
        Some(Typed::DateValue(d)) => {
            let mut parts = d.split('-').map(|p| p.parse::<u32>().unwrap_or(1));
            let (y, m, day) = (parts.next().unwrap_or(1), parts.next().unwrap_or(1), parts.next().unwrap_or(1));
            rpc::date(i32::try_from(y).unwrap_or(1), m, day)
        }
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_trytons_json() {
        let cases = [
            (FieldType::String, "char", Typed::StringValue("gate 4".into())),
            (FieldType::Integer, "integer", Typed::IntegerValue(-7)),
            (FieldType::Decimal, "numeric", Typed::DecimalValue("12.5".into())),
            (FieldType::Decimal, "float", Typed::DecimalValue("0.25".into())),
            (FieldType::Boolean, "boolean", Typed::BooleanValue(false)),
            (FieldType::Date, "date", Typed::DateValue("2026-02-28".into())),
        ];
        for (ours, tryton, value) in cases {
            let value = CustomValue { value: Some(value) };
            assert!(compatible(ours, tryton));
            assert_eq!(from_tryton(ours, &to_tryton(tryton, &value)), Some(value), "{tryton}");
        }
        // Tryton's empty values are no value.
        assert_eq!(from_tryton(FieldType::String, &Value::Null), None);
        assert_eq!(from_tryton(FieldType::String, &json!(false)), None);
        assert!(!compatible(FieldType::Integer, "char"));
        assert!(!compatible(FieldType::Date, "datetime"));
    }

    #[test]
    fn a_dict_key_is_written_inside_its_field() {
        let mapping = Mapping {
            mapped: vec![Mapped {
                entity: Entity::Product,
                name: "hs_code".into(),
                field: "attributes".into(),
                key: Some("hs_code".into()),
                field_type: FieldType::String,
                tryton_type: "char".into(),
            }],
        };
        let mut record = Map::new();
        let values =
            HashMap::from([("hs_code".to_owned(), CustomValue { value: Some(Typed::StringValue("8471".into())) })]);
        mapping.write(Entity::Product, &values, &mut record);
        assert_eq!(Value::Object(record.clone()), json!({"attributes": {"hs_code": "8471"}}));
        assert_eq!(mapping.read(Entity::Product, &Value::Object(record)), values);
        assert_eq!(mapping.fields(Entity::Product), ["attributes"]);
    }
}
