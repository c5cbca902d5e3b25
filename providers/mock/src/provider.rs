//! The simulated backend as a [`Provider`]: creates (after the simulated
//! refusals: the reject annotation, the quota, throttling, the failure
//! rate), deletes, lists, logs, stats, and the streaming calls of
//! [`crate::exec`].

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Node, Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use skylet_provider::{
    AttachIo, BackendPod, CancellationToken, ContainerStats, Deleted, ExecIo, ExitStatus, ListPage,
    LogOptions, LogStream, PodRef, PodStats, PortStream, Provider, ProviderError, ResolvedPod,
    Result,
};

use crate::{
    Inner, MockProvider, REJECT_ANNOTATION, exec, logs, plan,
    pod::{CState, MockPod},
    run,
};

/// How many pods a page of the listing holds ([`Provider::list_page`]).
pub(crate) const LIST_PAGE: usize = 500;

impl Provider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn configure_node(&self, node: &mut Node) {
        let q: BTreeMap<String, Quantity> = self
            .inner
            .config
            .capacity
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect();
        let status = node.status.get_or_insert_with(Default::default);
        status.capacity = Some(q.clone());
        status.allocatable = Some(q);
        let labels = node.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(
            "topology.kubernetes.io/region".into(),
            "mock-region-1".into(),
        );
        labels.insert(
            "topology.kubernetes.io/zone".into(),
            "mock-region-1a".into(),
        );
    }

    async fn ping(&self) -> Result<()> {
        self.inner.reachable()
    }

    async fn create_pod(&self, rp: &ResolvedPod) -> Result<()> {
        self.inner.reachable()?;
        let pod = rp.pod_ref();
        if self.inner.lock().contains_key(&pod.uid) {
            return Ok(());
        }
        admit(&self.inner, rp)?;
        let plans = plan::plans(rp);
        let stop = skylet_provider::CancellationToken::new();
        let now = Timestamp::now();
        let ip = self.inner.allocate_ip();
        {
            let mut pods = self.inner.lock();
            if pods.contains_key(&pod.uid) {
                return Ok(());
            }
            let created = MockPod::new(pod.clone(), now, ip, &plans, stop.clone());
            pods.insert(pod.uid.clone(), Box::new(created));
        }
        self.inner.creates.fetch_add(1, Ordering::Relaxed);
        run::start(&self.inner, &pod.uid, plans, now, stop);
        Ok(())
    }

    /// Restarts each container with its new image, as a kubelet does: the
    /// same program runs on, its restart count goes up and it is Running
    /// since now.
    async fn change_images(&self, pod: &Pod, images: &[(String, String)]) -> Result<()> {
        self.inner.reachable()?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let now = Timestamp::now();
        let mut found = false;
        self.inner.update(&uid, |p| {
            found = true;
            for c in &mut p.app {
                let Some((_, image)) = images.iter().find(|(n, _)| *n == c.name) else {
                    continue;
                };
                if c.image == *image {
                    continue;
                }
                c.image.clone_from(image);
                c.restarts += 1;
                if matches!(c.state, CState::Running { .. }) {
                    c.state = CState::Running { since: now };
                }
                c.logs.push(format!(
                    "mock: restarted container {} with image {image}",
                    c.name
                ));
            }
        });
        if found {
            Ok(())
        } else {
            Err(ProviderError::NotFound(format!(
                "pod {} is not running in the mock backend",
                PodRef::of(pod)
            )))
        }
    }

    /// Starts the ephemeral containers not started yet, each running its
    /// program like an app container.
    async fn add_ephemeral_containers(&self, pod: &Pod) -> Result<()> {
        self.inner.reachable()?;
        crate::ephemeral::start(&self.inner, pod)
    }

    async fn delete_pod(&self, pod: &PodRef, _grace: Duration) -> Result<Deleted> {
        self.inner.reachable()?;
        let removed = self.inner.lock().remove(&pod.uid);
        if let Some(p) = removed {
            p.stop.cancel();
            for c in p.init.iter().chain(&p.app).chain(&p.ephemeral) {
                c.logs.close();
            }
        }
        self.inner.save();
        Ok(Deleted::Gone)
    }

    async fn list_pods(&self) -> Result<Vec<BackendPod>> {
        self.inner.reachable()?;
        Ok(self
            .inner
            .lock()
            .values()
            .map(|p| p.backend_pod())
            .collect())
    }

    /// Pages of [`LIST_PAGE`] pods in the order of their UIDs, from the
    /// first UID at or after `from`; each page under the lock once.
    async fn list_page(&self, from: Option<String>) -> Result<ListPage> {
        self.inner.reachable()?;
        let pods = self.inner.lock();
        let mut uids: Vec<&String> = pods
            .keys()
            .filter(|u| from.as_ref().is_none_or(|f| *u >= f))
            .collect();
        // the page's UIDs and the first UID of the next one
        let next = if uids.len() > LIST_PAGE {
            uids.select_nth_unstable(LIST_PAGE);
            let next = uids[LIST_PAGE].clone();
            uids.truncate(LIST_PAGE);
            Some(next)
        } else {
            None
        };
        uids.sort_unstable();
        Ok(ListPage {
            pods: uids.iter().map(|u| pods[*u].backend_pod()).collect(),
            next,
        })
    }

    /// Runs the simulated containers of the pods created since it started
    /// (and those created before, queued), each in a task of its own;
    /// cancelling `shutdown` stops them all.
    async fn run(&self, shutdown: CancellationToken) {
        run::jobs(&self.inner, shutdown).await;
    }

    async fn logs(&self, pod: &PodRef, container: &str, opts: LogOptions) -> Result<LogStream> {
        let buf = {
            let pods = self.inner.lock();
            let p = pods.get(&pod.uid).ok_or_else(|| {
                ProviderError::NotFound(format!("pod {pod} is not running in the mock backend"))
            })?;
            let c = p.container(container)?;
            if opts.previous {
                // the run before the last restart
                p.lives
                    .get(container)
                    .and_then(|l| l.previous_logs.clone())
                    .ok_or_else(|| {
                        ProviderError::NotFound(format!(
                            "previous terminated container {container:?} in pod {:?} not found",
                            pod.name
                        ))
                    })?
            } else {
                c.logs.clone()
            }
        };
        Ok(logs::stream(buf, opts))
    }

    async fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        command: Vec<String>,
        io: ExecIo,
    ) -> Result<ExitStatus> {
        exec::exec(&self.inner, pod, container, command, io).await
    }

    async fn attach(&self, pod: &PodRef, container: &str, io: AttachIo) -> Result<ExitStatus> {
        exec::attach(&self.inner, pod, container, io).await
    }

    async fn port_forward(&self, pod: &PodRef, port: u16) -> Result<PortStream> {
        exec::port_forward(&self.inner, pod, port).await
    }

    async fn stats(&self) -> Result<Vec<PodStats>> {
        let now = Timestamp::now();
        Ok(self
            .inner
            .lock()
            .values()
            .map(|p| PodStats {
                pod: p.pod.clone(),
                start_time: Some(p.created),
                containers: p
                    .app
                    .iter()
                    .filter_map(|c| match c.state {
                        CState::Running { since } => {
                            let used = c.usage.used(now);
                            Some(ContainerStats {
                                name: c.name.clone(),
                                start_time: Some(since),
                                cpu_usage_core_nanoseconds: used.cpu_ns,
                                memory_working_set_bytes: used.memory,
                                usage_nano_cores: Some(used.nano_cores),
                            })
                        }
                        _ => None,
                    })
                    .collect(),
            })
            .collect())
    }
}

/// The simulated refusals of a create: a pod with [`REJECT_ANNOTATION`]
/// can never run here; beyond the quota there is no capacity; the throttle
/// and failure rates refuse a fraction of creates, to be retried.
fn admit(inner: &Inner, rp: &ResolvedPod) -> Result<()> {
    if let Some(msg) = rp
        .pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REJECT_ANNOTATION))
    {
        return Err(ProviderError::invalid("MockRejected", msg.clone()));
    }
    if let Some(quota) = inner.pod_quota()
        && inner.lock().len() >= quota
    {
        return Err(ProviderError::Capacity(format!(
            "simulated quota of {quota} pods reached (capacity minus what others use, {})",
            inner
                .config
                .usage_file
                .as_deref()
                .map_or_else(String::new, |f| f.display().to_string())
        )));
    }
    let throttle = inner.config.throttle_rate;
    if throttle > 0.0 && fastrand::f64() < throttle {
        return Err(ProviderError::Throttled {
            retry_after: Some(Duration::from_secs(1)),
        });
    }
    let rate = inner.config.failure_rate;
    if rate > 0.0 && fastrand::f64() < rate {
        return Err(ProviderError::transient(
            "simulated transient failure (mock failure rate)",
        ));
    }
    Ok(())
}
