//! Users, sessions and CSRF for the web pages and the API. Passwords are argon2 hashes from the
//! config; a login creates a random session (cookie `simgate_session`, HttpOnly,
//! SameSite=Strict) with its own CSRF token that every form must send back. The API also takes
//! HTTP Basic credentials or a Bearer API token. With no users configured, everyone is an
//! anonymous viewer (and the config only allows binding to loopback then).
//!
//! Defending credentials costs little: API tokens are random 256-bit values found by their
//! SHA-256 (compared in constant time), never argon2 per request; password checks run on a
//! small pool of their own threads with a short queue, and the excess is refused at once
//! (503); verified Basic credentials are cached for a minute; an unknown user costs the same
//! argon2 check as a wrong password; failed sign-ins are throttled per user and per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{Role, UserConfig};

pub const SESSION_COOKIE: &str = "simgate_session";

/// Threads that verify passwords; argon2 takes ~40 ms each, so two give ~50 checks a second.
const PASSWORD_THREADS: usize = 2;
/// Checks waiting for a thread; beyond this a request is refused at once.
const PASSWORD_QUEUE: usize = 8;
/// How long verified Basic credentials are remembered.
const BASIC_CACHE_LIFETIME: Duration = Duration::from_secs(60);
const BASIC_CACHE_ENTRIES: usize = 1024;
/// Failed sign-ins allowed before each further attempt must wait.
const FREE_FAILURES: u32 = 3;
const MAX_THROTTLE: Duration = Duration::from_secs(60);
/// Tracked keys (users and addresses); the oldest are forgotten beyond this.
const THROTTLE_ENTRIES: usize = 10_000;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token (None for Basic/Bearer API calls and anonymous viewers).
    pub csrf: Option<String>,
    pub via_session: bool,
}

impl Caller {
    pub fn anonymous() -> Caller {
        Caller {
            name: "anonymous".into(),
            role: Role::Viewer,
            csrf: None,
            via_session: false,
        }
    }

    pub fn can_document(&self) -> bool {
        self.role.may_document_reasons()
    }

    pub fn is_admin(&self) -> bool {
        self.role.may_act_on_queue()
    }

    fn of(user: &UserConfig) -> Caller {
        Caller {
            name: user.name.clone(),
            role: user.role,
            csrf: None,
            via_session: false,
        }
    }
}

/// Why credentials were not checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many sign-in attempts: try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("too many password checks at once: try again in a moment")]
    Busy,
}

#[derive(Debug)]
struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

/// 32 random bytes, hex: session ids, CSRF tokens and API tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

/// Why a secret could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the secret")]
pub struct HashError(#[source] argon2::password_hash::Error);

/// An argon2id PHC string for a password (`simgate user add`).
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(HashError)
}

/// What the config stores of an API token: `sha256:` and the hex digest. A token is 256 random
/// bits, so a fast hash is enough: there is nothing to guess.
pub fn token_digest(token: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(token.trim().as_bytes()))
    )
}

/// Equal, without an early exit that would time the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A job for the password threads: verify with the thread's argon2 memory, then answer.
type Check = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

/// Verifies a password against a PHC string with argon2 memory the caller keeps: each
/// password thread reuses its blocks instead of allocating ~19 MiB per check (the allocator
/// kept such blocks around per check, and a login flood grew the process by hundreds of MB).
fn verify_reusing(secret: &str, hash: &str, blocks: &mut Vec<argon2::Block>) -> bool {
    use argon2::{Algorithm, Params, Version};
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm.as_str()),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let count = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    blocks.resize(count, argon2::Block::default());
    let expected: &[u8] = expected.as_ref();
    let mut out = vec![0u8; expected.len()];
    argon2
        .hash_password_into_with_memory(secret.as_bytes(), salt.as_ref(), &mut out, &mut blocks[..])
        .is_ok()
        && constant_time_eq(&out, expected)
}

/// The password threads and their short queue.
#[derive(Debug)]
struct PasswordPool {
    jobs: SyncSender<Check>,
}

impl PasswordPool {
    fn start() -> PasswordPool {
        let (jobs, queue) = sync_channel::<Check>(PASSWORD_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..PASSWORD_THREADS {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("password-{n}"))
                .spawn(move || {
                    let mut blocks = Vec::new();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut blocks),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(cause = %e, "cannot start a password thread");
            }
        }
        PasswordPool { jobs }
    }

    /// Verifies on a password thread; `Busy` at once when the queue is full.
    async fn verify(&self, secret: String, hash: String) -> Result<bool, Refusal> {
        let (answer, outcome) = tokio::sync::oneshot::channel();
        let job: Check = Box::new(move |blocks| {
            let _ = answer.send(verify_reusing(&secret, &hash, blocks));
        });
        match self.jobs.try_send(job) {
            Ok(()) => outcome.await.map_err(|_| Refusal::Busy),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Refusal::Busy),
        }
    }
}

/// Failed sign-ins of one user or one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// No attempt is checked before this.
    until: Instant,
    last: Instant,
}

#[derive(Debug)]
pub struct Auth {
    /// Replaced as a whole on SIGHUP ([`Auth::replace_users`]).
    users: std::sync::RwLock<Arc<Vec<UserConfig>>>,
    lifetime: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    passwords: PasswordPool,
    /// An argon2 hash of nothing anyone knows: unknown users are checked against it.
    dummy_hash: String,
    /// SHA-256 of "name:password" -> (user name, expiry).
    basic_cache: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    failures: Mutex<HashMap<String, Failures>>,
}

/// A short, stable stand-in for a login name in logs (names may be mistyped passwords).
pub fn name_hash(name: &str) -> String {
    hex::encode(&Sha256::digest(name.as_bytes())[..4])
}

impl Auth {
    pub fn new(users: Vec<UserConfig>, lifetime: Duration) -> Auth {
        let dummy_hash = hash_secret(&random_token()).unwrap_or_default();
        Auth {
            users: std::sync::RwLock::new(Arc::new(users)),
            lifetime,
            sessions: Mutex::new(HashMap::new()),
            passwords: PasswordPool::start(),
            dummy_hash,
            basic_cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn users(&self) -> Arc<Vec<UserConfig>> {
        Arc::clone(&self.users.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn open(&self) -> bool {
        self.users().is_empty()
    }

    /// Puts a reloaded `[[http.users]]` in force: new users sign in at once; a session
    /// or cached credential of a user removed, or whose role or password changed, ends.
    pub fn replace_users(&self, users: Vec<UserConfig>) {
        let kept = |name: &str, role: Role, old: &[UserConfig]| {
            let before = old.iter().find(|u| u.name == name);
            let after = users.iter().find(|u| u.name == name);
            matches!((before, after), (Some(b), Some(a))
                if a.role == role && a.password_hash == b.password_hash)
        };
        let old = self.users();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| kept(&s.name, s.role, &old));
        self.basic_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
    }

    /// Checks a name and password; on success opens a session and returns its id.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<Option<String>, Refusal> {
        let Some(user) = self.check_password(name, password, from).await? else {
            return Ok(None);
        };
        let id = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            id.clone(),
            Session {
                name: user.name.clone(),
                role: user.role,
                csrf: random_token(),
                expires: now + self.lifetime,
            },
        );
        Ok(Some(id))
    }

    /// Ends a session (whatever else the request carried).
    pub fn logout(&self, session: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }

    /// The caller of a request: session cookie, then Basic or Bearer credentials; `None` when
    /// users are configured and none of these is valid.
    pub async fn caller(
        &self,
        headers: &HeaderMap,
        from: Option<IpAddr>,
    ) -> Result<Option<Caller>, Refusal> {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = sessions.get(&id).filter(|s| s.expires > Instant::now()) {
                return Ok(Some(Caller {
                    name: s.name.clone(),
                    role: s.role,
                    csrf: Some(s.csrf.clone()),
                    via_session: true,
                }));
            }
        }
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(basic) = authorization.and_then(|v| v.strip_prefix("Basic ")) {
            use base64::Engine;
            let Some((name, password)) = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|d| {
                    d.split_once(':')
                        .map(|(n, p)| (n.to_string(), p.to_string()))
                })
            else {
                return Ok(None);
            };
            let key: [u8; 32] = Sha256::digest(format!("{name}:{password}").as_bytes()).into();
            if let Some(user) = self.cached_basic(&key) {
                return Ok(Some(Caller::of(&user)));
            }
            let Some(user) = self.check_password(&name, &password, from).await? else {
                return Ok(None);
            };
            self.remember_basic(key, &user.name);
            return Ok(Some(Caller::of(&user)));
        }
        if let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) {
            let digest = token_digest(token);
            // Every user is compared, so the time does not say which one matched.
            let users = self.users();
            let mut found = None;
            for (index, user) in users.iter().enumerate() {
                let stored = user.api_token_hash.as_deref().unwrap_or("");
                if constant_time_eq(stored.as_bytes(), digest.as_bytes()) {
                    found = Some(index);
                }
            }
            return Ok(found.map(|index| Caller::of(&users[index])));
        }
        Ok(self.open().then(Caller::anonymous))
    }

    /// The user whose password this is; throttled and counted like a sign-in.
    async fn check_password(
        &self,
        name: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<Option<UserConfig>, Refusal> {
        let keys: Vec<String> = std::iter::once(format!("user {name}"))
            .chain(from.map(|ip| format!("address {ip}")))
            .collect();
        self.throttled(&keys)?;
        let user = self.users().iter().find(|u| u.name == name).cloned();
        // An unknown user costs the same check as a wrong password.
        let hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let matched = self.passwords.verify(password.to_string(), hash).await?;
        match (matched, user) {
            (true, Some(user)) => {
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                for key in &keys {
                    failures.remove(key);
                }
                Ok(Some(user))
            }
            _ => {
                self.record_failure(&keys, name, from);
                Ok(None)
            }
        }
    }

    fn throttled(&self, keys: &[String]) -> Result<(), Refusal> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let wait = keys
            .iter()
            .filter_map(|k| failures.get(k))
            .map(|f| f.until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(Refusal::Throttled(wait))
        }
    }

    fn record_failure(&self, keys: &[String], name: &str, from: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failures.len() >= THROTTLE_ENTRIES {
            failures.retain(|_, f| now.duration_since(f.last) < MAX_THROTTLE);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                until: now,
                last: now,
            });
            // A burst ends after a quiet minute: counting starts again.
            if now.duration_since(entry.last) > MAX_THROTTLE {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
            if entry.count > FREE_FAILURES {
                let exponent = (entry.count - FREE_FAILURES - 1).min(6);
                let delay = Duration::from_secs(1 << exponent).min(MAX_THROTTLE);
                entry.until = now + delay;
                // Once per burst: when throttling starts.
                if entry.count == FREE_FAILURES + 1 {
                    tracing::warn!(
                        user = %name_hash(name),
                        address = %from.map(|a| a.to_string()).unwrap_or_default(),
                        throttled = %key.split(' ').next().unwrap_or(""),
                        "repeated failed sign-ins: throttling"
                    );
                }
            }
        }
    }

    fn cached_basic(&self, key: &[u8; 32]) -> Option<UserConfig> {
        let name = {
            let cache = self.basic_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(key)
                .filter(|(_, expires)| *expires > Instant::now())
                .map(|(name, _)| name.clone())?
        };
        self.users().iter().find(|u| u.name == name).cloned()
    }

    fn remember_basic(&self, key: [u8; 32], name: &str) {
        let mut cache = self.basic_cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if cache.len() >= BASIC_CACHE_ENTRIES {
            cache.retain(|_, (_, expires)| *expires > now);
            if cache.len() >= BASIC_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (name.to_string(), now + BASIC_CACHE_LIFETIME));
    }
}

/// A cookie's value from the Cookie header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    axum_extra::extract::cookie::CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(
            vec![UserConfig {
                name: "curie".into(),
                role: Role::Physician,
                password_hash: hash_secret("radium").expect("hash"),
                api_token_hash: Some(token_digest("tok")),
            }],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn passwords_verify_with_reused_memory() {
        let hash = hash_secret("radium").expect("hash");
        let mut blocks = Vec::new();
        assert!(verify_reusing("radium", &hash, &mut blocks));
        assert!(!verify_reusing("polonium", &hash, &mut blocks));
        assert!(
            verify_reusing("radium", &hash, &mut blocks),
            "the same memory again"
        );
        assert!(!verify_reusing("radium", "not a hash", &mut blocks));
    }

    #[tokio::test]
    async fn password_checks_beyond_the_queue_are_refused_at_once() {
        // 2 threads and a queue of 8: of 30 checks started together, at most 10 are taken;
        // the rest are Busy at once instead of waiting (each from its own address, so the
        // throttle does not answer first).
        let auth = Arc::new(auth());
        let mut checks = tokio::task::JoinSet::new();
        for n in 0..30u8 {
            let auth = Arc::clone(&auth);
            checks.spawn(async move {
                let from = Some(IpAddr::from([10, 1, 0, n]));
                auth.login(&format!("user{n}"), "wrong", from).await
            });
        }
        let mut busy = 0;
        let mut checked = 0;
        while let Some(outcome) = checks.join_next().await {
            match outcome.expect("task") {
                Err(Refusal::Busy) => busy += 1,
                Ok(None) => checked += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(busy + checked, 30);
        assert!(
            checked <= PASSWORD_THREADS + PASSWORD_QUEUE,
            "{checked} checked"
        );
        assert!(
            busy >= 30 - PASSWORD_THREADS - PASSWORD_QUEUE,
            "{busy} refused"
        );
    }

    #[tokio::test]
    async fn wrong_passwords_are_throttled_and_tokens_found_by_digest() {
        let auth = auth();
        let ip = Some("10.0.0.9".parse().expect("ip"));
        for _ in 0..FREE_FAILURES + 1 {
            assert_eq!(auth.login("curie", "wrong", ip).await, Ok(None));
        }
        assert!(matches!(
            auth.login("curie", "radium", ip).await,
            Err(Refusal::Throttled(_))
        ));
        // Another user from another address is not held up.
        let other = Some("10.0.0.10".parse().expect("ip"));
        assert_eq!(auth.login("nobody", "x", other).await, Ok(None));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer tok".parse().expect("header"));
        let caller = auth.caller(&headers, None).await.expect("checked");
        assert_eq!(caller.map(|c| c.name), Some("curie".to_string()));
        headers.insert("authorization", "Bearer other".parse().expect("header"));
        assert_eq!(auth.caller(&headers, None).await, Ok(None));
    }
}
