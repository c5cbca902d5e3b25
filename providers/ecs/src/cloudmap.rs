//! AWS Cloud Map registration (`--ecs-cloud-map-namespace-id`): every pod of
//! the node that a home Service selects is an instance of a Cloud Map service
//! named `<service>.<namespace>` in the configured namespace, so that tasks
//! resolve each other (and anything in the VPC resolves them) by the
//! Kubernetes names: `web.shop.<namespace name>`.
//!
//! # How
//! Every [`INTERVAL`], from the home cluster: this node's pods (one list,
//! by `spec.nodeName`) and the Services of their namespaces (one list per
//! namespace); a pod is an instance of each Service whose selector its
//! labels match, with its IP (`AWS_INSTANCE_IPV4`), healthy when it is Ready
//! (a custom health check, so Cloud Map answers DNS with the ready ones
//! only). Then Cloud Map is brought in line: services created when missing
//! (A records, multivalue, TTL 10 s, a custom health check), instances
//! registered (instance id = the pod UID) or deregistered, health written
//! when it changed; a service skylet created that has no instance left is
//! deleted. Instances carry the attribute `skylet.io/node`, so each node
//! manages only its own.
//!
//! # Caveats
//! The namespace must exist (a private DNS namespace associated with the
//! tasks' VPC, or an HTTP namespace for API discovery only); skylet does not
//! create namespaces. Fargate tasks take no DNS search domains: they use the
//! full name. Headless semantics, ports (SRV records) and Services without a
//! selector are not registered. Changes reach Cloud Map within one interval.
//!
//! # IAM
//! `servicediscovery:ListServices`, `CreateService`, `DeleteService`,
//! `ListInstances`, `RegisterInstance`, `DeregisterInstance`,
//! `UpdateInstanceCustomHealthStatus`, and `route53:CreateHealthCheck`,
//! `route53:GetHostedZone`, `route53:ChangeResourceRecordSets` (which Cloud
//! Map calls on the caller's behalf for DNS namespaces).

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Mutex,
    time::Duration,
};

use aws_sdk_servicediscovery::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    types::{
        DnsConfig, DnsRecord, HealthCheckCustomConfig, RecordType, RoutingPolicy, ServiceFilter,
        ServiceFilterName,
    },
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{Api, ResourceExt, api::ListParams};
use skylet_provider::{ApiMetrics, CancellationToken};

use crate::client::{AwsError, SERVICEDISCOVERY};

/// How often Cloud Map is brought in line.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Instance attribute naming the node that registered it.
pub const NODE_ATTRIBUTE: &str = "skylet.io/node";
/// Instance attribute naming the pod (`namespace/name`).
pub const POD_ATTRIBUTE: &str = "skylet.io/pod";
/// The IP attribute Cloud Map makes A records of.
const IPV4: &str = "AWS_INSTANCE_IPV4";
/// The description of the services skylet creates (and may delete).
const DESCRIPTION_PREFIX: &str = "skylet: Kubernetes Service ";

/// One instance skylet wants registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The pod's IP.
    pub ip: String,
    /// Whether the pod is Ready.
    pub healthy: bool,
    /// `namespace/name` of the pod.
    pub pod: String,
}

/// The Cloud Map service name of Kubernetes Service `name` in `namespace`.
pub fn service_name(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}")
}

/// The idempotency token of creating service `name` in `namespace_id` (at
/// most 64 characters, as Cloud Map wants).
fn request_id(namespace_id: &str, name: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (namespace_id, name).hash(&mut h);
    format!("skylet-{:016x}", h.finish())
}

/// Whether `pod` is Ready.
fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What should be registered: Cloud Map service name -> instance id (the
/// pod UID) -> registration, for the Running pods of `node` with an IP and
/// the Services with a selector that select them.
pub fn desired(
    pods: &[Pod],
    services: &[Service],
    node: &str,
) -> BTreeMap<String, BTreeMap<String, Registration>> {
    let mut out: BTreeMap<String, BTreeMap<String, Registration>> = BTreeMap::new();
    for p in pods {
        let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
        let status = p.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        let (Some(ip), Some(uid)) = (status.and_then(|s| s.pod_ip.clone()), p.uid()) else {
            continue;
        };
        if !on_node || !running || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = p.namespace().unwrap_or_default();
        for s in services
            .iter()
            .filter(|s| s.namespace().as_ref() == Some(&ns))
        {
            let Some(sel) = s
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .filter(|sel| !sel.is_empty())
            else {
                continue;
            };
            if sel.iter().all(|(k, v)| p.labels().get(k) == Some(v)) {
                out.entry(service_name(&ns, &s.name_any()))
                    .or_default()
                    .insert(
                        uid.clone(),
                        Registration {
                            ip: ip.clone(),
                            healthy: ready(p),
                            pod: format!("{ns}/{}", p.name_any()),
                        },
                    );
            }
        }
    }
    out
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the home cluster failed.
    #[error("cannot read the home cluster")]
    Home(#[source] kube::Error),
    /// A Cloud Map call failed.
    #[error("Cloud Map {operation} failed: {message}")]
    Aws {
        /// The operation (`RegisterInstance`).
        operation: &'static str,
        /// The error code and message.
        message: String,
    },
}

/// Registers this node's pods in a Cloud Map namespace.
pub struct CloudMap {
    client: Client,
    namespace_id: String,
    home: kube::Client,
    node: String,
    metrics: ApiMetrics,
    /// Health last written, per (service id, instance id).
    health: Mutex<HashMap<(String, String), bool>>,
}

impl CloudMap {
    /// A registrar for `node`'s pods in namespace `namespace_id`, reading
    /// pods and Services from `home`.
    pub fn new(
        client: Client,
        namespace_id: String,
        home: kube::Client,
        node: String,
        metrics: ApiMetrics,
    ) -> Self {
        Self {
            client,
            namespace_id,
            home,
            node,
            metrics,
            health: Mutex::default(),
        }
    }

    /// Syncs every [`INTERVAL`] until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.sync().await {
                tracing::warn!(error = %e, "Cloud Map registration; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }

    /// One call of `operation` (counted by the client's interceptor; a
    /// failure also by its error code).
    async fn call<T, E>(
        &self,
        operation: &'static str,
        f: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> Result<T, Error>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        f.await.map_err(|e| Error::Aws {
            operation,
            message: AwsError::new(SERVICEDISCOVERY, operation, &self.metrics, e).to_string(),
        })
    }

    /// The home side: this node's pods and the Services of their namespaces.
    async fn home_state(&self) -> Result<(Vec<Pod>, Vec<Service>), Error> {
        let pods = Api::<Pod>::all(self.home.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
            .map_err(Error::Home)?
            .items;
        let mut namespaces: Vec<String> = pods.iter().filter_map(ResourceExt::namespace).collect();
        namespaces.sort();
        namespaces.dedup();
        let mut services = Vec::new();
        for ns in namespaces {
            services.extend(
                Api::<Service>::namespaced(self.home.clone(), &ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(Error::Home)?
                    .items,
            );
        }
        Ok((pods, services))
    }

    /// The namespace's services: name -> (id, created by skylet).
    async fn services(&self) -> Result<BTreeMap<String, (String, bool)>, Error> {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let filter = ServiceFilter::builder()
                .name(ServiceFilterName::NamespaceId)
                .values(&self.namespace_id)
                .build()
                .map_err(|e| Error::Aws {
                    operation: "ListServices",
                    message: e.to_string(),
                })?;
            let page = self
                .call(
                    "ListServices",
                    self.client
                        .list_services()
                        .filters(filter)
                        .set_next_token(token.take())
                        .send(),
                )
                .await?;
            for s in page.services() {
                let ours = s
                    .description()
                    .is_some_and(|d| d.starts_with(DESCRIPTION_PREFIX));
                // one of skylet's in another namespace (moto ignores the filter)
                if ours
                    && !s
                        .description()
                        .is_some_and(|d| d.ends_with(&format!(" in {}", self.namespace_id)))
                {
                    continue;
                }
                if let (Some(name), Some(id)) = (s.name(), s.id()) {
                    out.insert(name.to_owned(), (id.to_owned(), ours));
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The instances of service `id`: instance id -> attributes.
    async fn instances(
        &self,
        id: &str,
    ) -> Result<BTreeMap<String, HashMap<String, String>>, Error> {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .call(
                    "ListInstances",
                    self.client
                        .list_instances()
                        .service_id(id)
                        .set_next_token(token.take())
                        .send(),
                )
                .await?;
            for i in page.instances() {
                if let Some(iid) = i.id() {
                    out.insert(iid.to_owned(), i.attributes().cloned().unwrap_or_default());
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn create_service(&self, name: &str) -> Result<String, Error> {
        let dns = DnsConfig::builder()
            .routing_policy(RoutingPolicy::Multivalue)
            .dns_records(
                DnsRecord::builder()
                    .r#type(RecordType::A)
                    .ttl(10)
                    .build()
                    .map_err(|e| Error::Aws {
                        operation: "CreateService",
                        message: e.to_string(),
                    })?,
            )
            .build()
            .map_err(|e| Error::Aws {
                operation: "CreateService",
                message: e.to_string(),
            })?;
        let (svc, ns) = name.split_once('.').unwrap_or((name, ""));
        let created = self
            .call(
                "CreateService",
                self.client
                    .create_service()
                    .name(name)
                    .namespace_id(&self.namespace_id)
                    .creator_request_id(request_id(&self.namespace_id, name))
                    .description(format!(
                        "{DESCRIPTION_PREFIX}{ns}/{svc} in {}",
                        self.namespace_id
                    ))
                    .dns_config(dns)
                    .health_check_custom_config(HealthCheckCustomConfig::builder().build())
                    .send(),
            )
            .await?;
        created
            .service()
            .and_then(|s| s.id())
            .map(str::to_owned)
            .ok_or(Error::Aws {
                operation: "CreateService",
                message: "no service id in the answer".into(),
            })
    }

    /// Brings Cloud Map in line with the home cluster, once.
    ///
    /// # Errors
    /// The first failure; what came before it stays done.
    pub async fn sync(&self) -> Result<(), Error> {
        let (pods, services) = self.home_state().await?;
        let want = desired(&pods, &services, &self.node);
        tracing::debug!(
            pods = pods.len(),
            services = services.len(),
            registrations = want.len(),
            "Cloud Map sync"
        );
        let mut have = self.services().await?;
        for name in want.keys() {
            if !have.contains_key(name) {
                let id = self.create_service(name).await?;
                have.insert(name.clone(), (id, true));
            }
        }
        for (name, (id, created_by_skylet)) in &have {
            let wanted = want.get(name);
            if wanted.is_none() && !created_by_skylet {
                continue;
            }
            let instances = self.instances(id).await?;
            let mut left = 0;
            for (iid, attrs) in &instances {
                let mine = attrs.get(NODE_ATTRIBUTE) == Some(&self.node);
                if mine && wanted.is_none_or(|w| !w.contains_key(iid)) {
                    self.call(
                        "DeregisterInstance",
                        self.client
                            .deregister_instance()
                            .service_id(id)
                            .instance_id(iid)
                            .send(),
                    )
                    .await?;
                    self.lock_health().remove(&(id.clone(), iid.clone()));
                } else {
                    left += 1;
                }
            }
            for (iid, r) in wanted.into_iter().flatten() {
                let current = instances.get(iid);
                if current.and_then(|a| a.get(IPV4)) != Some(&r.ip) {
                    self.call(
                        "RegisterInstance",
                        self.client
                            .register_instance()
                            .service_id(id)
                            .instance_id(iid)
                            .creator_request_id(format!("{iid}-{}", r.ip))
                            .attributes(IPV4, &r.ip)
                            .attributes(NODE_ATTRIBUTE, &self.node)
                            .attributes(POD_ATTRIBUTE, &r.pod)
                            .send(),
                    )
                    .await?;
                    tracing::info!(service = %name, instance = %iid, ip = %r.ip, pod = %r.pod, "registered in Cloud Map");
                    // a new registration starts healthy
                    self.lock_health().insert((id.clone(), iid.clone()), true);
                }
                let key = (id.clone(), iid.clone());
                if self.lock_health().get(&key) != Some(&r.healthy) {
                    let status = if r.healthy {
                        aws_sdk_servicediscovery::types::CustomHealthStatus::Healthy
                    } else {
                        aws_sdk_servicediscovery::types::CustomHealthStatus::Unhealthy
                    };
                    self.call(
                        "UpdateInstanceCustomHealthStatus",
                        self.client
                            .update_instance_custom_health_status()
                            .service_id(id)
                            .instance_id(iid)
                            .status(status)
                            .send(),
                    )
                    .await?;
                    self.lock_health().insert(key, r.healthy);
                }
            }
            if wanted.is_none() && *created_by_skylet && left == 0 {
                self.call("DeleteService", self.client.delete_service().id(id).send())
                    .await?;
            }
        }
        Ok(())
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), bool>> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(
        name: &str,
        node: &str,
        labels: serde_json::Value,
        ip: Option<&str>,
        ready: bool,
    ) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": labels},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn svc(ns: &str, name: &str, selector: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    #[test]
    fn pods_of_the_node_are_instances_of_the_services_that_select_them() {
        let pods = [
            pod(
                "web-1",
                "ecs-1",
                json!({"app": "web", "tier": "front"}),
                Some("10.0.1.5"),
                true,
            ),
            pod(
                "web-2",
                "ecs-1",
                json!({"app": "web"}),
                Some("10.0.1.6"),
                false,
            ),
            pod(
                "web-3",
                "other-node",
                json!({"app": "web"}),
                Some("10.0.1.7"),
                true,
            ),
            pod("web-4", "ecs-1", json!({"app": "web"}), None, false),
            pod(
                "db-1",
                "ecs-1",
                json!({"app": "db"}),
                Some("10.0.1.8"),
                true,
            ),
        ];
        let services = [
            svc("shop", "web", json!({"app": "web"})),
            svc("shop", "front", json!({"app": "web", "tier": "front"})),
            svc("shop", "manual", json!({})),
            svc("other", "web", json!({"app": "web"})),
        ];
        let d = desired(&pods, &services, "ecs-1");
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["front.shop", "web.shop"],
            "by selector, in the pod's namespace; none for a Service without one"
        );
        let web = &d["web.shop"];
        assert_eq!(web.len(), 2, "this node's pods with an IP: {web:?}");
        assert_eq!(
            web["uid-web-1"],
            Registration {
                ip: "10.0.1.5".into(),
                healthy: true,
                pod: "shop/web-1".into()
            }
        );
        assert!(!web["uid-web-2"].healthy, "not Ready: unhealthy");
        assert_eq!(d["front.shop"].keys().collect::<Vec<_>>(), ["uid-web-1"]);
        assert!(desired(&pods, &services, "nobody").is_empty());
    }

    #[test]
    fn names_fit_cloud_map() {
        assert_eq!(service_name("shop", "web"), "web.shop");
        let long = "x".repeat(63);
        let id = request_id("ns-abcdefghijklmnop", &service_name(&long, &long));
        assert!(id.len() <= 64, "{id}");
        assert_ne!(id, request_id("ns-abcdefghijklmnop", "web.shop"));
    }
}
