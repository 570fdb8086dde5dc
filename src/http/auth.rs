//! Users, sessions and CSRF for the web pages and the API. Passwords are argon2 hashes from the
//! config; a login creates a random session (cookie `simgate_session`, HttpOnly,
//! SameSite=Strict) with its own CSRF token that every form must send back. The API also takes
//! HTTP Basic credentials or a Bearer API token. With no users configured, everyone is an
//! anonymous viewer (and the config only allows binding to loopback then).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::HeaderMap;

use crate::config::{Role, UserConfig};

pub const SESSION_COOKIE: &str = "simgate_session";

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
}

#[derive(Debug)]
struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

#[derive(Debug)]
pub struct Auth {
    users: Vec<UserConfig>,
    lifetime: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex: session ids and CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

/// Why a secret could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the secret")]
pub struct HashError(#[source] argon2::password_hash::Error);

/// An argon2id PHC string for a password or API token (`simgate user add`).
pub fn hash_secret(secret: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(HashError)
}

fn verify(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

impl Auth {
    pub fn new(users: Vec<UserConfig>, lifetime: Duration) -> Auth {
        Auth {
            users,
            lifetime,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    pub fn open(&self) -> bool {
        self.users.is_empty()
    }

    /// Checks a name and password; on success opens a session and returns its id.
    pub fn login(&self, name: &str, password: &str) -> Option<String> {
        let user = self.users.iter().find(|u| u.name == name)?;
        if !verify(password, &user.password_hash) {
            return None;
        }
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
        Some(id)
    }

    pub fn logout(&self, session: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }

    /// The caller of a request: session cookie, then Basic or Bearer credentials; `None` when
    /// users are configured and none of these is valid.
    pub fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = sessions.get(&id).filter(|s| s.expires > Instant::now()) {
                return Some(Caller {
                    name: s.name.clone(),
                    role: s.role,
                    csrf: Some(s.csrf.clone()),
                    via_session: true,
                });
            }
        }
        let authorization = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(basic) = authorization.and_then(|v| v.strip_prefix("Basic ")) {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (name, password) = decoded.split_once(':')?;
            let user = self.users.iter().find(|u| u.name == name)?;
            return verify(password, &user.password_hash).then(|| Caller {
                name: user.name.clone(),
                role: user.role,
                csrf: None,
                via_session: false,
            });
        }
        if let Some(token) = authorization.and_then(|v| v.strip_prefix("Bearer ")) {
            let user = self.users.iter().find(|u| {
                u.api_token_hash
                    .as_deref()
                    .is_some_and(|h| verify(token.trim(), h))
            })?;
            return Some(Caller {
                name: user.name.clone(),
                role: user.role,
                csrf: None,
                via_session: false,
            });
        }
        self.open().then(Caller::anonymous)
    }
}

/// A cookie's value from the Cookie header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    axum_extra::extract::cookie::CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_string())
}
