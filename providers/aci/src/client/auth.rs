//! Credentials (azure_identity) and the TLS roots every connection trusts.
//!
//! # Default chain
//! azure_identity 1.x has no `DefaultAzureCredential`, so [`Chain`] is a
//! small one of our own, in the order a pod on AKS wants: workload identity
//! (when the webhook's `AZURE_TENANT_ID` / `AZURE_CLIENT_ID` /
//! `AZURE_FEDERATED_TOKEN_FILE` are set), managed identity, Azure CLI. Like
//! the other Azure SDKs' default credential, the first source that returns a
//! token is used for every later token.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions},
    error::ErrorKind,
    http::{ClientOptions, Transport},
};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, pem::PemObject};

use super::{Auth, ClientError};

/// The roots every connection trusts: the system's (rustls-native-certs,
/// as the ECS and Kubernetes clients use) plus the PEM certificates of
/// `ca_file`.
///
/// # Errors
/// An unreadable or invalid `ca_file`, or no root at all.
pub(super) fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "could not load some system root certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system root certificates");
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|source| ClientError::CaFile {
                path: path.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(ClientError::EmptyCaFile(path.to_owned()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|source| ClientError::BadCertificate {
                    path: path.to_owned(),
                    source,
                })?;
        }
    }
    if roots.is_empty() {
        return Err(ClientError::NoRoots);
    }
    Ok(roots)
}

/// A rustls client config on *ring* (the workspace's one crypto backend)
/// trusting `roots`, without ALPN (HTTP/1.1, which the WebSockets need).
pub(super) fn tls_config(roots: RootCertStore) -> Result<rustls::ClientConfig, ClientError> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(ClientError::Tls)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// Client options of a credential's own pipeline: our transport (so the
/// token endpoint is reached with the same roots) and, when set, the
/// authority host. Without it, azure_identity reads `AZURE_AUTHORITY_HOST`
/// (the workload identity webhook sets it) and defaults to the public cloud.
fn credential_options(transport: &Transport, authority_host: Option<&str>) -> ClientOptions {
    let mut options = ClientOptions {
        transport: Some(transport.clone()),
        ..ClientOptions::default()
    };
    if let Some(host) = authority_host {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.trim_end_matches('/').to_owned();
        options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    options
}

/// Which source a credential came from, for logs and errors.
fn credential_error(kind: &'static str) -> impl FnOnce(azure_core::Error) -> ClientError {
    move |source| ClientError::Credential { kind, source }
}

fn workload_identity(
    tenant_id: Option<String>,
    client_id: Option<String>,
    token_file: Option<PathBuf>,
    transport: &Transport,
    authority_host: Option<&str>,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let options = WorkloadIdentityCredentialOptions {
        credential_options: ClientAssertionCredentialOptions {
            client_options: credential_options(transport, authority_host),
        },
        client_id,
        tenant_id,
        token_file_path: token_file,
    };
    Ok(WorkloadIdentityCredential::new(Some(options))?)
}

fn managed_identity(
    client_id: Option<String>,
    transport: &Transport,
    authority_host: Option<&str>,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: client_id.map(UserAssignedId::ClientId),
        client_options: credential_options(transport, authority_host),
    };
    Ok(ManagedIdentityCredential::new(Some(options))?)
}

fn azure_cli() -> azure_core::Result<Arc<dyn TokenCredential>> {
    Ok(AzureCliCredential::new(Some(
        AzureCliCredentialOptions::default(),
    ))?)
}

/// The credential `auth` describes.
///
/// # Errors
/// [`ClientError::Credential`] when it cannot be created (a missing
/// tenant, client id or token file); for [`Auth::Default`],
/// [`ClientError::NoCredential`] when no source of the chain can be.
pub(super) fn credential(
    auth: &Auth,
    transport: &Transport,
    authority_host: Option<&str>,
) -> Result<Arc<dyn TokenCredential>, ClientError> {
    match auth {
        Auth::ClientSecret {
            tenant_id,
            client_id,
            client_secret,
        } => {
            let options = ClientSecretCredentialOptions {
                client_options: credential_options(transport, authority_host),
            };
            let c = ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(client_secret.clone()),
                Some(options),
            )
            .map_err(credential_error("client secret"))?;
            Ok(c)
        }
        Auth::WorkloadIdentity {
            tenant_id,
            client_id,
            token_file,
        } => workload_identity(
            tenant_id.clone(),
            client_id.clone(),
            token_file.clone(),
            transport,
            authority_host,
        )
        .map_err(credential_error("workload identity")),
        Auth::ManagedIdentity { client_id } => {
            managed_identity(client_id.clone(), transport, authority_host)
                .map_err(credential_error("managed identity"))
        }
        Auth::AzureCli => azure_cli().map_err(credential_error("Azure CLI")),
        Auth::Default => {
            let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
            let mut skipped = Vec::new();
            let candidates = [
                (
                    "workload identity",
                    workload_identity(None, None, None, transport, authority_host),
                ),
                (
                    "managed identity",
                    managed_identity(None, transport, authority_host),
                ),
                ("Azure CLI", azure_cli()),
            ];
            for (name, c) in candidates {
                match c {
                    Ok(c) => sources.push((name, c)),
                    Err(e) => {
                        tracing::debug!(credential = name, error = %e, "credential source not available");
                        skipped.push(format!("{name}: {e}"));
                    }
                }
            }
            if sources.is_empty() {
                return Err(ClientError::NoCredential(skipped.join("; ")));
            }
            Ok(Arc::new(Chain {
                sources,
                chosen: OnceLock::new(),
            }))
        }
    }
}

/// Tries its sources in order until one returns a token, then sticks to it.
#[derive(Debug)]
pub(super) struct Chain {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: OnceLock<usize>,
}

#[async_trait::async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some((_, c)) = self.chosen.get().and_then(|&i| self.sources.get(i)) {
            return c.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (i, (name, c)) in self.sources.iter().enumerate() {
            match c.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    if self.chosen.set(i).is_ok() {
                        tracing::info!(
                            credential = *name,
                            "authenticating to Azure with this credential"
                        );
                    }
                    return Ok(token);
                }
                Err(e) => {
                    tracing::debug!(credential = *name, error = %e, "credential source failed");
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!(
                "no credential of the default chain got a token ({})",
                failures.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Option<&'static str>, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl TokenCredential for Fixed {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match self.0 {
                Some(t) => Ok(AccessToken::new(
                    t,
                    azure_core::time::OffsetDateTime::now_utc(),
                )),
                None => Err(azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "nope",
                )),
            }
        }
    }

    #[tokio::test]
    async fn chain_uses_first_that_works_then_sticks() {
        let failing = Arc::new(Fixed(None, 0.into()));
        let working = Arc::new(Fixed(Some("tok"), 0.into()));
        let chain = Chain {
            sources: vec![("a", failing.clone()), ("b", working.clone())],
            chosen: OnceLock::new(),
        };
        let t = chain.get_token(&["s"], None).await.unwrap();
        assert_eq!(t.token.secret(), "tok");
        chain.get_token(&["s"], None).await.unwrap();
        assert_eq!(
            failing.1.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "not retried once one worked"
        );
        assert_eq!(working.1.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn chain_reports_every_failure() {
        let chain = Chain {
            sources: vec![
                ("a", Arc::new(Fixed(None, 0.into()))),
                ("b", Arc::new(Fixed(None, 0.into()))),
            ],
            chosen: OnceLock::new(),
        };
        let e = chain.get_token(&["s"], None).await.unwrap_err().to_string();
        assert!(e.contains("a: ") && e.contains("b: "), "{e}");
    }

    #[test]
    fn ca_file_is_added_to_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            root_store(Some(&missing)),
            Err(ClientError::CaFile { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            root_store(Some(&empty)),
            Err(ClientError::EmptyCaFile(_))
        ));
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        let without = root_store(None).map(|r| r.len()).unwrap_or(0);
        let with = root_store(Some(&good)).unwrap();
        assert_eq!(with.len(), without + 1);
        tls_config(with).unwrap();
    }
}
