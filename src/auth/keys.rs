//! Verifying keys, each pinned to the algorithms its key type can verify:
//! from `JWT_SECRET`, from `JWT_PUBLIC_KEY_FILE`, or from one key of a JWKS.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::KeyError;

/// Shorter HS256 secrets can be brute-forced offline from a single token.
pub const MIN_SECRET_BYTES: usize = 32;

/// The algorithms an RSA key may verify when its JWK names none.
const RSA_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// A key and the checks a token signed with it must pass.
pub struct VerifyingKey {
    key: DecodingKey,
    validation: Validation,
}

impl VerifyingKey {
    /// The token's claims, once its signature, algorithm, `exp`, `nbf`, `iss`
    /// and `aud` have been checked.
    pub fn verify(&self, token: &str) -> jsonwebtoken::errors::Result<Map<String, Value>> {
        jsonwebtoken::decode(token, &self.key, &self.validation).map(|data| data.claims)
    }

    /// The algorithms this key verifies, for logs.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.validation.algorithms
    }

    /// An HS256 shared secret, taken as the bytes of its text.
    pub fn from_secret(secret: &str, checks: &Validation) -> Result<Self, KeyError> {
        Ok(Self::pinned(
            DecodingKey::from_secret(checked_secret(secret)?),
            checks,
            vec![Algorithm::HS256],
        ))
    }

    /// A PEM public key and the one algorithm it verifies. Keys that could
    /// never verify a token refuse to load, rather than refusing every token.
    pub fn from_pem_file(path: &std::path::Path, checks: &Validation) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| KeyError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        let pem = pem::parse(&text).map_err(|_| KeyError::NotAPublicKey(shown.clone()))?;
        if pem.tag().contains("PRIVATE") {
            return Err(KeyError::PrivateKey(shown));
        }
        let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(&text) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(&text) {
            if !names_p256(pem.contents()) {
                return Err(KeyError::UnsupportedCurve(shown));
            }
            (key, Algorithm::ES256)
        } else {
            let key =
                DecodingKey::from_ed_pem(&text).map_err(|_| KeyError::NotAPublicKey(shown))?;
            (key, Algorithm::EdDSA)
        };
        Ok(Self::pinned(key, checks, vec![algorithm]))
    }

    /// One key of a JWKS. Its type decides the algorithms it may verify, and
    /// its `alg`, when given, narrows them to one; `use` and `key_ops` must
    /// allow verifying signatures. Symmetric keys are refused: anyone can read
    /// a JWKS, so a secret in one is no secret.
    pub fn from_jwk(jwk: &Jwk, checks: &Validation) -> Result<Self, String> {
        if let Some(usage) = &jwk.common.public_key_use
            && *usage != PublicKeyUse::Signature
        {
            return Err("its `use` is not `sig`".to_owned());
        }
        if let Some(operations) = &jwk.common.key_operations
            && !operations.contains(&KeyOperations::Verify)
        {
            return Err("its `key_ops` do not include `verify`".to_owned());
        }
        let fitting: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &RSA_ALGORITHMS,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Err("its curve is not P-256 or P-384".to_owned()),
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                &[Algorithm::EdDSA]
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(
                    "it is a symmetric (`oct`) key, which a public key set must not hold"
                        .to_owned(),
                );
            }
            _ => return Err("its key type is not RSA, EC or Ed25519".to_owned()),
        };
        let algorithms = match jwk.common.key_algorithm {
            None => fitting.to_vec(),
            Some(named) => match Algorithm::try_from(named) {
                Ok(algorithm) if fitting.contains(&algorithm) => vec![algorithm],
                _ => return Err(format!("its `alg` {named} does not fit its key type")),
            },
        };
        let key =
            DecodingKey::from_jwk(jwk).map_err(|error| format!("it is malformed: {error}"))?;
        Ok(Self::pinned(key, checks, algorithms))
    }

    fn pinned(key: DecodingKey, checks: &Validation, algorithms: Vec<Algorithm>) -> Self {
        let mut validation = checks.clone();
        validation.algorithms = algorithms;
        Self { key, validation }
    }
}

pub fn checked_secret(secret: &str) -> Result<&[u8], KeyError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret);
    }
    Ok(secret.as_bytes())
}

/// Whether a DER public key names the P-256 curve (OID 1.2.840.10045.3.1.7).
fn names_p256(der: &[u8]) -> bool {
    const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    der.windows(P256_OID.len()).any(|window| window == P256_OID)
}
