//! Fuzzes `gateway::auth::Authenticator::verify`, the bearer-token check
//! of every request, with an authenticator that trusts the dev identity
//! provider (`gateway::dev_idp::DevIdp`) of a fixed key, as `up` does.
//!
//! A random token never gets past the signature, so most inputs are
//! signed here with the trusted key first, which takes the fuzzer into the
//! code that only runs on tokens an identity provider really issued:
//! - byte 0 % 4 == 0: the rest is the whole token text (header, claims and
//!   signature as a client sends them);
//! - 1: the rest is the claims segment (arbitrary bytes, base64url-encoded
//!   here), under a well-formed header, signed;
//! - 2: the rest is the header segment, over well-formed claims, signed;
//! - 3: the rest is a JSON object of claims; `iss`, `aud`, `sub` and `exp`
//!   are filled in when it lacks them, so the other claims (`scope`,
//!   `scp`, `tenant`, `email`, `nbf`, types) get explored past the required
//!   ones; signed.
//!
//! Beyond "never panics": a token that verifies names in its principal
//! the `sub`, `tenant` and `email` its signed claims hold, its `exp` has not
//! passed, and its header names the EdDSA key this authenticator trusts.
#![no_main]

use std::{
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ed25519_dalek::{Signer, SigningKey};
use gateway::{
    auth::Authenticator,
    dev_idp::{DEFAULT_AUDIENCE, DevIdp, ISSUER},
};
use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::{Value, json};

/// The dev identity provider's key seed: fixed, so that the committed
/// corpus holds tokens this authenticator trusts.
const SEED: [u8; 32] = *b"erp-connect fuzz dev-idp seed 01";

/// Far in the future (2100-01-01), so the committed tokens stay valid.
const FAR_EXP: u64 = 4_102_444_800;

struct Setup {
    auth: Authenticator,
    kid: String,
    key: SigningKey,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    // DevIdp keeps its key in a data directory, base64 in
    // `dev-idp/ed25519.key`; a directory of our own with the fixed seed
    // makes it load that key rather than a random one.
    let dir = std::env::temp_dir().join(format!("erp-connect-fuzz-jwt-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("dev-idp")).expect("temp dir");
    std::fs::write(dir.join("dev-idp").join("ed25519.key"), STANDARD.encode(SEED)).expect("key file");
    let idp = DevIdp::load_or_create(&dir).expect("dev idp");
    let _ = std::fs::remove_dir_all(&dir);
    let jwks = idp.jwks();
    let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_owned();
    let set: JwkSet = serde_json::from_value(jwks).expect("jwks");
    // As `up` builds it: the dev issuer, its audience, 30 s of leeway.
    let auth =
        Authenticator::new(&[(ISSUER.to_owned(), vec![DEFAULT_AUDIENCE.to_owned()], set)], 30).expect("authenticator");
    Setup { auth, kid, key: SigningKey::from_bytes(&SEED) }
});

/// `header.claims.signature` with both segments as given (already encoded).
fn signed(setup: &Setup, header: &str, claims: &str) -> String {
    let message = format!("{header}.{claims}");
    let signature = setup.key.sign(message.as_bytes()).to_bytes();
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn good_header(setup: &Setup) -> String {
    URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": setup.kid}).to_string())
}

/// The claims compared with the principal.
#[derive(Deserialize)]
struct Named {
    sub: String,
    exp: u64,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    iss: Option<Issuer>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Issuer {
    One(String),
    Many(Vec<String>),
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let setup = &*SETUP;
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => signed(setup, &good_header(setup), &URL_SAFE_NO_PAD.encode(rest)),
        2 => {
            let claims = json!({"iss": ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "alice", "exp": FAR_EXP});
            signed(setup, &URL_SAFE_NO_PAD.encode(rest), &URL_SAFE_NO_PAD.encode(claims.to_string()))
        }
        _ => {
            let Ok(Value::Object(mut claims)) = serde_json::from_slice::<Value>(rest) else { return };
            for (name, value) in [
                ("iss", json!(ISSUER)),
                ("aud", json!(DEFAULT_AUDIENCE)),
                ("sub", json!("alice")),
                ("exp", json!(FAR_EXP)),
            ] {
                claims.entry(name).or_insert(value);
            }
            signed(setup, &good_header(setup), &URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string()))
        }
    };
    let Ok(principal) = setup.auth.verify(&token) else { return };

    // What verified: the header must name our key and algorithm.
    let header = jsonwebtoken::decode_header(&token).expect("a verified token has a header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(setup.kid.as_str()));
    // And the principal must be what the signed claims say, read here
    // as the gateway reads them: into a struct, so claims it ignores are
    // skipped just as leniently (serde_json checks neither the UTF-8 of a
    // skipped string nor the range of a skipped number; only an issuer's
    // key can make such a token, so that is no hole).
    let payload = token.split('.').nth(1).expect("claims segment");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url claims");
    let claims: Named = serde_json::from_slice(&bytes).expect("verified claims read as the gateway reads them");
    assert_eq!(claims.sub, principal.subject, "sub");
    assert_eq!(claims.tenant, principal.tenant, "tenant");
    assert_eq!(claims.email, principal.email, "email");
    // jsonwebtoken also takes an array of issuers that includes ours.
    match &claims.iss {
        Some(Issuer::One(iss)) => assert_eq!(iss, ISSUER),
        Some(Issuer::Many(all)) => assert!(all.iter().any(|i| i == ISSUER), "iss {all:?}"),
        None => panic!("a verified token has an iss"),
    }
    assert!(claims.exp.saturating_add(60) >= now(), "exp {} has passed beyond any leeway", claims.exp);
});
