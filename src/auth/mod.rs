//! Bearer token -> verified claims -> the viewer: who is asking, and whether
//! they are an admin. Tokens are verified with a shared secret, a public key
//! file, or the keys an identity provider publishes (`jwks`).

mod claims;
mod jwks;
mod keys;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::Serialize;

use crate::config::JwtArgs;
use crate::domain::Viewer;
use claims::{ClaimNames, ClaimPath};
use jwks::Jwks;
use keys::{MIN_SECRET_BYTES, VerifyingKey, checked_secret};

pub use jwks::{FetchError, REFETCH_INTERVAL};

/// The signing secret `serve --dev` and `token --dev` fall back to when none is
/// configured. It is public, so `--dev` binds loopback only.
pub const DEV_SECRET: &str = "onboarding-development-secret-not-for-production";

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// The claims `onboarding token` signs.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    /// The default groups claim: one group as a string, several as an array.
    #[serde(skip_serializing_if = "Option::is_none")]
    org_id: Option<serde_json::Value>,
}

/// Why a token was refused; the message tells the client what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("The Authorization header must be `Bearer <token>`.")]
    NotBearer,
    #[error("The bearer token has expired; sign in again.")]
    Expired,
    #[error("The bearer token is not valid yet (`nbf` is in the future).")]
    NotYetValid,
    #[error("The bearer token was issued for another issuer or audience.")]
    WrongIssuerOrAudience,
    #[error(
        "The bearer token's claims are malformed: it needs `{user}` (a string of 1 to 255 bytes, \
         no NUL) and `exp` (a number), and `{roles}`, when present, must be an array of strings."
    )]
    BadClaims { user: String, roles: String },
    #[error(
        "The bearer token's groups claim `{groups}` (JWT_GROUPS_CLAIM) must be a group id or an \
         array of group ids, each a string of 1 to 255 bytes without NUL."
    )]
    BadGroups { groups: String },
    #[error(
        "The bearer token was signed with a key (`kid`) that the identity provider does not \
         publish; sign in again."
    )]
    UnknownKey,
    #[error("The bearer token names no signing key (`kid` in its header).")]
    NoKeyId,
    #[error("The bearer token is not a valid token signed for this service.")]
    Invalid,
}

/// Why the configured key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no JWT key is configured: set JWT_JWKS_URL (your identity provider's key set), \
         JWT_ISSUER (an OpenID Connect issuer whose key set is found by discovery), \
         JWT_PUBLIC_KEY_FILE (RS256, ES256 or EdDSA) or JWT_SECRET (HS256), \
         or run `onboarding serve --dev` on a laptop"
    )]
    Missing,
    #[error("JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (try `openssl rand -hex 32`)")]
    ShortSecret,
    #[error("cannot read JWT_PUBLIC_KEY_FILE {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("JWT_PUBLIC_KEY_FILE {0} is not a PEM RSA, P-256 or Ed25519 public key")]
    NotAPublicKey(String),
    #[error(
        "JWT_PUBLIC_KEY_FILE {0} holds a private key: give its public half \
         (`openssl pkey -in PRIVATE.pem -pubout`) and keep the private key with the token issuer"
    )]
    PrivateKey(String),
    #[error(
        "JWT_PUBLIC_KEY_FILE {0} is an elliptic-curve key on another curve; \
         ES256 needs a P-256 (prime256v1) key"
    )]
    UnsupportedCurve(String),
    #[error("{setting} `{url}` cannot be used: {reason}")]
    JwksUrl {
        setting: &'static str,
        url: String,
        reason: String,
    },
    #[error("cannot fetch the JWKS at {url}: {reason}")]
    Jwks { url: String, reason: FetchError },
    #[error(
        "cannot read the OpenID discovery document at {url} (from JWT_ISSUER): {reason}; \
         set JWT_JWKS_URL to the provider's key set instead if it publishes none"
    )]
    Discovery { url: String, reason: FetchError },
    #[error(
        "JWT_ISSUER is `{configured}`, but the provider's discovery document names its issuer \
         `{published}`: set JWT_ISSUER to exactly that (tokens carry it as `iss`)"
    )]
    IssuerMismatch {
        configured: String,
        published: String,
    },
    #[error("cannot sign the token: {0}")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

/// Where the keys that verify tokens come from.
enum Keys {
    /// `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE` or the development secret.
    Fixed(Box<VerifyingKey>),
    /// An identity provider's key set, chosen by each token's `kid`.
    Published(Arc<Jwks>),
}

/// Checks bearer tokens against the configured keys, each pinned to its
/// algorithms, and reads the viewer from their claims.
pub struct Verifier {
    keys: Keys,
    claims: ClaimNames,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: &dyn std::fmt::Debug = match &self.keys {
            Keys::Fixed(key) => &key.algorithms().to_vec(),
            Keys::Published(jwks) => jwks,
        };
        f.debug_struct("Verifier")
            .field("keys", keys)
            .field("claims", &self.claims)
            .finish()
    }
}

impl Verifier {
    /// Builds the verifier from the settings, fetching the provider's keys
    /// when they are published; `dev` allows the built-in secret when no key
    /// is configured.
    pub async fn from_settings(jwt: &JwtArgs, dev: bool) -> Result<Self, KeyError> {
        let checks = checks(jwt);
        let keys = match (&jwt.jwt_secret, &jwt.jwt_public_key_file, &jwt.jwt_jwks_url) {
            (Some(secret), _, _) => {
                Keys::Fixed(Box::new(VerifyingKey::from_secret(secret, &checks)?))
            }
            (None, Some(path), _) => {
                Keys::Fixed(Box::new(VerifyingKey::from_pem_file(path, &checks)?))
            }
            (None, None, Some(url)) => {
                Keys::Published(Jwks::start(url, "JWT_JWKS_URL", checks).await?)
            }
            (None, None, None) => match &jwt.jwt_issuer {
                Some(issuer) => Keys::Published(Jwks::discover(issuer, checks).await?),
                None if dev => {
                    Keys::Fixed(Box::new(VerifyingKey::from_secret(DEV_SECRET, &checks)?))
                }
                None => return Err(KeyError::Missing),
            },
        };
        Ok(Self {
            keys,
            claims: ClaimNames {
                user: ClaimPath::new(&jwt.jwt_user_claim),
                roles: ClaimPath::new(&jwt.jwt_roles_claim),
                groups: ClaimPath::new(&jwt.jwt_groups_claim),
                admin_role: jwt.jwt_admin_role.clone(),
            },
        })
    }

    /// The viewer an `Authorization` header value speaks for.
    pub async fn viewer(&self, authorization: Option<&str>) -> Result<Viewer, TokenError> {
        Ok(self.viewer_until(authorization).await?.0)
    }

    /// The viewer an `Authorization` header value speaks for, and how long
    /// its token stays valid (none when anonymous): a connection that
    /// outlives one request ends then.
    pub async fn viewer_until(
        &self,
        authorization: Option<&str>,
    ) -> Result<(Viewer, Option<Duration>), TokenError> {
        let Some(authorization) = authorization else {
            return Ok((Viewer::Anonymous, None));
        };
        let token = bearer_token(authorization).ok_or(TokenError::NotBearer)?;
        let verified = match &self.keys {
            Keys::Fixed(key) => key.verify(token),
            Keys::Published(jwks) => {
                let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
                jwks.key(header.kid.as_deref()).await?.verify(token)
            }
        };
        let claims = verified.map_err(|error| self.token_error(token, error.kind()))?;
        // `exp` is required and checked above; past it, with the leeway
        // every token gets, the token no longer verifies.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let valid_for = claims
            .get("exp")
            .and_then(serde_json::Value::as_f64)
            .map(|exp| {
                Duration::from_secs((exp.max(0.0) as u64 + LEEWAY_SECONDS).saturating_sub(now))
            });
        Ok((self.claims.viewer(&claims)?, valid_for))
    }

    fn token_error(&self, token: &str, kind: &ErrorKind) -> TokenError {
        match kind {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                TokenError::WrongIssuerOrAudience
            }
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                self.claims.malformed()
            }
            // `Json` comes from the header (not a token at all) or, once the
            // signature held, from claims of the wrong shape.
            ErrorKind::Json(_) if jsonwebtoken::decode_header(token).is_ok() => {
                self.claims.malformed()
            }
            _ => TokenError::Invalid,
        }
    }
}

/// The checks every token passes whichever key verifies it: `exp` (required),
/// `nbf`, and `iss` and `aud` when configured. The algorithms are set per key.
fn checks(jwt: &JwtArgs) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &jwt.jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &jwt.jwt_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The token in `Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What `onboarding token` signs.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub secret: &'a str,
    pub sub: &'a str,
    pub roles: &'a [String],
    /// Groups for the default groups claim, `org_id`.
    pub groups: &'a [String],
    pub ttl: Duration,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

/// Signs an HS256 token, for development and tests.
pub fn mint(request: &TokenRequest<'_>) -> Result<String, KeyError> {
    let key = EncodingKey::from_secret(checked_secret(request.secret)?);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = MintedClaims {
        sub: request.sub,
        iat: now.as_secs(),
        exp: (now + request.ttl).as_secs(),
        iss: request.issuer,
        aud: request.audience,
        roles: request.roles,
        org_id: match request.groups {
            [] => None,
            [group] => Some(serde_json::Value::from(group.as_str())),
            groups => Some(serde_json::Value::from(groups.to_vec())),
        },
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(KeyError::Signing)
}
