//! Tryton's JSON values as serde types, so that the records the connector
//! reads decode into typed structs (declared next to the code that reads
//! them, one per model and field list) and a record that does not have the
//! expected shape fails loudly, naming its model, instead of reading as
//! zeros and empty strings.
//!
//! What Tryton sends, field type by field type: `Numeric` as a tagged
//! object `{"__class__": "Decimal", "decimal": "12.50"}` ([`Amount`]);
//! `DateTime` as `{"__class__": "datetime", "year": ..., "microsecond": ...}`
//! ([`Stamp`]); `Boolean` as `true`/`false`, or `1`/`0` from SQLite
//! ([`flag`]); `Float` quantities as JSON numbers ([`units`]); `Char` as a
//! string, or `null` when empty (`Option<String>`); `Many2One` as the id or
//! `null` (`Option<i64>`); `One2Many`/`Many2Many` as a list of ids
//! (`Vec<i64>`); `Reference` as `"model,id"` or `null`. A dotted field in
//! the read list (`"product.code"`) comes back as a nested object under the
//! relation's name and a dot (`"product.": {"id": 7, "code": "WIDGET-1"}`),
//! or `null` when the relation is empty.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, de::DeserializeOwned, de::Error as _};
use serde_json::Value;

use super::rpc;

/// A record (or a reply) from Tryton that does not have the shape the
/// connector reads: Tryton changed, or the connector asks for the wrong
/// fields. Not retryable.
#[derive(Debug, thiserror::Error)]
#[error("a {model} record from Tryton does not decode: {source}")]
pub struct Undecodable {
    /// The Tryton model (or RPC method) the value came from.
    pub model: String,
    /// What did not fit.
    #[source]
    pub source: serde_json::Error,
}

/// Decodes `value`, read from `model`, into `T`. The raw value stays with
/// the caller, for the custom fields read from the same record.
pub fn decode<T: DeserializeOwned>(model: &str, value: &Value) -> Result<T, Undecodable> {
    T::deserialize(value).map_err(|source| {
        // The caller only sees "ERP backend failed"; the log says why.
        tracing::warn!(model, error = %source, "a Tryton record does not decode");
        Undecodable { model: model.to_owned(), source }
    })
}

/// A Tryton `Numeric` (a tagged Decimal; a plain number or string is read
/// too, as Tryton's own client does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        rpc::as_decimal(&value).map(Amount).ok_or_else(|| D::Error::custom(format!("not a Decimal: {value}")))
    }
}

/// A Tryton `DateTime`, as the RFC 3339 text [`rpc::as_datetime`] writes
/// (microseconds, `Z`), which sorts like the instants it names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(pub String);

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        rpc::as_datetime(&value).map(Stamp).ok_or_else(|| D::Error::custom(format!("not a datetime: {value}")))
    }
}

impl Stamp {
    /// The instant as a protobuf timestamp.
    pub fn timestamp(&self) -> Option<prost_types::Timestamp> {
        humantime::parse_rfc3339(&self.0).ok().map(prost_types::Timestamp::from)
    }
}

/// A `Float` quantity of whole units (stock of whole units is exact in a
/// float), rounded to the unit.
pub fn units<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let quantity = f64::deserialize(deserializer)?;
    Ok(quantity.round() as i64)
}

/// A `Boolean`: `true`/`false`, or `1`/`0` as Tryton on SQLite returns
/// some stored booleans (`product.product.active`, for one).
pub fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Bool(b) => Ok(b),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        other => Err(D::Error::custom(format!("not a Boolean: {other}"))),
    }
}

/// The `code` of a related record read as `"<relation>.code"`.
#[derive(Debug, Deserialize)]
pub struct Code {
    /// The code; `null` when the related record has none.
    pub code: Option<String>,
}

/// The id of a record, for reads and searches that ask for nothing else.
#[derive(Debug, Deserialize)]
pub struct Id {
    /// The record's id.
    pub id: i64,
}

/// The `state` of a record with a workflow (sales, invoices, shipments).
#[derive(Debug, Deserialize)]
pub struct State {
    /// The record's id.
    pub id: i64,
    /// The workflow state, e.g. `draft`.
    pub state: String,
}

/// A `Reference` field's target, when it points at a record of `model`.
pub fn reference_to(reference: Option<&str>, model: &str) -> Option<i64> {
    reference?.strip_prefix(model)?.strip_prefix(',')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Line {
        id: i64,
        #[serde(deserialize_with = "units")]
        quantity: i64,
        unit_price: Amount,
        note: Option<String>,
        sale: Option<i64>,
        origin: Option<String>,
        #[serde(rename = "product.")]
        product: Option<Code>,
        write_date: Option<Stamp>,
        #[serde(deserialize_with = "flag")]
        active: bool,
    }

    #[test]
    fn trytons_json_decodes_into_typed_records() {
        let line: Line = decode(
            "sale.line",
            &json!({"id": 3, "quantity": 2.0, "unit_price": {"__class__": "Decimal", "decimal": "12.50"},
                "note": null, "sale": 9, "origin": "sale.line,12", "product.": {"id": 7, "code": "WIDGET-1"},
                "write_date": {"__class__": "datetime", "year": 2026, "month": 11, "day": 28,
                    "hour": 9, "minute": 5, "second": 7, "microsecond": 42}, "active": 1}),
        )
        .expect("decodes");
        assert_eq!((line.id, line.quantity, line.unit_price), (3, 2, Amount(Decimal::new(1250, 2))));
        assert_eq!((line.note, line.sale), (None, Some(9)));
        assert_eq!(reference_to(line.origin.as_deref(), "sale.line"), Some(12));
        assert_eq!(reference_to(line.origin.as_deref(), "sale"), None);
        assert_eq!(line.product.and_then(|p| p.code).as_deref(), Some("WIDGET-1"));
        assert_eq!(line.write_date.map(|s| s.0).as_deref(), Some("2026-11-28T09:05:07.000042Z"));
        assert!(line.active);
    }

    #[test]
    fn a_record_of_another_shape_is_refused_naming_its_model() {
        let missing = decode::<Line>("sale.line", &json!({"id": 3, "quantity": 1.0}));
        let err = missing.expect_err("no unit_price");
        assert!(err.to_string().contains("sale.line"), "{err}");
        let not_decimal = json!({"id": 3, "quantity": 1.0, "unit_price": {"__class__": "date"}, "active": true});
        assert!(decode::<Line>("sale.line", &not_decimal).is_err());
        let not_boolean = json!({"id": 3, "quantity": 1.0, "unit_price": "1", "active": 2});
        assert!(decode::<Line>("sale.line", &not_boolean).is_err());
        assert!(decode::<Vec<i64>>("sale.sale.create", &json!(null)).is_err());
    }
}
