//! ID tokens: a compact JWS checked against the provider's published keys, then its claims.
//! Only asymmetric algorithms are accepted (RS*, PS*, ES256, ES384, EdDSA), each only with a
//! key of its own family: never `none`, never an HMAC (which would let a public key act as a
//! shared secret).

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Seconds of clock difference tolerated in `exp`, `nbf` and `iat`.
pub const SKEW_SECS: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a signed JWT (three base64url parts)")]
    Malformed,
    #[error("the token's algorithm {0:?} is not accepted (only RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)")]
    Algorithm(String),
    #[error("no key of the provider matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token's issuer {got:?} is not {expected:?}")]
    Issuer { got: String, expected: String },
    #[error("the token is not for this gateway (audience {0})")]
    Audience(String),
    #[error("the token names several audiences but its azp ({0:?}) is not this gateway's client")]
    AuthorizedParty(Option<String>),
    #[error("the token expired {0} s ago")]
    Expired(i64),
    #[error("the token is not valid before {0} s from now")]
    NotYetValid(i64),
    #[error("the token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the token lacks the claim {0}")]
    Missing(&'static str),
    #[error("the token's nonce does not match this sign-in")]
    Nonce,
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// One key of the provider's JWKS.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// What an ID token must say.
pub struct Expect<'a> {
    pub issuer: &'a str,
    /// The client ids it may be for (the gateway's, the CLI's, `extra_audiences`).
    pub audiences: &'a [String],
    /// The nonce of this sign-in, when it sent one.
    pub nonce: Option<&'a str>,
    /// Now, in seconds since the epoch.
    pub now: i64,
}

fn b64(part: &str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)
}

/// How a signature of an accepted algorithm is checked.
#[derive(Clone, Copy)]
enum Check {
    Rsa(&'static signature::RsaParameters),
    Ec(&'static signature::EcdsaVerificationAlgorithm, &'static str),
    Ed25519,
}

impl Check {
    fn of(alg: &str) -> Option<Check> {
        Some(match alg {
            "RS256" => Check::Rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Check::Rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Check::Rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Check::Rsa(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => Check::Rsa(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => Check::Rsa(&signature::RSA_PSS_2048_8192_SHA512),
            "ES256" => Check::Ec(&signature::ECDSA_P256_SHA256_FIXED, "P-256"),
            "ES384" => Check::Ec(&signature::ECDSA_P384_SHA384_FIXED, "P-384"),
            "EdDSA" => Check::Ed25519,
            _ => return None,
        })
    }

    /// Whether `jwk` is a key of this algorithm's family (and curve).
    fn fits(self, jwk: &Jwk) -> bool {
        match self {
            Check::Rsa(_) => jwk.kty == "RSA",
            Check::Ec(_, crv) => jwk.kty == "EC" && jwk.crv.as_deref() == Some(crv),
            Check::Ed25519 => jwk.kty == "OKP" && jwk.crv.as_deref() == Some("Ed25519"),
        }
    }

    fn verify(self, jwk: &Jwk, msg: &[u8], sig: &[u8]) -> Result<(), TokenError> {
        let field = |v: &Option<String>| v.as_deref().ok_or(TokenError::Signature).and_then(b64);
        let checked = match self {
            Check::Rsa(params) => {
                let (n, e) = (field(&jwk.n)?, field(&jwk.e)?);
                signature::RsaPublicKeyComponents { n: &n, e: &e }.verify(params, msg, sig)
            }
            Check::Ec(alg, _) => {
                let mut point = vec![4u8];
                point.extend(field(&jwk.x)?);
                point.extend(field(&jwk.y)?);
                UnparsedPublicKey::new(alg, &point).verify(msg, sig)
            }
            Check::Ed25519 => {
                UnparsedPublicKey::new(&signature::ED25519, &field(&jwk.x)?).verify(msg, sig)
            }
        };
        checked.map_err(|_| TokenError::Signature)
    }
}

/// The token's `kid` (to tell whether the keys need refreshing), without trusting anything.
pub fn key_id(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    serde_json::from_slice::<Header>(&b64(header).ok()?)
        .ok()?
        .kid
}

/// Checks the signature with `keys` and the claims against `expect`; the claims.
pub fn verify(token: &str, keys: &Jwks, expect: &Expect) -> Result<Map<String, Value>, TokenError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, body, sig] = parts[..] else {
        return Err(TokenError::Malformed);
    };
    let header: Header = serde_json::from_slice(&b64(head)?).map_err(|_| TokenError::Malformed)?;
    let Some(check) = Check::of(&header.alg) else {
        return Err(TokenError::Algorithm(header.alg));
    };
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|k| check.fits(k))
        .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == header.alg))
        .filter(|k| match &header.kid {
            Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
            None => true,
        })
        .collect();
    let key = match (candidates.as_slice(), &header.kid) {
        ([one], _) => *one,
        ([first, ..], Some(_)) => *first,
        _ => return Err(TokenError::UnknownKey(header.kid)),
    };
    let signature = b64(sig)?;
    let signed = &token[..head.len() + 1 + body.len()];
    check.verify(key, signed.as_bytes(), &signature)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(body)?).map_err(|_| TokenError::Malformed)?;
    check_claims(&claims, expect)?;
    Ok(claims)
}

fn check_claims(claims: &Map<String, Value>, expect: &Expect) -> Result<(), TokenError> {
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(TokenError::Missing("iss"))?;
    if iss != expect.issuer {
        return Err(TokenError::Issuer {
            got: iss.to_string(),
            expected: expect.issuer.to_string(),
        });
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(TokenError::Missing("aud")),
    };
    if !auds
        .iter()
        .any(|a| expect.audiences.iter().any(|ours| ours == a))
    {
        return Err(TokenError::Audience(auds.join(", ")));
    }
    let azp = claims.get("azp").and_then(Value::as_str);
    if (auds.len() > 1 || azp.is_some())
        && !azp.is_some_and(|p| expect.audiences.iter().any(|ours| ours == p))
    {
        return Err(TokenError::AuthorizedParty(azp.map(str::to_string)));
    }
    let time = |name: &'static str| claims.get(name).and_then(Value::as_i64);
    let exp = time("exp").ok_or(TokenError::Missing("exp"))?;
    if expect.now >= exp + SKEW_SECS {
        return Err(TokenError::Expired(expect.now - exp));
    }
    if let Some(nbf) = time("nbf") {
        if expect.now + SKEW_SECS < nbf {
            return Err(TokenError::NotYetValid(nbf - expect.now));
        }
    }
    let iat = time("iat").ok_or(TokenError::Missing("iat"))?;
    if iat > expect.now + SKEW_SECS {
        return Err(TokenError::IssuedInFuture);
    }
    if let Some(nonce) = expect.nonce {
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(TokenError::Nonce);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

    pub struct TestKey {
        pair: EcdsaKeyPair,
        pub kid: String,
    }

    impl TestKey {
        pub fn new(kid: &str) -> TestKey {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            TestKey {
                pair: EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8.as_ref(),
                    &rng,
                )
                .unwrap(),
                kid: kid.into(),
            }
        }

        pub fn jwk(&self) -> serde_json::Value {
            let point = self.pair.public_key().as_ref();
            let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                "x": enc(&point[1..33]), "y": enc(&point[33..65])})
        }

        pub fn jwks(&self) -> Jwks {
            serde_json::from_value(serde_json::json!({"keys": [self.jwk()]})).unwrap()
        }

        pub fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
            let enc = |v: &serde_json::Value| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
            };
            let signed = format!("{}.{}", enc(&header), enc(&claims));
            let sig = self
                .pair
                .sign(&SystemRandom::new(), signed.as_bytes())
                .unwrap();
            format!(
                "{signed}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref())
            )
        }

        pub fn token(&self, claims: serde_json::Value) -> String {
            self.sign(
                serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"}),
                claims,
            )
        }
    }

    pub const NOW: i64 = 1_800_000_000;

    pub fn claims() -> serde_json::Value {
        serde_json::json!({"iss": "https://idp.example", "aud": "ztk", "sub": "u-1",
            "email": "ada@example.com", "groups": ["dev"], "nonce": "n-1",
            "iat": NOW - 10, "exp": NOW + 300})
    }

    fn expect<'a>(aud: &'a [String], nonce: Option<&'a str>) -> Expect<'a> {
        Expect {
            issuer: "https://idp.example",
            audiences: aud,
            nonce,
            now: NOW,
        }
    }

    fn with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> serde_json::Value {
        let mut c = claims();
        change(c.as_object_mut().unwrap());
        c
    }

    #[test]
    fn a_valid_token_passes_and_every_bad_one_is_refused() {
        let key = TestKey::new("k1");
        let keys = key.jwks();
        let aud = vec!["ztk".to_string(), "ztk-cli".to_string()];
        let ok = verify(&key.token(claims()), &keys, &expect(&aud, Some("n-1"))).unwrap();
        assert_eq!(ok["email"], "ada@example.com");
        let bad = |claims: serde_json::Value, nonce: Option<&str>| {
            verify(&key.token(claims), &keys, &expect(&aud, nonce)).unwrap_err()
        };
        assert!(matches!(
            bad(
                with(|c| {
                    c.insert("iss".into(), "https://evil.example".into());
                }),
                None
            ),
            TokenError::Issuer { .. }
        ));
        assert!(matches!(
            bad(
                with(|c| {
                    c.insert("aud".into(), "other".into());
                }),
                None
            ),
            TokenError::Audience(_)
        ));
        assert!(matches!(
            bad(
                with(|c| {
                    c.insert("aud".into(), serde_json::json!(["ztk", "other"]));
                }),
                None
            ),
            TokenError::AuthorizedParty(None)
        ));
        assert!(verify(
            &key.token(with(|c| {
                c.insert("aud".into(), serde_json::json!(["ztk", "other"]));
                c.insert("azp".into(), "ztk".into());
            })),
            &keys,
            &expect(&aud, None)
        )
        .is_ok());
        assert!(matches!(
            bad(
                with(|c| {
                    c.insert("azp".into(), "other".into());
                }),
                None
            ),
            TokenError::AuthorizedParty(_)
        ));
        assert_eq!(
            bad(
                with(|c| {
                    c.insert("exp".into(), (NOW - 61).into());
                }),
                None
            ),
            TokenError::Expired(61)
        );
        // Within the skew, still valid.
        assert!(verify(
            &key.token(with(|c| {
                c.insert("exp".into(), (NOW - 30).into());
            })),
            &keys,
            &expect(&aud, None)
        )
        .is_ok());
        assert!(matches!(
            bad(
                with(|c| {
                    c.insert("nbf".into(), (NOW + 120).into());
                }),
                None
            ),
            TokenError::NotYetValid(_)
        ));
        assert_eq!(
            bad(
                with(|c| {
                    c.insert("iat".into(), (NOW + 120).into());
                }),
                None
            ),
            TokenError::IssuedInFuture
        );
        assert_eq!(
            bad(
                with(|c| {
                    c.remove("exp");
                }),
                None
            ),
            TokenError::Missing("exp")
        );
        assert_eq!(bad(claims(), Some("n-2")), TokenError::Nonce);
        assert_eq!(
            bad(
                with(|c| {
                    c.remove("nonce");
                }),
                Some("n-1")
            ),
            TokenError::Nonce
        );
    }

    #[test]
    fn forged_tokens_are_refused() {
        let key = TestKey::new("k1");
        let keys = key.jwks();
        let aud = vec!["ztk".to_string()];
        let e = expect(&aud, None);
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        // alg none, with or without a signature part.
        let none = format!(
            "{}.{}.",
            enc(serde_json::json!({"alg": "none"})),
            enc(claims())
        );
        assert_eq!(
            verify(&none, &keys, &e).unwrap_err(),
            TokenError::Algorithm("none".into())
        );
        // HS256 "signed" with the public key as the secret.
        let hs = {
            let signed = format!(
                "{}.{}",
                enc(serde_json::json!({"alg": "HS256", "kid": "k1"})),
                enc(claims())
            );
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.jwk().to_string().as_bytes());
            let tag = ring::hmac::sign(&k, signed.as_bytes());
            format!(
                "{signed}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
            )
        };
        assert_eq!(
            verify(&hs, &keys, &e).unwrap_err(),
            TokenError::Algorithm("HS256".into())
        );
        // Another key, a tampered body, an unknown kid, an RSA alg on an EC key.
        let other = TestKey::new("k1");
        assert_eq!(
            verify(&other.token(claims()), &keys, &e).unwrap_err(),
            TokenError::Signature
        );
        let good = key.token(claims());
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            enc(with(|c| {
                c.insert("email".into(), "root@example.com".into());
            })),
            parts[2]
        );
        assert_eq!(
            verify(&tampered, &keys, &e).unwrap_err(),
            TokenError::Signature
        );
        let stranger = TestKey::new("k9");
        assert_eq!(
            verify(&stranger.token(claims()), &keys, &e).unwrap_err(),
            TokenError::UnknownKey(Some("k9".into()))
        );
        let rs = key.sign(serde_json::json!({"alg": "RS256", "kid": "k1"}), claims());
        assert_eq!(
            verify(&rs, &keys, &e).unwrap_err(),
            TokenError::UnknownKey(Some("k1".into()))
        );
        assert_eq!(verify("a.b", &keys, &e).unwrap_err(), TokenError::Malformed);
        assert_eq!(key_id(&good).as_deref(), Some("k1"));
    }
}
