//! Bearer tokens with scopes. Valid tokens are remembered for a few seconds so that the
//! intake path does not read the token table on every request; a revoked token stops
//! working within that time.

use crate::error::ApiError;
use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use voronka_store::{Store, TokenInfo, hash_token};

const TTL: Duration = Duration::from_secs(5);
const MAX_CACHED: usize = 10_000;

#[derive(Default)]
pub struct TokenCache {
    map: RwLock<HashMap<[u8; 32], (TokenInfo, Instant)>>,
}

impl TokenCache {
    /// Forgets every cached token (after a revocation in this process).
    pub fn forget_all(&self) {
        if let Ok(mut m) = self.map.write() {
            m.clear();
        }
    }

    pub async fn authorize(&self, store: &Store, headers: &HeaderMap, scope: &'static str) -> Result<TokenInfo, ApiError> {
        self.authorize_any(store, headers, &[scope]).await
    }

    /// Like `authorize`, for an action that any of `scopes` allows.
    pub async fn authorize_any(&self, store: &Store, headers: &HeaderMap, scopes: &[&'static str]) -> Result<TokenInfo, ApiError> {
        let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
        let hash = hash_token(token);
        let cached = self.map.read().ok().and_then(|m| m.get(&hash).filter(|(_, at)| at.elapsed() < TTL).map(|(t, _)| t.clone()));
        let info = match cached {
            Some(t) => t,
            None => {
                let t = store.token_by_hash(&hash).await?.ok_or(ApiError::Unauthorized)?;
                if let Ok(mut m) = self.map.write() {
                    if m.len() >= MAX_CACHED {
                        m.clear();
                    }
                    m.insert(hash, (t.clone(), Instant::now()));
                }
                t
            }
        };
        if scopes.iter().any(|s| info.allows(s)) { Ok(info) } else { Err(ApiError::Forbidden(scopes.first().copied().unwrap_or("admin"))) }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 200).then_some(token)
}
