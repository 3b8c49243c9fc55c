//! A partner's mapping (`[partners.<tenant>]`): how its records become
//! ours. Field renames first (its column names to ours), then its SKUs to
//! ours (`sku_xref`, or `sku_xref_file`: a `partner_sku,sku` CSV), its
//! units to ours (`units`: `BOX10 = 10` makes 2 BOX10 into 20), and its
//! number format (`decimal_separator`). A record is a row of text fields,
//! as a file or a request brings it; the result is one order line with the
//! order-level fields beside it, or every reason it could not be mapped.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::transform::Transform;

/// `[partners.<tenant>]` as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartnerConfig {
    /// Partner SKU → our SKU.
    pub sku_xref: BTreeMap<String, String>,
    /// A CSV file of more: header `partner_sku,sku`, relative to the config file's folder.
    pub sku_xref_file: Option<std::path::PathBuf>,
    /// A partner unit → how many of ours it holds, e.g. `{ BOX10 = 10 }`.
    pub units: BTreeMap<String, i64>,
    /// `.` (default) or `,`: how the partner writes decimals in files.
    pub decimal_separator: Option<String>,
    /// How the partner writes dates (strftime-like: `%d.%m.%Y`, `%Y-%m-%d`, `%m/%d/%Y`).
    pub date_format: Option<String>,
    /// The partner's field names → ours, e.g. `{ Artikel = "sku", Menge = "quantity" }`.
    pub field_names: BTreeMap<String, String>,
    /// A jq program run on each file record before everything else
    /// (see [`super::transform`]).
    pub transform: Option<String>,
    /// Validation rules for this partner over the global `[rules]`.
    pub rules: super::rules::RulesConfig,
}

/// The fields of a record (our names), as the CSV header has them.
pub const FIELDS: &[&str] = &[
    "external_ref",
    "sku",
    "quantity",
    "unit",
    "payment",
    "ship_to_street",
    "ship_to_city",
    "ship_to_postal_code",
    "ship_to_country",
];

/// A mapping ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    skus: HashMap<String, String>,
    units: HashMap<String, i64>,
    decimal_comma: bool,
    field_names: HashMap<String, String>,
    date_format: Option<String>,
    transform: Option<Arc<Transform>>,
}

/// One record mapped: a line of an order and the order's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Mapped {
    /// The partner's order reference; rows sharing it form one order.
    pub external_ref: String,
    /// Our SKU.
    pub sku: String,
    /// In our units.
    pub quantity: i64,
    /// `on_account` (default) or `card:<token>`.
    pub payment: String,
    /// Ship-to street, city, postal code, country; empty when not given.
    pub ship_to_street: String,
    /// See `ship_to_street`.
    pub ship_to_city: String,
    /// See `ship_to_street`.
    pub ship_to_postal_code: String,
    /// See `ship_to_street`.
    pub ship_to_country: String,
}

/// Why a field could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Our field name.
    pub field: String,
    /// The rule that failed, when a configured one did (`sku_xref`, `units`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// For the partner.
    pub message: String,
}

impl Mapping {
    /// Compiles `config`; files are read relative to `base`. A bad value
    /// names its key under `at` (e.g. `partners.acme`).
    pub fn compile(config: &PartnerConfig, base: &Path, at: &str) -> Result<Self, String> {
        let mut skus: HashMap<String, String> = config.sku_xref.clone().into_iter().collect();
        if let Some(file) = &config.sku_xref_file {
            let path = base.join(file);
            let mut reader =
                csv::Reader::from_path(&path).map_err(|e| format!("{at}.sku_xref_file: {}: {e}", path.display()))?;
            let headers = reader.headers().map_err(|e| format!("{at}.sku_xref_file: {}: {e}", path.display()))?;
            if headers.iter().map(str::trim).collect::<Vec<_>>() != ["partner_sku", "sku"] {
                return Err(format!("{at}.sku_xref_file: {}: the header must be partner_sku,sku", path.display()));
            }
            for (n, row) in reader.records().enumerate() {
                let row = row.map_err(|e| format!("{at}.sku_xref_file: {}: {e}", path.display()))?;
                let (Some(theirs), Some(ours)) = (row.get(0).map(str::trim), row.get(1).map(str::trim)) else {
                    return Err(format!("{at}.sku_xref_file: {}: row {} needs two fields", path.display(), n + 1));
                };
                if theirs.is_empty() || ours.is_empty() {
                    return Err(format!("{at}.sku_xref_file: {}: row {} has an empty SKU", path.display(), n + 1));
                }
                skus.insert(theirs.to_owned(), ours.to_owned());
            }
        }
        if let Some((unit, n)) = config.units.iter().find(|(_, n)| **n < 1) {
            return Err(format!("{at}.units.{unit}: {n} is not a number of our units (1 or more)"));
        }
        let decimal_comma = match config.decimal_separator.as_deref() {
            None | Some(".") => false,
            Some(",") => true,
            Some(other) => return Err(format!("{at}.decimal_separator: {other:?} is neither \".\" nor \",\"")),
        };
        if let Some(format) = &config.date_format
            && format_date(format).is_none()
        {
            return Err(format!("{at}.date_format: {format:?} needs %d, %m and %Y, separated by one character"));
        }
        if let Some((theirs, ours)) = config.field_names.iter().find(|(_, ours)| !FIELDS.contains(&ours.as_str())) {
            return Err(format!("{at}.field_names.{theirs}: {ours:?} is not one of {FIELDS:?}"));
        }
        let transform = match &config.transform {
            Some(code) => Some(Arc::new(Transform::compile(code).map_err(|e| format!("{at}.transform: {e}"))?)),
            None => None,
        };
        Ok(Self {
            transform,
            skus,
            units: config.units.clone().into_iter().collect(),
            decimal_comma,
            field_names: config.field_names.clone().into_iter().collect(),
            date_format: config.date_format.clone(),
        })
    }

    /// `record` after the partner's transform, if it has one. Blocks for
    /// up to [`super::transform::DEADLINE`]: call it off the async runtime.
    pub fn transform<'a>(
        &self,
        record: &'a BTreeMap<String, String>,
    ) -> Result<Cow<'a, BTreeMap<String, String>>, FieldError> {
        match &self.transform {
            None => Ok(Cow::Borrowed(record)),
            Some(t) => t.apply(record).map(Cow::Owned).map_err(|message| FieldError {
                field: "record".into(),
                rule: Some("transform"),
                message,
            }),
        }
    }

    /// Whether the partner has a transform (whose runs block).
    pub fn has_transform(&self) -> bool {
        self.transform.is_some()
    }

    /// Our SKU for the partner's `sku` (itself when not cross-referenced).
    pub fn sku<'a>(&'a self, sku: &'a str) -> &'a str {
        self.skus.get(sku).map_or(sku, String::as_str)
    }

    /// The partner's date `text` as ISO 8601 (`YYYY-MM-DD`), by its `date_format`.
    pub fn date(&self, text: &str) -> Option<String> {
        let format = self.date_format.as_deref().unwrap_or("%Y-%m-%d");
        parse_date(text, format).map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
    }

    /// The text of our field `ours` in `record` (in the partner's names).
    pub fn field<'a>(&self, record: &'a BTreeMap<String, String>, ours: &str) -> &'a str {
        record
            .iter()
            .find(|(k, _)| self.field_names.get(*k).map_or(k.as_str(), String::as_str) == ours)
            .map_or("", |(_, v)| v.trim())
    }

    /// Maps one record (field name → text, in the partner's names).
    pub fn map(&self, record: &BTreeMap<String, String>) -> Result<Mapped, Vec<FieldError>> {
        let fields: BTreeMap<&str, &str> = record
            .iter()
            .map(|(k, v)| (self.field_names.get(k).map_or(k.as_str(), String::as_str), v.trim()))
            .collect();
        let get = |name: &str| fields.get(name).copied().unwrap_or("");
        let mut errors = Vec::new();
        let error = |field: &str, rule: Option<&'static str>, message: String| FieldError {
            field: field.into(),
            rule,
            message,
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(k)) {
            errors.push(error(unknown, None, "is not a field of an order record".into()));
        }
        let sku = self.sku(get("sku")).to_owned();
        if sku.is_empty() {
            errors.push(error("sku", None, "is required".into()));
        }
        let per_unit = match get("unit") {
            "" => Some(1),
            unit => match self.units.get(unit) {
                Some(n) => Some(*n),
                None => {
                    errors.push(error("unit", Some("units"), format!("{unit:?} is not a unit of this partner")));
                    None
                }
            },
        };
        // Checked: a partner's quantity times its unit may pass what a
        // Decimal holds (`*` would panic) or what an i64 holds (which read
        // as 0 before); both are refused like any other bad quantity.
        let too_large = || format!("comes to more than {} of our units", i64::MAX);
        let quantity = match self.quantity(get("quantity")) {
            Ok(q) => per_unit.map(|n| q.checked_mul(rust_decimal::Decimal::from(n))),
            Err(message) => {
                errors.push(error("quantity", None, message));
                None
            }
        };
        let quantity = match quantity {
            Some(Some(q)) if q.fract().is_zero() && q >= rust_decimal::Decimal::ONE => match i64::try_from(q) {
                Ok(q) => Some(q),
                Err(_) => {
                    errors.push(error("quantity", None, too_large()));
                    None
                }
            },
            Some(Some(_)) => {
                errors.push(error("quantity", None, "must come to a whole number of units, at least 1".into()));
                None
            }
            Some(None) => {
                errors.push(error("quantity", None, too_large()));
                None
            }
            None => None,
        };
        let payment = match get("payment") {
            "" | "on_account" => "on_account".to_owned(),
            card if card.starts_with("card:") && card.len() > 5 => card.to_owned(),
            other => {
                errors.push(error("payment", None, format!("{other:?} is neither on_account nor card:<token>")));
                String::new()
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Mapped {
            external_ref: get("external_ref").to_owned(),
            sku,
            quantity: quantity.unwrap_or_default(),
            payment,
            ship_to_street: get("ship_to_street").to_owned(),
            ship_to_city: get("ship_to_city").to_owned(),
            ship_to_postal_code: get("ship_to_postal_code").to_owned(),
            ship_to_country: get("ship_to_country").to_owned(),
        })
    }

    /// A quantity as the partner writes it: `2`, `2.5`, or `2,5` with a
    /// decimal comma (where `2.500` is not a number: no thousands separators).
    fn quantity(&self, text: &str) -> Result<rust_decimal::Decimal, String> {
        if text.is_empty() {
            return Err("is required".into());
        }
        let (decimal, other) = if self.decimal_comma { (',', '.') } else { ('.', ',') };
        if text.contains(other) || !text.chars().all(|c| c.is_ascii_digit() || c == decimal) {
            let example = if self.decimal_comma { "2 or 2,5" } else { "2 or 2.5" };
            return Err(format!("{text:?} is not a number like {example}"));
        }
        text.replace(decimal, ".").parse().map_err(|_| format!("{text:?} is not a number"))
    }
}

/// `(order of y, m, d, separator)` of a `%d.%m.%Y`-like format.
fn format_date(format: &str) -> Option<([char; 3], char)> {
    let parts: Vec<&str> = format.split(|c: char| !c.is_ascii_alphanumeric() && c != '%').collect();
    let separator = format.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '%')?;
    if parts.len() != 3 || format.matches(separator).count() != 2 {
        return None;
    }
    let mut order = ['?'; 3];
    for (i, part) in parts.iter().enumerate() {
        order[i] = match *part {
            "%d" => 'd',
            "%m" => 'm',
            "%Y" => 'Y',
            _ => return None,
        };
    }
    let mut sorted = order;
    sorted.sort_unstable();
    (sorted == ['Y', 'd', 'm']).then_some((order, separator))
}

fn parse_date(text: &str, format: &str) -> Option<(i32, u32, u32)> {
    let (order, separator) = format_date(format)?;
    let parts: Vec<&str> = text.split(separator).collect();
    if parts.len() != 3 {
        return None;
    }
    let (mut y, mut m, mut d) = (0, 0, 0);
    for (kind, part) in order.iter().zip(parts) {
        match kind {
            'Y' => y = part.parse().ok().filter(|_| part.len() == 4)?,
            'm' => m = part.parse().ok()?,
            _ => d = part.parse().ok()?,
        }
    }
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days).contains(&d).then_some((y, m, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Mapping {
        let config: PartnerConfig = serde_json::from_value(serde_json::json!({
            "sku_xref": {"ACME-0042": "WIDGET-1"},
            "units": {"BOX10": 10},
            "decimal_separator": ",",
            "date_format": "%d.%m.%Y",
            "field_names": {"Menge": "quantity"},
        }))
        .expect("config");
        Mapping::compile(&config, Path::new("."), "partners.acme").expect("valid")
    }

    fn record(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn partner_skus_units_decimal_commas_and_field_names_become_ours() {
        let m = acme();
        let mapped = m
            .map(&record(&[("external_ref", "PO-1"), ("sku", "ACME-0042"), ("Menge", "2,0"), ("unit", "BOX10")]))
            .expect("maps");
        assert_eq!((mapped.sku.as_str(), mapped.quantity, mapped.payment.as_str()), ("WIDGET-1", 20, "on_account"));
        assert_eq!(m.map(&record(&[("sku", "GADGET-2"), ("quantity", "3")])).expect("ours as is").quantity, 3);
        assert_eq!(m.date("06.12.2026").as_deref(), Some("2026-12-06"));
        assert_eq!(m.date("31.02.2026"), None);
    }

    #[test]
    fn every_reason_a_record_does_not_map_is_given() {
        let m = acme();
        let errors = m
            .map(&record(&[
                ("sku", ""),
                ("quantity", "zwei"),
                ("unit", "PALLET"),
                ("payment", "cash"),
                ("colour", "red"),
            ]))
            .expect_err("bad");
        let fields: Vec<(&str, Option<&str>)> = errors.iter().map(|e| (e.field.as_str(), e.rule)).collect();
        assert_eq!(
            fields,
            [("colour", None), ("sku", None), ("unit", Some("units")), ("quantity", None), ("payment", None)]
        );
        let half = m.map(&record(&[("sku", "X"), ("quantity", "0,5")])).expect_err("half a unit");
        assert_eq!(half[0].message, "must come to a whole number of units, at least 1");
        let dot = m.map(&record(&[("sku", "X"), ("quantity", "2.5")])).expect_err("a dot where a comma is used");
        assert!(dot[0].message.contains("2 or 2,5"), "{}", dot[0].message);
    }

    #[test]
    fn a_quantity_too_large_for_our_units_is_refused_rather_than_panicking_or_reading_as_zero() {
        let m = acme();
        // Found by fuzz/fuzz_targets/mapping.rs (26 nines of a unit of
        // 1200): the largest Decimal times BOX10 passes what a Decimal
        // holds, and the multiplication panicked.
        let max_decimal = rust_decimal::Decimal::MAX.to_string();
        // Above i64::MAX yet a Decimal, as given or times BOX10: these
        // mapped to a quantity of 0.
        let over_i64 = (i128::from(i64::MAX) + 1).to_string();
        let nines = "9".repeat(26);
        for (quantity, unit) in [(max_decimal.as_str(), "BOX10"), (over_i64.as_str(), ""), (nines.as_str(), "BOX10")] {
            let errors = m.map(&record(&[("sku", "X"), ("quantity", quantity), ("unit", unit)])).expect_err(quantity);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, "quantity");
            assert!(errors[0].message.contains("more than"), "{}", errors[0].message);
        }
        assert_eq!(
            m.map(&record(&[("sku", "X"), ("quantity", &i64::MAX.to_string())])).expect("fits").quantity,
            i64::MAX
        );
    }

    #[test]
    fn a_cross_reference_file_is_read_and_a_bad_one_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("skus.csv"), "partner_sku,sku\nACME-7,GADGET-2\n").expect("file");
        std::fs::write(dir.path().join("bad.csv"), "theirs,ours\nA,B\n").expect("file");
        let with = |file: &str| PartnerConfig { sku_xref_file: Some(file.into()), ..PartnerConfig::default() };
        let m = Mapping::compile(&with("skus.csv"), dir.path(), "partners.acme").expect("valid");
        assert_eq!(m.sku("ACME-7"), "GADGET-2");
        for (file, why) in [("bad.csv", "header"), ("missing.csv", "missing.csv")] {
            let err = Mapping::compile(&with(file), dir.path(), "partners.acme").expect_err(file);
            assert!(err.starts_with("partners.acme.sku_xref_file: ") && err.contains(why), "{err}");
        }
        for (config, key) in [
            (serde_json::json!({"units": {"BOX": 0}}), "units.BOX"),
            (serde_json::json!({"decimal_separator": ";"}), "decimal_separator"),
            (serde_json::json!({"date_format": "%d%m"}), "date_format"),
            (serde_json::json!({"field_names": {"Menge": "amount"}}), "field_names.Menge"),
        ] {
            let config: PartnerConfig = serde_json::from_value(config).expect("config");
            let err = Mapping::compile(&config, dir.path(), "partners.acme").expect_err(key);
            assert!(err.starts_with(&format!("partners.acme.{key}")), "{err}");
        }
    }
}
