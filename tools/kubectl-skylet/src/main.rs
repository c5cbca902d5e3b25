//! `kubectl skylet`: a kubectl plugin for the operators of skylet's virtual
//! nodes (issue #20).
//!
//! | command | what |
//! |---|---|
//! | `status` | every skylet node: backend, provider, region, health, capacity, pods by phase, the taints on it and why |
//! | `cost` | dollars per namespace, backend or pod over a window: from Prometheus (`--prometheus`), else from the pods' sizes, their nodes' prices and their runtimes |
//! | `drain BACKEND` | cordons the backend's node and evicts its pods through the Eviction API, so PodDisruptionBudgets hold |
//! | `explain POD` | why a pod is where it is: its node and backend, the placement policy compiled into it, the refusals, evictions and fail-overs of its controller's pods |
//!
//! Output is a table, or `-o json|yaml` for scripts. kubectl finds the
//! binary `kubectl-skylet` on the PATH (`cargo install --path
//! tools/kubectl-skylet`, or the archive `hack/plugin` builds); it reads the
//! kubeconfig as kubectl does (`KUBECONFIG`, `--kubeconfig`, `--context`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

mod cost;
mod drain;
mod explain;
mod nodes;
mod output;
mod status;

/// kubectl skylet: skylet's virtual nodes as an operator sees them.
#[derive(Debug, Parser)]
#[command(name = "kubectl-skylet", bin_name = "kubectl skylet", version)]
struct Cli {
    /// Path of the kubeconfig (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
    /// YAML for scripts.
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every skylet node: backend, region, health, capacity, pods by phase,
    /// taints and why.
    Status,
    /// What pods cost over a window, per namespace, backend or pod.
    Cost(cost::Args),
    /// Cordon a backend's node and evict its pods (PodDisruptionBudgets
    /// hold).
    Drain(drain::Args),
    /// Why a pod is where it is.
    Explain(explain::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kubectl-skylet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client(&cli).await?;
    let out = cli.output;
    match cli.command {
        Command::Status => status::run(&client, out).await,
        Command::Cost(args) => cost::run(&client, &args, out).await,
        Command::Drain(args) => drain::run(&client, &args, out).await,
        Command::Explain(args) => explain::run(&client, &args, out).await,
    }
}

async fn client(cli: &Cli) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer()
            .await
            .context("no kubeconfig (set KUBECONFIG or --kubeconfig)")?,
    };
    let mut config = config;
    // a 429 reaches the commands: drain counts and reports the evictions a
    // PodDisruptionBudget refused, rather than the client retrying them
    config.default_retry = false;
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}
