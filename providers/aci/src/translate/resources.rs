//! A container's resources. ACI requires requests. Per container: `cpu` in
//! cores rounded up to 0.01, `memoryInGB` in decimal GB (10⁹ bytes, as
//! virtual-kubelet's ACI provider does) rounded up to 0.1, so a group never
//! gets less than the pod asked for (`1Gi` → 1.1). A request that is absent
//! is the limit, else [`Settings::default_cpu`] /
//! [`Settings::default_memory_gb`] (1 core, 1.5 GB: virtual-kubelet's
//! defaults). Limits are sent when the pod sets them. `nvidia.com/gpu`
//! becomes a GPU request (and limit) of the SKU in annotation
//! [`ANNOTATION_GPU_SKU`]; `ephemeral-storage` is ignored (ACI gives each
//! group fixed storage); any other resource is refused.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ResourceRequirements as KubeResources,
    apimachinery::pkg::api::resource::Quantity as KubeQuantity,
};
use skylet_provider::{
    ProviderError,
    checks::unsupported,
    quantity::{Quantity, ceil_div},
};

use super::{ANNOTATION_GPU_SKU, Settings, bad_annotation, enum_value, invalid};
use crate::models::{GpuResource, GpuSku, ResourceLimits, ResourceRequests, ResourceRequirements};

/// The Kubernetes resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Cores rounded up to 0.01.
fn cores(q: Quantity) -> Option<f64> {
    Some(q.scaled_ceil(100)? as f64 / 100.0)
}

/// Decimal GB rounded up to 0.1.
fn gigabytes(q: Quantity) -> Option<f64> {
    Some(ceil_div(q.num.checked_mul(10)?, q.den.checked_mul(1_000_000_000)?)? as f64 / 10.0)
}

/// A container's requests and limits in ACI's units.
pub(super) fn resources(
    r: Option<&KubeResources>,
    path: &str,
    gpu_sku: Option<&GpuSku>,
    s: &Settings,
) -> Result<ResourceRequirements, ProviderError> {
    let requests = Amounts::new(path, "requests", r.and_then(|r| r.requests.as_ref()));
    let limits = Amounts::new(path, "limits", r.and_then(|r| r.limits.as_ref()));
    requests.check_names()?;
    limits.check_names()?;
    let cpu_limit = limits.converted("cpu", cores)?;
    let mem_limit = limits.converted("memory", gigabytes)?;
    let cpu = requests
        .converted("cpu", cores)?
        .or(cpu_limit)
        .unwrap_or(s.default_cpu);
    let memory = requests
        .converted("memory", gigabytes)?
        .or(mem_limit)
        .unwrap_or(s.default_memory_gb);
    let gpu_request = requests.gpus()?;
    let gpu_limit = limits.gpus()?;
    let gpu = |count| gpu_resource(path, gpu_sku, count);
    let limits = if cpu_limit.is_some() || mem_limit.is_some() || gpu_limit.is_some() {
        Some(ResourceLimits {
            memory_in_gb: mem_limit,
            cpu: cpu_limit,
            gpu: gpu(gpu_limit)?,
        })
    } else {
        None
    };
    Ok(ResourceRequirements {
        requests: ResourceRequests {
            memory_in_gb: memory,
            cpu,
            gpu: gpu(gpu_request.or(gpu_limit))?,
        },
        limits,
    })
}

/// The requests or the limits of a container, read with errors that name
/// the field (`spec.containers[0].resources.limits[cpu]`).
struct Amounts<'a> {
    path: &'a str,
    field: &'static str,
    map: Option<&'a BTreeMap<String, KubeQuantity>>,
}

impl<'a> Amounts<'a> {
    fn new(
        path: &'a str,
        field: &'static str,
        map: Option<&'a BTreeMap<String, KubeQuantity>>,
    ) -> Self {
        Self { path, field, map }
    }

    /// Refuses a resource ACI does not offer.
    fn check_names(&self) -> Result<(), ProviderError> {
        let Self { path, field, .. } = self;
        let unknown = self.map.into_iter().flatten().map(|(k, _)| k).find(|k| {
            !matches!(
                k.as_str(),
                "cpu" | "memory" | "ephemeral-storage" | GPU_RESOURCE
            )
        });
        match unknown {
            Some(name) => Err(unsupported(format!(
                "{path}.resources.{field}[{name}]: ACI offers cpu, memory and {GPU_RESOURCE} only; remove {name}"
            ))),
            None => Ok(()),
        }
    }

    /// The quantity of `name`; `None` when absent or zero.
    fn quantity(&self, name: &str) -> Result<Option<Quantity>, ProviderError> {
        let Self { path, field, .. } = self;
        self.map
            .and_then(|m| m.get(name))
            .map(|q| {
                Quantity::parse(q.0.trim()).ok_or_else(|| {
                    invalid(
                        "InvalidResources",
                        format!(
                            "{path}.resources.{field}[{name}]: {:?} is not a quantity",
                            q.0
                        ),
                    )
                })
            })
            .transpose()
            .map(|q| q.filter(|q| !q.is_zero()))
    }

    /// The quantity of `name` in ACI's unit (`to`: [`cores`], [`gigabytes`]).
    fn converted(
        &self,
        name: &str,
        to: fn(Quantity) -> Option<f64>,
    ) -> Result<Option<f64>, ProviderError> {
        let Self { path, field, .. } = self;
        self.quantity(name)?
            .map(|q| {
                to(q).ok_or_else(|| {
                    invalid(
                        "InvalidResources",
                        format!("{path}.resources.{field}[{name}]: too large"),
                    )
                })
            })
            .transpose()
    }

    /// The number of GPUs: a whole number.
    fn gpus(&self) -> Result<Option<i32>, ProviderError> {
        let Self { path, field, .. } = self;
        let Some(q) = self.quantity(GPU_RESOURCE)? else {
            return Ok(None);
        };
        let n = (q.den != 0 && q.num % q.den == 0)
            .then(|| q.num / q.den)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| {
                invalid(
                    "InvalidResources",
                    format!(
                        "{path}.resources.{field}[{GPU_RESOURCE}]: {} is not a whole number of GPUs",
                        q.as_f64()
                    ),
                )
            })?;
        Ok(Some(n))
    }
}

/// `count` GPUs of the pod's SKU (annotation [`ANNOTATION_GPU_SKU`], required
/// with GPUs).
fn gpu_resource(
    path: &str,
    gpu_sku: Option<&GpuSku>,
    count: Option<i32>,
) -> Result<Option<GpuResource>, ProviderError> {
    let Some(count) = count else { return Ok(None) };
    let sku = gpu_sku.cloned().ok_or_else(|| {
        invalid(
            "InvalidAnnotation",
            format!(
                "metadata.annotations[{ANNOTATION_GPU_SKU}]: required because {path} requests {GPU_RESOURCE}; set it to one of {}",
                GpuSku::VALUES.join(", ")
            ),
        )
    })?;
    Ok(Some(GpuResource { count, sku }))
}

pub(super) fn gpu_sku(ann: &BTreeMap<String, String>) -> Result<Option<GpuSku>, ProviderError> {
    let Some(v) = ann.get(ANNOTATION_GPU_SKU) else {
        return Ok(None);
    };
    enum_value(GpuSku::VALUES, v)
        .map(|v| Some(GpuSku::from(v)))
        .ok_or_else(|| {
            bad_annotation(
                ANNOTATION_GPU_SKU,
                v,
                &format!("use one of {}", GpuSku::VALUES.join(", ")),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::super::{
        container_group,
        fixtures::{group, pod, pod_with, refusal, settings},
    };

    #[test]
    fn gpus_need_the_sku_annotation() {
        let spec = json!({"containers": [{"name": "train", "image": "cuda", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]});
        let (reason, message) = refusal(container_group(&pod(spec.clone()), &settings()));
        assert_eq!(reason, "InvalidAnnotation");
        assert!(
            message.contains(ANNOTATION_GPU_SKU) && message.contains("V100"),
            "{message}"
        );
        let g = group(&pod_with("p", json!({ANNOTATION_GPU_SKU: "v100"}), spec));
        let r = &g.properties.containers[0].properties.resources;
        assert_eq!(
            r.requests.gpu,
            Some(GpuResource {
                count: 2,
                sku: GpuSku::V100
            }),
            "a GPU limit is also the request"
        );
        assert_eq!(
            r.limits.as_ref().unwrap().gpu,
            Some(GpuResource {
                count: 2,
                sku: GpuSku::V100
            })
        );
        let bad = pod_with(
            "p",
            json!({ANNOTATION_GPU_SKU: "H100"}),
            json!({"containers": [{"name": "a", "image": "i"}]}),
        );
        assert!(
            refusal(container_group(&bad, &settings()))
                .1
                .contains("K80, P100, V100")
        );
    }
}
