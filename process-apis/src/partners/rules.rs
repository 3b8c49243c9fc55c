//! Validation rules beyond the schema (`[rules]` for every partner,
//! `[partners.<tenant>.rules]` for one): what an order must satisfy to be
//! accepted. A violation names the rule and the field, so a partner (or an
//! operator reading the quarantine) knows what to change.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Deserialize;

/// Rules as configured; a partner's rules override the global ones field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Most units of one line (in our units, after unit conversion).
    pub max_quantity_per_line: Option<i64>,
    /// ISO 3166-1 alpha-2 countries an order may ship to.
    pub allowed_countries: Option<Vec<String>>,
    /// Most an order may be worth, a decimal string in the order's currency.
    pub max_order_value: Option<String>,
    /// Fields an order must have: `external_ref`, `ship_to`, `ship_to.postal_code`.
    pub required_fields: Option<Vec<String>>,
    /// Postal-code format per country, a regular expression, e.g. `{ DE = "^[0-9]{5}$" }`.
    pub postal_codes: Option<BTreeMap<String, String>>,
}

/// Every rule's name, as violations carry it.
pub const RULES: &[&str] =
    &["max_quantity_per_line", "allowed_countries", "max_order_value", "required_fields", "postal_codes"];

/// Fields `required_fields` may name.
const REQUIRABLE: &[&str] = &["external_ref", "ship_to", "ship_to.postal_code"];

/// Rules ready to check.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    max_quantity_per_line: Option<i64>,
    allowed_countries: Option<Vec<String>>,
    max_order_value: Option<Decimal>,
    required_fields: Vec<String>,
    postal_codes: Vec<(String, regex::Regex)>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule's name, e.g. `max_quantity_per_line`.
    pub rule: &'static str,
    /// The field, e.g. `lines[0].quantity`.
    pub field: String,
    /// For the partner.
    pub message: String,
}

/// What the rules look at in an order.
#[derive(Debug, Clone, Default)]
pub struct OrderFacts<'a> {
    /// The partner's reference.
    pub external_ref: &'a str,
    /// Each line's quantity, in our units.
    pub quantities: Vec<i64>,
    /// Ship-to country and postal code, when the order ships somewhere.
    pub ship_to: Option<(&'a str, &'a str)>,
}

impl Rules {
    /// `partner` over `global`, checked: a bad value names its key under `at`.
    pub fn compile(global: &RulesConfig, partner: &RulesConfig, at: &str) -> Result<Self, String> {
        let max_order_value = match partner.max_order_value.as_ref().or(global.max_order_value.as_ref()) {
            None => None,
            Some(text) => Some(
                erp_connect_proto::money::parse(text)
                    .map_err(|_| format!("{at}.max_order_value: {text:?} is not a decimal amount like \"10000.00\""))?,
            ),
        };
        let required_fields =
            partner.required_fields.clone().or_else(|| global.required_fields.clone()).unwrap_or_default();
        if let Some(bad) = required_fields.iter().find(|f| !REQUIRABLE.contains(&f.as_str())) {
            return Err(format!("{at}.required_fields: {bad:?} is not one of {REQUIRABLE:?}"));
        }
        let allowed_countries = partner.allowed_countries.clone().or_else(|| global.allowed_countries.clone());
        if let Some(bad) = allowed_countries.iter().flatten().find(|c| !is_country(c)) {
            return Err(format!("{at}.allowed_countries: {bad:?} is not an ISO 3166-1 alpha-2 code like \"DE\""));
        }
        let mut postal_codes = Vec::new();
        for (country, pattern) in partner.postal_codes.as_ref().or(global.postal_codes.as_ref()).into_iter().flatten() {
            let regex = regex::Regex::new(pattern)
                .map_err(|e| format!("{at}.postal_codes.{country}: not a regular expression: {e}"))?;
            postal_codes.push((country.clone(), regex));
        }
        let max_quantity_per_line = partner.max_quantity_per_line.or(global.max_quantity_per_line);
        if max_quantity_per_line.is_some_and(|n| n < 1) {
            return Err(format!("{at}.max_quantity_per_line: must be at least 1"));
        }
        Ok(Self { max_quantity_per_line, allowed_countries, max_order_value, required_fields, postal_codes })
    }

    /// Every rule `order` breaks, before pricing.
    pub fn check(&self, order: &OrderFacts<'_>) -> Vec<Violation> {
        let mut broken = Vec::new();
        for field in &self.required_fields {
            let missing = match field.as_str() {
                "external_ref" => order.external_ref.trim().is_empty(),
                "ship_to" => order.ship_to.is_none(),
                _ => order.ship_to.is_none_or(|(_, postal)| postal.trim().is_empty()),
            };
            if missing {
                broken.push(Violation { rule: "required_fields", field: field.clone(), message: "is required".into() });
            }
        }
        if let Some(max) = self.max_quantity_per_line {
            for (i, quantity) in order.quantities.iter().enumerate() {
                if *quantity > max {
                    broken.push(Violation {
                        rule: "max_quantity_per_line",
                        field: format!("lines[{i}].quantity"),
                        message: format!("at most {max} per line"),
                    });
                }
            }
        }
        if let Some((country, postal)) = order.ship_to {
            if let Some(allowed) = &self.allowed_countries
                && !allowed.iter().any(|c| c == country)
            {
                broken.push(Violation {
                    rule: "allowed_countries",
                    field: "ship_to.country".into(),
                    message: format!("ships only to {}", allowed.join(", ")),
                });
            }
            if let Some((_, format)) = self.postal_codes.iter().find(|(c, _)| c == country)
                && !format.is_match(postal)
            {
                broken.push(Violation {
                    rule: "postal_codes",
                    field: "ship_to.postal_code".into(),
                    message: format!("is not a postal code of {country}"),
                });
            }
        }
        broken
    }

    /// The `max_order_value` rule, once the order is priced.
    pub fn check_value(&self, total: Decimal, currency: &str) -> Option<Violation> {
        let max = self.max_order_value?;
        (total > max).then(|| Violation {
            rule: "max_order_value",
            field: "lines".into(),
            message: format!(
                "the order is worth {} {currency}, more than {} allowed",
                erp_connect_proto::money::format(total),
                erp_connect_proto::money::format(max)
            ),
        })
    }
}

fn is_country(code: &str) -> bool {
    code.len() == 2 && code.chars().all(|c| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(global: &str, partner: &str) -> Result<Rules, String> {
        let parse = |text: &str| toml_from(text);
        Rules::compile(&parse(global), &parse(partner), "partners.acme.rules")
    }

    fn toml_from(text: &str) -> RulesConfig {
        serde_json::from_str(text).expect("rules JSON")
    }

    #[test]
    fn a_partners_rules_override_the_global_ones_and_each_violation_names_rule_and_field() {
        let r = rules(
            r#"{"max_quantity_per_line": 100, "allowed_countries": ["DE"], "required_fields": ["external_ref"]}"#,
            r#"{"max_quantity_per_line": 500, "allowed_countries": ["DE", "FR", "AT"], "max_order_value": "10000.00",
                "postal_codes": {"DE": "^[0-9]{5}$"}}"#,
        )
        .expect("valid");
        let order = OrderFacts { external_ref: "", quantities: vec![2, 501], ship_to: Some(("CH", "8000")) };
        let names: Vec<(&str, String)> = r.check(&order).into_iter().map(|v| (v.rule, v.field)).collect();
        assert_eq!(
            names,
            [
                ("required_fields", "external_ref".to_owned()),
                ("max_quantity_per_line", "lines[1].quantity".to_owned()),
                ("allowed_countries", "ship_to.country".to_owned()),
            ]
        );
        let bad_postal = OrderFacts { external_ref: "PO-1", quantities: vec![1], ship_to: Some(("DE", "1011")) };
        assert_eq!(r.check(&bad_postal)[0].rule, "postal_codes");
        let fine = OrderFacts { external_ref: "PO-1", quantities: vec![500], ship_to: Some(("AT", "1010")) };
        assert!(r.check(&fine).is_empty());
        assert_eq!(r.check_value(Decimal::new(1_000_001, 2), "EUR").map(|v| v.rule), Some("max_order_value"));
        assert!(r.check_value(Decimal::new(1_000_000, 2), "EUR").is_none());
    }

    #[test]
    fn bad_rules_are_refused_naming_the_key() {
        for (partner, key) in [
            (r#"{"max_order_value": "lots"}"#, "max_order_value"),
            (r#"{"allowed_countries": ["Germany"]}"#, "allowed_countries"),
            (r#"{"required_fields": ["colour"]}"#, "required_fields"),
            (r#"{"postal_codes": {"DE": "([0-9"}}"#, "postal_codes.DE"),
            (r#"{"max_quantity_per_line": 0}"#, "max_quantity_per_line"),
        ] {
            let err = rules("{}", partner).expect_err(partner);
            assert!(err.starts_with(&format!("partners.acme.rules.{key}")), "{err}");
        }
    }
}
