//! Home Services in the remote cluster: for every namespace with pods of
//! this node, the home Services its pods may call, as selector-less
//! Services of the same name with EndpointSlices carrying the home
//! endpoints (addresses, ports, readiness), kept in sync by watch.
//!
//! # How
//! Watches feed stores: the home Services (all, or those matching
//! [`Settings::selector`]) and EndpointSlices, this node's remote pods (from
//! the pod watch of the crate), and what skylet wrote remotely (Services,
//! EndpointSlices and anchors labelled with the cluster id and the node).
//! Every change wakes one loop that computes what the remote cluster should
//! hold ([`desired`]) and writes only the difference (a hash annotation says
//! what an object was written from), so a readiness flip at home reaches the
//! remote EndpointSlice within a watch round trip.
//!
//! # Ownership and clean-up
//! Like the reflected ConfigMaps, everything is owned by the remote pods,
//! through one anchor ConfigMap per namespace (`skylet-services-<node>`,
//! owned by this node's pods there): the anchor owns the reflected
//! Services, each Service its EndpointSlices (and ServiceImport). When the
//! last pod of the namespace is gone skylet deletes them at once; should
//! skylet not run then, the remote garbage collector does.
//!
//! # Names and DNS
//! Names are unchanged: with namespace mode `same`, `http://svc.ns` (and
//! `svc.ns.svc.cluster.local`, if both clusters use that domain) works from a
//! remote pod as at home. Where the mapping changes the namespace
//! (`prefixed`, `map`), the short name `svc` works (the remote pod's own
//! search path starts with its namespace), and qualified names use the
//! remote namespace: `svc.<remote-ns>`.
//!
//! # Mesh integration ([`Export`])
//! - `cilium`: the reflected Services are marked global for Cilium
//!   ClusterMesh (`service.cilium.io/global: "true"`, `shared: "false"`,
//!   `global-sync-endpoint-slices` for headless ones, the home Service's own
//!   `service.cilium.io/*` annotations copied) and carry no EndpointSlices:
//!   ClusterMesh brings the home endpoints. The home Service must be global
//!   too (annotated by its owner), and namespace mode must be `same`.
//! - `mcs`: for every reflected Service with an address, a `ServiceImport`
//!   (multicluster.x-k8s.io/v1alpha1) of the same name in the remote
//!   namespace, type `ClusterSetIP` with the reflected Service's address (or
//!   `Headless`), when the remote cluster has the CRD: a CoreDNS with the
//!   `multicluster` plugin then answers `svc.ns.svc.clusterset.local`. The
//!   import's status (its clusters) is not written.
//!
//! # RBAC
//! Home: `services` and `discovery.k8s.io/endpointslices`: list, watch.
//! Remote: `services`, `discovery.k8s.io/endpointslices`: get, list, watch,
//! create, update, delete; `configmaps`: list, watch, delete (the anchors);
//! with `mcs`, `multicluster.x-k8s.io/serviceimports`: get, create, update,
//! delete.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Debug,
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::{calls::Calls, translate::Context};

pub(crate) mod desired;
mod imports;
#[cfg(test)]
mod tests;
mod write;

use desired::{Desired, Key};
use write::{Mirrored, Outcome, Writer};

/// Which home Services are reflected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Every Service of a namespace with offloaded pods (narrowed by the
    /// selector, if one is given) (default).
    #[default]
    All,
    /// None: no Service is reflected.
    None,
}

/// How reflected Services are offered to a multi-cluster network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Export {
    /// Cilium ClusterMesh global Services (no EndpointSlices: ClusterMesh
    /// brings the endpoints).
    Cilium,
    /// Multi-Cluster Services API: a ServiceImport per reflected Service.
    Mcs,
}

/// Settings of Service reflection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Which Services.
    pub selection: Selection,
    /// A label selector the reflected Services must match (`None`: all).
    pub selector: Option<String>,
    /// Mesh integrations.
    pub exports: Vec<Export>,
}

/// How long the loop waits after a change for more (a scale-up changes
/// many objects at once).
const SETTLE: Duration = Duration::from_millis(50);
/// A full pass at least this often, whatever changed.
const RESYNC: Duration = Duration::from_secs(60);
/// After a pass with failures, the next one after this (doubling to 30 s).
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The Service reflector of one node.
pub(crate) struct Reflector {
    home: Client,
    remote: Client,
    ctx: Context,
    settings: Settings,
    calls: Calls,
    /// This node's remote pods, filled by the crate's pod watch.
    pods: Store<Pod>,
    /// Woken by every watch event, the pod watch's included.
    wake: Arc<Notify>,
}

/// The stores of one run.
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    remote_services: Store<Service>,
    remote_slices: Store<EndpointSlice>,
    anchors: Store<ConfigMap>,
}

/// What a pass remembers for the next.
#[derive(Default)]
struct Memory {
    /// Foreign objects in the way, warned about once.
    foreign: HashSet<(&'static str, Key)>,
    /// Imports written, by key, with the hash they were written from.
    imports: HashMap<Key, String>,
    /// Whether the remote cluster has the ServiceImport CRD, and when that
    /// was last asked.
    mcs: Option<(bool, tokio::time::Instant)>,
}

/// How often a forbidden watch is tried again.
const FORBIDDEN_RETRY: Duration = Duration::from_secs(60);

/// Feeds a store from a watch of `api` and wakes the loop on every event.
/// While the identity may not list the kind (no RBAC yet), one warning
/// says so and a list is tried again every minute, instead of a watch
/// failing (and logging) every second.
async fn feed<K>(
    what: &'static str,
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    wc: watcher::Config,
    wake: &Notify,
) where
    K: Resource + Clone + Debug + Send + Sync + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Default,
{
    let mut warned = false;
    loop {
        let probe = ListParams {
            label_selector: wc.label_selector.clone(),
            limit: Some(1),
            ..Default::default()
        };
        match api.list_metadata(&probe).await {
            Err(kube::Error::Api(s)) if s.code == 403 => {
                if !warned {
                    tracing::warn!(watch = what, error = %s.message, "Service reflection may not list what it reflects; grant the RBAC in the skylet-kube docs (retrying every minute)");
                    warned = true;
                }
                tokio::time::sleep(FORBIDDEN_RETRY).await;
            }
            // allowed, or the watch's own retries take over
            _ => break,
        }
    }
    let s = reflector::reflector(writer, watcher(api, wc).default_backoff());
    futures::pin_mut!(s);
    while let Some(ev) = s.next().await {
        if let Err(e) = ev {
            tracing::warn!(watch = what, error = %e, "Service reflection watch failed; retrying");
        }
        wake.notify_one();
    }
}

impl Reflector {
    pub(crate) fn new(
        home: Client,
        remote: Client,
        ctx: Context,
        settings: Settings,
        calls: Calls,
        pods: Store<Pod>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            home,
            remote,
            ctx,
            settings,
            calls,
            pods,
            wake,
        }
    }

    /// Runs the watches and the loop, forever (until dropped). Does nothing
    /// with [`Selection::None`].
    pub(crate) async fn run(&self) {
        if self.settings.selection == Selection::None {
            return;
        }
        let mut home_wc = watcher::Config::default();
        if let Some(sel) = &self.settings.selector {
            home_wc = home_wc.labels(sel);
        }
        let mine = watcher::Config::default().labels(&self.ctx.selector());
        let anchors_wc = watcher::Config::default().labels(&format!(
            "{},{}=services",
            self.ctx.selector(),
            desired::ANCHOR
        ));
        let slices_wc = watcher::Config::default().labels(desired::SERVICE_NAME);
        let (services, w1) = reflector::store();
        let (slices, w2) = reflector::store();
        let (remote_services, w3) = reflector::store();
        let (remote_slices, w4) = reflector::store();
        let (anchors, w5) = reflector::store();
        let stores = Stores {
            services,
            slices,
            remote_services,
            remote_slices,
            anchors,
        };
        let w = &*self.wake;
        let watches = async {
            tokio::join!(
                feed("home services", w1, Api::all(self.home.clone()), home_wc, w),
                feed(
                    "home endpointslices",
                    w2,
                    Api::all(self.home.clone()),
                    slices_wc,
                    w
                ),
                feed(
                    "remote services",
                    w3,
                    Api::all(self.remote.clone()),
                    mine.clone(),
                    w
                ),
                feed(
                    "remote endpointslices",
                    w4,
                    Api::all(self.remote.clone()),
                    mine,
                    w
                ),
                feed(
                    "remote anchors",
                    w5,
                    Api::all(self.remote.clone()),
                    anchors_wc,
                    w
                ),
            );
        };
        tokio::select! {
            () = watches => {}
            () = self.reconcile_loop(&stores) => {}
        }
    }

    /// Waits for every store, then makes a pass on every change.
    async fn reconcile_loop(&self, stores: &Stores) {
        let ready = || async {
            let _ = tokio::join!(
                self.pods.wait_until_ready(),
                stores.services.wait_until_ready(),
                stores.slices.wait_until_ready(),
                stores.remote_services.wait_until_ready(),
                stores.remote_slices.wait_until_ready(),
                stores.anchors.wait_until_ready(),
            );
        };
        if tokio::time::timeout(Duration::from_secs(30), ready())
            .await
            .is_err()
        {
            tracing::warn!(
                "Service reflection waits for its watches (home: services, endpointslices; remote: services, endpointslices, configmaps): check the RBAC in the skylet-kube docs"
            );
            ready().await;
        }
        let mut memory = Memory::default();
        let mut retry = RETRY_FIRST;
        let mut next = RESYNC;
        loop {
            let _ = tokio::time::timeout(next, self.wake.notified()).await;
            tokio::time::sleep(SETTLE).await;
            let failures = self.pass(stores, &mut memory).await;
            if failures == 0 {
                retry = RETRY_FIRST;
                next = RESYNC;
            } else {
                next = retry;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }

    /// One pass: writes what differs from [`desired::desired`]; returns
    /// how many writes failed.
    async fn pass(&self, stores: &Stores, memory: &mut Memory) -> usize {
        let d = desired::desired(
            &self.pods.state(),
            &stores.services.state(),
            &stores.slices.state(),
            &self.ctx,
            &self.settings,
        );
        let w = Writer {
            remote: &self.remote,
            calls: &self.calls,
            ctx: &self.ctx,
        };
        let mut failures = 0;
        let anchors = index(&stores.anchors);
        let remote_services = index(&stores.remote_services);
        let remote_slices = index(&stores.remote_slices);
        // anchors, then what they own, then what that owns
        let mut anchor_uids: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (key, want) in &d.anchors {
            let mut want = want.clone();
            let owners = want.metadata.owner_references.take().unwrap_or_default();
            desired::seal(&mut want, owners);
            let have = anchors.get(key).map(|a| &**a);
            if let Some(a) = self.converge(&w, have, want, memory, &mut failures).await {
                let uid = a.meta().uid.clone().unwrap_or_default();
                anchor_uids.insert(key.0.clone(), (key.1.clone(), uid));
            }
        }
        let mut written: BTreeMap<Key, Service> = BTreeMap::new();
        for (key, want) in &d.services {
            let Some((anchor, uid)) = anchor_uids.get(&key.0) else {
                continue;
            };
            let mut want = want.clone();
            desired::seal(
                &mut want,
                vec![desired::owner("v1", "ConfigMap", anchor, uid)],
            );
            let have = remote_services.get(key).map(|s| &**s);
            if let Some(s) = self.converge(&w, have, want, memory, &mut failures).await {
                written.insert(key.clone(), s);
            }
        }
        for (key, (want, svc)) in &d.slices {
            let Some(uid) = written
                .get(&(key.0.clone(), svc.clone()))
                .and_then(|s| s.meta().uid.clone())
            else {
                continue;
            };
            let mut want = want.clone();
            desired::seal(&mut want, vec![desired::owner("v1", "Service", svc, &uid)]);
            let have = remote_slices.get(key).map(|s| &**s);
            self.converge(&w, have, want, memory, &mut failures).await;
        }
        if self.settings.exports.contains(&Export::Mcs) {
            failures += imports::sync(self, &written, memory).await;
        }
        // what is no longer wanted, dependents first
        failures += self.prune(&w, &remote_slices, &d.slices).await;
        failures += self.prune(&w, &remote_services, &d.services).await;
        failures += self.prune(&w, &anchors, &d.anchors).await;
        failures
    }

    /// Writes `want` unless `have` was written from the same; returns the
    /// object as it exists when it is as wanted.
    async fn converge<K: Mirrored>(
        &self,
        w: &Writer<'_>,
        have: Option<&K>,
        want: K,
        memory: &mut Memory,
        failures: &mut usize,
    ) -> Option<K> {
        if let Some(h) = have
            && desired::hash_on(h) == desired::hash_on(&want)
        {
            return Some(h.clone());
        }
        let key = (want.namespace().unwrap_or_default(), want.name_any());
        match w.put(have, &want).await {
            Ok(Outcome::Written(k)) => {
                memory.foreign.remove(&(K::WHAT, key));
                Some(k)
            }
            // created again on the next pass, which the delete triggers
            Ok(Outcome::Recreating) => None,
            Ok(Outcome::Foreign) => {
                if memory.foreign.insert((K::WHAT, key.clone())) {
                    tracing::warn!(
                        kind = K::WHAT,
                        namespace = %key.0,
                        name = %key.1,
                        "the remote cluster has an object of that name that skylet did not write; not reflecting over it"
                    );
                }
                None
            }
            Err(e) => {
                *failures += 1;
                tracing::warn!(kind = K::WHAT, namespace = %key.0, name = %key.1, error = %e, "cannot reflect; retrying");
                None
            }
        }
    }

    /// Deletes what skylet wrote and no longer wants; returns the failures.
    async fn prune<K: Mirrored, V>(
        &self,
        w: &Writer<'_>,
        have: &BTreeMap<Key, Arc<K>>,
        want: &BTreeMap<Key, V>,
    ) -> usize {
        let mut failures = 0;
        for key in have.keys().filter(|k| !want.contains_key(*k)) {
            if let Err(e) = w.delete::<K>(&key.0, &key.1).await {
                failures += 1;
                tracing::warn!(kind = K::WHAT, namespace = %key.0, name = %key.1, error = %e, "cannot remove a reflected object; retrying");
            }
        }
        failures
    }
}

/// A store's objects by (namespace, name), only those not being deleted.
fn index<K: Resource + Clone>(store: &Store<K>) -> BTreeMap<Key, Arc<K>>
where
    K::DynamicType: Clone + Eq + std::hash::Hash + Default,
{
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| {
            (
                (
                    o.meta().namespace.clone().unwrap_or_default(),
                    o.meta().name.clone().unwrap_or_default(),
                ),
                o,
            )
        })
        .collect()
}

impl Desired {
    /// Nothing to hold.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.anchors.is_empty() && self.services.is_empty() && self.slices.is_empty()
    }
}
