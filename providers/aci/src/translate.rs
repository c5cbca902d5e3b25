//! From a resolved pod to the container group skylet PUTs. Pure functions;
//! no I/O.
//!
//! # Containers
//! `image`; `command` + `args` → `command` (ACI has a single argv: `args`
//! without `command` would lose the image's entrypoint, so such a pod is
//! refused with the field named); env in Kubernetes order, Secret-derived
//! values as `secureValue`, never `value`; `ports` (TCP/UDP) → container
//! ports, their union → the group's IP address; liveness/readiness probes
//! (`exec`, `httpGet` with scheme and headers; a named port is looked up in
//! the container's ports); security context (privileged,
//! allowPrivilegeEscalation, capabilities, runAsUser/runAsGroup, pod-level
//! defaults included). Init containers become `initContainers` (image,
//! command, env, volume mounts, security context) and run in order.
//! Container names must follow ARM's rule (no `--`, [`names::is_valid_name`]).
//!
//! # Resources
//! ACI requires requests. Per container: `cpu` in cores rounded up to
//! 0.01, `memoryInGB` in decimal GB (10⁹ bytes, as virtual-kubelet's ACI
//! provider does) rounded up to 0.1, so a group never gets less than the
//! pod asked for (`1Gi` → 1.1). A request that is absent is the limit, else
//! [`Settings::default_cpu`] / [`Settings::default_memory_gb`] (1 core,
//! 1.5 GB: virtual-kubelet's defaults). Limits are sent when the pod sets
//! them. `nvidia.com/gpu` becomes a GPU request (and limit) of the SKU in
//! annotation [`ANNOTATION_GPU_SKU`]; `ephemeral-storage` is ignored (ACI
//! gives each group fixed storage); any other resource is refused.
//!
//! # Volumes
//! | pod volume | ACI volume |
//! |---|---|
//! | emptyDir (any medium, size ignored) | `emptyDir` |
//! | configMap, secret, downwardAPI, projected (incl. the service-account token) | `secret`: file name → base64 of the contents the core resolved; write-only, so configMap data stays out of plain view too. Files must sit at the volume's top level (ACI keys are file names); modes are ACI's |
//! | csi with driver `file.csi.azure.com` | `azureFile`: `volumeAttributes.shareName`, the account from `volumeAttributes.storageAccount` or the Secret's `azurestorageaccountname`, the key from its `azurestorageaccountkey` (the core resolves the Secret of `nodePublishSecretRef`/`secretName` into the volume's files) |
//! | any volume with annotation `skylet.io/aci-azure-file-<volume>: [<account>/]<share>` | `azureFile` with the key (and account) from that volume's resolved Secret files |
//! | gitRepo | `gitRepo` |
//! | anything else (hostPath, PVCs, other CSI drivers, ...) | refused |
//!
//! # Network
//! The subnets are annotation [`ANNOTATION_SUBNET_IDS`] or
//! [`Settings::subnet_ids`]. With subnets the group is private (in those
//! subnets, an IP address with the pods' ports if any); without, a group
//! with ports gets a public address (DNS label from
//! [`ANNOTATION_DNS_NAME_LABEL`]) and one without ports none.
//! [`ANNOTATION_IP`] (`public|private|none`) overrides the choice. DNS:
//! [`Settings::dns`] for dnsPolicy ClusterFirst (with kubelet-style search
//! domains under [`Settings::cluster_domain`]), none (Azure's resolver) for
//! `Default`, and the pod's own `dnsConfig` appended (or alone, with
//! dnsPolicy `None`).
//!
//! # Refused (`InvalidPod`, the field named, what to change)
//! hostNetwork/hostPID/hostIPC, shareProcessNamespace, hostAliases, sysctls,
//! pod-level resources, resource claims, `workingDir`, lifecycle hooks,
//! startup probes, tcpSocket/grpc probes, `httpGet.host`, SCTP ports, a
//! `hostPort` other than the container port, `subPath`, volume devices,
//! sidecar init containers, seccomp profiles other than RuntimeDefault,
//! Windows host-process containers, unknown annotation values.
//!
//! # Ignored (best effort, as on a shared node)
//! `readOnlyRootFilesystem`, `runAsNonRoot`, fsGroup and supplemental
//! groups, SELinux/AppArmor options, `stdin`/`tty` (attach still streams
//! output), `imagePullPolicy`, file modes, emptyDir medium and size,
//! termination messages, scheduling fields, `activeDeadlineSeconds` (the
//! core's business).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::{
    api::core::v1::{
        Container as KubeContainer, PodSpec, Probe, ResourceRequirements as KubeResources,
        SecurityContext,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::Deserialize;
use skylet_provider::{
    ProviderError, ResolvedPod, Value, VolumeFile,
    checks::{self, unsupported},
    quantity::{Quantity, ceil_div},
};

use crate::{
    models::{
        AzureFileVolume, ConfidentialComputeProperties, Container, ContainerExec, ContainerGroup,
        ContainerGroupIdentity, ContainerGroupIpAddressType, ContainerGroupNetworkProtocol,
        ContainerGroupPriority, ContainerGroupPropertiesProperties, ContainerGroupRestartPolicy,
        ContainerGroupSku, ContainerGroupSubnetId, ContainerHttpGet, ContainerNetworkProtocol,
        ContainerPort, ContainerProbe, ContainerProperties, DnsConfiguration, EmptyDir,
        EnvironmentVariable, GitRepoVolume, GpuResource, GpuSku, HttpHeader,
        ImageRegistryCredential, InitContainerDefinition, InitContainerPropertiesDefinition,
        IpAddress, OperatingSystemTypes, Port, ResourceIdentityType, ResourceLimits,
        ResourceRequests, ResourceRequirements, Scheme, SecretMap, SecretString,
        SecurityContextCapabilitiesDefinition, SecurityContextDefinition, UserAssignedIdentities,
        Volume, VolumeMount,
    },
    names,
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

/// The CSI driver of Azure Files.
pub const AZURE_FILE_CSI_DRIVER: &str = "file.csi.azure.com";
/// Secret key of the storage account name (Azure Files CSI driver convention).
pub const ACCOUNT_NAME_KEY: &str = "azurestorageaccountname";
/// Secret key of the storage account key.
pub const ACCOUNT_KEY_KEY: &str = "azurestorageaccountkey";
/// The Kubernetes resource name of NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// DNS settings of the node's groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name servers (the cluster DNS, reachable from the subnets).
    pub nameservers: Vec<String>,
    /// Search domains.
    pub search_domains: Vec<String>,
    /// resolv.conf options, space-separated (`ndots:5`).
    pub options: Option<String>,
}

/// What [`container_group`] needs besides the pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Node name (tags).
    pub node: String,
    /// Azure region of the groups.
    pub location: String,
    /// Subnets of private groups (empty: public groups).
    pub subnet_ids: Vec<String>,
    /// DNS for pods with dnsPolicy ClusterFirst.
    pub dns: Option<Dns>,
    /// Cluster domain (`cluster.local`): adds the kubelet's search domains
    /// (`<ns>.svc.<domain> svc.<domain> <domain>`) to [`Settings::dns`].
    pub cluster_domain: Option<String>,
    /// Availability zones of the node; with exactly one, groups go there.
    pub zones: Vec<String>,
    /// OS of pods that do not say.
    pub default_os_type: OperatingSystemTypes,
    /// CPU cores of a container without a CPU request or limit.
    pub default_cpu: f64,
    /// Memory (GB) of a container without a memory request or limit.
    pub default_memory_gb: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node: String::new(),
            location: String::new(),
            subnet_ids: Vec::new(),
            dns: None,
            cluster_domain: None,
            zones: Vec::new(),
            default_os_type: OperatingSystemTypes::Linux,
            default_cpu: 1.0,
            default_memory_gb: 1.5,
        }
    }
}

fn invalid(reason: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::invalid(reason, message)
}

fn bad_annotation(key: &str, value: &str, want: &str) -> ProviderError {
    invalid(
        "InvalidAnnotation",
        format!("metadata.annotations[{key}]: {value:?} is not valid; {want}"),
    )
}

/// Matches `value` case-insensitively against an enum's spec values.
fn enum_value<'a>(values: &[&'a str], value: &str) -> Option<&'a str> {
    values
        .iter()
        .copied()
        .find(|v| v.eq_ignore_ascii_case(value.trim()))
}

/// Derives the container group of `rp`.
///
/// # Errors
/// [`ProviderError::InvalidPod`] for a pod ACI cannot run as specified: the
/// message names the field (`spec.containers[0].args`, an annotation) and
/// says what to change.
pub fn container_group(rp: &ResolvedPod, s: &Settings) -> Result<ContainerGroup, ProviderError> {
    let pod = &rp.pod;
    let Some(spec) = pod.spec.as_ref() else {
        return Err(unsupported("spec: the pod has no spec"));
    };
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    check_pod_level(spec)?;

    let (volumes, file_volumes) = volumes(rp, spec, &ann)?;
    let gpu_sku = gpu_sku(&ann)?;

    let mut containers = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        containers.push(container(
            rp,
            spec,
            c,
            &path,
            &file_volumes,
            gpu_sku.as_ref(),
            s,
        )?);
    }
    let mut init_containers = Vec::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("spec.initContainers[{i}]");
        init_containers.push(init_container(rp, spec, c, &path, &file_volumes)?);
    }

    // the group's ports: the union of the containers'
    let mut ports: Vec<Port> = Vec::new();
    for c in &containers {
        for p in &c.properties.ports {
            let protocol = Some(match p.protocol {
                Some(ContainerNetworkProtocol::Udp) => ContainerGroupNetworkProtocol::Udp,
                _ => ContainerGroupNetworkProtocol::Tcp,
            });
            let port = Port {
                protocol,
                port: p.port,
            };
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    let (ip_address, subnet_ids) = network(&ann, s, ports)?;

    let restart_policy = Some(match spec.restart_policy.as_deref() {
        None | Some("Always") => ContainerGroupRestartPolicy::Always,
        Some("OnFailure") => ContainerGroupRestartPolicy::OnFailure,
        Some("Never") => ContainerGroupRestartPolicy::Never,
        Some(other) => {
            return Err(unsupported(format!(
                "spec.restartPolicy: {other:?} is not Always, OnFailure or Never"
            )));
        }
    });

    let (sku, confidential_compute_properties) = sku(&ann)?;
    let priority = match ann.get(ANNOTATION_PRIORITY) {
        None => None,
        Some(v) => Some(
            enum_value(ContainerGroupPriority::VALUES, v)
                .map(ContainerGroupPriority::from)
                .ok_or_else(|| bad_annotation(ANNOTATION_PRIORITY, v, "use Regular or Spot"))?,
        ),
    };
    let zones = match ann.get(ANNOTATION_ZONE) {
        Some(z) if z.trim().is_empty() || z.contains(',') => {
            return Err(bad_annotation(
                ANNOTATION_ZONE,
                z,
                "name one availability zone (1, 2 or 3)",
            ));
        }
        Some(z) => vec![z.trim().to_owned()],
        None if s.zones.len() == 1 => s.zones.clone(),
        None => Vec::new(),
    };

    Ok(ContainerGroup {
        location: Some(s.location.clone()),
        tags: Some(names::tags(&rp.pod_ref(), &s.node)),
        zones,
        identity: identity(&ann)?,
        properties: ContainerGroupPropertiesProperties {
            containers,
            init_containers,
            image_registry_credentials: registry_credentials(&rp.image_pull_secrets),
            restart_policy,
            ip_address,
            subnet_ids,
            os_type: Some(os_type(spec, &ann, s)?),
            volumes,
            dns_config: dns_config(spec, s, &namespace),
            sku,
            confidential_compute_properties,
            priority,
            ..Default::default()
        },
        ..Default::default()
    })
}

fn check_pod_level(spec: &PodSpec) -> Result<(), ProviderError> {
    checks::refuse_host_namespaces(spec, "ACI container groups")?;
    if spec.share_process_namespace == Some(true) {
        return Err(unsupported(
            "spec.shareProcessNamespace: ACI containers cannot see each other's processes; remove it",
        ));
    }
    if spec.host_aliases.as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(unsupported(
            "spec.hostAliases: ACI cannot add /etc/hosts entries; use DNS names instead",
        ));
    }
    if spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .is_some_and(|s| !s.is_empty())
    {
        return Err(unsupported(
            "spec.securityContext.sysctls: ACI sets no sysctls; remove them",
        ));
    }
    if spec.resources.is_some() {
        return Err(unsupported(
            "spec.resources: ACI sizes containers, not pods; set resources on each container instead",
        ));
    }
    if spec.resource_claims.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(unsupported(
            "spec.resourceClaims: ACI has no dynamic resource allocation; remove them",
        ));
    }
    Ok(())
}

// ---- volumes ----

/// The group's volumes, and the names of those holding resolved files.
fn volumes(
    rp: &ResolvedPod,
    spec: &PodSpec,
    ann: &BTreeMap<String, String>,
) -> Result<(Vec<Volume>, BTreeSet<String>), ProviderError> {
    let declared: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for key in ann.keys() {
        if let Some(v) = key.strip_prefix(ANNOTATION_AZURE_FILE_PREFIX)
            && !declared.contains(v)
        {
            return Err(invalid(
                "InvalidAnnotation",
                format!(
                    "metadata.annotations[{key}]: the pod has no volume {v:?}; declare it (a secret volume with the storage account key)"
                ),
            ));
        }
    }
    let mut out = Vec::new();
    let mut files = BTreeSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("spec.volumes[{i}]");
        let resolved = rp
            .volumes
            .get(&v.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut volume = Volume {
            name: v.name.clone(),
            ..Default::default()
        };
        if let Some(share) = ann.get(&format!("{ANNOTATION_AZURE_FILE_PREFIX}{}", v.name)) {
            let (account, share) = match share.split_once('/') {
                Some((a, s)) => (Some(a.trim()), s.trim()),
                None => (None, share.trim()),
            };
            if share.is_empty() || account.is_some_and(str::is_empty) {
                return Err(bad_annotation(
                    &format!("{ANNOTATION_AZURE_FILE_PREFIX}{}", v.name),
                    share,
                    "use <account>/<share> or <share>",
                ));
            }
            volume.azure_file = Some(azure_file(&path, &v.name, resolved, share, account, None)?);
        } else if v.empty_dir.is_some() {
            volume.empty_dir = Some(EmptyDir {});
        } else if v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
        {
            match secret_files(&path, &v.name, resolved)? {
                Some(map) => {
                    volume.secret = Some(map);
                    files.insert(v.name.clone());
                }
                // nothing to write (an optional source that is absent): an
                // empty directory, as the kubelet mounts
                None => volume.empty_dir = Some(EmptyDir {}),
            }
        } else if let Some(csi) = &v.csi {
            if csi.driver != AZURE_FILE_CSI_DRIVER {
                return Err(invalid(
                    "UnsupportedVolume",
                    format!(
                        "{path}.csi.driver: {:?} cannot be mounted by ACI; only {AZURE_FILE_CSI_DRIVER} (Azure Files) is supported",
                        csi.driver
                    ),
                ));
            }
            let attrs = csi.volume_attributes.clone().unwrap_or_default();
            let Some(share) = attrs.get("shareName").filter(|s| !s.is_empty()) else {
                return Err(invalid(
                    "UnsupportedVolume",
                    format!(
                        "{path}.csi.volumeAttributes.shareName: required for an Azure Files volume"
                    ),
                ));
            };
            let account = attrs
                .get("storageAccount")
                .or(attrs.get("storageAccountName"))
                .map(String::as_str);
            volume.azure_file = Some(azure_file(
                &path,
                &v.name,
                resolved,
                share,
                account,
                csi.read_only,
            )?);
        } else if let Some(git) = &v.git_repo {
            volume.git_repo = Some(GitRepoVolume {
                directory: git.directory.clone().filter(|d| !d.is_empty()),
                repository: git.repository.clone(),
                revision: git.revision.clone().filter(|r| !r.is_empty()),
            });
        } else {
            // the name of whichever source field is set
            let kind = serde_json::to_value(v)
                .ok()
                .and_then(|j| {
                    j.as_object()
                        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
                })
                .unwrap_or_else(|| "unknown".into());
            let hint = if kind == "azureFile" {
                format!(
                    "; use a csi volume with driver {AZURE_FILE_CSI_DRIVER} and volumeAttributes shareName and secretName"
                )
            } else {
                String::new()
            };
            return Err(invalid(
                "UnsupportedVolume",
                format!(
                    "{path}.{kind}: volume {:?} is a {kind} volume, which ACI cannot mount; skylet supports emptyDir, configMap, secret, \
                     downwardAPI, projected, gitRepo and Azure Files{hint}",
                    v.name
                ),
            ));
        }
        out.push(volume);
    }
    Ok((out, files))
}

/// A `secret` volume of resolved files; `None` when there are none.
fn secret_files(
    path: &str,
    name: &str,
    resolved: &[VolumeFile],
) -> Result<Option<SecretMap>, ProviderError> {
    let mut map = BTreeMap::new();
    for f in resolved {
        if f.path.contains('/') {
            return Err(invalid(
                "UnsupportedVolume",
                format!(
                    "{path}: file {:?} of volume {name:?} is in a subdirectory; ACI secret volumes hold files at their top level only: \
                     give its item a path without '/' (or mount it from a volume of its own)",
                    f.path
                ),
            ));
        }
        map.insert(
            f.path.clone(),
            SecretString::new(base64::engine::general_purpose::STANDARD.encode(&f.value.data)),
        );
    }
    Ok((!map.is_empty()).then_some(SecretMap(map)))
}

fn file_value<'a>(resolved: &'a [VolumeFile], key: &str) -> Option<&'a Value> {
    resolved.iter().find(|f| f.path == key).map(|f| &f.value)
}

fn azure_file(
    path: &str,
    name: &str,
    resolved: &[VolumeFile],
    share: &str,
    account: Option<&str>,
    read_only: Option<bool>,
) -> Result<AzureFileVolume, ProviderError> {
    let key = file_value(resolved, ACCOUNT_KEY_KEY).map(|v| v.as_str().trim().to_owned()).filter(|k| !k.is_empty()).ok_or_else(|| {
        invalid(
            "UnsupportedVolume",
            format!(
                "{path}: the storage account key of Azure Files volume {name:?} cannot be resolved: reference a Secret with \
                 {ACCOUNT_KEY_KEY} (csi nodePublishSecretRef or volumeAttributes.secretName, or a secret volume of that name)"
            ),
        )
    })?;
    let account = match account.filter(|a| !a.is_empty()) {
        Some(a) => a.to_owned(),
        None => file_value(resolved, ACCOUNT_NAME_KEY).map(|v| v.as_str().trim().to_owned()).filter(|a| !a.is_empty()).ok_or_else(|| {
            invalid(
                "UnsupportedVolume",
                format!("{path}: Azure Files volume {name:?} names no storage account: put {ACCOUNT_NAME_KEY} in its Secret or name the account"),
            )
        })?,
    };
    Ok(AzureFileVolume {
        share_name: share.to_owned(),
        read_only,
        storage_account_name: account,
        storage_account_key: Some(SecretString::new(key)),
        ..Default::default()
    })
}

// ---- containers ----

fn command(c: &KubeContainer, path: &str) -> Result<Vec<String>, ProviderError> {
    let cmd = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    if cmd.is_empty() && !args.is_empty() {
        return Err(unsupported(format!(
            "{path}.args: container {:?} sets args without command; ACI has a single command that replaces the image's entrypoint, \
             so the args alone cannot be passed: set command to the image's entrypoint as well",
            c.name
        )));
    }
    Ok(cmd.into_iter().chain(args).collect())
}

fn check_container(c: &KubeContainer, path: &str) -> Result<(), ProviderError> {
    if !names::is_valid_name(&c.name) {
        return Err(unsupported(format!(
            "{path}.name: {:?} is not a valid ACI container name (lowercase letters, digits and '-', no '--'); rename the container",
            c.name
        )));
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return Err(invalid(
            "InvalidImageName",
            format!("{path}.image: container {:?} has no image", c.name),
        ));
    }
    if c.working_dir.as_deref().is_some_and(|w| !w.is_empty()) {
        return Err(unsupported(format!(
            "{path}.workingDir: ACI cannot set a container's working directory; set WORKDIR in the image, or cd in the command"
        )));
    }
    if c.lifecycle
        .as_ref()
        .is_some_and(|l| l.post_start.is_some() || l.pre_stop.is_some() || l.stop_signal.is_some())
    {
        return Err(unsupported(format!(
            "{path}.lifecycle: ACI runs no lifecycle hooks and sends no custom stop signal; remove them"
        )));
    }
    if c.startup_probe.is_some() {
        return Err(unsupported(format!(
            "{path}.startupProbe: ACI has no startup probes; use initialDelaySeconds on the liveness probe"
        )));
    }
    if c.volume_devices.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported(format!(
            "{path}.volumeDevices: ACI attaches no block devices; remove them"
        )));
    }
    if c.resources
        .as_ref()
        .and_then(|r| r.claims.as_ref())
        .is_some_and(|c| !c.is_empty())
    {
        return Err(unsupported(format!(
            "{path}.resources.claims: ACI has no dynamic resource allocation; remove them"
        )));
    }
    Ok(())
}

/// The container's environment: later entries win, the first position kept.
fn environment(rp: &ResolvedPod, c: &KubeContainer) -> Vec<EnvironmentVariable> {
    let mut env: Vec<EnvironmentVariable> = Vec::new();
    for (name, v) in rp.env.get(&c.name).into_iter().flatten() {
        let var = if v.secret {
            EnvironmentVariable {
                name: name.clone(),
                secure_value: Some(SecretString::new(v.as_str())),
                ..Default::default()
            }
        } else {
            EnvironmentVariable {
                name: name.clone(),
                value: Some(v.as_str().into_owned()),
                ..Default::default()
            }
        };
        match env.iter_mut().find(|e| e.name == *name) {
            Some(slot) => *slot = var,
            None => env.push(var),
        }
    }
    env
}

fn mounts(
    c: &KubeContainer,
    path: &str,
    file_volumes: &BTreeSet<String>,
) -> Result<Vec<VolumeMount>, ProviderError> {
    let mut out = Vec::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            return Err(unsupported(format!(
                "{path}.volumeMounts[{j}].subPath: ACI mounts whole volumes only; mount volume {:?} as a directory",
                m.name
            )));
        }
        let read_only = m
            .read_only
            .filter(|r| *r)
            .or(file_volumes.contains(&m.name).then_some(true));
        out.push(VolumeMount {
            name: m.name.clone(),
            mount_path: m.mount_path.clone(),
            read_only,
        });
    }
    Ok(out)
}

fn security_context(
    c: Option<&SecurityContext>,
    spec: &PodSpec,
    path: &str,
) -> Result<Option<SecurityContextDefinition>, ProviderError> {
    let pod = spec.security_context.as_ref();
    let int = |v: Option<i64>, field: &str| {
        v.map(|v| {
            i32::try_from(v).map_err(|_| {
                unsupported(format!(
                    "{path}.securityContext.{field}: {v} is out of range for ACI (32 bits)"
                ))
            })
        })
        .transpose()
    };
    let windows = c
        .and_then(|c| c.windows_options.as_ref())
        .or(pod.and_then(|p| p.windows_options.as_ref()));
    if windows.and_then(|w| w.host_process) == Some(true) {
        return Err(unsupported(format!(
            "{path}.securityContext.windowsOptions.hostProcess: ACI has no host; remove it"
        )));
    }
    let seccomp = c
        .and_then(|c| c.seccomp_profile.as_ref())
        .or(pod.and_then(|p| p.seccomp_profile.as_ref()));
    if let Some(p) = seccomp.filter(|p| p.type_ != "RuntimeDefault") {
        return Err(unsupported(format!(
            "{path}.securityContext.seccompProfile: type {} cannot be expressed on ACI, which applies its default profile; use RuntimeDefault",
            p.type_
        )));
    }
    let capabilities =
        c.and_then(|c| c.capabilities.as_ref())
            .map(|caps| SecurityContextCapabilitiesDefinition {
                add: caps.add.clone().unwrap_or_default(),
                drop: caps.drop.clone().unwrap_or_default(),
            });
    let def = SecurityContextDefinition {
        privileged: c.and_then(|c| c.privileged),
        allow_privilege_escalation: c.and_then(|c| c.allow_privilege_escalation),
        capabilities: capabilities.filter(|c| !c.add.is_empty() || !c.drop.is_empty()),
        run_as_group: int(
            c.and_then(|c| c.run_as_group)
                .or(pod.and_then(|p| p.run_as_group)),
            "runAsGroup",
        )?,
        run_as_user: int(
            c.and_then(|c| c.run_as_user)
                .or(pod.and_then(|p| p.run_as_user)),
            "runAsUser",
        )?,
        seccomp_profile: None,
    };
    Ok((def != SecurityContextDefinition::default()).then_some(def))
}

fn container(
    rp: &ResolvedPod,
    spec: &PodSpec,
    c: &KubeContainer,
    path: &str,
    file_volumes: &BTreeSet<String>,
    gpu_sku: Option<&GpuSku>,
    s: &Settings,
) -> Result<Container, ProviderError> {
    check_container(c, path)?;
    let mut ports = Vec::new();
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let protocol = match p.protocol.as_deref() {
            None | Some("TCP") => ContainerNetworkProtocol::Tcp,
            Some("UDP") => ContainerNetworkProtocol::Udp,
            Some(other) => {
                return Err(unsupported(format!(
                    "{path}.ports[{j}].protocol: {other} is not supported by ACI; use TCP or UDP"
                )));
            }
        };
        if p.host_port.is_some_and(|h| h != p.container_port) {
            return Err(unsupported(format!(
                "{path}.ports[{j}].hostPort: {} differs from containerPort {}; an ACI group exposes a port on its own address as is",
                p.host_port.unwrap_or_default(),
                p.container_port
            )));
        }
        if !(1..=65535).contains(&p.container_port) {
            return Err(unsupported(format!(
                "{path}.ports[{j}].containerPort: {} is out of range",
                p.container_port
            )));
        }
        let port = ContainerPort {
            protocol: Some(protocol),
            port: p.container_port,
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(Container {
        name: c.name.clone(),
        properties: ContainerProperties {
            image: c.image.clone().unwrap_or_default(),
            command: command(c, path)?,
            ports,
            environment_variables: environment(rp, c),
            resources: resources(c.resources.as_ref(), path, gpu_sku, s)?,
            volume_mounts: mounts(c, path, file_volumes)?,
            liveness_probe: c
                .liveness_probe
                .as_ref()
                .map(|p| probe(p, &format!("{path}.livenessProbe"), c))
                .transpose()?,
            readiness_probe: c
                .readiness_probe
                .as_ref()
                .map(|p| probe(p, &format!("{path}.readinessProbe"), c))
                .transpose()?,
            security_context: security_context(c.security_context.as_ref(), spec, path)?,
            ..Default::default()
        },
    })
}

fn init_container(
    rp: &ResolvedPod,
    spec: &PodSpec,
    c: &KubeContainer,
    path: &str,
    file_volumes: &BTreeSet<String>,
) -> Result<InitContainerDefinition, ProviderError> {
    check_container(c, path)?;
    if c.restart_policy.as_deref() == Some("Always") {
        return Err(unsupported(format!(
            "{path}.restartPolicy: {:?} is a sidecar container, which ACI does not have (its init containers run to completion); \
             move it to spec.containers",
            c.name
        )));
    }
    // probes and ports of init containers mean nothing to Kubernetes
    // either; resources: ACI runs init containers within the group's
    Ok(InitContainerDefinition {
        name: c.name.clone(),
        properties: InitContainerPropertiesDefinition {
            image: c.image.clone(),
            command: command(c, path)?,
            environment_variables: environment(rp, c),
            volume_mounts: mounts(c, path, file_volumes)?,
            security_context: security_context(c.security_context.as_ref(), spec, path)?,
            ..Default::default()
        },
    })
}

// ---- resources ----

/// Cores rounded up to 0.01.
fn cores(q: Quantity) -> Option<f64> {
    Some(q.scaled_ceil(100)? as f64 / 100.0)
}

/// Decimal GB rounded up to 0.1.
fn gigabytes(q: Quantity) -> Option<f64> {
    Some(ceil_div(q.num.checked_mul(10)?, q.den.checked_mul(1_000_000_000)?)? as f64 / 10.0)
}

fn resources(
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

fn gpu_sku(ann: &BTreeMap<String, String>) -> Result<Option<GpuSku>, ProviderError> {
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

// ---- probes ----

fn probe(p: &Probe, path: &str, c: &KubeContainer) -> Result<ContainerProbe, ProviderError> {
    if p.tcp_socket.is_some() {
        return Err(unsupported(format!(
            "{path}.tcpSocket: ACI probes are exec or httpGet only; use an exec probe (e.g. `nc -z localhost PORT`) or httpGet"
        )));
    }
    if p.grpc.is_some() {
        return Err(unsupported(format!(
            "{path}.grpc: ACI probes are exec or httpGet only; use an exec probe (e.g. grpc_health_probe)"
        )));
    }
    let exec = p.exec.as_ref().map(|e| ContainerExec {
        command: e.command.clone().unwrap_or_default(),
    });
    if exec.as_ref().is_some_and(|e| e.command.is_empty()) {
        return Err(unsupported(format!(
            "{path}.exec.command: empty; name the command to run"
        )));
    }
    let http_get = match &p.http_get {
        None => None,
        Some(h) => {
            if h.host.as_deref().is_some_and(|h| !h.is_empty()) {
                return Err(unsupported(format!(
                    "{path}.httpGet.host: ACI probes the container itself; remove host"
                )));
            }
            let port = match &h.port {
                IntOrString::Int(n) => *n,
                IntOrString::String(name) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .map(|p| p.container_port)
                    .or_else(|| name.parse().ok())
                    .ok_or_else(|| {
                        unsupported(format!(
                            "{path}.httpGet.port: container {:?} has no port named {name:?}",
                            c.name
                        ))
                    })?,
            };
            let scheme = match h.scheme.as_deref() {
                None => None,
                Some(s) if s.eq_ignore_ascii_case("http") => Some(Scheme::Http),
                Some(s) if s.eq_ignore_ascii_case("https") => Some(Scheme::Https),
                Some(other) => {
                    return Err(unsupported(format!(
                        "{path}.httpGet.scheme: {other:?} is not HTTP or HTTPS"
                    )));
                }
            };
            Some(ContainerHttpGet {
                path: h.path.clone().filter(|p| !p.is_empty()),
                port,
                scheme,
                http_headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| HttpHeader {
                        name: Some(h.name.clone()),
                        value: Some(h.value.clone()),
                    })
                    .collect(),
            })
        }
    };
    if exec.is_none() && http_get.is_none() {
        return Err(unsupported(format!(
            "{path}: the probe has no handler; give it exec or httpGet"
        )));
    }
    Ok(ContainerProbe {
        exec,
        http_get,
        initial_delay_seconds: p.initial_delay_seconds,
        period_seconds: p.period_seconds,
        failure_threshold: p.failure_threshold,
        success_threshold: p.success_threshold,
        timeout_seconds: p.timeout_seconds,
    })
}

// ---- group-level ----

fn network(
    ann: &BTreeMap<String, String>,
    s: &Settings,
    ports: Vec<Port>,
) -> Result<(Option<IpAddress>, Vec<ContainerGroupSubnetId>), ProviderError> {
    let from_annotation = ann.get(ANNOTATION_SUBNET_IDS).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    if let Some(bad) = from_annotation
        .iter()
        .flatten()
        .find(|id| !id.to_ascii_lowercase().contains("/subnets/"))
    {
        return Err(bad_annotation(
            ANNOTATION_SUBNET_IDS,
            bad,
            "give subnet resource ids (/subscriptions/.../virtualNetworks/VNET/subnets/SUBNET)",
        ));
    }
    let subnets = from_annotation
        .clone()
        .unwrap_or_else(|| s.subnet_ids.clone());
    let mode = match ann
        .get(ANNOTATION_IP)
        .map(|v| v.trim().to_ascii_lowercase())
    {
        Some(m) if matches!(m.as_str(), "public" | "private" | "none") => m,
        Some(_) => {
            return Err(bad_annotation(
                ANNOTATION_IP,
                ann.get(ANNOTATION_IP)
                    .map(String::as_str)
                    .unwrap_or_default(),
                "use public, private or none",
            ));
        }
        None if !subnets.is_empty() => "private".to_owned(),
        None if !ports.is_empty() => "public".to_owned(),
        None => "none".to_owned(),
    };
    let label = ann
        .get(ANNOTATION_DNS_NAME_LABEL)
        .map(|l| l.trim().to_owned());
    if label.is_some() && mode != "public" {
        return Err(invalid(
            "InvalidAnnotation",
            format!(
                "metadata.annotations[{ANNOTATION_DNS_NAME_LABEL}]: only a public group has a DNS name label; set {ANNOTATION_IP}: public"
            ),
        ));
    }
    if let Some(l) = label
        .as_deref()
        .filter(|l| !names::is_valid_name(l) || l.len() < 5)
    {
        return Err(bad_annotation(
            ANNOTATION_DNS_NAME_LABEL,
            l,
            "use 5-63 lowercase letters, digits and '-'",
        ));
    }
    let subnet_ids = |ids: Vec<String>| {
        ids.into_iter()
            .map(|id| ContainerGroupSubnetId { id, name: None })
            .collect()
    };
    match mode.as_str() {
        "private" => {
            if subnets.is_empty() {
                return Err(invalid(
                    "InvalidAnnotation",
                    format!(
                        "metadata.annotations[{ANNOTATION_IP}]: a private group needs subnets; set {ANNOTATION_SUBNET_IDS} (or the node's subnet ids)"
                    ),
                ));
            }
            let ip = (!ports.is_empty()).then_some(IpAddress {
                ports,
                type_: ContainerGroupIpAddressType::Private,
                ip: None,
                dns_name_label: None,
                auto_generated_domain_name_label_scope: None,
                fqdn: None,
            });
            Ok((ip, subnet_ids(subnets)))
        }
        "public" => {
            if from_annotation.as_ref().is_some_and(|s| !s.is_empty()) {
                return Err(invalid(
                    "InvalidAnnotation",
                    format!(
                        "metadata.annotations[{ANNOTATION_SUBNET_IDS}]: a public group is in no subnet; remove it or set {ANNOTATION_IP}: private"
                    ),
                ));
            }
            if ports.is_empty() {
                return Err(invalid(
                    "InvalidAnnotation",
                    format!(
                        "metadata.annotations[{ANNOTATION_IP}]: a public address needs at least one container port; declare the ports to expose"
                    ),
                ));
            }
            let ip = IpAddress {
                ports,
                type_: ContainerGroupIpAddressType::Public,
                ip: None,
                dns_name_label: label,
                auto_generated_domain_name_label_scope: None,
                fqdn: None,
            };
            Ok((Some(ip), Vec::new()))
        }
        _ => Ok((None, Vec::new())),
    }
}

fn os_type(
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

fn dns_config(spec: &PodSpec, s: &Settings, namespace: &str) -> Option<DnsConfiguration> {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut options = Vec::new();
    match spec.dns_policy.as_deref() {
        // the pod's dnsConfig alone; Default: Azure's resolver
        Some("None" | "Default") => {}
        _ => {
            if let Some(d) = &s.dns {
                servers.extend(d.nameservers.iter().cloned());
                if let Some(cd) = s.cluster_domain.as_deref().filter(|c| !c.is_empty()) {
                    searches.extend([
                        format!("{namespace}.svc.{cd}"),
                        format!("svc.{cd}"),
                        cd.to_owned(),
                    ]);
                }
                searches.extend(d.search_domains.iter().cloned());
                options.extend(
                    d.options
                        .iter()
                        .flat_map(|o| o.split_whitespace().map(str::to_owned)),
                );
            }
        }
    }
    if let Some(d) = &spec.dns_config {
        servers.extend(d.nameservers.iter().flatten().cloned());
        searches.extend(d.searches.iter().flatten().cloned());
        for o in d.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            // a pod option replaces the node's option of the same name
            options.retain(|x| x.split(':').next() != Some(name));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_owned(),
            });
        }
    }
    let dedup = |v: &mut Vec<String>| {
        let mut seen = BTreeSet::new();
        v.retain(|x| seen.insert(x.clone()));
    };
    dedup(&mut servers);
    dedup(&mut searches);
    (!servers.is_empty()).then(|| DnsConfiguration {
        name_servers: servers,
        search_domains: (!searches.is_empty()).then(|| searches.join(" ")),
        options: (!options.is_empty()).then(|| options.join(" ")),
    })
}

fn sku(
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

fn identity(
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

// ---- image pull secrets ----

/// One entry of a docker config: no `Debug`, it holds a password.
#[derive(Deserialize)]
struct DockerAuth {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

/// The registry host of a docker config key (`https://index.docker.io/v1/` → `index.docker.io`).
fn registry_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Registry credentials from the pod's pull Secrets (`.dockerconfigjson`
/// `{"auths": {server: {username, password, auth}}}` or legacy `.dockercfg`
/// `{server: {...}}`). Entries without a user name and password (identity
/// tokens) and unparsable Secrets are skipped, as the kubelet does; the
/// first Secret naming a server wins.
pub fn registry_credentials(pull_secrets: &[(String, Value)]) -> Vec<ImageRegistryCredential> {
    let mut out: Vec<ImageRegistryCredential> = Vec::new();
    for (secret, value) in pull_secrets {
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&value.data) else {
            tracing::warn!(secret = %secret, "image pull secret is not JSON; skipped");
            continue;
        };
        let auths = doc.get("auths").filter(|a| a.is_object()).unwrap_or(&doc);
        let Some(auths) = auths.as_object() else {
            continue;
        };
        for (server, entry) in auths {
            let Ok(a) = serde_json::from_value::<DockerAuth>(entry.clone()) else {
                continue;
            };
            let decoded = a
                .auth
                .as_deref()
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .and_then(|b| String::from_utf8(b).ok());
            let from_auth = decoded
                .as_deref()
                .and_then(|d| d.split_once(':'))
                .map(|(u, p)| (u.to_owned(), p.to_owned()));
            let (user, password) = match (
                a.username.filter(|u| !u.is_empty()),
                a.password.filter(|p| !p.is_empty()),
            ) {
                (Some(u), Some(p)) => (u, p),
                _ => match from_auth {
                    Some(up) => up,
                    None => {
                        tracing::debug!(secret = %secret, server = %server, "pull secret entry without user name and password; skipped");
                        continue;
                    }
                },
            };
            let host = registry_host(server);
            if host.is_empty() || out.iter().any(|c| c.server == host) {
                continue;
            }
            out.push(ImageRegistryCredential {
                server: host,
                username: Some(user),
                password: Some(SecretString::new(password)),
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;
    use skylet_provider::PodRef;

    fn settings() -> Settings {
        Settings {
            node: "burst-1".into(),
            location: "westeurope".into(),
            ..Settings::default()
        }
    }

    /// A pod fixture: `spec` in a pod named `name` with `annotations`.
    fn pod_with(
        name: &str,
        annotations: serde_json::Value,
        spec: serde_json::Value,
    ) -> ResolvedPod {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "annotations": annotations},
            "spec": spec,
        }))
        .unwrap();
        ResolvedPod::bare(p)
    }

    fn pod(spec: serde_json::Value) -> ResolvedPod {
        pod_with("p", json!({}), spec)
    }

    fn one(c: serde_json::Value) -> ResolvedPod {
        pod(json!({"containers": [c]}))
    }

    fn group(rp: &ResolvedPod) -> ContainerGroup {
        container_group(rp, &settings()).unwrap()
    }

    fn file(path: &str, value: Value) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            mode: 0o644,
            value,
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// The reason and message of an InvalidPod error.
    fn refusal(r: Result<ContainerGroup, ProviderError>) -> (String, String) {
        match r {
            Err(ProviderError::InvalidPod { reason, message }) => (reason, message),
            other => panic!("expected InvalidPod, got {other:?}"),
        }
    }

    fn web() -> ResolvedPod {
        let mut rp = pod_with(
            "web-1",
            json!({}),
            json!({"restartPolicy": "OnFailure",
                   "containers": [{"name": "web", "image": "nginx", "command": ["nginx"], "args": ["-g", "daemon off;"],
                                   "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                                   "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2G"}}},
                                  {"name": "metrics", "image": "exporter", "ports": [{"containerPort": 80}, {"containerPort": 9100}]}]}),
        );
        rp.env.insert(
            "web".into(),
            vec![
                ("MODE".into(), Value::plain("dev")),
                ("PASSWORD".into(), Value::secret("hunter2")),
                ("MODE".into(), Value::plain("prod")),
            ],
        );
        rp
    }

    #[test]
    fn containers_env_ports_and_resources() {
        let g = group(&web());
        assert_eq!(g.location.as_deref(), Some("westeurope"));
        assert_eq!(
            g.tags,
            Some(names::tags(
                &PodRef::new("shop", "web-1", "uid-web-1"),
                "burst-1"
            ))
        );
        let p = &g.properties;
        assert_eq!(
            p.restart_policy,
            Some(ContainerGroupRestartPolicy::OnFailure)
        );
        assert_eq!(p.os_type, Some(OperatingSystemTypes::Linux));
        let web = &p.containers[0].properties;
        assert_eq!(web.image, "nginx");
        assert_eq!(
            web.command,
            ["nginx", "-g", "daemon off;"],
            "command and args make one argv"
        );
        let names: Vec<&str> = web
            .environment_variables
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["MODE", "PASSWORD"], "order kept, later entries win");
        assert_eq!(web.environment_variables[0].value.as_deref(), Some("prod"));
        assert_eq!(
            web.environment_variables[1].value, None,
            "a Secret value is never a plain value"
        );
        assert_eq!(
            web.environment_variables[1]
                .secure_value
                .as_ref()
                .map(SecretString::expose),
            Some("hunter2")
        );
        assert_eq!(web.ports.len(), 2);
        assert_eq!(web.ports[1].protocol, Some(ContainerNetworkProtocol::Udp));
        // 250m -> 0.25; 1Gi = 1.07 GB -> 1.1; limits 1 core, 2G -> 2.0
        assert_eq!(
            (
                web.resources.requests.cpu,
                web.resources.requests.memory_in_gb
            ),
            (0.25, 1.1)
        );
        let limits = web.resources.limits.as_ref().unwrap();
        assert_eq!((limits.cpu, limits.memory_in_gb), (Some(1.0), Some(2.0)));
        let metrics = &p.containers[1].properties;
        assert!(
            metrics.command.is_empty(),
            "no command: the image's entrypoint"
        );
        assert_eq!(
            (
                metrics.resources.requests.cpu,
                metrics.resources.requests.memory_in_gb
            ),
            (1.0, 1.5),
            "defaults"
        );
        assert_eq!(metrics.resources.limits, None);
        // group ports: the union, 80/TCP once
        let ip = p.ip_address.as_ref().unwrap();
        assert_eq!(
            ip.type_,
            ContainerGroupIpAddressType::Public,
            "ports and no subnets: public"
        );
        let ports: Vec<(i32, &str)> = ip
            .ports
            .iter()
            .map(|p| (p.port, p.protocol.as_ref().unwrap().as_str()))
            .collect();
        assert_eq!(ports, [(80, "TCP"), (53, "UDP"), (9100, "TCP")]);
        assert!(p.subnet_ids.is_empty());
    }

    #[test]
    fn secret_values_stay_out_of_plain_text_and_debug() {
        let mut rp = web();
        rp.pod.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(json!({"name": "creds", "secret": {"secretName": "c"}}))
                .unwrap(),
        ]);
        rp.volumes
            .insert("creds".into(), vec![file("pw", Value::secret("s3cret"))]);
        rp.image_pull_secrets = vec![(
            "reg".into(),
            Value::secret(r#"{"auths":{"r.io":{"username":"u","password":"pullpass"}}}"#),
        )];
        let g = group(&rp);
        let debug = format!("{g:?}");
        for secret in ["hunter2", "s3cret", &b64("s3cret"), "pullpass"] {
            assert!(!debug.contains(secret), "{secret} in Debug output");
        }
        let body = serde_json::to_value(&g).unwrap();
        let envs = &body["properties"]["containers"][0]["properties"]["environmentVariables"];
        assert_eq!(
            envs[1],
            json!({"name": "PASSWORD", "secureValue": "hunter2"})
        );
        assert_eq!(
            body["properties"]["volumes"][0]["secret"]["pw"],
            b64("s3cret")
        );
        assert_eq!(
            body["properties"]["imageRegistryCredentials"][0]["password"],
            "pullpass"
        );
    }

    #[test]
    fn args_without_command_and_other_container_fields_are_refused_by_name() {
        for (c, needle) in [
            (
                json!({"name": "a", "image": "i", "args": ["x"]}),
                "spec.containers[0].args",
            ),
            (
                json!({"name": "a", "image": "i", "workingDir": "/app"}),
                "spec.containers[0].workingDir",
            ),
            (
                json!({"name": "a--b", "image": "i"}),
                "spec.containers[0].name",
            ),
            (
                json!({"name": "a", "image": "i", "ports": [{"containerPort": 9, "protocol": "SCTP"}]}),
                "spec.containers[0].ports[0].protocol",
            ),
            (
                json!({"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}),
                "spec.containers[0].ports[0].hostPort",
            ),
            (
                json!({"name": "a", "image": "i", "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}),
                "spec.containers[0].lifecycle",
            ),
            (
                json!({"name": "a", "image": "i", "startupProbe": {"exec": {"command": ["true"]}}}),
                "spec.containers[0].startupProbe",
            ),
            (
                json!({"name": "a", "image": "i", "livenessProbe": {"tcpSocket": {"port": 80}}}),
                "spec.containers[0].livenessProbe.tcpSocket",
            ),
            (
                json!({"name": "a", "image": "i", "readinessProbe": {"grpc": {"port": 80}}}),
                "spec.containers[0].readinessProbe.grpc",
            ),
            (
                json!({"name": "a", "image": "i", "readinessProbe": {"httpGet": {"port": "web"}}}),
                "spec.containers[0].readinessProbe.httpGet.port",
            ),
            (
                json!({"name": "a", "image": "i", "readinessProbe": {"httpGet": {"port": 80, "host": "x"}}}),
                "httpGet.host",
            ),
            (
                json!({"name": "a", "image": "i", "resources": {"limits": {"example.com/fpga": "1"}}}),
                "resources.limits[example.com/fpga]",
            ),
            (
                json!({"name": "a", "image": "i", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
                "seccompProfile",
            ),
        ] {
            let (reason, message) = refusal(container_group(&one(c.clone()), &settings()));
            assert_eq!(reason, "UnsupportedPodSpec", "{c}");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
        let (reason, message) = refusal(container_group(&one(json!({"name": "a"})), &settings()));
        assert_eq!(reason, "InvalidImageName");
        assert!(message.contains("spec.containers[0].image"));
        let (reason, message) = refusal(container_group(
            &one(json!({"name": "a", "image": "i", "resources": {"requests": {"cpu": "lots"}}})),
            &settings(),
        ));
        assert_eq!(reason, "InvalidResources");
        assert!(message.contains("\"lots\" is not a quantity"), "{message}");
    }

    #[test]
    fn pod_level_fields_aci_cannot_honour_are_refused() {
        for (extra, needle) in [
            (json!({"hostNetwork": true}), "spec.hostNetwork"),
            (json!({"hostPID": true}), "spec.hostPID"),
            (json!({"hostIPC": true}), "spec.hostIPC"),
            (
                json!({"shareProcessNamespace": true}),
                "spec.shareProcessNamespace",
            ),
            (
                json!({"hostAliases": [{"ip": "1.2.3.4", "hostnames": ["x"]}]}),
                "spec.hostAliases",
            ),
            (
                json!({"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}}),
                "sysctls",
            ),
            (
                json!({"resources": {"requests": {"cpu": "1"}}}),
                "spec.resources",
            ),
            (json!({"restartPolicy": "Sometimes"}), "spec.restartPolicy"),
            (
                json!({"nodeSelector": {"kubernetes.io/os": "plan9"}}),
                "spec.nodeSelector[kubernetes.io/os]",
            ),
            (
                json!({"initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]}),
                "spec.initContainers[0].restartPolicy",
            ),
            (
                json!({"initContainers": [{"name": "setup", "image": "i", "args": ["x"]}]}),
                "spec.initContainers[0].args",
            ),
        ] {
            let mut spec = json!({"containers": [{"name": "a", "image": "i"}]});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let (reason, message) = refusal(container_group(&pod(spec), &settings()));
            assert_eq!(reason, "UnsupportedPodSpec", "{message}");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
        let spec = json!({"hostNetwork": true, "containers": [{"name": "a", "image": "i"}]});
        let (_, message) = refusal(container_group(&pod(spec), &settings()));
        assert_eq!(
            message,
            "spec.hostNetwork: ACI container groups have no host to share; remove it"
        );
    }

    #[test]
    fn probes_security_context_and_init_containers() {
        let mut rp = pod(json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
            "initContainers": [{"name": "migrate", "image": "app", "command": ["migrate"], "args": ["up"],
                                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]}],
            "containers": [{"name": "web", "image": "app", "ports": [{"name": "http", "containerPort": 8080}],
                "securityContext": {"runAsUser": 1, "allowPrivilegeEscalation": false, "privileged": false,
                                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                    "seccompProfile": {"type": "RuntimeDefault"}, "readOnlyRootFilesystem": true},
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}, "initialDelaySeconds": 5, "periodSeconds": 10,
                                  "failureThreshold": 3, "successThreshold": 1, "timeoutSeconds": 2},
                "readinessProbe": {"httpGet": {"port": "http", "path": "/ready", "scheme": "HTTPS",
                                               "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
                "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]}));
        rp.env.insert(
            "migrate".into(),
            vec![("DB".into(), Value::secret("postgres://u:pw@db"))],
        );
        let g = group(&rp);
        let web = &g.properties.containers[0].properties;
        let live = web.liveness_probe.as_ref().unwrap();
        assert_eq!(live.exec.as_ref().unwrap().command, ["cat", "/tmp/ok"]);
        assert_eq!(
            (
                live.initial_delay_seconds,
                live.period_seconds,
                live.failure_threshold,
                live.success_threshold,
                live.timeout_seconds
            ),
            (Some(5), Some(10), Some(3), Some(1), Some(2))
        );
        let ready = web
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (ready.port, ready.path.as_deref(), ready.scheme.clone()),
            (8080, Some("/ready"), Some(Scheme::Https)),
            "named port resolved"
        );
        assert_eq!(
            ready.http_headers,
            [HttpHeader {
                name: Some("X-Probe".into()),
                value: Some("1".into())
            }]
        );
        let sc = web.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_user, sc.run_as_group),
            (Some(1), Some(3000)),
            "container wins, pod fills in"
        );
        assert_eq!(
            (sc.privileged, sc.allow_privilege_escalation),
            (Some(false), Some(false))
        );
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(
            (caps.add.as_slice(), caps.drop.as_slice()),
            (
                &["NET_BIND_SERVICE".to_owned()][..],
                &["ALL".to_owned()][..]
            )
        );
        assert_eq!(sc.seccomp_profile, None, "RuntimeDefault is ACI's default");
        let init = &g.properties.init_containers[0];
        assert_eq!(init.name, "migrate");
        assert_eq!(init.properties.image.as_deref(), Some("app"));
        assert_eq!(init.properties.command, ["migrate", "up"]);
        assert!(
            init.properties.environment_variables[0]
                .secure_value
                .is_some()
                && init.properties.environment_variables[0].value.is_none()
        );
        assert_eq!(init.properties.volume_mounts[0].mount_path, "/tmp");
        assert_eq!(
            init.properties
                .security_context
                .as_ref()
                .unwrap()
                .run_as_user,
            Some(1000),
            "pod-level default"
        );
        assert_eq!(g.properties.volumes[0].empty_dir, Some(EmptyDir {}));
        assert_eq!(
            g.properties.ip_address.as_ref().unwrap().ports[0].port,
            8080
        );
    }

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

    #[test]
    fn file_volumes_become_secret_volumes() {
        let mut rp = pod(json!({
            "containers": [{"name": "app", "image": "app", "volumeMounts": [
                {"name": "conf", "mountPath": "/etc/app"},
                {"name": "token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                {"name": "info", "mountPath": "/info", "readOnly": true},
                {"name": "missing", "mountPath": "/opt"}]}],
            "volumes": [{"name": "conf", "configMap": {"name": "conf"}},
                        {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                                                                    {"configMap": {"name": "kube-root-ca.crt"}}]}},
                        {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                        {"name": "missing", "configMap": {"name": "gone", "optional": true}}]}));
        rp.volumes.insert(
            "conf".into(),
            vec![file("app.yaml", Value::plain("port: 80\n"))],
        );
        rp.volumes.insert(
            "token".into(),
            vec![
                file("token", Value::secret("eyJhbGciOi")),
                file("ca.crt", Value::plain("CERT")),
            ],
        );
        rp.volumes
            .insert("info".into(), vec![file("name", Value::plain("p"))]);
        let g = group(&rp);
        let v = &g.properties.volumes;
        let secret = |i: usize, k: &str| v[i].secret.as_ref().unwrap().0[k].expose().to_owned();
        assert_eq!(secret(0, "app.yaml"), b64("port: 80\n"));
        assert_eq!(secret(1, "token"), b64("eyJhbGciOi"));
        assert_eq!(secret(1, "ca.crt"), b64("CERT"));
        assert_eq!(secret(2, "name"), b64("p"));
        assert_eq!(
            (v[3].secret.as_ref(), v[3].empty_dir),
            (None, Some(EmptyDir {})),
            "an absent optional source is an empty directory"
        );
        let mounts = &g.properties.containers[0].properties.volume_mounts;
        assert!(
            mounts[..3].iter().all(|m| m.read_only == Some(true)),
            "file volumes are read-only"
        );
        assert_eq!(mounts[3].read_only, None);
        // nested paths cannot be expressed
        rp.volumes
            .insert("conf".into(), vec![file("sub/app.yaml", Value::plain("x"))]);
        let (reason, message) = refusal(container_group(&rp, &settings()));
        assert_eq!(reason, "UnsupportedVolume");
        assert!(
            message.contains("spec.volumes[0]") && message.contains("sub/app.yaml"),
            "{message}"
        );
    }

    #[test]
    fn azure_files_from_csi_or_annotation() {
        let spec = json!({
            "containers": [{"name": "app", "image": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "logs", "mountPath": "/logs"}]}],
            "volumes": [{"name": "data", "csi": {"driver": "file.csi.azure.com", "readOnly": true,
                                                 "volumeAttributes": {"shareName": "share1", "secretName": "storage"}}},
                        {"name": "logs", "secret": {"secretName": "storage2"}}]});
        let mut rp = pod_with(
            "p",
            json!({"skylet.io/aci-azure-file-logs": "acct2/logshare"}),
            spec,
        );
        rp.volumes.insert(
            "data".into(),
            vec![
                file(ACCOUNT_NAME_KEY, Value::secret("acct1")),
                file(ACCOUNT_KEY_KEY, Value::secret("a2V5MQ==")),
            ],
        );
        rp.volumes.insert(
            "logs".into(),
            vec![file(ACCOUNT_KEY_KEY, Value::secret("a2V5Mg=="))],
        );
        let g = group(&rp);
        let data = g.properties.volumes[0].azure_file.as_ref().unwrap();
        assert_eq!(
            (
                data.share_name.as_str(),
                data.storage_account_name.as_str(),
                data.read_only
            ),
            ("share1", "acct1", Some(true))
        );
        assert_eq!(
            data.storage_account_key.as_ref().map(SecretString::expose),
            Some("a2V5MQ==")
        );
        let logs = g.properties.volumes[1].azure_file.as_ref().unwrap();
        assert_eq!(
            (logs.share_name.as_str(), logs.storage_account_name.as_str()),
            ("logshare", "acct2")
        );
        assert!(
            g.properties.volumes[1].secret.is_none(),
            "the annotated volume is the share, not the Secret's files"
        );
        assert!(!format!("{g:?}").contains("a2V5"), "keys are redacted");
        // no key resolved: say so
        rp.volumes.remove("data");
        let (reason, message) = refusal(container_group(&rp, &settings()));
        assert_eq!(reason, "UnsupportedVolume");
        assert!(
            message.contains("spec.volumes[0]") && message.contains(ACCOUNT_KEY_KEY),
            "{message}"
        );
    }

    #[test]
    fn other_volume_kinds_and_mounts_are_refused() {
        for (volume, mount, needle) in [
            (
                json!({"name": "v", "hostPath": {"path": "/"}}),
                json!({}),
                "spec.volumes[0].hostPath",
            ),
            (
                json!({"name": "v", "persistentVolumeClaim": {"claimName": "c"}}),
                json!({}),
                "persistentVolumeClaim",
            ),
            (
                json!({"name": "v", "csi": {"driver": "disk.csi.azure.com"}}),
                json!({}),
                "spec.volumes[0].csi.driver",
            ),
            (
                json!({"name": "v", "azureFile": {"secretName": "s", "shareName": "x"}}),
                json!({}),
                "file.csi.azure.com",
            ),
            (
                json!({"name": "v", "csi": {"driver": "file.csi.azure.com"}}),
                json!({}),
                "shareName",
            ),
            (
                json!({"name": "v", "emptyDir": {}}),
                json!({"subPath": "x"}),
                "spec.containers[0].volumeMounts[0].subPath",
            ),
        ] {
            let mut m = json!({"name": "v", "mountPath": "/v"});
            m.as_object_mut()
                .unwrap()
                .extend(mount.as_object().unwrap().clone());
            let rp = pod(
                json!({"containers": [{"name": "a", "image": "i", "volumeMounts": [m]}], "volumes": [volume]}),
            );
            let (_, message) = refusal(container_group(&rp, &settings()));
            assert!(message.contains(needle), "{needle} not in {message}");
        }
        let git = pod(json!({"containers": [{"name": "a", "image": "i"}],
                             "volumes": [{"name": "src", "gitRepo": {"repository": "https://x/y.git", "revision": "abc"}}]}));
        let g = group(&git);
        assert_eq!(
            g.properties.volumes[0]
                .git_repo
                .as_ref()
                .unwrap()
                .revision
                .as_deref(),
            Some("abc")
        );
        let stray = pod_with(
            "p",
            json!({"skylet.io/aci-azure-file-nope": "a/b"}),
            json!({"containers": [{"name": "a", "image": "i"}]}),
        );
        assert!(
            refusal(container_group(&stray, &settings()))
                .1
                .contains("no volume \"nope\"")
        );
    }

    #[test]
    fn network_modes() {
        let ports =
            json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 80}]}]});
        let none = json!({"containers": [{"name": "a", "image": "i"}]});
        let subnet = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aci";
        let mut s = settings();
        // no ports, no subnets: no address
        let g = container_group(&pod(none.clone()), &s).unwrap();
        assert_eq!(
            (
                g.properties.ip_address.clone(),
                g.properties.subnet_ids.len()
            ),
            (None, 0)
        );
        // public with a DNS label
        let g = container_group(
            &pod_with(
                "p",
                json!({ANNOTATION_DNS_NAME_LABEL: "my-web"}),
                ports.clone(),
            ),
            &s,
        )
        .unwrap();
        let ip = g.properties.ip_address.unwrap();
        assert_eq!(
            (ip.type_, ip.dns_name_label.as_deref()),
            (ContainerGroupIpAddressType::Public, Some("my-web"))
        );
        // subnets from the settings: private
        s.subnet_ids = vec![subnet.into()];
        let g = container_group(&pod(ports.clone()), &s).unwrap();
        assert_eq!(
            g.properties.ip_address.as_ref().unwrap().type_,
            ContainerGroupIpAddressType::Private
        );
        assert_eq!(g.properties.subnet_ids[0].id, subnet);
        let g = container_group(&pod(none.clone()), &s).unwrap();
        assert_eq!(
            (
                g.properties.ip_address.is_none(),
                g.properties.subnet_ids.len()
            ),
            (true, 1),
            "in the subnet without ports"
        );
        // the annotation overrides
        let g = container_group(
            &pod_with("p", json!({ANNOTATION_IP: "none"}), ports.clone()),
            &s,
        )
        .unwrap();
        assert!(g.properties.ip_address.is_none() && g.properties.subnet_ids.is_empty());
        let g = container_group(
            &pod_with("p", json!({ANNOTATION_IP: "Public"}), ports.clone()),
            &s,
        )
        .unwrap();
        assert_eq!(
            g.properties.ip_address.unwrap().type_,
            ContainerGroupIpAddressType::Public
        );
        let other = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/other";
        let g = container_group(
            &pod_with(
                "p",
                json!({ANNOTATION_SUBNET_IDS: format!("{other}, ")}),
                ports.clone(),
            ),
            &settings(),
        )
        .unwrap();
        assert_eq!(g.properties.subnet_ids[0].id, other);
        // contradictions
        for (ann, spec, needle) in [
            (
                json!({ANNOTATION_IP: "private"}),
                ports.clone(),
                "needs subnets",
            ),
            (
                json!({ANNOTATION_IP: "public"}),
                none.clone(),
                "at least one container port",
            ),
            (
                json!({ANNOTATION_IP: "internal"}),
                ports.clone(),
                ANNOTATION_IP,
            ),
            (
                json!({ANNOTATION_IP: "none", ANNOTATION_DNS_NAME_LABEL: "abcde"}),
                ports.clone(),
                ANNOTATION_DNS_NAME_LABEL,
            ),
            (
                json!({ANNOTATION_DNS_NAME_LABEL: "Bad_Label"}),
                ports.clone(),
                ANNOTATION_DNS_NAME_LABEL,
            ),
            (
                json!({ANNOTATION_SUBNET_IDS: "subnet-1"}),
                ports.clone(),
                ANNOTATION_SUBNET_IDS,
            ),
            (
                json!({ANNOTATION_SUBNET_IDS: subnet, ANNOTATION_IP: "public"}),
                ports.clone(),
                "a public group is in no subnet",
            ),
        ] {
            let (reason, message) =
                refusal(container_group(&pod_with("p", ann, spec), &settings()));
            assert_eq!(reason, "InvalidAnnotation");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
    }

    #[test]
    fn dns_follows_the_dns_policy() {
        let mut s = settings();
        s.dns = Some(Dns {
            nameservers: vec!["10.0.0.10".into()],
            search_domains: vec!["corp.example".into()],
            options: Some("ndots:5".into()),
        });
        s.cluster_domain = Some("cluster.local".into());
        let base = json!({"containers": [{"name": "a", "image": "i"}]});
        let d = container_group(&pod(base.clone()), &s)
            .unwrap()
            .properties
            .dns_config
            .unwrap();
        assert_eq!(d.name_servers, ["10.0.0.10"]);
        assert_eq!(
            d.search_domains.as_deref(),
            Some("shop.svc.cluster.local svc.cluster.local cluster.local corp.example")
        );
        assert_eq!(d.options.as_deref(), Some("ndots:5"));
        let mut spec = base.clone();
        spec["dnsPolicy"] = json!("Default");
        assert_eq!(
            container_group(&pod(spec.clone()), &s)
                .unwrap()
                .properties
                .dns_config,
            None,
            "Default: Azure's resolver"
        );
        spec["dnsPolicy"] = json!("None");
        spec["dnsConfig"] = json!({"nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]});
        let d = container_group(&pod(spec.clone()), &s)
            .unwrap()
            .properties
            .dns_config
            .unwrap();
        assert_eq!(
            (
                d.name_servers.as_slice(),
                d.search_domains.as_deref(),
                d.options.as_deref()
            ),
            (
                &["1.1.1.1".to_owned()][..],
                Some("a.example"),
                Some("ndots:2 edns0")
            )
        );
        spec["dnsPolicy"] = json!("ClusterFirst");
        let d = container_group(&pod(spec), &s)
            .unwrap()
            .properties
            .dns_config
            .unwrap();
        assert_eq!(
            d.name_servers,
            ["10.0.0.10", "1.1.1.1"],
            "the pod's config is appended"
        );
        assert_eq!(
            d.options.as_deref(),
            Some("ndots:2 edns0"),
            "a pod option replaces the node's"
        );
        assert_eq!(
            container_group(&pod(base), &settings())
                .unwrap()
                .properties
                .dns_config,
            None,
            "no DNS settings: none"
        );
    }

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

    #[test]
    fn registry_credentials_from_pull_secrets() {
        let creds = registry_credentials(&[
            (
                "a".into(),
                Value::secret(
                    r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwOnc="},"r.azurecr.io":{"username":"u","password":"p"}}}"#,
                ),
            ),
            (
                "legacy".into(),
                Value::secret(r#"{"quay.io":{"username":"q","password":"qp","email":"x@y"}}"#),
            ),
            (
                "dup".into(),
                Value::secret(r#"{"auths":{"r.azurecr.io":{"username":"other","password":"o"}}}"#),
            ),
            (
                "token".into(),
                Value::secret(r#"{"auths":{"t.io":{"identitytoken":"xyz"}}}"#),
            ),
            ("broken".into(), Value::secret("not json")),
        ]);
        let got: Vec<(&str, &str, &str)> = creds
            .iter()
            .map(|c| {
                (
                    c.server.as_str(),
                    c.username.as_deref().unwrap(),
                    c.password.as_ref().unwrap().expose(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("index.docker.io", "user", "p:w"),
                ("r.azurecr.io", "u", "p"),
                ("quay.io", "q", "qp")
            ]
        );
        assert!(!format!("{creds:?}").contains("qp"));
    }

    #[test]
    fn the_body_follows_the_spec() {
        let Some(spec) = crate::models::tests::spec() else {
            return;
        };
        let mut rp = web();
        rp.pod.metadata.annotations = Some(
            [
                (ANNOTATION_PRIORITY, "Spot"),
                (ANNOTATION_SKU, "Confidential"),
                (ANNOTATION_CCE_POLICY, "cG9saWN5"),
                (ANNOTATION_GPU_SKU, "K80"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let body = serde_json::to_value(group(&rp)).unwrap();
        let errors = crate::models::tests::spec_errors(&spec, "ContainerGroup", &body);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}
