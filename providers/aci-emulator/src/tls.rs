//! The emulator's own CA and its serving certificate for `127.0.0.1` and
//! `localhost` (contract item 1), made with rcgen at start; rustls with ring.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen failed.
    #[error("failed to generate a certificate")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("failed to build the TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The key could not be converted.
    #[error("invalid private key: {0}")]
    Key(String),
}

/// The CA PEM and a server configuration using a leaf signed by it.
pub(crate) struct Material {
    pub(crate) ca_pem: String,
    pub(crate) server: Arc<ServerConfig>,
}

/// Generates a fresh CA and serving certificate.
pub(crate) fn generate() -> Result<Material, Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "skylet ACI emulator CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    let key =
        PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|e| Error::Key(e.to_owned()))?;
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Material {
        ca_pem,
        server: Arc::new(server),
    })
}
