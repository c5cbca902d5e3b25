#![warn(missing_docs)]
//! skylet's Azure Container Instances backend: every pod bound to the node is
//! one ACI container group.
//!
//! | pod | ACI |
//! |---|---|
//! | the pod | a container group named by [`names::group_name`] (unique by pod UID), tagged with the pod's UID, namespace, name and the node |
//! | containers, init containers, env, probes, resources, volumes | the group's properties ([`translate`]); Secret-derived values only in `secureValue` and secret volumes |
//! | status | a sweep: ContainerGroups_ListByResourceGroup, all pages, filtered by the node tag ([`status`]); never one GET per pod |
//! | Events | each instance-view event sent once to the core ([`skylet_provider::Sink`]), which records it on the pod ([`events`]) |
//! | logs | Containers_ListLogs, polled for `-f` ([`logs`]) |
//! | exec, attach | Containers_ExecuteCommand / Containers_Attach and their WebSocket ([`stream`]) |
//! | `kubectl top` | Azure Monitor's batch metrics API, `CpuUsage` and `MemoryUsage` of up to 50 groups a call ([`client::monitor`]) |
//! | delete | ContainerGroups_Stop; the sweep deletes the group once its containers ended (or the core does once the grace period is over); gone only when ARM answers 404 ([`delete`]) |
//!
//! # Idempotency and restarts
//! The group name is a function of the pod UID, so a create repeated after a
//! crash (even between the PUT and skylet noticing it) is a PUT of the same
//! resource: ARM answers 200 and nothing is duplicated. A restarted skylet
//! adopts groups by their `skylet-node` and `skylet-pod-uid` tags; the core's
//! sweep deletes groups whose pod is gone.
//!
//! # Cost
//! One list call per page (100 groups) per sweep for the resource group, one
//! PUT per pod, Stop + Delete per deleted pod (+ one GET when a delete is
//! confirmed at once), one usage call per node ping. virtual-kubelet's azure-aci provider GETs every group
//! every 5 s instead.
//!
//! # Settings and metrics
//! [`Aci`] is the backend's [`skylet_provider::Kind`]: its flags, its
//! section of the config file and how it is built. ARM calls are counted in
//! the core's `skylet_backend_api_*` metrics (service `arm`, the operation
//! names of the spec, e.g. `ContainerGroups_ListByResourceGroup`); a sweep
//! records its list pages with `sweep_calls`.
//!
//! # Azure RBAC (see `deploy/azure/role.json`)
//! `Microsoft.ContainerInstance/containerGroups/{read,write,delete}`,
//! `.../containerGroups/stop/action`, `.../containers/logs/read`,
//! `.../containers/exec/action`, `.../containers/attach/action`,
//! `Microsoft.ContainerInstance/locations/usages/read`, and for delegated
//! subnets `Microsoft.Network/virtualNetworks/subnets/join/action`, for
//! per-pod identities `Microsoft.ManagedIdentity/userAssignedIdentities/assign/action`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skylet_provider::{
    ApiMetrics, AttachIo, BackendPod, Deleted, ExecIo, ExitStatus, LogOptions, LogStream, Node,
    PodRef, Provider, ProviderError, ResolvedPod, Result, Sink,
};

pub mod client;
pub mod config;
mod delete;
pub mod events;
pub mod kind;
pub mod logs;
pub mod models;
pub mod names;
#[cfg(test)]
mod spec_check;
pub mod status;
pub mod stream;
mod top;
pub mod translate;

pub use config::Config;
pub use kind::Aci;

use client::ArmClient;
use models::ContainerGroup;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings are unusable.
    #[error("invalid ACI settings: {0}")]
    Config(String),
    /// The Azure client could not be built (credentials, CA file).
    #[error("cannot set up the Azure client")]
    Client(#[source] client::ClientError),
}

/// The ACI backend. Cheap to clone.
#[derive(Clone)]
pub struct AciProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    client: Arc<ArmClient>,
    settings: translate::Settings,
    state: Mutex<State>,
    events: events::Forwarder,
    /// Serializes sweeps.
    sweep: tokio::sync::Mutex<()>,
    /// Cumulative CPU counters of the running containers.
    meter: skylet_provider::usage::Meter,
    /// Azure Monitor's last answer.
    usage_cache: Mutex<Option<top::Cached>>,
}

#[derive(Default)]
struct State {
    /// The last sweep's view, by pod UID.
    groups: HashMap<String, Known>,
    /// Whether a sweep has run.
    listed: bool,
    /// Node capacity from the location's quota, refreshed by pings.
    quota: BTreeMap<String, String>,
    /// Groups being deleted, by pod UID.
    deleting: HashMap<String, delete::Deleting>,
}

/// A group as the last sweep saw it.
#[derive(Clone, Debug)]
struct Known {
    /// The pod it runs.
    pod: PodRef,
    name: String,
    /// Containers and init containers.
    containers: Vec<String>,
    /// The cores its containers request, for the quota it takes.
    cores: f64,
    /// When the pod started, if it runs (`kubectl top` measures those).
    running_since: Option<jiff::Timestamp>,
    /// Its app containers.
    app_containers: Vec<String>,
}

impl Known {
    fn of(
        pod: PodRef,
        name: String,
        g: &ContainerGroup,
        status: &skylet_provider::PodStatus,
    ) -> Self {
        let p = &g.properties;
        let containers = p
            .containers
            .iter()
            .map(|c| c.name.clone())
            .chain(p.init_containers.iter().map(|c| c.name.clone()));
        Self {
            pod,
            name,
            containers: containers.collect(),
            cores: cores_of(g),
            running_since: (status.phase.as_deref() == Some("Running")).then(|| {
                status
                    .start_time
                    .as_ref()
                    .map_or_else(jiff::Timestamp::now, |t| t.0)
            }),
            app_containers: p.containers.iter().map(|c| c.name.clone()).collect(),
        }
    }
}

/// The cores a group's containers request (what it takes of the quota).
fn cores_of(g: &ContainerGroup) -> f64 {
    g.properties
        .containers
        .iter()
        .map(|c| c.properties.resources.requests.cpu)
        .sum()
}

impl AciProvider {
    /// Sets up the ARM client, counting its calls in `metrics`; the ACI
    /// events of the pods go to `sink`. No Azure call is made.
    /// ([`Aci`]'s `build` calls this.)
    ///
    /// # Errors
    /// Unusable settings, credentials that cannot be set up, an unreadable CA file.
    pub async fn new(config: Config, sink: Sink, metrics: ApiMetrics) -> Result<Self, Error> {
        config.check().map_err(Error::Config)?;
        let client = ArmClient::new(client_config(&config, metrics))
            .await
            .map_err(Error::Client)?;
        let settings = translate::Settings {
            node: config.node_name.clone(),
            location: config.location.clone(),
            subnet_ids: config.subnet_ids.clone(),
            dns: (!config.dns_nameservers.is_empty()).then(|| translate::Dns {
                nameservers: config.dns_nameservers.clone(),
                search_domains: config.dns_search_domains.clone(),
                options: config.dns_options.clone(),
            }),
            cluster_domain: config.cluster_domain.clone(),
            zones: config.zones.clone(),
            ..translate::Settings::default()
        };
        let inner = Inner {
            events: events::Forwarder::new(sink),
            client: Arc::new(client),
            settings,
            config,
            state: Mutex::default(),
            sweep: tokio::sync::Mutex::new(()),
            meter: skylet_provider::usage::Meter::new(),
            usage_cache: Mutex::default(),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn rg(&self) -> &str {
        &self.inner.config.resource_group
    }

    /// The group of a pod: from the last sweep, else by name (the name is a
    /// function of the UID, so this is right for groups created by any skylet).
    fn group_of(&self, pod: &PodRef) -> String {
        self.state()
            .groups
            .get(&pod.uid)
            .map_or_else(|| names::group_name(pod), |k| k.name.clone())
    }

    /// The group of a pod that must exist with `container`: a 404 told at
    /// once (before exec's upgrade) when the last sweep knows better.
    fn running_group(&self, pod: &PodRef, container: &str) -> Result<String> {
        let st = self.state();
        match st.groups.get(&pod.uid) {
            Some(k) if k.containers.is_empty() || k.containers.iter().any(|c| c == container) => {
                Ok(k.name.clone())
            }
            Some(k) => Err(ProviderError::NotFound(format!(
                "container {container:?} is not in container group {}",
                k.name
            ))),
            None if st.listed => Err(ProviderError::NotFound(format!(
                "pod {}/{} has no container group",
                pod.namespace, pod.name
            ))),
            None => Ok(names::group_name(pod)),
        }
    }

    async fn sweep(&self) -> Result<Vec<BackendPod>> {
        let _one = self.inner.sweep.lock().await;
        let client = &self.inner.client;
        let pages = |m: &ApiMetrics| m.calls(client::SERVICE, client::LIST_GROUPS.name);
        // sweeps are serialized and nothing else lists groups, so the
        // difference is this sweep's pages
        let before = pages(client.metrics());
        let groups: Vec<ContainerGroup> = client.list_groups(self.rg()).await?;
        client.metrics().sweep_calls(
            client::SERVICE,
            client::LIST_GROUPS.name,
            pages(client.metrics()).saturating_sub(before),
        );
        let mut pods = Vec::new();
        let mut view = HashMap::new();
        let mut listed = Vec::new();
        for g in &groups {
            let Some(tags) = g.tags.as_ref() else {
                continue;
            };
            if tags.get(names::TAG_NODE).map(String::as_str)
                != Some(self.inner.config.node_name.as_str())
            {
                continue;
            }
            let Some(pod) = names::pod_ref_of(tags) else {
                continue;
            };
            let Some(name) = g.name.clone() else { continue };
            self.inner.events.forward(&pod, events::events(g));
            let status = status::pod_status(g);
            view.insert(pod.uid.clone(), Known::of(pod.clone(), name, g, &status));
            listed.push((pod.uid.clone(), g));
            pods.push(BackendPod { status, pod });
        }
        {
            let mut st = self.state();
            st.groups = view;
            st.listed = true;
        }
        let listed: Vec<(&str, &ContainerGroup)> =
            listed.iter().map(|(uid, g)| (uid.as_str(), *g)).collect();
        self.advance_deletions(&listed).await;
        Ok(pods)
    }
}

fn client_config(c: &Config, metrics: ApiMetrics) -> client::ClientConfig {
    use config::AuthMode;
    let auth = match c.auth {
        AuthMode::Default => client::Auth::Default,
        AuthMode::ClientSecret => client::Auth::ClientSecret {
            tenant_id: c.tenant_id.clone().unwrap_or_default(),
            client_id: c.client_id.clone().unwrap_or_default(),
            client_secret: c.client_secret.clone().unwrap_or_default(),
        },
        AuthMode::WorkloadIdentity => client::Auth::WorkloadIdentity {
            tenant_id: c.tenant_id.clone(),
            client_id: c.client_id.clone(),
            token_file: None,
        },
        AuthMode::ManagedIdentity => client::Auth::ManagedIdentity {
            client_id: c.client_id.clone(),
        },
        AuthMode::AzureCli => client::Auth::AzureCli,
    };
    let mut cc = client::ClientConfig::new(c.subscription_id.clone(), auth);
    cc.arm_endpoint = c.arm_endpoint.clone();
    cc.metrics_endpoint = c
        .metrics_endpoint
        .clone()
        .unwrap_or_else(|| client::metrics_endpoint(&c.location));
    cc.authority_host = c.authority_host.clone();
    cc.ca_file = c.ca_file.clone();
    cc.max_attempts = c.max_attempts;
    cc.metrics = metrics;
    // checked by Config::check
    cc.rate_limits = c.buckets().unwrap_or_default();
    cc
}

/// What this node's own groups take of the location's quota.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Ours {
    groups: usize,
    cores: f64,
}

/// Node capacity from the location's quota: what is left of it plus what
/// this node's own groups take. The scheduler subtracts the node's pods
/// from its allocatable itself; counting them here too would halve what
/// the node can run. Use by others (other nodes, other tools in the
/// subscription) is left out.
fn quota_capacity(usages: &[client::Usage], ours: Ours) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for u in usages {
        let left = i64::from((u.limit.unwrap_or(0) - u.current_value.unwrap_or(0)).max(0));
        match u.name.as_ref().and_then(|n| n.value.as_deref()) {
            Some("StandardCores") => {
                #[allow(clippy::cast_possible_truncation)] // whole cores of a quota
                let own = ours.cores.ceil() as i64;
                out.insert("cpu".to_owned(), (left + own).to_string())
            }
            Some("ContainerGroups") => {
                let own = i64::try_from(ours.groups).unwrap_or(i64::MAX);
                out.insert("pods".to_owned(), left.saturating_add(own).to_string())
            }
            _ => None,
        };
    }
    if let Some(cpu) = out.get("cpu").and_then(|c| c.parse::<i64>().ok()) {
        // ACI allows up to 16 GB per core on standard SKUs; 4 GiB per core is what
        // its default quota pairs with a core.
        out.insert("memory".to_owned(), format!("{}Gi", cpu * 4));
    }
    out
}

impl Provider for AciProvider {
    fn name(&self) -> &'static str {
        <Aci as skylet_provider::Kind>::NAME
    }

    fn csi_secret_attributes(&self) -> &'static [(&'static str, &'static str)] {
        // the Azure Files driver names its account Secret in `secretName`
        &[(translate::AZURE_FILE_CSI_DRIVER, "secretName")]
    }

    fn billed_size(&self, pod: &skylet_provider::Pod) -> skylet_provider::BilledSize {
        billed_size(pod, &self.inner.settings)
    }

    fn configure_node(&self, node: &mut Node) {
        let c = &self.inner.config.capacity;
        let quota = self.state().quota.clone();
        let pick = |k: &str, configured: &Option<String>, fallback: &str| {
            configured
                .clone()
                .or_else(|| quota.get(k).cloned())
                .unwrap_or_else(|| fallback.to_owned())
        };
        let mut q = BTreeMap::new();
        q.insert("cpu".to_owned(), Quantity(pick("cpu", &c.cpu, "100")));
        q.insert(
            "memory".to_owned(),
            Quantity(pick("memory", &c.memory, "400Gi")),
        );
        q.insert("pods".to_owned(), Quantity(pick("pods", &c.pods, "100")));
        if let Some(gpu) = &c.gpu {
            q.insert("nvidia.com/gpu".to_owned(), Quantity(gpu.clone()));
        }
        let status = node.status.get_or_insert_with(Default::default);
        status.capacity = Some(q.clone());
        status.allocatable = Some(q);
        let labels = node.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(
            "topology.kubernetes.io/region".into(),
            self.inner.config.location.clone(),
        );
        labels.insert("node.kubernetes.io/instance-type".into(), "aci".into());
        if let [zone] = self.inner.config.zones.as_slice() {
            labels.insert(
                "topology.kubernetes.io/zone".into(),
                format!("{}-{zone}", self.inner.config.location),
            );
        }
    }

    async fn ping(&self) -> Result<()> {
        let usages = self
            .inner
            .client
            .usages(&self.inner.config.location)
            .await?;
        let mut state = self.state();
        let ours = Ours {
            groups: state.groups.len(),
            cores: state.groups.values().map(|k| k.cores).sum(),
        };
        state.quota = quota_capacity(&usages, ours);
        Ok(())
    }

    async fn create_pod(&self, rp: &ResolvedPod) -> Result<()> {
        let pod = rp.pod_ref();
        let group = translate::container_group(rp, &self.inner.settings)?;
        let name = names::group_name(&pod);
        // A PUT of a deterministic name: repeating it (after a crash, a retry)
        // updates the same group, so nothing is ever duplicated.
        let put = self
            .inner
            .client
            .put_group(self.rg(), &name, &group)
            .await?;
        tracing::info!(pod = %pod, group = %name, created = put.created, "container group submitted");
        if put.created {
            // once per pod: a repeated PUT of the same group creates nothing
            for note in rp
                .pod
                .spec
                .as_ref()
                .map(translate::probes_not_run)
                .unwrap_or_default()
            {
                self.inner.events.warn(&pod, "ProbeNotSupported", note);
            }
        }
        let known = Known {
            pod: pod.clone(),
            name,
            containers: Vec::new(),
            cores: cores_of(&group),
            running_since: None,
            app_containers: Vec::new(),
        };
        self.state().groups.insert(pod.uid.clone(), known);
        Ok(())
    }

    async fn delete_pod(&self, pod: &PodRef, grace: Duration) -> Result<Deleted> {
        self.delete(pod, grace).await
    }

    async fn list_pods(&self) -> Result<Vec<BackendPod>> {
        self.sweep().await
    }

    async fn logs(&self, pod: &PodRef, container: &str, opts: LogOptions) -> Result<LogStream> {
        let group = self.running_group(pod, container)?;
        logs::logs(
            self.inner.client.clone(),
            self.rg(),
            &group,
            container,
            opts,
            self.inner.config.log_poll_interval,
        )
        .await
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> Result<ExitStatus> {
        let group = self.running_group(pod, container)?;
        stream::exec(
            &self.inner.client,
            self.rg(),
            (&group, container),
            &command,
            self.inner.config.exec_exit_code,
            io,
        )
        .await
    }

    async fn attach(&self, pod: &PodRef, container: &str, io: AttachIo) -> Result<ExitStatus> {
        let group = self.running_group(pod, container)?;
        stream::attach(&self.inner.client, self.rg(), &group, container, io).await
    }

    async fn stats(&self) -> Result<Vec<skylet_provider::PodStats>> {
        self.usage().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_documents_every_annotation() {
        let readme = include_str!("../README.md");
        for (name, _) in translate::ANNOTATIONS {
            assert!(
                readme.contains(&format!("`{name}`")),
                "providers/aci/README.md lacks {name}"
            );
        }
    }

    #[test]
    fn capacity_is_what_the_quota_leaves() {
        let usage = |name: &str, current: i32, limit: i32| client::Usage {
            name: Some(client::UsageName {
                value: Some(name.into()),
                localized_value: None,
            }),
            current_value: Some(current),
            limit: Some(limit),
            ..client::Usage::default()
        };
        let none = Ours::default();
        let cap = quota_capacity(
            &[
                usage("StandardCores", 10, 100),
                usage("ContainerGroups", 120, 100),
                usage("Other", 0, 5),
            ],
            none,
        );
        assert_eq!(cap.get("cpu").map(String::as_str), Some("90"));
        assert_eq!(cap.get("memory").map(String::as_str), Some("360Gi"));
        assert_eq!(
            cap.get("pods").map(String::as_str),
            Some("0"),
            "never negative"
        );
        assert_eq!(cap.len(), 3);
        // the node's own 4 groups (2.5 cores) are the scheduler's to count
        let ours = Ours {
            groups: 4,
            cores: 2.5,
        };
        let cap = quota_capacity(
            &[
                usage("StandardCores", 10, 100),
                usage("ContainerGroups", 10, 100),
            ],
            ours,
        );
        assert_eq!(cap.get("cpu").map(String::as_str), Some("93"));
        assert_eq!(cap.get("pods").map(String::as_str), Some("94"));
    }
}

/// What ACI bills for `pod`: the requests of its group as
/// [`translate::container_group`] sends them (per container, CPU rounded
/// up to 0.01 core and memory to 0.1 GB of 10^9 bytes, the defaults where
/// nothing is requested), summed over the containers; init containers
/// have no resources of their own. The pod's requests if ACI cannot run
/// it (it is then never billed).
fn billed_size(
    pod: &skylet_provider::Pod,
    settings: &translate::Settings,
) -> skylet_provider::BilledSize {
    use skylet_provider::BilledSize;
    match translate::container_group(&ResolvedPod::bare(pod.clone()), settings) {
        Ok(group) => group
            .properties
            .containers
            .iter()
            .fold(BilledSize::default(), |sum, c| {
                let r = &c.properties.resources.requests;
                // cores to the 0.01 and GB to the 0.1: exact once rounded
                let cpu_millis = (r.cpu * 1000.0).round() as u64;
                let memory_bytes = (r.memory_in_gb * 10.0).round() as u64 * 100_000_000;
                sum.plus(BilledSize::new(cpu_millis, memory_bytes))
            }),
        Err(_) => BilledSize::requests(pod),
    }
}

#[cfg(test)]
mod billing_tests {
    use serde_json::json;
    use skylet_provider::BilledSize;

    use super::*;

    #[test]
    fn a_pod_is_billed_its_groups_rounded_requests() {
        let pod: skylet_provider::Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "web", "uid": "uid-web"},
            "spec": {
                "initContainers": [{"name": "setup", "image": "busybox",
                    "resources": {"requests": {"cpu": "4", "memory": "8Gi"}}}],
                "containers": [
                    {"name": "web", "image": "nginx",
                     "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}},
                    {"name": "log", "image": "fluent-bit"},
                ],
            },
        }))
        .unwrap();
        // 250m + 1 core (the default); 1Gi = 1.07 GB -> 1.1, + 1.5 (the default)
        assert_eq!(
            billed_size(&pod, &translate::Settings::default()),
            BilledSize::new(1250, 2_600_000_000)
        );
        // the scheduler's count takes the init container, which ACI does not bill
        assert_eq!(BilledSize::requests(&pod), BilledSize::new(4000, 8 << 30));
    }
}
