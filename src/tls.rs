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
//!
//! # Client CA
//! With `--client-ca-file` the client CA is that file. Without it, skylet
//! reads the CA kube-apiserver itself trusts for client certificates, key
//! `client-ca-file` of the ConfigMap `kube-system/extension-apiserver-authentication`
//! (as aggregated API servers do), and follows its changes, so
//! kube-apiserver's `--kubelet-client-certificate` is accepted in any cluster
//! without a flag. Until the ConfigMap is read, or while it has no such key,
//! only bearer tokens authenticate. RBAC: get, list, watch on that ConfigMap
//! (the Role `extension-apiserver-authentication-reader` in kube-system).

use std::{
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec},
    core::v1::ConfigMap,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
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

/// What [`server_config`] makes: the rustls configuration, the store of the
/// serving certificate, and the client CA to fill from the cluster (`None`
/// with a client CA file).
pub type TlsParts = (Arc<ServerConfig>, Arc<CertStore>, Option<Arc<ClientCa>>);

/// The rustls configuration of the kubelet API and the store of its
/// certificate. In CSR mode the caller runs [`csr_loop`] to fill the store.
/// Without a client CA file, the returned [`ClientCa`] verifies client
/// certificates once [`follow_client_ca`] has filled it.
pub fn server_config(settings: &Settings) -> Result<TlsParts> {
    let key = match (&settings.serving_cert, &settings.tls_files) {
        (ServingCert::Files, Some((c, k))) => from_files(c, k)?,
        _ => self_signed(settings)?,
    };
    let store = CertStore::new(key);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?;
    let (builder, dynamic) = match &settings.client_ca_file {
        Some(path) => {
            let pem_error = |source| Error::Pem {
                what: "client CA",
                path: path.display().to_string(),
                source,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(pem_error)?;
            (
                builder.with_client_cert_verifier(client_verifier(certs, provider)?),
                None,
            )
        }
        None => {
            let ca = Arc::new(ClientCa::new(provider));
            (builder.with_client_cert_verifier(ca.clone()), Some(ca))
        }
    };
    let mut config = builder.with_cert_resolver(store.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), store, dynamic))
}

/// A verifier of client certificates against `certs`; a client without a
/// certificate may still use a bearer token.
fn client_verifier(
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert)?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(Error::ClientCa)
}

/// The client CA read from the cluster, swapped when it changes. Asks for
/// no client certificate while it holds none.
#[derive(Debug)]
pub struct ClientCa {
    current: RwLock<Option<(String, Arc<dyn ClientCertVerifier>)>>,
    provider: Arc<CryptoProvider>,
}

impl ClientCa {
    fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            current: RwLock::new(None),
            provider,
        }
    }

    fn verifier(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(_, v)| v.clone())
    }

    /// Uses the CA bundle `pem` (`None`: no client CA); whether it changed.
    ///
    /// # Errors
    /// If `pem` holds no usable certificate; the CA in use is kept.
    pub fn set_pem(&self, pem: Option<&str>) -> Result<bool> {
        let next = match pem {
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|source| Error::Pem {
                        what: "client CA",
                        path: CLIENT_CA_CONFIGMAP.into(),
                        source,
                    })?;
                Some((
                    pem.to_owned(),
                    client_verifier(certs, self.provider.clone())?,
                ))
            }
            None => None,
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same =
            current.as_ref().map(|(p, _)| p.as_str()) == next.as_ref().map(|(p, _)| p.as_str());
        if !same {
            *current = next;
        }
        Ok(!same)
    }
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        self.verifier().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    // no hints: Go clients (kube-apiserver) then send the certificate they have
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        match self.verifier() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("no client CA is known yet".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where kube-apiserver publishes the CA it trusts for client certificates.
const CLIENT_CA_CONFIGMAP: &str = "kube-system/extension-apiserver-authentication";

/// Keeps `ca` equal to key `client-ca-file` of the ConfigMap
/// `kube-system/extension-apiserver-authentication`, by watch, until
/// `shutdown`. Errors are logged and the watch retried.
pub async fn follow_client_ca(client: Client, ca: Arc<ClientCa>, shutdown: CancellationToken) {
    let api: Api<ConfigMap> = Api::namespaced(client, "kube-system");
    let config =
        watcher::Config::default().fields("metadata.name=extension-apiserver-authentication");
    let changes = watcher(api, config)
        .backoff(crate::watch_backoff())
        .applied_objects();
    futures::pin_mut!(changes);
    let mut failing = false;
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            n = changes.next() => n,
        };
        match next {
            None => return,
            Some(Err(e)) => {
                // once per failing spell: a missing RoleBinding would repeat it forever
                if !failing {
                    tracing::warn!(error = %e, "cannot read the client CA from {CLIENT_CA_CONFIGMAP}; only bearer tokens authenticate until it can be read");
                }
                failing = true;
            }
            Some(Ok(cm)) => {
                failing = false;
                let pem = cm.data.as_ref().and_then(|d| d.get("client-ca-file"));
                match ca.set_pem(pem.map(String::as_str)) {
                    Ok(false) => {}
                    Ok(true) if pem.is_some() => {
                        tracing::info!("client CA from {CLIENT_CA_CONFIGMAP} in use");
                    }
                    Ok(true) => {
                        tracing::warn!(
                            "{CLIENT_CA_CONFIGMAP} has no client-ca-file; only bearer tokens authenticate"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the client CA in {CLIENT_CA_CONFIGMAP} is unusable; keeping the previous one");
                    }
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn the_client_ca_from_the_cluster_is_swapped_when_it_changes() {
        let ca = ClientCa::new(Arc::new(rustls::crypto::ring::default_provider()));
        assert!(
            !ca.offer_client_auth(),
            "no CA yet: no certificate asked for"
        );
        let (a, b) = (ca_pem("a"), ca_pem("b"));
        assert!(ca.set_pem(Some(&a)).unwrap());
        assert!(ca.offer_client_auth());
        assert!(
            !ca.set_pem(Some(&a)).unwrap(),
            "the same bundle is no change"
        );
        assert!(ca.set_pem(Some(&b)).unwrap());
        assert!(ca.set_pem(Some("not a certificate")).is_err());
        assert!(ca.offer_client_auth(), "a bad bundle keeps the one in use");
        assert!(ca.set_pem(None).unwrap());
        assert!(!ca.offer_client_auth());
    }
}
