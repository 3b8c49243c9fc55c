//! Where partner API keys live: the gateway's own state database
//! (`<data_dir>/gateway.db`, or `gateway.database_url` for PostgreSQL),
//! and a short-lived cache in front of it for the request path.
//!
//! # Audit
//! Every change (create, revoke, rotate) appends a row to the gateway's
//! audit trail ([`platform::audit`]) in the same transaction, with the
//! actor the caller names: an operator's subject, or `cli` for the
//! command line. The trail lives here, beside the keys, because the
//! gateway owns them and the command line changes them without any tier
//! running.
//!
//! # Freshness
//! A verification result (a key's record, or "no such key") is cached for at
//! most [`CACHE_TTL`] (4 s) on the replica that looked it up, then read
//! again. A key revoked (or cut short by a rotation) on any replica thus
//! stops working on every replica within 4 s plus one query: inside the 5 s
//! the issue allows. Expiry itself is checked on every request against the
//! cached record, so it is exact. The clock is the caller's (`now` in
//! milliseconds since the epoch), so tests move it by hand; an entry stamped
//! in the future (the wall clock stepped back) counts as stale.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::keys::{self, ApiKey};
use platform::{
    audit,
    database::{self, Database, Migrations},
};
use sqlx::{Row, migrate::Migrator};

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
static MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// How long a cached verification is trusted (see the module doc).
pub const CACHE_TTL: Duration = Duration::from_secs(4);
/// Known keys cached at most: only keys the store holds get in, so a flood
/// of made-up keys cannot fill it; beyond this (a store of more keys than
/// that) it starts over.
const KNOWN_MAX: usize = 10_000;
/// "No such key" answers cached at most, apart from the known keys: a
/// flood of made-up keys starts this one over, never evicting a known key.
const UNKNOWN_MAX: usize = 10_000;

/// The built-in plans a key can carry (their limits, and plans added by
/// the configuration, are [`crate::limits`]'s business).
pub const PLANS: &[&str] = &["bronze", "silver", "gold", "unmetered"];

/// A key as stored, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    /// `key_<ulid>`: the principal's subject.
    pub id: String,
    /// The partner tenant the key acts for.
    pub partner: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// `bronze`, `silver`, `gold` or `unmetered`.
    pub plan: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None`: never.
    pub expires_at: Option<i64>,
    /// Unix seconds; `None`: live.
    pub revoked_at: Option<i64>,
    /// The key a rotation issued in its place.
    pub replaced_by: Option<String>,
}

impl KeyRecord {
    /// Whether the key may be used at `now` (unix seconds).
    pub fn usable_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// What a new key carries.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The partner tenant.
    pub partner: String,
    /// Granted scopes (at least one).
    pub scopes: Vec<String>,
    /// One of [`PLANS`], or of the configured plans.
    pub plan: String,
    /// Unix seconds; `None`: never.
    pub expires_at: Option<i64>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error(transparent)]
    Open(#[from] database::Error),
    /// A query failed.
    #[error("key store query failed")]
    Query(#[from] sqlx::Error),
    /// The audit trail could not be written or read.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// No key with this id.
    #[error("no API key with this id")]
    NotFound,
    /// The key is already revoked (or rotated away).
    #[error("the API key is revoked")]
    Revoked,
    /// Bad input: empty partner or scopes, unknown plan.
    #[error("{0}")]
    Invalid(&'static str),
    /// The random source failed.
    #[error("no randomness for a new key")]
    Random(#[from] getrandom::Error),
}

impl Error {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Open(e) => e.is_retryable(),
            Error::Query(_) | Error::Random(_) | Error::Audit(_) => true,
            _ => false,
        }
    }
}

/// The key store with its cache; cheap to clone.
#[derive(Debug, Clone)]
pub struct KeyStore {
    /// Opened on first use when built with [`KeyStore::lazy`], so that
    /// building the gateway stays synchronous.
    db: Arc<tokio::sync::OnceCell<Database>>,
    url: Option<String>,
    data_dir: PathBuf,
    cache: Arc<Mutex<Cache>>,
    /// Lookups in the store (verifications the cache did not answer).
    lookups: Arc<std::sync::atomic::AtomicU64>,
    /// Plans a new key may have: [`PLANS`] unless configured otherwise.
    plans: Arc<[String]>,
}

/// Key hash → when it was looked up (ms) and, for a known key, its record.
/// Unknown keys are kept apart so that they cannot push known ones out.
#[derive(Debug, Default)]
struct Cache {
    known: HashMap<[u8; 32], (i64, KeyRecord)>,
    unknown: HashMap<[u8; 32], i64>,
}

impl Cache {
    fn get(&self, hash: &[u8; 32], now_ms: i64, ttl: i64) -> Option<Option<KeyRecord>> {
        let fresh = |at: i64| (0..ttl).contains(&(now_ms - at));
        if let Some((at, record)) = self.known.get(hash) {
            return fresh(*at).then(|| Some(record.clone()));
        }
        self.unknown.get(hash).filter(|at| fresh(**at)).map(|_| None)
    }

    fn put(&mut self, hash: [u8; 32], now_ms: i64, found: Option<KeyRecord>) {
        match found {
            Some(record) => {
                if self.known.len() >= KNOWN_MAX {
                    self.known.clear();
                }
                self.unknown.remove(&hash);
                self.known.insert(hash, (now_ms, record));
            }
            None => {
                if self.unknown.len() >= UNKNOWN_MAX {
                    self.unknown.clear();
                }
                self.known.remove(&hash);
                self.unknown.insert(hash, now_ms);
            }
        }
    }
}

const COLUMNS: &str = "id, partner, scopes, plan, created_at, expires_at, revoked_at, replaced_by";

impl KeyStore {
    /// Opens (and migrates) the store.
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, Error> {
        let store = Self::lazy(url.map(str::to_owned), data_dir.to_owned());
        store.db().await?;
        Ok(store)
    }

    /// The store at `url` (or `<data_dir>/gateway.db`), opened and migrated
    /// on first use; a failure then is retried on the next use.
    pub fn lazy(url: Option<String>, data_dir: PathBuf) -> Self {
        Self {
            db: Arc::default(),
            url,
            data_dir,
            cache: Arc::default(),
            lookups: Arc::default(),
            plans: PLANS.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// Accepts `plans` (e.g. `gateway::Config::plans`'s names) for new keys.
    pub fn with_plans(mut self, plans: impl IntoIterator<Item = String>) -> Self {
        self.plans = plans.into_iter().collect();
        self
    }

    async fn db(&self) -> Result<&Database, Error> {
        self.db
            .get_or_try_init(|| async {
                Database::open(self.url.as_deref(), &self.data_dir, "gateway.db", "gateway", &MIGRATIONS).await
            })
            .await
            .map_err(Error::Open)
    }

    /// Issues a key for `actor`; the returned [`ApiKey`] is the only copy
    /// of its text.
    pub async fn create(&self, new: NewKey, now: i64, actor: &str) -> Result<(KeyRecord, ApiKey), Error> {
        if new.partner.trim().is_empty() {
            return Err(Error::Invalid("partner must not be empty"));
        }
        if new.scopes.is_empty() || new.scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            return Err(Error::Invalid("scopes must be a non-empty list of scope names"));
        }
        if !new.scopes.iter().all(|s| crate::SCOPES.contains(&s.as_str())) {
            return Err(Error::Invalid("unknown scope"));
        }
        // Operators sign in with their own tokens; a partner credential that
        // could manage keys would be one leak away from minting more.
        if new.scopes.iter().any(|s| s == "ops") {
            return Err(Error::Invalid("a partner key cannot carry the ops scope"));
        }
        if !self.plans.contains(&new.plan) {
            return Err(Error::Invalid("unknown plan (built in: bronze, silver, gold, unmetered)"));
        }
        let key = ApiKey::generate()?;
        let record = KeyRecord {
            id: format!("key_{}", ulid::Ulid::new().to_string().to_lowercase()),
            partner: new.partner,
            scopes: new.scopes,
            plan: new.plan,
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
            replaced_by: None,
        };
        let db = self.db().await?;
        let mut tx = db.begin_concurrent().await?;
        insert(&mut tx, &record, &key).await?;
        let detail = serde_json::json!({
            "partner": record.partner, "scopes": record.scopes, "plan": record.plan, "expires_at": record.expires_at,
        });
        let entry = audit::Entry { actor, action: "keys.create", object: &record.id, detail };
        audit::append(&mut tx, db.dialect(), &entry, now.saturating_mul(1000)).await?;
        tx.commit().await?;
        Ok((record, key))
    }

    /// Every key, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyRecord>, Error> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys ORDER BY id")))
            .fetch_all(self.db().await?.pool())
            .await?;
        rows.iter().map(record).collect()
    }

    /// One key by id.
    pub async fn get(&self, id: &str) -> Result<KeyRecord, Error> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.db().await?.pool())
            .await?
            .ok_or(Error::NotFound)?;
        record(&row)
    }

    /// Revokes a key at `now`, for `actor`.
    pub async fn revoke(&self, id: &str, now: i64, actor: &str) -> Result<KeyRecord, Error> {
        let db = self.db().await?;
        let mut tx = db.begin_concurrent().await?;
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            let entry = audit::Entry { actor, action: "keys.revoke", object: id, detail: serde_json::json!({}) };
            audit::append(&mut tx, db.dialect(), &entry, now.saturating_mul(1000)).await?;
        }
        tx.commit().await?;
        self.forget(id);
        let record = self.get(id).await?;
        if done.rows_affected() == 0 {
            return Err(Error::Revoked);
        }
        Ok(record)
    }

    /// Issues a key with the same partner, scopes and plan (and expiry), and
    /// lets the old one work until `now + grace` (or its own expiry, if
    /// sooner); for `actor`.
    pub async fn rotate(&self, id: &str, grace: Duration, now: i64, actor: &str) -> Result<(KeyRecord, ApiKey), Error> {
        let db = self.db().await?;
        let mut tx = db.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound)?;
        let old = record(&row)?;
        if !old.usable_at(now) || old.replaced_by.is_some() {
            return Err(Error::Revoked);
        }
        let key = ApiKey::generate()?;
        let new = KeyRecord {
            id: format!("key_{}", ulid::Ulid::new().to_string().to_lowercase()),
            replaced_by: None,
            created_at: now,
            ..old.clone()
        };
        insert(&mut tx, &new, &key).await?;
        let grace_end = now.saturating_add(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
        let until = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
        sqlx::query("UPDATE api_keys SET expires_at = $1, replaced_by = $2 WHERE id = $3")
            .bind(until)
            .bind(&new.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let detail = serde_json::json!({ "replaced_by": new.id, "old_key_until": until });
        let entry = audit::Entry { actor, action: "keys.rotate", object: id, detail };
        audit::append(&mut tx, db.dialect(), &entry, now.saturating_mul(1000)).await?;
        tx.commit().await?;
        self.forget(id);
        Ok((new, key))
    }

    /// The record of a presented key if it is usable at `now_ms`
    /// (milliseconds since the epoch), through the cache (see the module
    /// doc). `None` for an unknown, revoked or expired key.
    pub async fn verify(&self, key: &ApiKey, now_ms: i64) -> Result<Option<KeyRecord>, Error> {
        let ttl = i64::try_from(CACHE_TTL.as_millis()).unwrap_or(i64::MAX);
        let hash = key.hash();
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&hash, now_ms, ttl);
        let found = match cached {
            Some(found) => found,
            None => {
                self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let found = self.lookup(&hash).await?;
                self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(hash, now_ms, found.clone());
                found
            }
        };
        Ok(found.filter(|r| r.usable_at(now_ms.div_euclid(1000))))
    }

    /// Drops this replica's cached verification of key `id`, so a change
    /// made here takes effect here at once (other replicas: within the TTL).
    fn forget(&self, id: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.known.retain(|_, (_, record)| record.id != id);
    }

    /// The audit trail's rows matching `filter`, newest first, and the
    /// next page's cursor.
    pub async fn audit_list(&self, filter: &audit::Filter) -> Result<(Vec<audit::Record>, Option<i64>), Error> {
        Ok(audit::list(self.db().await?, filter).await?)
    }

    /// Walks the audit trail (see [`audit::verify`]).
    pub async fn audit_verify(&self) -> Result<audit::Verdict, Error> {
        Ok(audit::verify(self.db().await?).await?)
    }

    /// How many verifications went to the store (the cache did not answer).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn lookup(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, Error> {
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS}, key_hash FROM api_keys WHERE key_hash = $1")))
                .bind(hex(hash))
                .fetch_optional(self.db().await?.pool())
                .await?;
        let Some(row) = row else { return Ok(None) };
        // The index found the row; the comparison that decides is constant-time.
        let stored: String = row.try_get("key_hash")?;
        if !keys::hashes_equal(&unhex(&stored).unwrap_or([0; 32]), hash) {
            return Ok(None);
        }
        record(&row).map(Some)
    }
}

async fn insert(tx: &mut platform::database::WriteTx, r: &KeyRecord, key: &ApiKey) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO api_keys (id, key_hash, partner, scopes, plan, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&r.id)
    .bind(hex(&key.hash()))
    .bind(&r.partner)
    .bind(r.scopes.join(" "))
    .bind(&r.plan)
    .bind(r.created_at)
    .bind(r.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn record(row: &sqlx::any::AnyRow) -> Result<KeyRecord, Error> {
    let scopes: String = row.try_get("scopes")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        partner: row.try_get("partner")?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        plan: row.try_get("plan")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        replaced_by: row.try_get("replaced_by")?,
    })
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One audit record per key operation: who, what, which key, the outcome.
/// Never the key or its hash.
pub fn audit(who: &str, action: &str, key_id: &str, outcome: &str) {
    tracing::info!(target: "audit", subject = who, action, key_id, outcome, "api key");
}

/// Milliseconds since the epoch now, for callers outside tests.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(partner: &str) -> NewKey {
        NewKey {
            partner: partner.into(),
            scopes: vec!["orders:read".into(), "orders:write".into()],
            plan: "silver".into(),
            expires_at: None,
        }
    }

    async fn store(dir: &tempfile::TempDir) -> KeyStore {
        KeyStore::open(None, dir.path()).await.expect("open store")
    }

    #[tokio::test]
    async fn a_created_key_verifies_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir).await;
        let (rec, key) = s.create(new_key("acme"), 1_000, "test").await.expect("create");
        let found = s.verify(&key, 1_001_000).await.expect("verify").expect("usable");
        assert_eq!(found, rec);
        assert_eq!(found.plan, "silver");
        let raw = std::fs::read(dir.path().join("gateway.db")).expect("db file");
        let wal = std::fs::read(dir.path().join("gateway.db-wal")).unwrap_or_default();
        let needle = key.expose().as_bytes();
        assert!(![raw, wal].iter().any(|b| b.windows(needle.len()).any(|w| w == needle)));
        let other = ApiKey::generate().expect("random");
        assert_eq!(s.verify(&other, 1_001_000).await.expect("verify"), None);
    }

    #[tokio::test]
    async fn bad_input_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir).await;
        let bad_plan = NewKey { plan: "platinum".into(), ..new_key("acme") };
        assert!(matches!(s.create(bad_plan, 0, "test").await, Err(Error::Invalid(_))));
        let no_scopes = NewKey { scopes: vec![], ..new_key("acme") };
        assert!(matches!(s.create(no_scopes, 0, "test").await, Err(Error::Invalid(_))));
        assert!(matches!(s.revoke("key_nope", 0, "test").await, Err(Error::NotFound)));
    }

    /// Each change leaves one row in the trail, with the actor named, and
    /// the chain holds; a refused change leaves none.
    #[tokio::test]
    async fn every_change_is_on_the_audit_trail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir).await;
        let (rec, _) = s.create(new_key("acme"), 1_000, "alice").await.expect("create");
        let (new, _) = s.rotate(&rec.id, Duration::ZERO, 1_001, "bob").await.expect("rotate");
        s.revoke(&new.id, 1_002, "cli").await.expect("revoke");
        assert!(s.revoke(&new.id, 1_003, "cli").await.is_err());
        let (rows, _) = s.audit_list(&audit::Filter { limit: 10, ..Default::default() }).await.expect("list");
        let seen: Vec<_> = rows.iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.object.as_str())).collect();
        assert_eq!(
            seen,
            [
                ("cli", "keys.revoke", new.id.as_str()),
                ("bob", "keys.rotate", rec.id.as_str()),
                ("alice", "keys.create", rec.id.as_str())
            ]
        );
        assert_eq!(rows[2].at, 1_000_000);
        assert_eq!(rows[1].detail["replaced_by"], new.id.as_str());
        assert_eq!(s.audit_verify().await.expect("verify"), audit::Verdict::Intact { rows: 3 });
    }

    /// A flood of made-up keys, more than the cache holds, each looked up
    /// once; the known key's requests meanwhile are all answered from the
    /// cache: one store lookup for it, however long the flood.
    #[tokio::test]
    async fn a_flood_of_unknown_keys_never_pushes_a_known_key_out_of_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir).await;
        let (_, known) = s.create(new_key("acme"), 1_000, "test").await.expect("create");
        let now = 1_001_000;
        assert!(s.verify(&known, now).await.expect("verify").is_some());
        let before = s.lookups();
        let flood = UNKNOWN_MAX + UNKNOWN_MAX / 2;
        for n in 0..flood {
            let unknown = ApiKey::generate().expect("random");
            assert!(s.verify(&unknown, now).await.expect("verify").is_none());
            if n % 1_000 == 0 {
                assert!(s.verify(&known, now).await.expect("verify").is_some());
            }
        }
        assert!(s.verify(&known, now).await.expect("verify").is_some());
        assert_eq!(s.lookups() - before, flood as u64, "the store saw each unknown key once and the known key never");
        // An unknown key tried again within the TTL is answered by the cache too.
        let unknown = ApiKey::generate().expect("random");
        assert!(s.verify(&unknown, now).await.expect("verify").is_none());
        assert!(s.verify(&unknown, now + 1).await.expect("verify").is_none());
        assert_eq!(s.lookups() - before, flood as u64 + 1);
    }

    #[tokio::test]
    async fn expiry_is_exact_even_when_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir).await;
        let (_, key) =
            s.create(NewKey { expires_at: Some(2_000), ..new_key("acme") }, 1_000, "test").await.expect("create");
        assert!(s.verify(&key, 1_999_000).await.expect("verify").is_some());
        assert!(s.verify(&key, 2_000_000).await.expect("verify").is_none());
    }

    /// The freshness rule: another replica's revocation is seen once the
    /// cached entry is [`CACHE_TTL`] old, and not before (the clock is moved
    /// by hand).
    #[tokio::test]
    async fn a_revocation_on_another_replica_is_seen_within_the_cache_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (store(&dir).await, store(&dir).await);
        let (rec, key) = a.create(new_key("acme"), 1_000, "test").await.expect("create");
        assert!(a.verify(&key, 1_000_000).await.expect("verify").is_some());
        b.revoke(&rec.id, 1_001, "test").await.expect("revoke");
        assert!(matches!(b.revoke(&rec.id, 1_001, "test").await, Err(Error::Revoked)));
        assert!(a.verify(&key, 1_003_999).await.expect("verify").is_some(), "still cached");
        assert!(a.verify(&key, 1_004_000).await.expect("verify").is_none(), "revoked within the TTL");
        // A clock stepped back does not keep a stale entry alive.
        let (other_record, other) = a.create(new_key("acme"), 1_000, "test").await.expect("create");
        assert!(a.verify(&other, 1_010_000).await.expect("verify").is_some());
        // By its id: two keys made in one millisecond list in either order.
        b.revoke(&other_record.id, 1_010, "test").await.expect("revoke");
        assert!(a.verify(&other, 1_009_000).await.expect("verify").is_none());
        assert!(CACHE_TTL < Duration::from_secs(5));
    }

    /// The same rules on PostgreSQL, where every gateway replica shares the
    /// store (real server at 127.0.0.1:5432).
    #[tokio::test]
    async fn the_store_works_the_same_on_postgresql() {
        let pg = platform::database::ScratchPostgres::create("gateway_keys").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            KeyStore::open(Some(&pg.url()), dir.path()).await.expect("open"),
            KeyStore::open(Some(&pg.url()), dir.path()).await.expect("open again"),
        );
        assert!(!dir.path().join("gateway.db").exists());
        let (rec, key) =
            a.create(NewKey { expires_at: Some(2_000), ..new_key("acme") }, 1_000, "test").await.expect("create");
        assert_eq!(b.verify(&key, 1_500_000).await.expect("verify"), Some(rec.clone()));
        assert_eq!(b.verify(&key, 2_000_000).await.expect("verify"), None, "expired");
        let (_, rotated) = b.rotate(&rec.id, Duration::from_secs(10), 1_001, "test").await.expect("rotate");
        assert!(a.verify(&rotated, 1_001_000).await.expect("verify").is_some());
        a.revoke(&rec.id, 1_002, "test").await.expect("revoke");
        assert!(b.verify(&key, 1_004_500).await.expect("verify").is_none(), "revoked, seen after the TTL");
        assert_eq!(b.list().await.expect("list").len(), 2);
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_key_for_the_grace_period_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = store(&dir).await;
        let (old, old_key) = s.create(new_key("acme"), 1_000, "test").await.expect("create");
        let (new, new_key_) = s.rotate(&old.id, Duration::from_secs(60), 1_000, "test").await.expect("rotate");
        assert_ne!(new.id, old.id);
        assert_eq!((new.partner.as_str(), &new.scopes, new.plan.as_str()), ("acme", &old.scopes, "silver"));
        let fresh = KeyStore::open(None, dir.path()).await.expect("open");
        assert!(fresh.verify(&old_key, 1_059_000).await.expect("verify").is_some());
        assert!(fresh.verify(&new_key_, 1_059_000).await.expect("verify").is_some());
        assert!(fresh.verify(&old_key, 1_060_000).await.expect("verify").is_none());
        assert!(fresh.verify(&new_key_, 1_060_000).await.expect("verify").is_some());
        assert_eq!(fresh.get(&old.id).await.expect("get").replaced_by, Some(new.id.clone()));
        assert!(matches!(s.rotate(&old.id, Duration::ZERO, 1_000, "test").await, Err(Error::Revoked)));
        assert_eq!(s.list().await.expect("list").len(), 2);
    }
}
