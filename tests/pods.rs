#![allow(clippy::unwrap_used)]
//! The pod controller in-process against the real control plane, with the
//! simulated backend in the same process: the backend's state and skylet's
//! metrics are read directly, and the controller is stopped and started
//! again while the backend lives on (issue #13).

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use skylet::{NodeParts, config::Config, cost::CostMetrics, failover::Ledger, metrics::Metrics};
use skylet_mock::MockProvider;
use skylet_provider::{Provider, Sink, metrics::BackendApiMetrics};
use skylet_testenv::{
    ControlPlane, eventually,
    k8s::{deployment, namespace, sample},
    unique_name,
};
use tokio_util::sync::CancellationToken;

/// A node run in this process over `provider`; stopped on drop.
struct InProcess {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<skylet::Result<()>>>,
}

impl InProcess {
    /// Runs node `name` with `provider` (sharing its state with clones).
    fn start(
        client: &Client,
        name: &str,
        provider: MockProvider,
        sink_rx: skylet_provider::SinkReceiver,
        metrics: &Metrics,
    ) -> Self {
        let config = Config::parse_from([
            "skylet",
            "--node-name",
            name,
            "--node-label",
            &format!("skylet-test={name}"),
            "--listen",
            "127.0.0.1:0",
            "--node-ip",
            "127.0.0.1",
            "--sweep-interval",
            "1",
        ])
        .unwrap();
        let backend = config.backends.into_iter().next().unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let shutdown = CancellationToken::new();
        let mut labels = skylet::node::base_labels(name, "mock");
        labels.extend(backend.node.labels.clone());
        let parts = NodeParts {
            client: client.clone(),
            node: skylet::config::NodeConfig {
                labels,
                ..backend.node
            },
            pods: backend.pods,
            server: backend.server,
            metrics: metrics.node(name, "mock"),
            meter: None,
            ledger: Ledger::register(&mut registry),
            failover: config.failover,
            api_metrics: BackendApiMetrics::default(),
            shutdown: shutdown.clone(),
        };
        let _ = CostMetrics::register(&mut registry);
        let task = tokio::spawn(skylet::run_node(parts, provider, sink_rx));
        Self {
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the node (as SIGTERM does) and waits for it.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn template(node: &str, app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": {"type": "virtual-kubelet", "skylet-test": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": "nginx"}]
        }
    })
}

async fn running(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect()
}

/// Creates the backend was asked for, from skylet's metrics.
fn creates(metrics: &Metrics, node: &str) -> f64 {
    sample(
        &metrics.render(),
        &[
            "skylet_provider_call_duration_seconds_count{",
            &format!("backend=\"{node}\""),
            "op=\"create\"",
        ],
    )
}

#[tokio::test]
async fn a_controller_that_restarts_adopts_what_the_backend_holds_and_creates_nothing_twice() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let node = unique_name("inproc");
    let (sink, rx) = Sink::channel();
    let mock = MockProvider::new(skylet_mock::Config::default(), sink);
    let metrics = Metrics::new();
    let first = InProcess::start(&client, &node, mock.clone(), rx, &metrics);
    let ns = namespace(&client, "inproc").await;
    deployment(&client, &ns, "web", 20, template(&node, "web")).await;
    eventually("20 pods Running", Duration::from_secs(60), || async {
        (running(&client, &ns, "web").await.len() == 20).then_some(())
    })
    .await;
    assert_eq!(mock.list_pods().await.unwrap().len(), 20);
    assert_eq!(creates(&metrics, &node), 20.0, "one create per pod");

    // the controller stops; the backend (this mock) lives on, as a cloud.
    // The mock keeps pushing to the first controller's sink, now gone: the
    // second one learns what the backend holds from its listing and sweeps
    first.stop().await;
    let restarted_metrics = Metrics::new();
    let second = InProcess::start(
        &client,
        &node,
        mock.clone(),
        Sink::channel().1,
        &restarted_metrics,
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(running(&client, &ns, "web").await.len(), 20);
    assert_eq!(
        creates(&restarted_metrics, &node),
        0.0,
        "adopted, not created again"
    );
    assert_eq!(
        mock.list_pods().await.unwrap().len(),
        20,
        "no duplicate in the backend"
    );

    // scale down: the backend ends up with exactly what remains
    let d: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    d.patch(
        "web",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    eventually("5 pods in the backend", Duration::from_secs(60), || async {
        (mock.list_pods().await.ok()?.len() == 5).then_some(())
    })
    .await;
    d.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the backend empty", Duration::from_secs(60), || async {
        mock.list_pods().await.ok()?.is_empty().then_some(())
    })
    .await;
    second.stop().await;
}

#[tokio::test]
async fn a_pod_removed_while_the_controller_is_down_is_swept_from_the_backend() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let node = unique_name("inproc-sweep");
    let (sink, rx) = Sink::channel();
    let mock = MockProvider::new(skylet_mock::Config::default(), sink);
    let metrics = Metrics::new();
    let first = InProcess::start(&client, &node, mock.clone(), rx, &metrics);
    let ns = namespace(&client, "inproc-sweep").await;
    deployment(&client, &ns, "web", 3, template(&node, "web")).await;
    eventually("3 pods Running", Duration::from_secs(60), || async {
        (running(&client, &ns, "web").await.len() == 3).then_some(())
    })
    .await;
    first.stop().await;
    // while no controller runs, the Deployment and its pods are removed
    // for good (grace 0: the apiserver removes them without a kubelet)
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .unwrap();
    eventually("the pod objects gone", Duration::from_secs(30), || async {
        pods.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        mock.list_pods().await.unwrap().len(),
        3,
        "the instances outlive their pods"
    );
    let second = InProcess::start(
        &client,
        &node,
        mock.clone(),
        Sink::channel().1,
        &Metrics::new(),
    );
    eventually("the orphans swept", Duration::from_secs(30), || async {
        mock.list_pods().await.ok()?.is_empty().then_some(())
    })
    .await;
    second.stop().await;
}
