//! Fuzzes the partner mapping programs (`process_apis::partners`): byte 0
//! picks what the rest is.
//! - 0: a `transform` program's text, compiled by
//!   `transform::Transform::compile` (jq through jaq, with the sandbox's
//!   checks: no `def`, no `env`/`input`/`now`, no imports). It is only
//!   compiled, never run: jaq has no step limit, and the crate's guard
//!   against a runaway program is a deadline after which the stuck thread
//!   is abandoned (`transform.rs`), which in a fuzzer would leave a thread
//!   spinning per such input. Running is fuzzed with fixed programs below.
//! - 1: a JSON-lines file read by `records::read`, each record through a
//!   partner whose fixed transform reshapes it (German field names,
//!   `tonumber`, a country lookup that may `error`), then its mapping, as
//!   an import does.
//! - 2: a CSV file, each record through a partner's mapping without a
//!   transform: SKU cross-reference, units (`BOX10 = 10`), decimal commas,
//!   renamed fields, its date format.
//! - 3: a JSON-lines file through that same mapping.
//!
//! Beyond "never panics": the fixed transform always finishes well within
//! its deadline, and a mapped record has a SKU, a whole quantity of at
//! least 1 and a payment of `on_account` or `card:<token>`.
#![no_main]

use std::{collections::BTreeMap, io::Cursor, path::Path, sync::LazyLock};

use libfuzzer_sys::fuzz_target;
use process_apis::partners::{
    mapping::{Mapping, PartnerConfig},
    records::{Format, read},
    transform::Transform,
};
use serde_json::json;

fn compile(config: serde_json::Value) -> Mapping {
    let config: PartnerConfig = serde_json::from_value(config).expect("partner config");
    Mapping::compile(&config, Path::new("."), "partners.fuzz").expect("valid mapping")
}

/// A partner with a transform, as in tests/order_batches.rs and the
/// transform's unit tests.
static GLOBEX: LazyLock<Mapping> = LazyLock::new(|| {
    compile(json!({
        "sku_xref": {"G-1": "WIDGET-1", "G-2": "GADGET-2"},
        "units": {"BOX10": 10},
        "transform": r#"{external_ref: .Bestellung, sku: (.Artikel | ascii_upcase), quantity: (.Menge | tonumber * 2),
            unit: .Einheit, payment: .Zahlung, ship_to_street: .Strasse, ship_to_city: .Ort, ship_to_postal_code: .PLZ,
            ship_to_country: (if .Land == null then null
                else ({Deutschland: "DE", Frankreich: "FR"}[.Land] // error("no country " + .Land)) end)}"#,
    }))
});

/// A partner without one, as in tests/order_batches.rs and mapping.rs' tests.
static ACME: LazyLock<Mapping> = LazyLock::new(|| {
    compile(json!({
        "sku_xref": {"ACME-0042": "WIDGET-1", "ACME-0077": "GADGET-2"},
        "units": {"BOX10": 10, "PALLET": 1200},
        "decimal_separator": ",",
        "date_format": "%d.%m.%Y",
        "field_names": {"Menge": "quantity", "Artikel": "sku"},
    }))
});

fn check_mapped(mapping: &Mapping, record: &BTreeMap<String, String>) {
    if let Ok(mapped) = mapping.map(record) {
        assert!(!mapped.sku.is_empty(), "a mapped record has a SKU");
        assert!(mapped.quantity >= 1, "a mapped quantity is at least 1: {mapped:?}");
        assert!(
            mapped.payment == "on_account" || (mapped.payment.starts_with("card:") && mapped.payment.len() > 5),
            "payment {:?}",
            mapped.payment
        );
    }
    // Dates are read by the partner's format wherever a field holds one.
    for text in record.values() {
        if let Some(date) = mapping.date(text) {
            assert_eq!(date.len(), 10, "{text:?} became {date:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 4 {
        0 => {
            let Ok(code) = std::str::from_utf8(rest) else { return };
            let _ = Transform::compile(code);
        }
        1 => {
            for record in read(Cursor::new(rest.to_vec()), Format::JsonLines) {
                let Ok(record) = record else { continue };
                match GLOBEX.transform(&record) {
                    Ok(reshaped) => check_mapped(&GLOBEX, &reshaped),
                    // The deadline's own messages, told from a program's
                    // error (`failed: ...`), which may quote any input.
                    Err(e) => assert!(
                        !e.message.starts_with("the transform did not finish")
                            && !e.message.starts_with("the transform is off"),
                        "the fixed transform ran over its deadline: {}",
                        e.message
                    ),
                }
            }
        }
        n => {
            let format = if n == 2 { Format::Csv } else { Format::JsonLines };
            for record in read(Cursor::new(rest.to_vec()), format).flatten() {
                check_mapped(&ACME, &record);
            }
        }
    }
});
