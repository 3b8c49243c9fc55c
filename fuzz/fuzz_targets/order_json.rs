//! Fuzzes the body of `POST /{web,partner}/v1/orders` on the path the
//! handlers take before anything leaves the experience tier:
//! `experience_apis::body::parse` (the deserializer behind `JsonBody`, with
//! its own error wording) into `experience_apis::orders::OrderRequest`,
//! then `OrderRequest::into_place_order`, which types the custom fields
//! against the deployment's definitions (one writable field of each type
//! on orders and lines, and a read-only one).
//!
//! Beyond "never panics": a refused body is a 400 naming at most one field;
//! a refused conversion is a 422 naming each field; an accepted one keeps
//! the lines, and every custom value in it passes its type's own check and
//! turns back into the JSON it came from (`custom_fields::to_json` is the
//! inverse of `from_json`).
#![no_main]

use std::sync::LazyLock;

use erp_connect_proto::{
    custom_fields::{Definition, Definitions, Entity, FieldType, to_json},
    erp::v1::CustomValue,
    order_to_cash::v1::CustomerRef,
};
use experience_apis::{body::parse, error::Error, orders::OrderRequest};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The audience that sends the order; the definitions below are shown to it.
const AUDIENCE: &str = "partner";

static DEFINITIONS: LazyLock<Definitions> = LazyLock::new(|| {
    let def = |entity, name: &str, field_type, writable| Definition {
        entity,
        name: name.into(),
        erp_field: name.into(),
        field_type,
        writable,
        audiences: vec![AUDIENCE.to_owned(), "ops".to_owned()],
    };
    let mut all = Vec::new();
    for entity in [Entity::SalesOrder, Entity::OrderLine] {
        all.extend([
            def(entity, "note", FieldType::String, true),
            def(entity, "count", FieldType::Integer, true),
            def(entity, "weight", FieldType::Decimal, true),
            def(entity, "gift", FieldType::Boolean, true),
            def(entity, "ship_by", FieldType::Date, true),
            def(entity, "erp_score", FieldType::Integer, false),
        ]);
    }
    Definitions::new(all).expect("valid definitions")
});

/// Each value a conversion accepted is valid for its field and reads back
/// as the JSON it was given.
fn check_typed(
    entity: Entity,
    given: Option<&Map<String, Value>>,
    typed: &std::collections::HashMap<String, CustomValue>,
) {
    let empty = Map::new();
    let given = given.unwrap_or(&empty);
    for (name, value) in typed {
        let def = DEFINITIONS.get(entity, name).expect("only defined fields are typed");
        assert!(def.writable, "{name} is read-only but was accepted");
        def.field_type.check(value).expect("a typed value passes its type's check");
        assert_eq!(Some(&to_json(value)), given.get(name), "{name} does not read back as given");
    }
    // Nulls are dropped, everything else is kept.
    let kept = given.values().filter(|v| !v.is_null()).count();
    assert_eq!(kept, typed.len(), "every non-null custom field is typed");
}

fuzz_target!(|data: &[u8]| {
    let request = match parse::<OrderRequest>(data) {
        Ok(request) => request,
        Err(Error::MalformedBody { detail, errors }) => {
            assert!(!detail.is_empty());
            assert!(errors.len() <= 1, "a malformed body names at most one field: {errors:?}");
            return;
        }
        Err(other) => panic!("parse gave {other:?}, not a malformed body"),
    };
    let customer = CustomerRef { external_id: "partner:acme".into(), email: String::new(), name: "acme".into() };
    match request.clone().into_place_order("partner:acme/k1".into(), "acme", customer, &DEFINITIONS, AUDIENCE) {
        Ok(call) => {
            assert_eq!(call.lines.len(), request.lines.len());
            check_typed(Entity::SalesOrder, request.custom_fields.as_ref(), &call.custom_fields);
            for (line, asked) in call.lines.iter().zip(&request.lines) {
                assert_eq!((&line.sku, line.quantity), (&asked.sku, asked.quantity));
                check_typed(Entity::OrderLine, asked.custom_fields.as_ref(), &line.custom_fields);
            }
        }
        Err(Error::InvalidInput(errors)) => assert!(!errors.is_empty(), "a 422 names its fields"),
        Err(other) => panic!("into_place_order gave {other:?}, not invalid input"),
    }
});
