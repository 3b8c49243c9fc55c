//! `erp-connect token`: a dev JWT from the dev identity provider of a data
//! directory. Dev mode only: it refuses a production configuration.

use std::time::Duration;

use gateway::dev_idp::{DevIdp, TokenRequest};

use crate::{
    StartError,
    config::{self, Config, Mode},
};

/// Longest lifetime of a dev token.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Mints a token for `request` with the dev identity provider of `config`.
pub fn mint(config: &Config, request: &TokenRequest) -> Result<String, StartError> {
    if config.mode == Mode::Production {
        return Err(config::Error::Invalid {
            key: "mode",
            reason: "`token` mints dev tokens and refuses to run against a production config".into(),
        }
        .into());
    }
    if request.ttl.is_zero() || request.ttl > MAX_TTL {
        return Err(config::Error::Invalid { key: "--ttl", reason: "must be between 1s and 30days".into() }.into());
    }
    let idp = DevIdp::load_or_create(&config.data_dir)?;
    Ok(idp.mint(request)?)
}
