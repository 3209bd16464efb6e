//! Certificates and rustls configurations.
//!
//! ztk makes its own CAs in two places: the gateway (on first start, when no `[tls]` is configured)
//! and every loopback proxy (a CA per proxy, handed to kubectl in `certificate-authority-data`).
//! kubectl only sends credentials over HTTPS, so even loopback listeners need real TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("could not read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} holds no usable PEM {kind}; give a PEM file")]
    Pem { what: String, kind: &'static str },
    #[error("invalid TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("no trusted CA certificates found in {0}")]
    NoRoots(String),
}

/// Installs the process-wide crypto provider; call once at start (rustls panics without it
/// when more than one provider could apply).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate authority that can sign server certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate chain and its private key.
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn generate(common_name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let (not_before, not_after) = validity(3650);
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a client certificate whose common name is `user` (how Kubernetes names
    /// certificate users).
    pub fn issue_client(&self, user: &str) -> Result<CertKey, TlsError> {
        let params = CertificateParams::new(Vec::<String>::new())?;
        self.issue(params, user, ExtendedKeyUsagePurpose::ClientAuth, 365)
    }

    /// Issues a server certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, names: &[String]) -> Result<CertKey, TlsError> {
        let params = CertificateParams::new(names.to_vec())?;
        let cn = names.first().map(String::as_str).unwrap_or("ztk");
        self.issue(params, cn, ExtendedKeyUsagePurpose::ServerAuth, 825)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> Result<CertKey, TlsError> {
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        (params.not_before, params.not_after) = validity(days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// One self-signed certificate that is both a CA (CA:TRUE) and the server's certificate for
/// `names`, as lab clusters and appliances often serve (the sandbox's `--self-signed`).
pub fn self_signed_ca_server(names: &[String]) -> Result<CertKey, TlsError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cn = names.first().map(String::as_str).unwrap_or("ztk");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    (params.not_before, params.not_after) = validity(825);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn validity(days: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(days),
    )
}

/// SHA-256 fingerprint of the first certificate in `pem`, as colon-separated hex
/// (the form `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(pem: &str) -> Result<String, TlsError> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::Pem {
            what: "certificate".into(),
            kind: "certificate",
        })?;
    let digest = Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            kind: "certificate",
        });
    }
    Ok(certs)
}

pub fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::Pem {
        what: what.into(),
        kind: "private key",
    })
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A server config that offers HTTP/2 and HTTP/1.1 by ALPN. Upgrade requests (exec,
/// port-forward) arrive on connections without ALPN and are served as HTTP/1.1.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = parse_certs(cert_pem, "server certificate")?;
    let key = parse_key(key_pem, "server key")?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Like `server_config`, but also asks clients for a certificate signed by `client_ca_pem`
/// (optional: clients may authenticate otherwise, e.g. with a bearer token).
pub fn server_config_with_client_ca(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(client_ca_pem, "client CA")? {
        roots.add(cert)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certs(cert_pem, "server certificate")?,
            parse_key(key_pem, "server key")?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Which CAs a client trusts.
#[derive(Clone, Debug)]
pub enum Roots {
    /// The operating system's trust store.
    System,
    /// Only the CAs in this PEM.
    Pem(Vec<u8>),
}

/// A client config that verifies the server against `roots`, optionally presenting a client
/// certificate. ALPN is left to the connector.
pub fn client_config(
    roots: &Roots,
    client_cert: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(root_store(roots)?);
    with_client_cert(builder, client_cert)
}

/// How a cluster's server is trusted, as its kubeconfig says.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// Full verification against these roots; a presented certificate byte-equal to one of
    /// the trusted ones is accepted as kubectl accepts it (see [`KubeVerifier`]).
    Verify(Roots),
    /// `insecure-skip-tls-verify`, allowed by the gateway's config: any certificate.
    Insecure,
}

/// The client config for a cluster: [`ServerTrust`] and an optional client certificate.
pub fn cluster_client_config(
    trust: &ServerTrust,
    client_cert: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match trust {
        ServerTrust::Verify(roots) => Arc::new(KubeVerifier::new(roots, provider)?),
        ServerTrust::Insecure => Arc::new(AnyCertificate { provider }),
    };
    let builder = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    with_client_cert(builder, client_cert)
}

fn with_client_cert(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    client_cert: Option<(&[u8], &[u8])>,
) -> Result<rustls::ClientConfig, TlsError> {
    Ok(match client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(
            parse_certs(cert, "client certificate")?,
            parse_key(key, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

/// rustls's WebPKI verification, plus what Go's crypto/x509 (so kubectl) also accepts: a server
/// certificate that *is* one of the trusted certificates, byte for byte — lab clusters and
/// appliances often serve one self-signed CA:TRUE certificate and put it in
/// `certificate-authority-data`, which WebPKI refuses as `CaUsedAsEndEntity`. Such a
/// certificate must still be valid now, name the server, and (when it lists extended key
/// usages) allow server authentication, as Go checks.
#[derive(Debug)]
pub struct KubeVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    trusted: Vec<Vec<u8>>,
}

impl KubeVerifier {
    fn new(
        roots: &Roots,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<KubeVerifier, TlsError> {
        let store = root_store(roots)?;
        let trusted: Vec<Vec<u8>> = match roots {
            Roots::Pem(pem) => parse_certs(pem, "CA bundle")?
                .into_iter()
                .map(|c| c.as_ref().to_vec())
                .collect(),
            Roots::System => Vec::new(),
        };
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        Ok(KubeVerifier { inner, trusted })
    }
}

impl rustls::client::danger::ServerCertVerifier for KubeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(err) if self.trusted.iter().any(|t| t == end_entity.as_ref()) => {
                check_pinned_leaf(end_entity, server_name, now).map_err(|reason| {
                    tracing::debug!("trusted server certificate refused: {reason} (after {err})");
                    reason
                })?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            // WebPKI looks at the basic constraints before the issuer: a self-signed CA:TRUE
            // certificate that is not the trusted one is refused as "CA used as end entity",
            // which hides the real problem. It is not trusted.
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)))
                if matches!(
                    other.0.downcast_ref::<webpki::Error>(),
                    Some(webpki::Error::CaUsedAsEndEntity)
                ) =>
            {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
            }
            Err(err) => Err(err),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The checks Go makes of a leaf found in the trust store: validity period, name, usage.
fn check_pinned_leaf(
    der: &CertificateDer<'_>,
    server_name: &rustls::pki_types::ServerName<'_>,
    now: rustls::pki_types::UnixTime,
) -> Result<(), rustls::Error> {
    use rustls::{CertificateError, Error};
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now_asn1 = x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if now_asn1 < cert.validity().not_before {
        return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
    }
    if now_asn1 > cert.validity().not_after {
        return Err(Error::InvalidCertificate(CertificateError::Expired));
    }
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if !eku.value.any && !eku.value.server_auth {
            return Err(Error::InvalidCertificate(CertificateError::InvalidPurpose));
        }
    }
    let ee = webpki::EndEntityCert::try_from(der)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    ee.verify_is_valid_for_subject_name(server_name)
        .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))
}

/// `insecure-skip-tls-verify`: any certificate, though the handshake's signatures are still
/// checked against it (as Go's `InsecureSkipVerify` does).
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn root_store(roots: &Roots) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(TlsError::NoRoots("the system trust store".into()));
            }
        }
        Roots::Pem(pem) => {
            for cert in parse_certs(pem, "CA bundle")? {
                store.add(cert)?;
            }
        }
    }
    Ok(store)
}

/// Writes `data` to `path` readable by the owner only (secrets: keys, tokens, kubeconfigs).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    crate::fsutil::write_private(path, data).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_verifies_against_its_ca() {
        install_crypto_provider();
        let ca = Ca::generate("test CA").unwrap();
        let leaf = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        server_config(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
        client_config(&Roots::Pem(ca.cert_pem().into_bytes()), None).unwrap();
        let fp = fingerprint(&ca.cert_pem()).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
    }

    /// The self-signed CA:TRUE server certificate kubectl trusts is trusted only where it is
    /// the very certificate in the bundle, and still checked for time, name and usage; every
    /// other certificate gets WebPKI's full verification.
    #[test]
    fn a_trusted_self_signed_server_certificate_is_still_checked() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{ServerName, UnixTime};
        use rustls::{CertificateError, Error};
        install_crypto_provider();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let der = |pem: &str| parse_certs(pem.as_bytes(), "test").unwrap().remove(0);
        let names = vec!["cluster.example".to_string(), "127.0.0.1".to_string()];
        let pinned = self_signed_ca_server(&names).unwrap();
        let verifier = KubeVerifier::new(
            &Roots::Pem(pinned.cert_pem.clone().into_bytes()),
            provider.clone(),
        )
        .unwrap();
        let check = |verifier: &KubeVerifier, cert: &CertificateDer<'_>, name: &str, now| {
            let name = ServerName::try_from(name.to_string()).unwrap();
            verifier
                .verify_server_cert(cert, &[], &name, &[], now)
                .map(|_| ())
        };
        let now = UnixTime::now();
        let cert = der(&pinned.cert_pem);
        assert_eq!(check(&verifier, &cert, "cluster.example", now), Ok(()));
        assert_eq!(check(&verifier, &cert, "127.0.0.1", now), Ok(()));
        let refused = |e| Err(Error::InvalidCertificate(e));
        assert_eq!(
            check(&verifier, &cert, "other.example", now),
            refused(CertificateError::NotValidForName)
        );
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.as_secs() + 900 * 86_400,
        ));
        assert_eq!(
            check(&verifier, &cert, "cluster.example", later),
            refused(CertificateError::Expired)
        );
        let earlier =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() - 2 * 86_400));
        assert_eq!(
            check(&verifier, &cert, "cluster.example", earlier),
            refused(CertificateError::NotValidYet)
        );

        // Another self-signed certificate for the same names: not trusted, and said so.
        let other = self_signed_ca_server(&names).unwrap();
        assert_eq!(
            check(&verifier, &der(&other.cert_pem), "cluster.example", now),
            refused(CertificateError::UnknownIssuer)
        );

        // Trusted, but for client authentication only: refused as Go refuses it.
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        (params.not_before, params.not_after) = validity(1);
        let key = KeyPair::generate().unwrap();
        let client_only = params.self_signed(&key).unwrap();
        let client_verifier = KubeVerifier::new(
            &Roots::Pem(client_only.pem().into_bytes()),
            provider.clone(),
        )
        .unwrap();
        assert_eq!(
            check(
                &client_verifier,
                &der(&client_only.pem()),
                "cluster.example",
                now
            ),
            refused(CertificateError::InvalidPurpose)
        );

        // A bundle with a CA and the pinned certificate: leaves of the CA verify as usual,
        // leaves of another CA do not.
        let ca = Ca::generate("cluster CA").unwrap();
        let other_ca = Ca::generate("other CA").unwrap();
        let bundle = format!("{}{}", ca.cert_pem(), pinned.cert_pem);
        let both = KubeVerifier::new(&Roots::Pem(bundle.into_bytes()), provider).unwrap();
        let leaf = ca.issue_server(&names).unwrap();
        assert_eq!(
            check(&both, &der(&leaf.cert_pem), "cluster.example", now),
            Ok(())
        );
        assert_eq!(check(&both, &cert, "cluster.example", now), Ok(()));
        let stranger = other_ca.issue_server(&names).unwrap();
        assert_eq!(
            check(&both, &der(&stranger.cert_pem), "cluster.example", now),
            refused(CertificateError::UnknownIssuer)
        );
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let err = parse_certs(b"not a pem", "CA file").unwrap_err();
        assert!(err.to_string().contains("CA file"), "{err}");
    }
}
