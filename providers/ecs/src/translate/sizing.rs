//! What a pod needs, from its containers' requests (limits where no
//! request), and the smallest Fargate size that holds it.

use k8s_openapi::api::core::v1::Container;
use skylet_provider::{ProviderError, quantity::Quantity};

use super::{ContainerSpec, invalid};

/// Fargate task sizes: CPU units and the memory sizes (MiB) each allows.
pub const FARGATE_SIZES: &[(u32, &[u32])] = &[
    (256, &[512, 1024, 2048]),
    (512, &[1024, 2048, 3072, 4096]),
    (1024, &[2048, 3072, 4096, 5120, 6144, 7168, 8192]),
    (2048, &mem_range::<13>(4096, 1024)),
    (4096, &mem_range::<23>(8192, 1024)),
    (8192, &mem_range::<12>(16384, 4096)),
    (16384, &mem_range::<12>(32768, 8192)),
];

const fn mem_range<const N: usize>(start: u32, step: u32) -> [u32; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = start + step * i as u32;
        i += 1;
    }
    out
}

/// Fargate's included ephemeral storage (GiB) and its maximum.
const EPHEMERAL_DEFAULT_GIB: u64 = 20;
const EPHEMERAL_MAX_GIB: u64 = 200;

/// Requests of one container (limits where no request).
pub(super) struct Resources {
    cpu_millis: u64,
    memory_bytes: u64,
    pub(super) memory_limit_mib: Option<u32>,
    ephemeral_bytes: u64,
}

impl Resources {
    pub(super) fn of(c: &Container) -> Result<Self, ProviderError> {
        let r = c.resources.as_ref();
        let get = |name: &str| {
            r.and_then(|r| r.requests.as_ref())
                .and_then(|m| m.get(name))
                .or_else(|| r.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(name)))
        };
        let bad = |name: &str, q: &str| {
            invalid(
                "InvalidResources",
                format!("container {:?}: {name} {q:?} is not a quantity", c.name),
            )
        };
        // ceil(quantity * scale), saturating at u64::MAX
        let scaled = |name: &str,
                      q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                      scale: u128| {
            Quantity::parse(q.0.trim())
                .and_then(|v| v.scaled_ceil(scale))
                .map(|v| u64::try_from(v).unwrap_or(u64::MAX))
                .ok_or_else(|| bad(name, &q.0))
        };
        let cpu_millis = get("cpu")
            .map(|q| scaled("cpu", q, 1000))
            .transpose()?
            .unwrap_or(0);
        let memory_bytes = get("memory")
            .map(|q| scaled("memory", q, 1))
            .transpose()?
            .unwrap_or(0);
        let ephemeral_bytes = get("ephemeral-storage")
            .map(|q| scaled("ephemeral-storage", q, 1))
            .transpose()?
            .unwrap_or(0);
        let memory_limit_mib = r
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get("memory"))
            .map(|q| {
                scaled("memory limit", q, 1)
                    .map(|b| u32::try_from(b.div_ceil(1 << 20)).unwrap_or(u32::MAX))
            })
            .transpose()?;
        Ok(Self {
            cpu_millis,
            memory_bytes,
            memory_limit_mib,
            ephemeral_bytes,
        })
    }

    /// ECS CPU units (1024 per vCPU), `None` without a request.
    pub(super) fn cpu_units(&self) -> Option<u32> {
        (self.cpu_millis > 0)
            .then(|| u32::try_from((self.cpu_millis * 1024).div_ceil(1000)).unwrap_or(u32::MAX))
    }

    fn memory_mib(&self) -> u64 {
        self.memory_bytes.div_ceil(1 << 20)
    }

    pub(super) fn memory_request_mib(&self) -> u32 {
        u32::try_from(self.memory_mib()).unwrap_or(u32::MAX)
    }
}

/// What the containers need of the task, gathered while they are
/// translated.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Needs {
    /// CPU units of the containers that run side by side (app containers
    /// and sidecars), summed.
    cpu: u64,
    /// Their memory requests (MiB), summed.
    memory_mib: u64,
    /// Their ephemeral storage (bytes), summed.
    ephemeral: u64,
    /// CPU units of the largest init container (they run one at a time).
    init_cpu: u64,
    /// Memory (MiB) of the largest init container.
    init_memory_mib: u64,
    /// Ephemeral storage (bytes) of the largest init container.
    init_ephemeral: u64,
    /// Memory reservations (MiB) of every container, which ECS wants to fit
    /// into the task.
    reservations_mib: u64,
}

/// A task size.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TaskSize {
    /// CPU units.
    pub(super) cpu: u32,
    /// Memory (MiB).
    pub(super) memory: u32,
    /// Ephemeral storage (GiB) when more than the included 20 GiB.
    pub(super) ephemeral_gib: Option<u32>,
}

impl Needs {
    /// Counts a container that runs beside the others.
    pub(super) fn running(&mut self, r: &Resources, reservation_mib: u32) {
        self.cpu += u64::from(r.cpu_units().unwrap_or(0));
        self.memory_mib += r.memory_mib();
        self.ephemeral += r.ephemeral_bytes;
        self.reserve(reservation_mib);
    }

    /// Counts an init container that runs alone.
    pub(super) fn init(&mut self, r: &Resources, reservation_mib: u32) {
        self.init_cpu = self.init_cpu.max(u64::from(r.cpu_units().unwrap_or(0)));
        self.init_memory_mib = self.init_memory_mib.max(r.memory_mib());
        self.init_ephemeral = self.init_ephemeral.max(r.ephemeral_bytes);
        self.reserve(reservation_mib);
    }

    /// Counts a container's memory reservation alone.
    pub(super) fn reserve(&mut self, reservation_mib: u32) {
        self.reservations_mib += u64::from(reservation_mib);
    }

    /// The smallest Fargate size that holds what is needed.
    ///
    /// # Errors
    /// `ResourcesTooLarge` when no Fargate size does.
    pub(super) fn size(&self) -> Result<TaskSize, ProviderError> {
        let cpu = self.cpu.max(self.init_cpu);
        let memory = self
            .memory_mib
            .max(self.init_memory_mib)
            .max(self.reservations_mib);
        let (cpu, memory) = fargate_size(cpu, memory)?;
        let eph_gib = self.ephemeral.max(self.init_ephemeral).div_ceil(1 << 30);
        if eph_gib > EPHEMERAL_MAX_GIB {
            return Err(invalid(
                "ResourcesTooLarge",
                format!(
                    "the pod requests {eph_gib} GiB of ephemeral storage; Fargate tasks have at most {EPHEMERAL_MAX_GIB} GiB"
                ),
            ));
        }
        Ok(TaskSize {
            cpu,
            memory,
            ephemeral_gib: (eph_gib > EPHEMERAL_DEFAULT_GIB)
                .then(|| u32::try_from(eph_gib).unwrap_or(200)),
        })
    }
}

/// Lowers containers' memory limits to the task's memory.
pub(super) fn cap_memory_limits(containers: &mut [ContainerSpec], task_memory: u32) {
    for c in containers {
        if let Some(m) = c.memory.as_mut() {
            *m = (*m).min(task_memory);
        }
    }
}

/// The smallest Fargate size with at least `cpu` units and `memory_mib` MiB.
///
/// # Errors
/// `ResourcesTooLarge`, naming the valid sizes, when none is large enough.
pub fn fargate_size(cpu: u64, memory_mib: u64) -> Result<(u32, u32), ProviderError> {
    for (c, mems) in FARGATE_SIZES {
        if u64::from(*c) < cpu {
            continue;
        }
        if let Some(m) = mems.iter().find(|m| u64::from(**m) >= memory_mib) {
            return Ok((*c, *m));
        }
    }
    Err(invalid(
        "ResourcesTooLarge",
        format!(
            "the pod needs {:.2} vCPU and {memory_mib} MiB, more than any Fargate task size; valid sizes: \
             0.25 vCPU with 0.5/1/2 GiB, 0.5 vCPU with 1-4 GiB, 1 vCPU with 2-8 GiB, 2 vCPU with 4-16 GiB, \
             4 vCPU with 8-30 GiB, 8 vCPU with 16-60 GiB (4 GiB steps), 16 vCPU with 32-120 GiB (8 GiB steps)",
            cpu as f64 / 1024.0
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::tests::{container, reason};
    use serde_json::json;

    #[test]
    fn sizes_round_up_and_too_large_pods_name_the_valid_sizes() {
        assert_eq!(fargate_size(0, 0).unwrap(), (256, 512));
        assert_eq!(fargate_size(256, 600).unwrap(), (256, 1024));
        assert_eq!(fargate_size(300, 512).unwrap(), (512, 1024));
        assert_eq!(
            fargate_size(1024, 9000).unwrap(),
            (2048, 9216),
            "1 vCPU allows at most 8 GiB"
        );
        assert_eq!(fargate_size(5000, 17000).unwrap(), (8192, 20480));
        assert_eq!(fargate_size(16384, 122_880).unwrap(), (16384, 122_880));
        let e = fargate_size(20_000, 1024).unwrap_err();
        assert!(
            matches!(&e, ProviderError::InvalidPod { reason, .. } if reason == "ResourcesTooLarge")
        );
        assert!(e.to_string().contains("16 vCPU with 32-120 GiB"), "{e}");
    }

    #[test]
    fn needs_sum_side_by_side_containers_and_take_the_largest_init_container() {
        let res = |cpu: &str, mem: &str, eph: &str| {
            Resources::of(&container(json!({"name": "c", "resources": {"requests":
                {"cpu": cpu, "memory": mem, "ephemeral-storage": eph}}})))
            .unwrap()
        };
        let mut needs = Needs::default();
        needs.running(&res("500m", "1Gi", "10Gi"), 1024);
        needs.running(&res("500m", "1Gi", "15Gi"), 1024);
        needs.init(&res("1", "1Gi", "1Gi"), 32);
        needs.init(&res("250m", "3Gi", "30Gi"), 32);
        needs.reserve(32);
        assert_eq!(
            (
                needs.cpu,
                needs.init_cpu,
                needs.memory_mib,
                needs.init_memory_mib
            ),
            (1024, 1024, 2048, 3072)
        );
        assert_eq!(needs.reservations_mib, 2048 + 96);
        assert_eq!(
            needs.size().unwrap(),
            TaskSize {
                cpu: 1024,
                memory: 3072,
                ephemeral_gib: Some(30)
            }
        );
        let mut small = Needs::default();
        small.running(&res("1", "1Gi", "20Gi"), 1024);
        assert_eq!(
            small.size().unwrap().ephemeral_gib,
            None,
            "20 GiB are included"
        );
        small.running(&res("1", "1Gi", "181Gi"), 1024);
        assert_eq!(reason(small.size().unwrap_err()), "ResourcesTooLarge");
    }
}
