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

use k8s_openapi::api::core::v1::ResourceRequirements as KubeResources;
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

pub(super) fn resources(
    r: Option<&KubeResources>,
    path: &str,
    gpu_sku: Option<&GpuSku>,
    s: &Settings,
) -> Result<ResourceRequirements, ProviderError> {
    let requests = r.and_then(|r| r.requests.clone()).unwrap_or_default();
    let limits = r.and_then(|r| r.limits.clone()).unwrap_or_default();
    for (field, map) in [("requests", &requests), ("limits", &limits)] {
        if let Some(name) = map.keys().find(|k| {
            !matches!(
                k.as_str(),
                "cpu" | "memory" | "ephemeral-storage" | GPU_RESOURCE
            )
        }) {
            return Err(unsupported(format!(
                "{path}.resources.{field}[{name}]: ACI offers cpu, memory and {GPU_RESOURCE} only; remove {name}"
            )));
        }
    }
    let parse =
        |field: &str,
         map: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
         name: &str| {
            map.get(name)
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
        };
    let convert = |q: Option<Quantity>, f: fn(Quantity) -> Option<f64>, field: &str, name: &str| {
        q.map(|q| {
            f(q).ok_or_else(|| {
                invalid(
                    "InvalidResources",
                    format!("{path}.resources.{field}[{name}]: too large"),
                )
            })
        })
        .transpose()
    };
    let cpu_limit = convert(parse("limits", &limits, "cpu")?, cores, "limits", "cpu")?;
    let mem_limit = convert(
        parse("limits", &limits, "memory")?,
        gigabytes,
        "limits",
        "memory",
    )?;
    let cpu = convert(
        parse("requests", &requests, "cpu")?,
        cores,
        "requests",
        "cpu",
    )?
    .or(cpu_limit)
    .unwrap_or(s.default_cpu);
    let memory = convert(
        parse("requests", &requests, "memory")?,
        gigabytes,
        "requests",
        "memory",
    )?
    .or(mem_limit)
    .unwrap_or(s.default_memory_gb);

    let gpus = |field: &str, map| -> Result<Option<i32>, ProviderError> {
        let Some(q) = parse(field, map, GPU_RESOURCE)? else {
            return Ok(None);
        };
        let n = (q.den != 0 && q.num % q.den == 0).then(|| q.num / q.den).and_then(|n| i32::try_from(n).ok()).ok_or_else(|| {
            invalid("InvalidResources", format!("{path}.resources.{field}[{GPU_RESOURCE}]: {} is not a whole number of GPUs", q.as_f64()))
        })?;
        Ok(Some(n))
    };
    let gpu_request = gpus("requests", &requests)?;
    let gpu_limit = gpus("limits", &limits)?;
    let gpu = |n: Option<i32>| -> Result<Option<GpuResource>, ProviderError> {
        let Some(count) = n else { return Ok(None) };
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
    };
    let limits = (cpu_limit.is_some() || mem_limit.is_some() || gpu_limit.is_some()).then(
        || -> Result<_, ProviderError> {
            Ok(ResourceLimits {
                memory_in_gb: mem_limit,
                cpu: cpu_limit,
                gpu: gpu(gpu_limit)?,
            })
        },
    );
    Ok(ResourceRequirements {
        requests: ResourceRequests {
            memory_in_gb: memory,
            cpu,
            gpu: gpu(gpu_request.or(gpu_limit))?,
        },
        limits: limits.transpose()?,
    })
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
