//! Authentication and authorisation at the handshake: subscriber JWTs (HS256, or RS256/ES256
//! with a public key; claims `sub`, `exp`, optional `channels`), publisher tokens, and the
//! browser `Origin` allow-list.

pub mod channels;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, ConfigError};
use crate::net::http::RequestHead;
use channels::ChannelPattern;

/// Who a subscriber is, from its token.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The user id (`sub`).
    pub user: String,
    /// When the token expires, ms since the epoch.
    pub expires_ms: u64,
    /// What the user may subscribe to (`None`: everything).
    pub channels: Option<Vec<ChannelPattern>>,
}

/// The claims tickfan reads (others are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `exchange/symbol/dataType` patterns the user may subscribe to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

/// Checks subscriber tokens.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

/// Why a token was refused (the reason is logged, the client gets 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl Authenticator {
    /// The authenticator the config asks for (`None`: subscribers need no token). Errors name
    /// the key (unreadable key file, unknown algorithm, both secret and key).
    pub fn from_config(auth: &AuthConfig) -> Result<Option<Authenticator>, ConfigError> {
        let (key, alg) = match (
            auth.jwt_secret.is_empty(),
            auth.jwt_public_key_file.is_empty(),
        ) {
            (true, true) => return Ok(None),
            (false, false) => {
                return Err(ConfigError::key(
                    "auth.jwt_public_key_file",
                    "set either auth.jwt_secret (HS256) or a public key, not both",
                ))
            }
            (false, true) => (
                DecodingKey::from_secret(auth.jwt_secret.as_bytes()),
                Algorithm::HS256,
            ),
            (true, false) => {
                let pem = std::fs::read(&auth.jwt_public_key_file).map_err(|e| {
                    ConfigError::key("auth.jwt_public_key_file", format!("cannot read: {e}"))
                })?;
                let bad = |e: jsonwebtoken::errors::Error| {
                    ConfigError::key("auth.jwt_public_key_file", format!("not a usable key: {e}"))
                };
                match auth.jwt_algorithm.as_str() {
                    "RS256" => (
                        DecodingKey::from_rsa_pem(&pem).map_err(bad)?,
                        Algorithm::RS256,
                    ),
                    "ES256" => (
                        DecodingKey::from_ec_pem(&pem).map_err(bad)?,
                        Algorithm::ES256,
                    ),
                    other => {
                        return Err(ConfigError::key(
                            "auth.jwt_algorithm",
                            format!("expected RS256 or ES256 with a public key, got `{other}`"),
                        ))
                    }
                }
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if auth.jwt_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&auth.jwt_audience]);
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        }
        if !auth.jwt_issuer.is_empty() {
            validation.set_issuer(&[&auth.jwt_issuer]);
        }
        Ok(Some(Authenticator { key, validation }))
    }

    /// Checks a token: signature, expiry, audience, issuer, and the `channels` patterns.
    pub fn check(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError(format!("invalid token: {e}")))?;
        let c = data.claims;
        if c.sub.is_empty() {
            return Err(AuthError("token has an empty sub".into()));
        }
        let channels = match c.channels {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|p| ChannelPattern::parse(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(AuthError)?,
            ),
        };
        Ok(Identity {
            user: c.sub,
            expires_ms: c.exp.saturating_mul(1000),
            channels,
        })
    }
}

/// The token a request carries: `?token=` in the query, or `Authorization: Bearer`.
pub fn token_of(head: &RequestHead) -> Option<String> {
    if let Some(q) = &head.query {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                return Some(percent_decode(v));
            }
        }
    }
    let auth = head.authorization.as_deref()?;
    let (scheme, value) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| value.trim().to_string())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a publisher's request carries one of the configured tokens (always true when none
/// are configured). The comparison takes the same time wherever the first difference is.
pub fn publisher_allowed(auth: &AuthConfig, head: &RequestHead) -> bool {
    if auth.publisher_tokens.is_empty() {
        return true;
    }
    let Some(given) = token_of(head) else {
        return false;
    };
    auth.publisher_tokens
        .iter()
        .any(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a browser origin may connect: no `Origin` header (not a browser), an empty list,
/// or an exact (case-insensitive) match.
pub fn origin_allowed(auth: &AuthConfig, head: &RequestHead) -> bool {
    match &head.origin {
        None => true,
        Some(o) => {
            auth.allowed_origins.is_empty()
                || auth
                    .allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
        }
    }
}

/// Mints an HS256 token (for `tickfan token` and tests).
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, AuthError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError(format!("cannot sign: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secret: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: secret.into(),
            jwt_audience: "tickfan".into(),
            ..AuthConfig::default()
        }
    }

    fn claims(exp_in: i64) -> Claims {
        let now = (crate::shared::now_ms() / 1000) as i64;
        Claims {
            sub: "alice".into(),
            exp: (now + exp_in) as u64,
            aud: Some("tickfan".into()),
            iss: None,
            channels: Some(vec!["binance/*/trade".into()]),
        }
    }

    #[test]
    fn tokens_are_checked() {
        let a = Authenticator::from_config(&cfg("s3cret")).unwrap().unwrap();
        let good = mint_hs256("s3cret", &claims(60)).unwrap();
        let id = a.check(&good).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.channels.unwrap().len(), 1);
        assert!(a.check(&mint_hs256("other", &claims(60)).unwrap()).is_err());
        assert!(a
            .check(&mint_hs256("s3cret", &claims(-10)).unwrap())
            .is_err());
        let mut wrong_aud = claims(60);
        wrong_aud.aud = Some("someone-else".into());
        assert!(a.check(&mint_hs256("s3cret", &wrong_aud).unwrap()).is_err());
        assert!(a.check("not.a.token").is_err());
        assert!(Authenticator::from_config(&AuthConfig::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn token_sources_and_origins() {
        let head = RequestHead {
            query: Some("a=1&token=abc%2Edef".into()),
            ..RequestHead::default()
        };
        assert_eq!(token_of(&head).as_deref(), Some("abc.def"));
        let head = RequestHead {
            authorization: Some("Bearer xyz".into()),
            ..RequestHead::default()
        };
        assert_eq!(token_of(&head).as_deref(), Some("xyz"));
        let mut auth = AuthConfig {
            publisher_tokens: vec!["xyz".into()],
            ..AuthConfig::default()
        };
        assert!(publisher_allowed(&auth, &head));
        assert!(!publisher_allowed(&auth, &RequestHead::default()));
        auth.allowed_origins = vec!["https://app.example.com".into()];
        let from = |o: &str| RequestHead {
            origin: Some(o.into()),
            ..RequestHead::default()
        };
        assert!(origin_allowed(&auth, &from("https://APP.example.com")));
        assert!(!origin_allowed(&auth, &from("https://evil.example.com")));
        assert!(origin_allowed(&auth, &RequestHead::default()));
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
    }
}
