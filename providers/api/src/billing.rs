//! What a backend bills a pod for: [`BilledSize`], the CPU and memory of
//! the instance that runs it, and the default, the pod's requests as the
//! scheduler counts them ([`BilledSize::requests`]).
//!
//! A backend that rounds a pod up to a size of its own (Fargate task
//! sizes, ACI's 0.1 GB steps) overrides [`Provider::billed_size`](crate::Provider::billed_size)
//! with that size; the core's cost model prices what it returns.

use k8s_openapi::{
    api::core::v1::{Container, Pod, ResourceRequirements},
    apimachinery::pkg::api::resource::Quantity as KubeQuantity,
};

use crate::quantity::Quantity;

/// The size of the instance a backend bills for one pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BilledSize {
    /// vCPU in millicores (1000 = one vCPU).
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl BilledSize {
    /// A size from millicores and bytes.
    pub const fn new(cpu_millis: u64, memory_bytes: u64) -> Self {
        Self {
            cpu_millis,
            memory_bytes,
        }
    }

    /// The pod's CPU and memory requests as the scheduler counts them
    /// (`PodRequests` of k8s.io/component-helpers):
    /// - per container and resource, the request, else the limit (the
    ///   apiserver defaults a missing request to the limit);
    /// - app containers and sidecars (init containers with
    ///   `restartPolicy: Always`) run side by side and are summed; an init
    ///   container runs alone, beside the sidecars started before it; the
    ///   larger of the two wins;
    /// - pod-level `spec.resources` (requests, else limits), where set for
    ///   a resource, replace the containers' sum for it;
    /// - `spec.overhead` is added.
    ///
    /// Quantities are parsed exactly and rounded up (CPU to a millicore);
    /// one that does not parse (the apiserver refuses those) counts as zero.
    pub fn requests(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        let mut running = Self::sum_of(&spec.containers);
        let mut sidecars = Self::default();
        let mut init = Self::default();
        for c in spec.init_containers.iter().flatten() {
            let own = Self::container(c);
            let alone = if c.restart_policy.as_deref() == Some("Always") {
                running = running.plus(own);
                sidecars = sidecars.plus(own);
                sidecars
            } else {
                own.plus(sidecars)
            };
            init = init.max(alone);
        }
        let mut total = running.max(init);
        if let Some(r) = spec.resources.as_ref() {
            let pod_level = |name| request_or_limit(Some(r), name);
            if let Some(cpu) = pod_level("cpu") {
                total.cpu_millis = millis(cpu);
            }
            if let Some(memory) = pod_level("memory") {
                total.memory_bytes = bytes(memory);
            }
        }
        if let Some(overhead) = spec.overhead.as_ref() {
            total = total.plus(Self {
                cpu_millis: overhead.get("cpu").map_or(0, millis),
                memory_bytes: overhead.get("memory").map_or(0, bytes),
            });
        }
        total
    }

    /// The requests (else limits) of one container, alone.
    pub fn container(c: &Container) -> Self {
        Self::of(c.resources.as_ref())
    }

    /// The requests (else limits) of one set of resource requirements.
    fn of(r: Option<&ResourceRequirements>) -> Self {
        Self {
            cpu_millis: request_or_limit(r, "cpu").map_or(0, millis),
            memory_bytes: request_or_limit(r, "memory").map_or(0, bytes),
        }
    }

    fn sum_of(containers: &[Container]) -> Self {
        containers
            .iter()
            .fold(Self::default(), |sum, c| sum.plus(Self::container(c)))
    }

    /// The sum, saturating.
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// The larger of each resource.
    pub fn max(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

fn request_or_limit<'a>(
    r: Option<&'a ResourceRequirements>,
    name: &str,
) -> Option<&'a KubeQuantity> {
    let r = r?;
    r.requests
        .as_ref()
        .and_then(|m| m.get(name))
        .or_else(|| r.limits.as_ref().and_then(|m| m.get(name)))
}

/// `ceil(q * scale)`, zero when it does not parse, saturating.
fn scaled(q: &KubeQuantity, scale: u128) -> u64 {
    Quantity::parse(q.0.trim())
        .and_then(|q| q.scaled_ceil(scale))
        .map_or(0, |v| u64::try_from(v).unwrap_or(u64::MAX))
}

fn millis(q: &KubeQuantity) -> u64 {
    scaled(q, 1000)
}

fn bytes(q: &KubeQuantity) -> u64 {
    scaled(q, 1)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;

    use super::*;

    const MI: u64 = 1 << 20;
    const GI: u64 = 1 << 30;

    fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| ((*k).to_owned(), KubeQuantity((*v).to_owned())))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        ResourceRequirements {
            requests: map(requests),
            limits: map(limits),
            ..Default::default()
        }
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(resources(requests, limits)),
            ..Default::default()
        }
    }

    fn sidecar(requests: &[(&str, &str)]) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..container(requests, &[])
        }
    }

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            spec: Some(spec),
            ..Default::default()
        }
    }

    #[test]
    fn app_containers_are_summed_and_limits_stand_in_for_missing_requests() {
        let p = pod(PodSpec {
            containers: vec![
                container(&[("cpu", "250m"), ("memory", "600Mi")], &[("cpu", "2")]),
                container(&[], &[("cpu", "0.5"), ("memory", "1Gi")]),
                container(&[("memory", "100M")], &[("cpu", "1m")]),
                container(&[], &[]),
            ],
            ..Default::default()
        });
        assert_eq!(
            BilledSize::requests(&p),
            BilledSize::new(751, 600 * MI + GI + 100_000_000)
        );
    }

    #[test]
    fn the_largest_init_container_wins_over_a_smaller_sum() {
        let spec = |init_cpu: &str| PodSpec {
            init_containers: Some(vec![
                container(&[("cpu", init_cpu), ("memory", "64Mi")], &[]),
                container(&[("cpu", "100m"), ("memory", "3Gi")], &[]),
            ]),
            containers: vec![
                container(&[("cpu", "500m"), ("memory", "1Gi")], &[]),
                container(&[("cpu", "500m"), ("memory", "1Gi")], &[]),
            ],
            ..Default::default()
        };
        assert_eq!(
            BilledSize::requests(&pod(spec("2"))),
            BilledSize::new(2000, 3 * GI),
            "cpu from the first init container, memory from the second"
        );
        assert_eq!(
            BilledSize::requests(&pod(spec("1"))),
            BilledSize::new(1000, 3 * GI),
            "a tie is the same size"
        );
    }

    #[test]
    fn sidecars_run_beside_the_app_and_beside_later_init_containers() {
        // a sidecar of 1 CPU, then an init container of 2 CPU that runs
        // beside it, then an app container of 1 CPU
        let p = pod(PodSpec {
            init_containers: Some(vec![
                sidecar(&[("cpu", "1"), ("memory", "1Gi")]),
                container(&[("cpu", "2"), ("memory", "1Gi")], &[]),
            ]),
            containers: vec![container(&[("cpu", "1"), ("memory", "1Gi")], &[])],
            ..Default::default()
        });
        // init phase: 1 + 2 = 3 CPU, 2 GiB; running: 1 + 1 = 2 CPU, 2 GiB
        assert_eq!(BilledSize::requests(&p), BilledSize::new(3000, 2 * GI));
    }

    #[test]
    fn pod_level_resources_replace_the_sum_and_overhead_is_added() {
        let mut spec = PodSpec {
            containers: vec![container(&[("cpu", "100m"), ("memory", "128Mi")], &[])],
            resources: Some(resources(&[("cpu", "1")], &[("memory", "2Gi")])),
            ..Default::default()
        };
        assert_eq!(
            BilledSize::requests(&pod(spec.clone())),
            BilledSize::new(1000, 2 * GI)
        );
        spec.overhead = Some(
            [("cpu", "250m"), ("memory", "120Mi")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), KubeQuantity(v.to_owned())))
                .collect(),
        );
        assert_eq!(
            BilledSize::requests(&pod(spec)),
            BilledSize::new(1250, 2 * GI + 120 * MI)
        );
    }

    #[test]
    fn quantities_round_up_and_garbage_counts_as_zero() {
        let p = pod(PodSpec {
            containers: vec![
                container(&[("cpu", "100u"), ("memory", "1.5")], &[]),
                container(&[("cpu", "lots"), ("memory", "1e3")], &[]),
            ],
            ..Default::default()
        });
        assert_eq!(BilledSize::requests(&p), BilledSize::new(1, 1002));
        assert_eq!(BilledSize::requests(&Pod::default()), BilledSize::default());
    }
}
