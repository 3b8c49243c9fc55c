//! `erp-connect mapping test --partner ID FILE`: what a partner's mapping
//! and rules make of a sample file, record by record, as JSON lines on
//! stdout: `{"row", "status": "mapped" | "rejected", "record"?, "errors"}`.
//! A partner's transform runs first, as in an import. The order value rule
//! needs prices and is not checked here.

use std::path::Path;

use process_apis::partners::{
    mapping::FieldError,
    records::{self, Format},
    rules::OrderFacts,
};
use serde_json::json;

use crate::{StartError, config::Config};

/// Prints each record's result; returns how many were rejected.
pub fn test(config: &Config, partner: &str, file: &Path) -> Result<usize, StartError> {
    let partners = config.partners()?;
    let Some(mapping) = partners.mapping(partner) else {
        let known = config.partners.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(crate::config::Error::Invalid {
            key: "partners",
            reason: format!("no [partners.{partner}] in the configuration (configured: {known})"),
        }
        .into());
    };
    let rules = partners.rules(partner);
    let input = std::fs::File::open(file)
        .map_err(|e| StartError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", file.display()))))?;
    let mut rejected = 0;
    for (n, record) in records::read(input, Format::of_file(file)).enumerate() {
        let row = n + 1;
        let result = match record {
            Err(why) => Err(vec![FieldError { field: String::new(), rule: None, message: why }]),
            Ok(record) => mapping
                .transform(&record)
                .map_err(|e| vec![e])
                .and_then(|record| mapping.map(&record))
                .and_then(|mapped| {
                    let facts = OrderFacts {
                        external_ref: &mapped.external_ref,
                        quantities: vec![mapped.quantity],
                        ship_to: (!mapped.ship_to_country.is_empty())
                            .then_some((mapped.ship_to_country.as_str(), mapped.ship_to_postal_code.as_str())),
                    };
                    let broken: Vec<FieldError> = rules
                        .check(&facts)
                        .into_iter()
                        .map(|v| FieldError { field: record_field(&v.field), rule: Some(v.rule), message: v.message })
                        .collect();
                    if broken.is_empty() { Ok(mapped) } else { Err(broken) }
                }),
        };
        let line = match result {
            Ok(mapped) => json!({"row": row, "status": "mapped", "record": mapped, "errors": []}),
            Err(errors) => {
                rejected += 1;
                json!({"row": row, "status": "rejected", "errors": errors})
            }
        };
        println!("{line}");
    }
    Ok(rejected)
}

/// A rule's field in an order as the record's field.
fn record_field(order_field: &str) -> String {
    match order_field {
        "lines[0].quantity" => "quantity".into(),
        other => other.replace('.', "_"),
    }
}
