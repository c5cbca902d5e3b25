//! Pods on a fleet of simulated backends (one skylet, several nodes whose
//! label `skylet-test` names the fleet), as tests/metrics.rs,
//! tests/monitoring.rs and kubectl-skylet's tests drive them: a pod
//! template for the fleet's nodes, its pods, where they run, and an orphan
//! left behind while skylet is down.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::Skylet;

/// A pod template for the nodes of fleet `fleet`, app `app`: one container
/// `main` requesting 1 CPU and 2 GiB, with the fields of `container`
/// (its image, command) and of `spec` (a node selector, an affinity) set
/// over the defaults.
pub fn template(fleet: &str, app: &str, container: Value, spec: Value) -> Value {
    let mut t = json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "nodeSelector": {"type": "virtual-kubelet", "skylet-test": fleet},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]
        }
    });
    set(&mut t["spec"]["containers"][0], container);
    set(&mut t["spec"], spec);
    t
}

/// Sets `from`'s fields on `into` (both objects).
fn set(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The pods of app `app` in namespace `ns`.
///
/// # Panics
/// If the API server does not list them.
pub async fn pods(client: &Client, ns: &str, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("the pods listed")
        .items
}

/// The node `p` is bound to ("" before it is scheduled).
pub fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// `p` is in phase Running and not being deleted.
pub fn running(p: &Pod) -> bool {
    crate::k8s::phase(p) == "Running" && p.metadata.deletion_timestamp.is_none()
}

/// Waits until exactly `n` pods of app `app` in `ns` run on `node`.
///
/// # Panics
/// If that does not happen within `timeout`.
pub async fn running_on(
    client: &Client,
    ns: &str,
    app: &str,
    node: &str,
    n: usize,
    timeout: std::time::Duration,
) {
    let what = format!("{n} pods of {app} Running on {node}");
    crate::eventually(&what, timeout, || async {
        let list = pods(client, ns, app).await;
        let on = list.iter().filter(|p| running(p) && node_of(p) == node);
        (on.count() == n).then_some(())
    })
    .await;
}

/// Marks `node` unschedulable (`on`) or schedulable again, as `kubectl
/// cordon`/`uncordon` do: tests cordon the other nodes while pods are
/// placed where a preferred affinity alone would not always put them (the
/// scheduler's default spreading outweighs it now and then).
///
/// # Panics
/// If the API server refuses the patch.
pub async fn cordon(client: &Client, node: &str, on: bool) {
    let patch = json!({"spec": {"unschedulable": on}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cordon {node} = {on}: {e}"));
}

/// Leaves an orphan on `node`: a Running pod of `app` force-deleted while
/// `s` is down, its instance still in the backend; `s` runs again after.
///
/// # Panics
/// If no pod of `app` runs on `node`, or the API server refuses the
/// deletion.
pub async fn orphan(client: &Client, s: &mut Skylet, ns: &str, app: &str, node: &str) {
    let victim = pods(client, ns, app)
        .await
        .into_iter()
        .find(|p| running(p) && node_of(p) == node)
        .unwrap_or_else(|| panic!("a pod of {app} running on {node}"));
    s.stop();
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(
            victim.metadata.name.as_deref().expect("the pod's name"),
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("the pod deleted");
    s.start_again();
}
