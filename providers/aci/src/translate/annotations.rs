//! The `skylet.io/aci-*` pod annotations: their names, the table the
//! README documents ([`ANNOTATIONS`]), and the group-level choices they make
//! besides network and volumes: SKU (and the confidential-computing policy),
//! priority, availability zone, managed identities and the OS type (annotation, else `spec.os`, else the
//! `kubernetes.io/os` node selector, else [`Settings::default_os_type`]).
//! Values are matched case-insensitively against the spec's enum values; an
//! unknown value is refused with the annotation named.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::PodSpec;
use skylet_provider::{ProviderError, checks::unsupported};

use super::{Settings, bad_annotation, enum_value, invalid};
use crate::models::{
    ConfidentialComputeProperties, ContainerGroupIdentity, ContainerGroupPriority,
    ContainerGroupSku, OperatingSystemTypes, ResourceIdentityType, UserAssignedIdentities,
};

/// Pod annotation: the GPU SKU of `nvidia.com/gpu` requests.
pub const ANNOTATION_GPU_SKU: &str = "skylet.io/aci-gpu-sku";
/// Pod annotation prefix: `<prefix><volume>: [<account>/]<share>` mounts an Azure Files share.
pub const ANNOTATION_AZURE_FILE_PREFIX: &str = "skylet.io/aci-azure-file-";
/// Pod annotation: comma-separated subnet resource ids (a private group).
pub const ANNOTATION_SUBNET_IDS: &str = "skylet.io/aci-subnet-ids";
/// Pod annotation: DNS name label of a public group.
pub const ANNOTATION_DNS_NAME_LABEL: &str = "skylet.io/aci-dns-name-label";
/// Pod annotation: `public`, `private` or `none`.
pub const ANNOTATION_IP: &str = "skylet.io/aci-ip";
/// Pod annotation: `Regular` or `Spot`.
pub const ANNOTATION_PRIORITY: &str = "skylet.io/aci-priority";
/// Pod annotation: `Standard`, `Dedicated` or `Confidential`.
pub const ANNOTATION_SKU: &str = "skylet.io/aci-sku";
/// Pod annotation: base64 CCE policy of a Confidential group.
pub const ANNOTATION_CCE_POLICY: &str = "skylet.io/aci-cce-policy";
/// Pod annotation: comma-separated user-assigned managed identity resource ids.
pub const ANNOTATION_IDENTITY: &str = "skylet.io/aci-identity";
/// Pod annotation: the availability zone.
pub const ANNOTATION_ZONE: &str = "skylet.io/aci-zone";
/// Pod annotation: `Linux` or `Windows`.
pub const ANNOTATION_OS_TYPE: &str = "skylet.io/aci-os-type";

/// Every pod annotation the ACI backend reads, with a one-line description
/// (for the README).
pub const ANNOTATIONS: &[(&str, &str)] = &[
    (
        ANNOTATION_IP,
        "`public`, `private` or `none`: the group's IP address (default: private with subnets, else public when a container has ports, else none)",
    ),
    (
        ANNOTATION_SUBNET_IDS,
        "comma-separated subnet resource ids for a private group (default: the node's `subnet-ids`)",
    ),
    (
        ANNOTATION_DNS_NAME_LABEL,
        "DNS name label of a public group (`<label>.<region>.azurecontainer.io`)",
    ),
    (
        ANNOTATION_GPU_SKU,
        "GPU SKU (`K80`, `P100`, `V100`) for containers that request `nvidia.com/gpu`; required with GPUs",
    ),
    (
        ANNOTATION_PRIORITY,
        "`Regular` (default) or `Spot` (cheaper, may be evicted)",
    ),
    (
        ANNOTATION_SKU,
        "`Standard` (default), `Dedicated` or `Confidential`",
    ),
    (
        ANNOTATION_CCE_POLICY,
        "base64 confidential-computing enforcement policy; only with `skylet.io/aci-sku: Confidential`",
    ),
    (
        ANNOTATION_IDENTITY,
        "comma-separated user-assigned managed identity resource ids the group runs as",
    ),
    (
        ANNOTATION_ZONE,
        "availability zone of the group (default: the node's zone when it has exactly one)",
    ),
    (
        ANNOTATION_OS_TYPE,
        "`Linux` or `Windows` (default: `kubernetes.io/os` of spec.os or the nodeSelector, else Linux)",
    ),
    (
        "skylet.io/aci-azure-file-<volume>",
        "`[<account>/]<share>`: mount Azure Files share as volume `<volume>`, whose Secret holds `azurestorageaccountkey` (and `azurestorageaccountname`)",
    ),
];

pub(super) fn os_type(
    spec: &PodSpec,
    ann: &BTreeMap<String, String>,
    s: &Settings,
) -> Result<OperatingSystemTypes, ProviderError> {
    let (value, field) = if let Some(v) = ann.get(ANNOTATION_OS_TYPE) {
        (
            v.clone(),
            format!("metadata.annotations[{ANNOTATION_OS_TYPE}]"),
        )
    } else if let Some(os) = &spec.os {
        (os.name.clone(), "spec.os.name".to_owned())
    } else if let Some(v) = spec
        .node_selector
        .as_ref()
        .and_then(|n| n.get("kubernetes.io/os"))
    {
        (v.clone(), "spec.nodeSelector[kubernetes.io/os]".to_owned())
    } else {
        return Ok(s.default_os_type.clone());
    };
    enum_value(OperatingSystemTypes::VALUES, &value)
        .map(OperatingSystemTypes::from)
        .ok_or_else(|| {
            unsupported(format!(
                "{field}: {value:?} is not an OS ACI runs; use linux or windows"
            ))
        })
}

pub(super) fn sku(
    ann: &BTreeMap<String, String>,
) -> Result<
    (
        Option<ContainerGroupSku>,
        Option<ConfidentialComputeProperties>,
    ),
    ProviderError,
> {
    let sku = match ann.get(ANNOTATION_SKU) {
        None => None,
        Some(v) => Some(
            enum_value(&["Standard", "Dedicated", "Confidential"], v)
                .map(ContainerGroupSku::from)
                .ok_or_else(|| {
                    bad_annotation(ANNOTATION_SKU, v, "use Standard, Dedicated or Confidential")
                })?,
        ),
    };
    let policy = ann.get(ANNOTATION_CCE_POLICY).map(|p| p.trim().to_owned());
    if policy.is_some() && sku != Some(ContainerGroupSku::Confidential) {
        return Err(invalid(
            "InvalidAnnotation",
            format!(
                "metadata.annotations[{ANNOTATION_CCE_POLICY}]: a CCE policy needs {ANNOTATION_SKU}: Confidential"
            ),
        ));
    }
    if let Some(p) = policy
        .as_deref()
        .filter(|p| base64::engine::general_purpose::STANDARD.decode(p).is_err())
    {
        return Err(bad_annotation(
            ANNOTATION_CCE_POLICY,
            &format!("{}...", p.chars().take(16).collect::<String>()),
            "give the policy base64-encoded",
        ));
    }
    let confidential = (sku == Some(ContainerGroupSku::Confidential))
        .then_some(ConfidentialComputeProperties { cce_policy: policy });
    Ok((sku, confidential))
}

/// The group's priority: annotation [`ANNOTATION_PRIORITY`], else ACI's
/// default (Regular).
pub(super) fn priority(
    ann: &BTreeMap<String, String>,
) -> Result<Option<ContainerGroupPriority>, ProviderError> {
    let Some(v) = ann.get(ANNOTATION_PRIORITY) else {
        return Ok(None);
    };
    enum_value(ContainerGroupPriority::VALUES, v)
        .map(|v| Some(ContainerGroupPriority::from(v)))
        .ok_or_else(|| bad_annotation(ANNOTATION_PRIORITY, v, "use Regular or Spot"))
}

/// The group's availability zone: annotation [`ANNOTATION_ZONE`], else the
/// node's when it has exactly one, else none.
pub(super) fn zones(
    ann: &BTreeMap<String, String>,
    s: &Settings,
) -> Result<Vec<String>, ProviderError> {
    match ann.get(ANNOTATION_ZONE) {
        Some(z) if z.trim().is_empty() || z.contains(',') => Err(bad_annotation(
            ANNOTATION_ZONE,
            z,
            "name one availability zone (1, 2 or 3)",
        )),
        Some(z) => Ok(vec![z.trim().to_owned()]),
        None if s.zones.len() == 1 => Ok(s.zones.clone()),
        None => Ok(Vec::new()),
    }
}

/// The group's user-assigned identities: annotation [`ANNOTATION_IDENTITY`].
pub(super) fn identity(
    ann: &BTreeMap<String, String>,
) -> Result<Option<ContainerGroupIdentity>, ProviderError> {
    let Some(v) = ann.get(ANNOTATION_IDENTITY) else {
        return Ok(None);
    };
    let mut ids = BTreeMap::new();
    for id in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let lower = id.to_ascii_lowercase();
        if !(lower.starts_with("/subscriptions/")
            && lower.contains("/providers/microsoft.managedidentity/userassignedidentities/"))
        {
            return Err(bad_annotation(
                ANNOTATION_IDENTITY,
                id,
                "give user-assigned identity resource ids (/subscriptions/SUB/resourceGroups/RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)",
            ));
        }
        ids.insert(id.to_owned(), UserAssignedIdentities::default());
    }
    if ids.is_empty() {
        return Err(bad_annotation(
            ANNOTATION_IDENTITY,
            v,
            "name at least one identity resource id",
        ));
    }
    Ok(Some(ContainerGroupIdentity {
        type_: Some(ResourceIdentityType::UserAssigned),
        user_assigned_identities: ids,
        ..Default::default()
    }))
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
    fn group_annotations() {
        let id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app";
        let rp = pod_with(
            "p",
            json!({ANNOTATION_PRIORITY: "spot", ANNOTATION_SKU: "Confidential", ANNOTATION_CCE_POLICY: "cG9saWN5",
                   ANNOTATION_IDENTITY: format!("{id},{id}2"), ANNOTATION_ZONE: "2", ANNOTATION_OS_TYPE: "windows"}),
            json!({"containers": [{"name": "a", "image": "i"}]}),
        );
        let g = group(&rp);
        assert_eq!(g.properties.priority, Some(ContainerGroupPriority::Spot));
        assert_eq!(g.properties.sku, Some(ContainerGroupSku::Confidential));
        assert_eq!(
            g.properties
                .confidential_compute_properties
                .unwrap()
                .cce_policy
                .as_deref(),
            Some("cG9saWN5")
        );
        let identity = g.identity.unwrap();
        assert_eq!(identity.type_, Some(ResourceIdentityType::UserAssigned));
        assert_eq!(identity.user_assigned_identities.len(), 2);
        assert_eq!(g.zones, ["2"]);
        assert_eq!(g.properties.os_type, Some(OperatingSystemTypes::Windows));
        // defaults: the node's single zone, the nodeSelector's OS
        let mut s = settings();
        s.zones = vec!["1".into()];
        let g = container_group(&pod(json!({"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "a", "image": "i"}]})), &s).unwrap();
        assert_eq!(
            (g.zones.as_slice(), g.properties.os_type),
            (&["1".to_owned()][..], Some(OperatingSystemTypes::Linux))
        );
        assert_eq!(
            (g.properties.priority, g.properties.sku, g.identity),
            (None, None, None)
        );
        for (ann, needle) in [
            (json!({ANNOTATION_PRIORITY: "cheap"}), ANNOTATION_PRIORITY),
            (json!({ANNOTATION_SKU: "Premium"}), ANNOTATION_SKU),
            (json!({ANNOTATION_CCE_POLICY: "cG9saWN5"}), "Confidential"),
            (
                json!({ANNOTATION_SKU: "Confidential", ANNOTATION_CCE_POLICY: "not base64!"}),
                ANNOTATION_CCE_POLICY,
            ),
            (
                json!({ANNOTATION_IDENTITY: "my-identity"}),
                ANNOTATION_IDENTITY,
            ),
            (json!({ANNOTATION_ZONE: "1,2"}), ANNOTATION_ZONE),
        ] {
            let rp = pod_with(
                "p",
                ann,
                json!({"containers": [{"name": "a", "image": "i"}]}),
            );
            let (reason, message) = refusal(container_group(&rp, &settings()));
            assert_eq!(reason, "InvalidAnnotation");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
    }
}
