//! TLS on both sides of the proxy: a test CA of its own that signs its
//! serving certificate for `127.0.0.1` (skylet is told to trust it), and a
//! client towards the real API that trusts the API's CA and presents the
//! API's client identity when it has one (the apiserver's admin
//! certificate).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed.
    #[error("failed to generate the test CA")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("failed to build a TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// A PEM could not be read.
    #[error("invalid PEM: {0}")]
    Pem(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A fresh CA (its PEM) and a server configuration whose certificate, for
/// `127.0.0.1` and `localhost`, it signed. HTTP/1.1 only.
pub(super) fn server() -> Result<(String, Arc<ServerConfig>), TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "skylet fault proxy test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = leaf.signed_by(&key, &issuer)?;
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TlsError::Pem(e.into()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca_pem, Arc::new(config)))
}

/// A client configuration that trusts `roots_pem` and presents `identity`
/// (certificate chain PEM, key PEM) if given. HTTP/1.1 only.
pub(super) fn client(
    roots_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| TlsError::Pem(e.to_string()))?)
            .map_err(TlsError::Rustls)?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Pem(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| TlsError::Pem(e.to_string()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
