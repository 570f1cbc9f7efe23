//! Bearer token -> verified claims -> the viewer: who is asking, and whether
//! they are an admin.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtArgs;
use crate::onboarding::UserId;

/// The signing secret `serve --dev` and `token --dev` fall back to when none is
/// configured. It is public, so `--dev` binds loopback only.
pub const DEV_SECRET: &str = "onboarding-development-secret-not-for-production";

/// Shorter HS256 secrets can be brute-forced offline from a single token.
const MIN_SECRET_BYTES: usize = 32;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// No token: may run introspection, nothing else.
    Anonymous,
    /// A verified token's subject.
    User { id: UserId, admin: bool },
}

/// The claims this service reads; `exp`, `nbf`, `iss` and `aud` are checked by
/// the validation, other claims are ignored.
#[derive(Debug, Deserialize)]
struct VerifiedClaims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

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
        "The bearer token's claims are malformed: it needs `sub` (a string of 1 to 255 bytes, \
         no NUL) and `exp` (a number), and `roles`, when present, must be an array of strings."
    )]
    BadClaims,
    #[error("The bearer token is not a valid token signed for this service.")]
    Invalid,
}

/// Why the configured key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no JWT key is configured: set JWT_SECRET (HS256) or JWT_PUBLIC_KEY_FILE (RS256, ES256 or EdDSA), \
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
    #[error("cannot sign the token: {0}")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

/// Checks bearer tokens against the configured key, with the algorithm pinned to it.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    admin_role: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Builds the verifier from the settings; `dev` allows the built-in secret
    /// when no key is configured.
    pub fn from_settings(jwt: &JwtArgs, dev: bool) -> Result<Self, KeyError> {
        let (key, algorithm) = match (&jwt.jwt_secret, &jwt.jwt_public_key_file) {
            (Some(secret), _) => (
                DecodingKey::from_secret(checked_secret(secret)?),
                Algorithm::HS256,
            ),
            (None, Some(path)) => public_key(path)?,
            (None, None) if dev => (
                DecodingKey::from_secret(DEV_SECRET.as_bytes()),
                Algorithm::HS256,
            ),
            (None, None) => return Err(KeyError::Missing),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
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
        Ok(Self {
            key,
            validation,
            admin_role: jwt.jwt_admin_role.clone(),
        })
    }

    /// The viewer an `Authorization` header value speaks for.
    pub fn viewer(&self, authorization: Option<&str>) -> Result<Viewer, TokenError> {
        let Some(authorization) = authorization else {
            return Ok(Viewer::Anonymous);
        };
        let token = bearer_token(authorization).ok_or(TokenError::NotBearer)?;
        let claims = jsonwebtoken::decode::<VerifiedClaims>(token, &self.key, &self.validation)
            .map_err(|error| token_error(token, error.kind()))?
            .claims;
        let admin = claims.roles.contains(&self.admin_role);
        let id = UserId::parse(claims.sub).map_err(|_| TokenError::BadClaims)?;
        Ok(Viewer::User { id, admin })
    }
}

/// The token in `Bearer <token>`; the scheme is case-insensitive (RFC 7235).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn token_error(token: &str, kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongIssuerOrAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            TokenError::BadClaims
        }
        // `Json` comes from the header (not a token at all) or, once the
        // signature held, from claims of the wrong shape.
        ErrorKind::Json(_) if jsonwebtoken::decode_header(token).is_ok() => TokenError::BadClaims,
        _ => TokenError::Invalid,
    }
}

fn checked_secret(secret: &str) -> Result<&[u8], KeyError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret);
    }
    Ok(secret.as_bytes())
}

/// Reads a PEM public key and the one algorithm it verifies. Keys that could
/// never verify a token refuse to load, rather than refusing every token.
fn public_key(path: &std::path::Path) -> Result<(DecodingKey, Algorithm), KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|source| KeyError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    let pem = pem::parse(&text).map_err(|_| KeyError::NotAPublicKey(shown.clone()))?;
    if pem.tag().contains("PRIVATE") {
        return Err(KeyError::PrivateKey(shown));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(&text) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&text) {
        return if names_p256(pem.contents()) {
            Ok((key, Algorithm::ES256))
        } else {
            Err(KeyError::UnsupportedCurve(shown))
        };
    }
    DecodingKey::from_ed_pem(&text)
        .map(|key| (key, Algorithm::EdDSA))
        .map_err(|_| KeyError::NotAPublicKey(shown))
}

/// Whether a DER public key names the P-256 curve (OID 1.2.840.10045.3.1.7).
fn names_p256(der: &[u8]) -> bool {
    const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    der.windows(P256_OID.len()).any(|window| window == P256_OID)
}

/// What `onboarding token` signs.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub secret: &'a str,
    pub sub: &'a str,
    pub roles: &'a [String],
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
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(KeyError::Signing)
}
