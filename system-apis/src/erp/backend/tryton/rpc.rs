//! A JSON-RPC client of Tryton 8.x (`POST /<db>/rpc/`).
//!
//! One login per client, reused for every call (a login costs an argon2
//! hash on the server, about 150 ms) and renewed once when Tryton answers
//! 401. The user's preferences are the context of every call: Tryton needs
//! the company in it, and it must be the last positional parameter.
//! Decimals and dates travel as Tryton's tagged JSON objects ([`decimal`],
//! [`date`]). Tryton marks any reply over 1400 bytes as gzip even when it
//! is plain JSON; this client never asks for gzip and ignores the header.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// Largest reply accepted; far above any order-to-cash call.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// How a Tryton call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No answer, a timeout, or a 5xx: the call may succeed later.
    #[error("Tryton unreachable: {0}")]
    Unavailable(String),
    /// The configured credentials were refused.
    #[error("Tryton refused the credentials")]
    Unauthorized,
    /// A business rule of Tryton refused the call (`UserError`).
    #[error("Tryton refused: {message}")]
    User {
        /// Tryton's message, written for users.
        message: String,
    },
    /// Tryton asks for a confirmation first (`UserWarning`): the call goes
    /// through once a `res.user.warning` record named `name` exists.
    #[error("Tryton warns: {message}")]
    Warning {
        /// The warning's name, e.g. `<md5>.credit_limit_amount`.
        name: String,
        /// Tryton's message, written for users.
        message: String,
    },
    /// Records changed in the meanwhile; retrying may succeed.
    #[error("Tryton concurrency conflict")]
    Concurrency,
    /// Anything else: a bug on one side or the other.
    #[error("Tryton call {method} failed: {detail}")]
    Failed {
        /// The RPC method.
        method: String,
        /// What Tryton said.
        detail: String,
    },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL, e.g. `http://127.0.0.1:8765`.
    pub url: String,
    /// Database name.
    pub database: String,
    /// Login.
    pub username: String,
    /// Password.
    pub password: String,
    /// Deadline of one HTTP call.
    pub timeout: Duration,
}

struct Session {
    authorization: HeaderValue,
    /// The logged-in user's id (warnings are answered per user).
    user_id: i64,
    context: Value,
    /// Bumped on every login, so concurrent 401s log in once.
    generation: u64,
}

/// The client. Cheap to share behind an `Arc`.
pub struct Client {
    http: HttpClient<HttpConnector, Full<bytes::Bytes>>,
    endpoint: Uri,
    settings: Settings,
    session: RwLock<Option<Session>>,
    next_id: AtomicU64,
    /// Logins so far: a new one means the server may have restarted (with
    /// other modules), which the connector rediscovers.
    logins: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

/// A Tryton `Decimal`.
pub fn decimal(value: Decimal) -> Value {
    json!({"__class__": "Decimal", "decimal": value.to_string()})
}

/// A Tryton `date`.
pub fn date(year: i32, month: u32, day: u32) -> Value {
    json!({"__class__": "date", "year": year, "month": month, "day": day})
}

/// Reads a Tryton decimal (tagged object, number or string).
pub fn as_decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Object(map) if map.get("__class__").and_then(Value::as_str) == Some("Decimal") => {
            map.get("decimal")?.as_str()?.parse().ok()
        }
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Reads a Tryton datetime as RFC 3339 text with microseconds, so that
/// texts sort like the instants they name.
pub fn as_datetime(value: &Value) -> Option<String> {
    let map = value.as_object()?;
    if map.get("__class__")?.as_str()? != "datetime" {
        return None;
    }
    let part = |k: &str| map.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        part("year"),
        part("month"),
        part("day"),
        part("hour"),
        part("minute"),
        part("second"),
        part("microsecond")
    ))
}

/// A Tryton datetime from RFC 3339 text written by [`as_datetime`].
pub fn datetime(text: &str) -> Option<Value> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<u64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, micros) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    let microsecond: u64 = micros.parse().ok()?;
    Some(json!({"__class__": "datetime", "year": year, "month": month, "day": day,
        "hour": hour, "minute": minute, "second": second, "microsecond": microsecond}))
}

impl Client {
    /// A client for `settings`; it logs in on first use.
    pub fn new(settings: Settings) -> Result<Self, RpcError> {
        let base = settings.url.trim_end_matches('/');
        let endpoint: Uri = format!("{base}/{}/rpc/", settings.database)
            .parse()
            .map_err(|_| RpcError::Failed { method: "connect".into(), detail: "invalid Tryton URL".into() })?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = HttpClient::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            endpoint,
            settings,
            session: RwLock::new(None),
            next_id: AtomicU64::new(1),
            logins: AtomicU64::new(0),
        })
    }

    /// Calls `method` with `args` and the session's context as the last parameter.
    pub async fn call(&self, method: &str, args: Vec<Value>) -> Result<Value, RpcError> {
        self.call_with_context(method, args, None).await
    }

    /// Like [`Client::call`], with `extra` merged into the context (wizards
    /// need `active_model`/`active_id`).
    pub async fn call_with_context(
        &self,
        method: &str,
        args: Vec<Value>,
        extra: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Value, RpcError> {
        let mut relogged = false;
        loop {
            let (authorization, mut context, generation) = self.session().await?;
            if let (Some(extra), Some(ctx)) = (extra, context.as_object_mut()) {
                ctx.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let mut params = args.clone();
            params.push(context);
            match self.post(method, Some(&authorization), params).await {
                Err(RpcError::Unauthorized) if !relogged => {
                    // The session expired or the server restarted: log in again, once.
                    self.drop_session(generation).await;
                    relogged = true;
                }
                other => return other,
            }
        }
    }

    /// How many times this client has logged in.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// Whether the server answers (no login needed).
    pub async fn ping(&self) -> bool {
        let uri = match format!("{}/rpc/", self.settings.url.trim_end_matches('/')).parse::<Uri>() {
            Ok(uri) => uri,
            Err(_) => return false,
        };
        self.post_to(uri, "common.server.version", None, Vec::new()).await.is_ok()
    }

    /// The server's release, e.g. `8.0.12`.
    pub async fn server_version(&self) -> Result<String, RpcError> {
        let uri = format!("{}/rpc/", self.settings.url.trim_end_matches('/'))
            .parse::<Uri>()
            .map_err(|e| RpcError::Unavailable(e.to_string()))?;
        match self.post_to(uri, "common.server.version", None, Vec::new()).await? {
            Value::String(version) => Ok(version),
            other => Err(RpcError::Failed {
                method: "common.server.version".into(),
                detail: format!("not a release: {other}"),
            }),
        }
    }

    /// The id of the logged-in user (logging in if needed).
    pub async fn user_id(&self) -> Result<i64, RpcError> {
        self.session().await?;
        self.session.read().await.as_ref().map(|s| s.user_id).ok_or(RpcError::Unauthorized)
    }

    /// The company of the logged-in user.
    pub async fn company(&self) -> Option<i64> {
        self.session().await.ok().and_then(|(_, context, _)| context.get("company").and_then(Value::as_i64))
    }

    async fn session(&self) -> Result<(HeaderValue, Value, u64), RpcError> {
        if let Some(s) = self.session.read().await.as_ref() {
            return Ok((s.authorization.clone(), s.context.clone(), s.generation));
        }
        let mut slot = self.session.write().await;
        if let Some(s) = slot.as_ref() {
            return Ok((s.authorization.clone(), s.context.clone(), s.generation));
        }
        let login = self
            .post(
                "common.db.login",
                None,
                vec![json!(self.settings.username), json!({"password": self.settings.password}), json!("en")],
            )
            .await?;
        let (uid, token) = match login.as_array().map(Vec::as_slice) {
            Some([uid, token, ..]) => (uid.as_i64(), token.as_str()),
            _ => (None, None),
        };
        let (Some(uid), Some(token)) = (uid, token) else { return Err(RpcError::Unauthorized) };
        let credentials = STANDARD.encode(format!("{}:{uid}:{token}", self.settings.username));
        let authorization =
            HeaderValue::try_from(format!("Session {credentials}")).map_err(|_| RpcError::Unauthorized)?;
        let context =
            self.post("model.res.user.get_preferences", Some(&authorization), vec![json!(true), json!({})]).await?;
        let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.logins.fetch_add(1, Ordering::Relaxed);
        *slot =
            Some(Session { authorization: authorization.clone(), user_id: uid, context: context.clone(), generation });
        Ok((authorization, context, generation))
    }

    async fn drop_session(&self, generation: u64) {
        let mut slot = self.session.write().await;
        if slot.as_ref().is_some_and(|s| s.generation == generation) {
            *slot = None;
        }
    }

    async fn post(
        &self,
        method: &str,
        authorization: Option<&HeaderValue>,
        params: Vec<Value>,
    ) -> Result<Value, RpcError> {
        self.post_to(self.endpoint.clone(), method, authorization, params).await
    }

    /// One JSON-RPC call: a client span named for the method (never its
    /// parameters, which hold passwords and personal data).
    #[tracing::instrument(skip_all, fields(
        otel.name = method,
        otel.kind = "client",
        rpc.system = "jsonrpc",
        rpc.method = method,
        server.address = uri.host(),
        server.port = uri.port_u16().map(i64::from),
    ))]
    async fn post_to(
        &self,
        uri: Uri,
        method: &str,
        authorization: Option<&HeaderValue>,
        params: Vec<Value>,
    ) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&json!({"id": id, "method": method, "params": params}))
            .map_err(|e| RpcError::Failed { method: method.into(), detail: e.to_string() })?;
        let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = authorization {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| RpcError::Failed { method: method.into(), detail: e.to_string() })?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| RpcError::Unavailable(e.to_string()))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_REPLY_BYTES)
                .collect()
                .await
                .map_err(|e| RpcError::Unavailable(e.to_string()))?
                .to_bytes();
            Ok::<_, RpcError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.settings.timeout, exchange)
            .await
            .map_err(|_| RpcError::Unavailable(format!("{method} timed out")))??;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => return Err(RpcError::Unauthorized),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(RpcError::Unavailable(format!("{method}: HTTP {s}")));
            }
            s => return Err(RpcError::Failed { method: method.into(), detail: format!("HTTP {s}") }),
        }
        let mut reply: Value = serde_json::from_slice(&body)
            .map_err(|e| RpcError::Failed { method: method.into(), detail: format!("reply is not JSON: {e}") })?;
        if let Some(error) = reply.get("error").filter(|e| !e.is_null()) {
            return Err(classify(method, error));
        }
        Ok(reply.get_mut("result").map(Value::take).unwrap_or(Value::Null))
    }
}

/// Tryton's error array: `["UserError", [message, description, domain]]`,
/// `["UserWarning", [name, message, description]]`,
/// `["ConcurrencyException", message]`, or `[text, ""]` for anything else.
fn classify(method: &str, error: &Value) -> RpcError {
    let kind = error.get(0).and_then(Value::as_str).unwrap_or_default();
    let args = error.get(1);
    let text = |i: usize| args.and_then(|a| a.get(i)).and_then(Value::as_str).unwrap_or_default().to_owned();
    match kind {
        "UserError" => {
            let (message, description) = (text(0), text(1));
            let message = if description.is_empty() { message } else { format!("{message} {description}") };
            RpcError::User { message }
        }
        "UserWarning" => RpcError::Warning { name: text(0), message: text(1) },
        "ConcurrencyException" => RpcError::Concurrency,
        other => RpcError::Failed { method: method.into(), detail: other.to_owned() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_and_datetimes_round_trip_in_trytons_encoding() {
        let d = decimal(Decimal::new(1250, 2));
        assert_eq!(d, json!({"__class__": "Decimal", "decimal": "12.50"}));
        assert_eq!(as_decimal(&d), Some(Decimal::new(1250, 2)));
        assert_eq!(as_decimal(&json!(3)), Some(Decimal::from(3)));
        assert_eq!(as_decimal(&json!({"__class__": "date"})), None);
        let dt = json!({"__class__": "datetime", "year": 2026, "month": 11, "day": 28,
            "hour": 9, "minute": 5, "second": 7, "microsecond": 42});
        let text = as_datetime(&dt).expect("datetime");
        assert_eq!(text, "2026-11-28T09:05:07.000042Z");
        assert_eq!(datetime(&text), Some(dt));
    }

    #[test]
    fn errors_are_classified() {
        let user = classify("m", &json!(["UserError", ["Not enough stock.", "Product X", ""]]));
        assert!(matches!(user, RpcError::User { ref message } if message == "Not enough stock. Product X"));
        let warning = classify("m", &json!(["UserWarning", ["abc.credit_limit_amount", "Over the limit.", ""]]));
        assert!(matches!(warning, RpcError::Warning { ref name, .. } if name == "abc.credit_limit_amount"));
        assert!(matches!(classify("m", &json!(["ConcurrencyException", "x"])), RpcError::Concurrency));
        assert!(matches!(classify("m", &json!(["'res.user'", ""])), RpcError::Failed { .. }));
    }
}
