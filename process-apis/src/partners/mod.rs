//! Partners as configured: each partner tenant's mapping of its records to
//! ours (`[partners.<tenant>]`) and the validation rules its orders must
//! meet (`[rules]` for everyone, `[partners.<tenant>.rules]` over them).
//! Compiled once at start ([`Partners::compile`]): a mapping or rule that
//! cannot work stops the process with a message naming its key.
//!
//! # Layout
//! - [`mapping`]: partner SKUs, units, number and date formats, field names.
//! - [`records`]: records as files bring them (CSV, JSON lines), streamed.
//! - [`rules`]: the rules beyond the schema and their violations.
//! - [`transform`]: a partner's jq program, run on each file record first.

use std::{collections::BTreeMap, path::Path};

pub mod mapping;
pub mod records;
pub mod rules;
pub mod transform;

use mapping::{Mapping, PartnerConfig};
use rules::{Rules, RulesConfig};

/// Every partner's mapping and rules.
#[derive(Debug, Clone, Default)]
pub struct Partners {
    partners: BTreeMap<String, (Mapping, Rules)>,
    global: Rules,
    /// For tenants without a mapping: ours as they are.
    identity: Mapping,
}

impl Partners {
    /// Compiles `partners` and the `global` rules; files are read relative
    /// to `base` (the config file's folder). The error names the key.
    pub fn compile(
        partners: &BTreeMap<String, PartnerConfig>,
        global: &RulesConfig,
        base: &Path,
    ) -> Result<Self, String> {
        let mut compiled = BTreeMap::new();
        for (tenant, config) in partners {
            let at = format!("partners.{tenant}");
            let mapping = Mapping::compile(config, base, &at)?;
            let rules = Rules::compile(global, &config.rules, &format!("{at}.rules"))?;
            compiled.insert(tenant.clone(), (mapping, rules));
        }
        let global = Rules::compile(global, &RulesConfig::default(), "rules")?;
        Ok(Self { partners: compiled, global, identity: Mapping::default() })
    }

    /// The mapping of `tenant`, if it has one.
    pub fn mapping(&self, tenant: &str) -> Option<&Mapping> {
        self.partners.get(tenant).map(|(m, _)| m)
    }

    /// The mapping of `tenant`, or none (our names, SKUs and units as they are).
    pub fn mapping_or_identity(&self, tenant: &str) -> &Mapping {
        self.mapping(tenant).unwrap_or(&self.identity)
    }

    /// The rules `tenant`'s orders meet: its own over the global ones.
    pub fn rules(&self, tenant: &str) -> &Rules {
        self.partners.get(tenant).map_or(&self.global, |(_, r)| r)
    }
}
