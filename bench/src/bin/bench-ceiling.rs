//! `bench-ceiling`: the apiserver's ceiling for a node agent.
//!
//! It does exactly the writes a node must do and nothing else: register a
//! Ready Node, create and renew its Lease every 10 s, and for every pod bound
//! to it write one status patch to Running (with a podIP and Ready
//! conditions), and one final delete (grace 0, UID precondition) once the pod
//! has a deletionTimestamp. Each write is its own task, so concurrency is
//! unbounded unless `--concurrency` caps it. Whatever a real node agent does
//! beyond this (a backend, resolution of env and volumes, status diffing,
//! events) is overhead measured against this ceiling.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use skylet_bench::{client_from, init_tracing, key_value};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(
    name = "bench-ceiling",
    about = "The minimal node agent: one status write per pod, at full concurrency"
)]
struct Args {
    /// kubeconfig of the node's identity.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Node name.
    #[arg(long, default_value = "bench-ceiling")]
    node_name: String,
    /// InternalIP of the node (pods' hostIP).
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: Ipv4Addr,
    /// Node label key=value (repeatable), besides kubernetes.io/hostname.
    #[arg(long = "node-label", default_value = "type=bench-ceiling")]
    labels: Vec<String>,
    /// Node taint key=value:Effect (repeatable).
    #[arg(
        long = "node-taint",
        default_value = "bench.skylet.io/ceiling=true:NoSchedule"
    )]
    taints: Vec<String>,
    /// Writes in flight at once; 0 = unbounded.
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Pods the node offers.
    #[arg(long, default_value_t = 100_000)]
    max_pods: u64,
}

/// What the watch handler shares with the write tasks.
struct Ctx {
    client: Client,
    node_ip: String,
    limit: Option<Semaphore>,
    /// UIDs whose Running patch was sent (or is in flight).
    patched: Mutex<HashSet<String>>,
    /// UIDs whose final delete was sent.
    deleted: Mutex<HashSet<String>>,
    next_ip: AtomicU32,
}

fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = Args::parse();
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = client_from(&args.kubeconfig).await?;
    register(&client, &args).await?;
    tokio::spawn(renew_lease(client.clone(), args.node_name.clone()));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node_ip: args.node_ip.to_string(),
        limit: (args.concurrency > 0).then(|| Semaphore::new(args.concurrency)),
        patched: Mutex::default(),
        deleted: Mutex::default(),
        next_ip: AtomicU32::new(1),
    });
    tracing::info!(node = args.node_name, "ready; watching pods");
    let pods: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", args.node_name));
    let stream = watcher(pods, wc).default_backoff();
    futures::pin_mut!(stream);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => handle(&ctx, p),
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch error; retrying"),
                None => return Ok(()),
            },
        }
    }
}

/// Registers the Node as a kubelet does: labels, taints, capacity, Ready.
async fn register(client: &Client, args: &Args) -> anyhow::Result<()> {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(args.node_name));
    for l in &args.labels {
        let (k, v) = key_value(l)?;
        labels.insert(k, json!(v));
    }
    let taints: Vec<serde_json::Value> = args
        .taints
        .iter()
        .map(|t| {
            let (kv, effect) = t
                .rsplit_once(':')
                .with_context(|| format!("taint {t:?}: no :Effect"))?;
            let (k, v) = key_value(kv)?;
            Ok(json!({"key": k, "value": v, "effect": effect}))
        })
        .collect::<anyhow::Result<_>>()?;
    let now = jiff::Timestamp::now().to_string();
    let capacity = json!({"cpu": "1000", "memory": "4Ti", "pods": args.max_pods.to_string()});
    let ready = |t: &str, s: &str, reason: &str| json!({"type": t, "status": s, "reason": reason, "lastHeartbeatTime": now, "lastTransitionTime": now});
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": args.node_name, "labels": labels},
        "spec": {"taints": taints},
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": args.node_ip.to_string()},
                          {"type": "Hostname", "address": args.node_name}],
            "conditions": [
                ready("Ready", "True", "KubeletReady"),
                ready("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                ready("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                ready("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "bench-ceiling",
                         "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                         "machineID": "", "osImage": "", "systemUUID": ""},
        },
    }))?;
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let status = json!({"status": node.status});
            nodes
                .patch_status(
                    &args.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await?;
        }
        Err(e) => return Err(e).context("cannot register the node"),
    }
    Ok(())
}

/// Creates the node's Lease and renews it every 10 s (duration 40 s).
async fn renew_lease(client: Client, node: String) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let now = MicroTime(jiff::Timestamp::now());
        let r = match leases.get_opt(&node).await {
            Ok(Some(mut l)) => {
                l.spec.get_or_insert_with(Default::default).renew_time = Some(now);
                leases
                    .replace(&node, &PostParams::default(), &l)
                    .await
                    .map(drop)
            }
            Ok(None) => {
                let l: Result<Lease, _> = serde_json::from_value(json!({
                    "metadata": {"name": node},
                    "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now},
                }));
                match l {
                    Ok(l) => leases.create(&PostParams::default(), &l).await.map(drop),
                    Err(e) => {
                        tracing::error!(error = %e, "lease");
                        continue;
                    }
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot renew the lease");
        }
    }
}

fn handle(ctx: &Arc<Ctx>, pod: Pod) {
    let Some(uid) = pod.uid() else { return };
    if pod.metadata.deletion_timestamp.is_some() {
        if ctx
            .deleted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(uid.clone())
        {
            let ctx = ctx.clone();
            tokio::spawn(async move { final_delete(&ctx, &pod, uid).await });
        }
        return;
    }
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if !running
        && ctx
            .patched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(uid.clone())
    {
        let ctx = ctx.clone();
        tokio::spawn(async move { set_running(&ctx, &pod, uid).await });
    }
}

/// The one status write of a pod: Running, Ready, a podIP.
async fn set_running(ctx: &Ctx, pod: &Pod, uid: String) {
    let _permit = match &ctx.limit {
        Some(s) => s.acquire().await.ok(),
        None => None,
    };
    let n = ctx.next_ip.fetch_add(1, Ordering::Relaxed);
    let ip = Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)).to_string();
    let now = jiff::Timestamp::now().to_string();
    let containers: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
    let patch = json!({
        "metadata": {"uid": uid},
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": ctx.node_ip, "hostIPs": [{"ip": ctx.node_ip}], "startTime": now,
            "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady")],
            "containerStatuses": containers,
        },
    });
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    for attempt in 1..=5u64 {
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => return,
            Err(e) => {
                tracing::warn!(pod = name, error = %e, attempt, "status patch failed");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
    // let a later event try again
    ctx.patched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&uid);
}

/// The final delete of a pod being deleted: grace 0, only this UID.
async fn final_delete(ctx: &Ctx, pod: &Pod, uid: String) {
    let _permit = match &ctx.limit {
        Some(s) => s.acquire().await.ok(),
        None => None,
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let name = pod.name_any();
    for attempt in 1..=5u64 {
        match pods.delete(&name, &dp).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => break,
            Err(e) => {
                tracing::warn!(pod = name, error = %e, attempt, "delete failed");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
    ctx.patched
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&uid);
}
