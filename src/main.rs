//! The `skylet` binary: configuration, telemetry, provider selection.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use skylet::{
    Config,
    config::{self, ProviderKind},
};

/// Exit code for a configuration the user must fix (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skylet: {e}");
            eprintln!("skylet: see `skylet --help`; nothing was started");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    skylet::telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skylet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "skylet stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube_client(&config).await?;
    let shutdown = skylet::shutdown::on_signal();
    let run = async {
        match config.provider {
            ProviderKind::Mock => {
                let provider = skylet_mock::MockProvider::new(mock_config(&config.mock));
                skylet::run(config, client, provider, shutdown.clone()).await?;
            }
            ProviderKind::Kubernetes => {
                let provider = kube_provider(&config, client.clone()).await?;
                skylet::run(config, client, provider, shutdown.clone()).await?;
            }
            ProviderKind::AwsEcs => {
                let ecs = config
                    .ecs
                    .clone()
                    .context("aws-ecs selected without ECS settings")?;
                let provider = skylet_ecs::EcsProvider::new(ecs)
                    .await
                    .context("cannot start the aws-ecs backend")?;
                skylet::run(config, client, provider, shutdown.clone()).await?;
            }
            ProviderKind::AzureAci => {
                let aci = config
                    .aci
                    .clone()
                    .context("azure-aci selected without ACI settings")?;
                let provider = skylet_aci::AciProvider::new(aci, Some(client.clone()))
                    .await
                    .context("cannot start the azure-aci backend")?;
                skylet::run(config, client, provider, shutdown.clone()).await?;
            }
        }
        anyhow::Ok(())
    };
    // Once shutdown is requested, everything gets SHUTDOWN_GRACE to finish.
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = run => r,
        () = deadline => anyhow::bail!("shutdown took longer than {SHUTDOWN_GRACE:?}; exiting anyway"),
    }
}

/// How long tasks get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

fn mock_config(c: &config::MockConfig) -> skylet_mock::Config {
    skylet_mock::Config {
        start_latency: c.start_latency,
        failure_rate: c.failure_rate,
        capacity: c.capacity.clone(),
        state_file: c.state_file.clone(),
        unreachable_file: c.unreachable_file.clone(),
    }
}

/// The remote-Kubernetes backend: a client for the remote cluster, and the
/// translation settings.
async fn kube_provider(
    config: &Config,
    home: kube::Client,
) -> anyhow::Result<skylet_kube::KubeProvider> {
    use skylet::config::kube::{NamespaceMode, Rule};
    let k = config
        .kube
        .as_ref()
        .context("the kubernetes provider needs --remote-kubeconfig")?;
    let kc = kube::config::Kubeconfig::read_from(&k.kubeconfig)
        .with_context(|| format!("cannot read remote kubeconfig {}", k.kubeconfig.display()))?;
    let opts = kube::config::KubeConfigOptions {
        context: k.context.clone(),
        ..Default::default()
    };
    let remote_config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .with_context(|| format!("invalid remote kubeconfig {}", k.kubeconfig.display()))?;
    let remote = kube::Client::try_from(remote_config)
        .context("cannot build the remote cluster's client")?;
    let rule = |r: Rule| match r {
        Rule::Pass => skylet_kube::Rule::Pass,
        Rule::Drop => skylet_kube::Rule::Drop,
    };
    let mut node_labels = skylet::node::base_labels(&config.node.name, "kubernetes");
    node_labels.extend(config.node.labels.clone());
    let context = skylet_kube::Context {
        cluster_id: k.cluster_id.clone(),
        node: config.node.name.clone(),
        node_labels,
        namespaces: match k.namespace_mode {
            NamespaceMode::Same => skylet_kube::NamespaceMode::Same,
            NamespaceMode::Prefixed => skylet_kube::NamespaceMode::Prefixed,
            NamespaceMode::Map => skylet_kube::NamespaceMode::Map(k.namespace_map.clone()),
        },
        scheduling: skylet_kube::SchedulingPolicy {
            node_selector: rule(k.node_selector),
            node_affinity: rule(k.node_affinity),
            tolerations: rule(k.tolerations),
            pod_affinity: rule(k.pod_affinity),
        },
        service_account: match k.service_account {
            skylet::config::kube::ServiceAccount::Remote => {
                skylet_kube::ServiceAccountPolicy::Remote
            }
            skylet::config::kube::ServiceAccount::HomeToken => {
                skylet_kube::ServiceAccountPolicy::HomeToken
            }
        },
    };
    Ok(skylet_kube::KubeProvider::new(
        home,
        remote,
        skylet_kube::Config { context },
    ))
}

async fn kube_client(config: &Config) -> anyhow::Result<kube::Client> {
    let kc = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    kube::Client::try_from(kc).context("cannot build a Kubernetes client")
}
