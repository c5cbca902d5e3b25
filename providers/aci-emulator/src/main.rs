//! `skylet-aci-emulator`: starts the emulator, writes its CA PEM to
//! `--ca-out`, prints its URL on stdout and serves until SIGTERM or Ctrl-C.
//! Exits 64 on bad configuration, 1 when the emulator cannot start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use skylet_aci_emulator::{Config, Emulator, limits::RateLimit};

/// An Azure Container Instances (ARM + Entra ID) emulator for tests.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to write the CA certificate (PEM) clients must trust.
    #[arg(long, env = "SKYLET_ACI_EMULATOR_CA_OUT")]
    ca_out: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// The subscription that exists.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000001")]
    subscription_id: String,
    /// The tenant served by the token endpoint.
    #[arg(long, default_value = "00000000-0000-0000-0000-0000000000aa")]
    tenant_id: String,
    /// The accepted client id.
    #[arg(long, default_value = "skylet-test")]
    client_id: String,
    /// The accepted client secret.
    #[arg(
        long,
        env = "SKYLET_ACI_EMULATOR_CLIENT_SECRET",
        default_value = "test-secret",
        hide_env_values = true
    )]
    client_secret: String,
    /// The location groups may be created in.
    #[arg(long, default_value = "westeurope")]
    location: String,
    /// A resource group that exists (repeatable).
    #[arg(long = "resource-group", default_values_t = vec!["skylet-rg".to_owned()])]
    resource_groups: Vec<String>,
    /// Items per LIST page.
    #[arg(long, default_value_t = 100)]
    page_size: usize,
    /// Milliseconds a group stays Creating.
    #[arg(long, default_value_t = 2000)]
    create_delay_ms: u64,
    /// Milliseconds a group stays Deleting.
    #[arg(long, default_value_t = 1000)]
    delete_delay_ms: u64,
    /// The ARM spec (containerInstance.json); default `$SKYLET_ACI_SPEC` or the repo's shared copy.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// The subscription's container group quota in the location.
    #[arg(long, default_value_t = 100)]
    container_group_quota: u32,
    /// The subscription's standard core quota in the location.
    #[arg(long, default_value_t = 100)]
    core_quota: u32,
    /// Enforce ARM's and ACI's published API rate limits (token buckets:
    /// reads, writes, deletes, creates-5m, creates-1h, deletes-5m, deletes-1h).
    #[arg(long)]
    rate_limits: bool,
    /// Change one bucket of --rate-limits: NAME=CAPACITY:REFILL_PER_SECOND or NAME=off (repeatable).
    #[arg(long = "rate-limit", value_name = "NAME=C:R", requires = "rate_limits")]
    rate_limit: Vec<String>,
}

/// The published buckets with the overrides applied.
fn rate_limits(args: &Args) -> Result<Vec<RateLimit>, String> {
    if !args.rate_limits {
        return Ok(Vec::new());
    }
    let mut buckets = RateLimit::published();
    for spec in &args.rate_limit {
        let (name, figures) =
            RateLimit::parse(spec).map_err(|e| format!("--rate-limit {spec}: {e}"))?;
        match figures {
            None => buckets.retain(|b| b.name != name),
            Some((capacity, refill)) => {
                for b in buckets.iter_mut().filter(|b| b.name == name) {
                    b.capacity = capacity;
                    b.refill_per_second = refill;
                }
            }
        }
    }
    Ok(buckets)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.page_size == 0 || args.resource_groups.is_empty() {
        eprintln!("--page-size must be at least 1 and at least one --resource-group is needed");
        return ExitCode::from(64);
    }
    let rate_limits = match rate_limits(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let config = Config {
        subscription_id: args.subscription_id,
        tenant_id: args.tenant_id,
        client_id: args.client_id,
        client_secret: args.client_secret,
        location: args.location,
        resource_groups: args.resource_groups,
        page_size: args.page_size,
        create_delay: Duration::from_millis(args.create_delay_ms),
        delete_delay: Duration::from_millis(args.delete_delay_ms),
        spec_path: args
            .spec
            .unwrap_or_else(skylet_aci_emulator::default_spec_path),
        bind: args.bind,
        container_group_quota: args.container_group_quota,
        core_quota: args.core_quota,
        rate_limits,
        ..Config::default()
    };
    let emulator = match Emulator::start(config).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("failed to start: {}", error_chain(&e));
            return ExitCode::from(1);
        }
    };
    if let Err(e) = emulator.write_ca(&args.ca_out) {
        eprintln!("failed to write {}: {e}", args.ca_out.display());
        emulator.shutdown().await;
        return ExitCode::from(1);
    }
    println!("{}", emulator.url());
    wait_for_signal().await;
    tracing::info!("shutting down");
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
