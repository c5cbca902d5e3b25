//! The kubelet API's TLS: the serving certificate (from files, self-signed,
//! or signed by the cluster through a CSR and renewed before expiry) and the
//! client-certificate verifier.
//!
//! # CSR mode
//! skylet generates an ECDSA P-256 key and asks for a certificate with signer
//! `kubernetes.io/kubelet-serving`, subject `system:node:<node>` in
//! `system:nodes`, and the node IP and name as SANs. kube-controller-manager
//! signs it once someone approves it: nothing approves serving certificates
//! automatically, so run `kubectl certificate approve <csr>` (the CSR name is
//! logged) or deploy an approver. Until then skylet serves a self-signed
//! certificate, which kube-apiserver accepts unless it runs with
//! `--kubelet-certificate-authority`. The certificate is renewed at 80% of its
//! lifetime.
//!
//! RBAC for CSR mode: `certificatesigningrequests`: create, get, watch.

use std::{
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;

use crate::config::{ServerConfig as Settings, ServingCert};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}")]
    Pem {
        what: &'static str,
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    /// The file held no usable certificate or key.
    #[error("{0}")]
    Invalid(String),
    /// rustls refused the configuration.
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// A certificate could not be generated.
    #[error("cannot generate a certificate")]
    Generate(#[from] rcgen::Error),
    /// The client CA bundle is unusable.
    #[error("invalid client CA bundle")]
    ClientCa(#[source] rustls::server::VerifierBuilderError),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A certificate that can be swapped while serving (CSR renewals).
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
        })
    }

    fn set(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
    }

    /// The certificate chain being served (tests).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cert
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey> {
    let provider = rustls::crypto::ring::default_provider();
    Ok(CertifiedKey::from_der(chain, key, &provider)?)
}

fn self_signed(settings: &Settings) -> Result<CertifiedKey> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![settings.node_name.clone()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(settings.node_ip));
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{}@skylet", settings.node_name),
    );
    let cert = params.self_signed(&key)?;
    let der =
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| Error::Invalid(e.to_owned()))?;
    certified(vec![cert.der().clone()], der)
}

fn from_files(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| Error::Pem {
            what: "certificates",
            path: cert.display().to_string(),
            source,
        })?;
    if chain.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| Error::Pem {
        what: "a private key",
        path: key.display().to_string(),
        source,
    })?;
    certified(chain, key)
}

/// The rustls configuration of the kubelet API and the store of its
/// certificate. In CSR mode the caller runs [`csr_loop`] to fill the store.
pub fn server_config(settings: &Settings) -> Result<(Arc<ServerConfig>, Arc<CertStore>)> {
    let key = match (&settings.serving_cert, &settings.tls_files) {
        (ServingCert::Files, Some((c, k))) => from_files(c, k)?,
        _ => self_signed(settings)?,
    };
    let store = CertStore::new(key);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?;
    let builder = match &settings.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|source| Error::Pem {
                what: "client CA",
                path: path.display().to_string(),
                source,
            })? {
                let cert = cert.map_err(|source| Error::Pem {
                    what: "client CA",
                    path: path.display().to_string(),
                    source,
                })?;
                roots.add(cert)?;
            }
            // a client without a certificate may still use a bearer token
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(Error::ClientCa)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), store))
}

/// CSR mode: obtains a cluster-signed serving certificate and renews it at
/// 80% of its lifetime, until `shutdown`. Errors are logged and retried.
pub async fn csr_loop(
    client: Client,
    settings: Settings,
    store: Arc<CertStore>,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match request_certificate(&client, &settings, &shutdown).await {
            Ok(Some((key, lifetime))) => {
                store.set(key);
                tracing::info!(renew_in = ?lifetime.mul_f64(0.8), "serving certificate signed by the cluster is in use");
                lifetime.mul_f64(0.8)
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate request failed; retrying in 30s");
                Duration::from_secs(30)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Creates a CSR and waits until it is signed; `None` on shutdown.
async fn request_certificate(
    client: &Client,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<Option<(CertifiedKey, Duration)>, Box<dyn std::error::Error + Send + Sync>> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![settings.node_name.clone()])?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(settings.node_ip));
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{}", settings.node_name),
    );
    params.distinguished_name = dn;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!("skylet-serving-{}-", settings.node_name)),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: k8s_openapi::ByteString(csr_pem.into_bytes()),
            signer_name: "kubernetes.io/kubelet-serving".into(),
            usages: Some(vec!["digital signature".into(), "server auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    let created = csrs.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::warn!(csr = %name, "waiting for the serving certificate; approve it with `kubectl certificate approve {name}`");
    let pem = loop {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let current = csrs.get(&name).await?;
        let status = current.status.unwrap_or_default();
        if status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
        {
            return Err(format!("CSR {name} was denied or failed").into());
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            break cert.0;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>()?;
    let lifetime = chain
        .first()
        .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, x)| {
            let secs = x.validity().not_after.timestamp() - jiff::Timestamp::now().as_second();
            Duration::from_secs(u64::try_from(secs).unwrap_or(3600))
        })
        .unwrap_or(Duration::from_secs(3600));
    let der = PrivateKeyDer::try_from(key.serialize_der())?;
    Ok(Some((certified(chain, der)?, lifetime)))
}
