//! JWTs for the benchmark ladder (`bench/ladder.sh`), signed with ES256 and
//! RS256 keys made by `openssl genpkey`: writes each key's JWKS (for the
//! gateway's `[[gateway.issuers]]`) and prints one token per algorithm.
//!
//!   bench_tokens DIR   (reads DIR/es256.pem and DIR/rs256.pem, PKCS#8)
//!
//! Prints `ES256 <token>` and `RS256 <token>` lines; writes
//! DIR/jwks-es256.json and DIR/jwks-rs256.json.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};

/// The issuer bench/ladder.sh configures.
const ISSUER: &str = "https://idp.bench.invalid/";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: bench_tokens DIR")?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    for (alg, name) in [(Algorithm::ES256, "es256"), (Algorithm::RS256, "rs256")] {
        let pem = std::fs::read(dir.join(format!("{name}.pem")))?;
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem)?,
            _ => EncodingKey::from_rsa_pem(&pem)?,
        };
        let mut jwk = Jwk::from_encoding_key(&key, alg)?;
        jwk.common.key_id = Some(format!("bench-{name}"));
        std::fs::write(dir.join(format!("jwks-{name}.json")), serde_json::json!({ "keys": [jwk] }).to_string())?;
        let mut header = Header::new(alg);
        header.kid = Some(format!("bench-{name}"));
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": "bench",
            "aud": "erp-connect",
            "exp": now + 86_400,
            "iat": now,
            "scope": "orders:read catalog:read",
            "tenant": "bench",
        });
        println!("{} {}", alg_name(alg), jsonwebtoken::encode(&header, &claims, &key)?);
    }
    Ok(())
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        _ => "RS256",
    }
}
