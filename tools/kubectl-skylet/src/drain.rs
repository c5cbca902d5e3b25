//! `kubectl skylet drain BACKEND`: cordons the backend's node and evicts
//! its pods through the Eviction API, as `kubectl drain` does: an eviction a
//! PodDisruptionBudget forbids now (HTTP 429) is retried every few seconds
//! until `--timeout`, so a budget holds while the pods' replacements start
//! elsewhere. DaemonSet pods are left (their controller would recreate
//! them); bare pods are evicted too, and nothing recreates them (as
//! `kubectl drain --force`), unless `--skip-bare-pods`.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{EvictParams, Patch, PatchParams},
};
use serde::Serialize;

use crate::{Format, nodes, output};

/// `drain` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The backend (its node's `skylet.io/backend` label, or the node's name).
    backend: String,
    /// Seconds to keep retrying evictions a budget forbids, and to wait for
    /// the evicted pods to be gone.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Seconds between retries of a forbidden eviction.
    #[arg(long, default_value_t = 5)]
    retry_every: u64,
    /// Leave pods that no controller owns.
    #[arg(long)]
    skip_bare_pods: bool,
}

/// What happened to one pod.
#[derive(Debug, Serialize)]
struct Outcome {
    namespace: String,
    pod: String,
    /// `evicted`, `skipped` or `failed`.
    result: &'static str,
    /// Budget refusals before the eviction was allowed.
    refused_by_budget: u32,
    detail: String,
}

/// The whole drain.
#[derive(Debug, Serialize)]
struct Report {
    node: String,
    cordoned: bool,
    pods: Vec<Outcome>,
}

pub(crate) async fn run(client: &Client, args: &Args, out: Format) -> anyhow::Result<ExitCode> {
    let node = nodes::node_of_backend(client, &args.backend).await?;
    let name = node.name_any();
    Api::<Node>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
        )
        .await?;
    eprintln!("node/{name} cordoned");
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut outcomes = Vec::new();
    for p in nodes::pods_on(client, &name).await? {
        let o = evict(client, &p, args, deadline).await;
        eprintln!("pod {}/{}: {} {}", o.namespace, o.pod, o.result, o.detail);
        outcomes.push(o);
    }
    // the evicted pods leave once their backend confirmed them gone
    for o in outcomes.iter_mut().filter(|o| o.result == "evicted") {
        let api: Api<Pod> = Api::namespaced(client.clone(), &o.namespace);
        while api.get_opt(&o.pod).await?.is_some() {
            if Instant::now() >= deadline {
                o.result = "failed";
                o.detail = "evicted, but still there at the timeout (its backend has not confirmed it gone)".into();
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let failed = outcomes.iter().any(|o| o.result == "failed");
    let rows = outcomes
        .iter()
        .map(|o| {
            vec![
                o.namespace.clone(),
                o.pod.clone(),
                o.result.to_owned(),
                o.refused_by_budget.to_string(),
                o.detail.clone(),
            ]
        })
        .collect();
    let report = Report {
        node: name,
        cordoned: true,
        pods: outcomes,
    };
    output::print(
        out,
        &report,
        &["NAMESPACE", "POD", "RESULT", "BUDGET-REFUSALS", "DETAIL"],
        rows,
    )?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Evicts `p`, retrying while a budget forbids it.
async fn evict(client: &Client, p: &Pod, args: &Args, deadline: Instant) -> Outcome {
    let namespace = p.namespace().unwrap_or_default();
    let mut o = Outcome {
        pod: p.name_any(),
        namespace: namespace.clone(),
        result: "evicted",
        refused_by_budget: 0,
        detail: String::new(),
    };
    let owner = p
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true));
    if owner.is_some_and(|r| r.kind == "DaemonSet") {
        o.result = "skipped";
        o.detail = "DaemonSet pod".into();
        return o;
    }
    if owner.is_none() && args.skip_bare_pods {
        o.result = "skipped";
        o.detail = "no controller (--skip-bare-pods)".into();
        return o;
    }
    if p.metadata.deletion_timestamp.is_some() {
        o.detail = "already terminating".into();
        return o;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    loop {
        match api.evict(&o.pod, &EvictParams::default()).await {
            Ok(_) => return o,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                o.detail = "already gone".into();
                return o;
            }
            Err(kube::Error::Api(s)) if s.code == 429 => {
                o.refused_by_budget += 1;
                if Instant::now() >= deadline {
                    o.result = "failed";
                    o.detail = format!("a PodDisruptionBudget still forbids it: {}", s.message);
                    return o;
                }
                tokio::time::sleep(Duration::from_secs(args.retry_every)).await;
            }
            Err(e) => {
                o.result = "failed";
                o.detail = e.to_string();
                return o;
            }
        }
    }
}
