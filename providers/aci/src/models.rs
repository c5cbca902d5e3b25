//! The ARM resource skylet sends and reads: a container group
//! (`Microsoft.ContainerInstance/containerGroups`, api-version 2026-05-01),
//! as serde types shaped exactly like the spec's definitions.
//!
//! One set of types serves the PUT body and the GET and LIST answers: what
//! only the server fills (`id`, `provisioningState`, `instanceView`, `fqdn`,
//! ...) is optional, and the spec's `ListResultContainerGroup` is a
//! [`ContainerGroup`] without the group-level `instanceView`.
//!
//! # Robust reading
//! - Enums are strings in ARM (`modelAsString`): every enum here keeps a
//!   value it does not know in an `Other(String)` variant instead of failing
//!   the whole answer, and writes it back unchanged.
//! - Unknown properties are ignored; timestamps that do not parse are read
//!   as absent (and logged at debug level).
//!
//! # Secrets
//! Write-only values (`secureValue`, registry `password`, `secret` volume
//! contents, `storageAccountKey`) are held in [`SecretString`] and
//! [`SecretMap`], whose `Debug` shows no value. ARM never returns them.
//!
//! The spec itself is not part of the crate; the unit tests (`models/tests.rs`)
//! read it (env `SKYLET_ACI_SPEC`, default
//! `<repo>/../shared/specs/aci/containerInstance.json`, through
//! `crate::spec_check`) and check every property name these types write
//! against it.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The api-version these types follow.
pub const API_VERSION: &str = "2026-05-01";

/// Defines a string enum that keeps unknown values (ARM's `modelAsString`).
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version of skylet does not know, kept as sent.
            Other(String),
        }

        impl $name {
            /// Every value the spec defines, in its order.
            pub const VALUES: &'static [&'static str] = &[$($value),+];

            /// The wire value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $value,)+
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($value => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok(Self::from(s.as_str()))
            }
        }
    };
}

string_enum! {
    /// `ContainerGroupRestartPolicy`.
    ContainerGroupRestartPolicy {
        /// Always restart.
        Always = "Always",
        /// Restart on a non-zero exit.
        OnFailure = "OnFailure",
        /// Never restart.
        Never = "Never",
    }
}

string_enum! {
    /// `OperatingSystemTypes`.
    OperatingSystemTypes {
        /// Windows.
        Windows = "Windows",
        /// Linux.
        Linux = "Linux",
    }
}

string_enum! {
    /// `ContainerGroupIpAddressType`.
    ContainerGroupIpAddressType {
        /// A public address.
        Public = "Public",
        /// An address in the group's subnet.
        Private = "Private",
    }
}

string_enum! {
    /// `ContainerGroupNetworkProtocol` (ports of the group's IP address).
    ContainerGroupNetworkProtocol {
        /// TCP.
        Tcp = "TCP",
        /// UDP.
        Udp = "UDP",
    }
}

string_enum! {
    /// `ContainerNetworkProtocol` (ports of a container).
    ContainerNetworkProtocol {
        /// TCP.
        Tcp = "TCP",
        /// UDP.
        Udp = "UDP",
    }
}

string_enum! {
    /// `GpuSku`.
    GpuSku {
        /// NVIDIA K80.
        K80 = "K80",
        /// NVIDIA P100.
        P100 = "P100",
        /// NVIDIA V100.
        V100 = "V100",
    }
}

string_enum! {
    /// `Scheme` of an HTTP probe.
    Scheme {
        /// Plain HTTP.
        Http = "http",
        /// HTTPS.
        Https = "https",
    }
}

string_enum! {
    /// `ContainerGroupSku`.
    ContainerGroupSku {
        /// Not specified.
        NotSpecified = "NotSpecified",
        /// Shared hosts.
        Standard = "Standard",
        /// Dedicated hosts.
        Dedicated = "Dedicated",
        /// Confidential containers (AMD SEV-SNP), with a CCE policy.
        Confidential = "Confidential",
    }
}

string_enum! {
    /// `ContainerGroupPriority`.
    ContainerGroupPriority {
        /// Regular capacity.
        Regular = "Regular",
        /// Spot capacity (may be evicted).
        Spot = "Spot",
    }
}

string_enum! {
    /// `ResourceIdentityType`.
    ResourceIdentityType {
        /// The system-assigned identity.
        SystemAssigned = "SystemAssigned",
        /// User-assigned identities.
        UserAssigned = "UserAssigned",
        /// Both.
        SystemAssignedUserAssigned = "SystemAssigned, UserAssigned",
        /// None.
        None = "None",
    }
}

string_enum! {
    /// `ContainerGroupProvisioningState`.
    ContainerGroupProvisioningState {
        /// Not specified.
        NotSpecified = "NotSpecified",
        /// Accepted.
        Accepted = "Accepted",
        /// Pending.
        Pending = "Pending",
        /// Updating.
        Updating = "Updating",
        /// Creating.
        Creating = "Creating",
        /// Repairing.
        Repairing = "Repairing",
        /// Unhealthy.
        Unhealthy = "Unhealthy",
        /// Failed.
        Failed = "Failed",
        /// Canceled.
        Canceled = "Canceled",
        /// Succeeded.
        Succeeded = "Succeeded",
        /// Deleting.
        Deleting = "Deleting",
        /// Not accessible.
        NotAccessible = "NotAccessible",
        /// Pre-provisioned (standby pools).
        PreProvisioned = "PreProvisioned",
    }
}

string_enum! {
    /// `DnsNameLabelReusePolicy` (`ipAddress.autoGeneratedDomainNameLabelScope`).
    DnsNameLabelReusePolicy {
        /// The label is used as is.
        Unsecure = "Unsecure",
        /// Reusable within the tenant.
        TenantReuse = "TenantReuse",
        /// Reusable within the subscription.
        SubscriptionReuse = "SubscriptionReuse",
        /// Reusable within the resource group.
        ResourceGroupReuse = "ResourceGroupReuse",
        /// Never reused.
        Noreuse = "Noreuse",
    }
}

/// A write-only string (a password, a secure value, a key): serialized as
/// is, never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself (for the request body only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

/// A `secret` volume: file name to base64 contents. `Debug` shows the file
/// names only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretMap(pub BTreeMap<String, SecretString>);

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretMap")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Lenient RFC 3339 timestamps: a value that does not parse is absent.
mod lenient_time {
    use jiff::{Timestamp, tz::TimeZone};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn parse(s: &str) -> Option<Timestamp> {
        s.parse::<Timestamp>().ok().or_else(|| {
            // ARM sometimes omits the offset; such times are UTC
            s.parse::<jiff::civil::DateTime>()
                .ok()
                .and_then(|dt| dt.to_zoned(TimeZone::UTC).ok())
                .map(|z| z.timestamp())
        })
    }

    pub(super) fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Timestamp>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        Ok(raw.and_then(|s| {
            let t = parse(&s);
            if t.is_none() {
                tracing::debug!(value = %s, "ignoring a timestamp that is not RFC 3339");
            }
            t
        }))
    }
}

/// `systemData` of an ARM resource (common-types v5, defined here by hand).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemData {
    /// Who created the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// `User`, `Application`, `ManagedIdentity`, `Key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_type: Option<String>,
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Who last changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_by: Option<String>,
    /// Its kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_by_type: Option<String>,
    /// When.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_at: Option<String>,
}

/// `ContainerGroup` (and, without `instanceView`, `ListResultContainerGroup`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroup {
    /// Resource id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Resource name (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Microsoft.ContainerInstance/containerGroups` (read-only).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// ARM metadata (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_data: Option<SystemData>,
    /// Azure region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Resource tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Availability zones (at most one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Managed identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<ContainerGroupIdentity>,
    /// The group itself.
    pub properties: ContainerGroupPropertiesProperties,
}

/// `ContainerGroupPropertiesProperties` (and `ListResultContainerGroupPropertiesProperties`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroupPropertiesProperties {
    /// Provisioning state (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ContainerGroupProvisioningState>,
    /// Containers (required).
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Credentials for private registries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_registry_credentials: Vec<ImageRegistryCredential>,
    /// Restart policy of every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<ContainerGroupRestartPolicy>,
    /// The group's IP address and exposed ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<IpAddress>,
    /// Operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<OperatingSystemTypes>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Group state and events (read-only; absent in LIST answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<ContainerGroupPropertiesPropertiesInstanceView>,
    /// Subnets of a private group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<ContainerGroupSubnetId>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfiguration>,
    /// SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<ContainerGroupSku>,
    /// Init containers, run in order before the containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<InitContainerDefinition>,
    /// Confidential-container policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidential_compute_properties: Option<ConfidentialComputeProperties>,
    /// Regular or Spot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<ContainerGroupPriority>,
    /// Whether the group came from a standby pool (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_created_from_standby_pool: Option<bool>,
}

/// `ContainerGroupPropertiesPropertiesInstanceView`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroupPropertiesPropertiesInstanceView {
    /// Group-level events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Group state (`Running`, `Stopped`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// `Container`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name.
    pub name: String,
    /// The container.
    pub properties: ContainerProperties,
}

/// `ContainerProperties`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    /// Image.
    #[serde(default)]
    pub image: String,
    /// Command (ACI has no separate arguments: the whole argv).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Exposed ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<EnvironmentVariable>,
    /// State and events (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<ContainerPropertiesInstanceView>,
    /// Resources (required by ARM for containers).
    #[serde(default)]
    pub resources: ResourceRequirements,
    /// Volume mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Liveness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<ContainerProbe>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<ContainerProbe>,
    /// Security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContextDefinition>,
    /// Config map (key-value pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMap>,
}

/// `ConfigMap` of a container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    /// Key-value pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_value_pairs: BTreeMap<String, String>,
}

/// `EnvironmentVariable`: `value` in plain text or a write-only `secureValue`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentVariable {
    /// Name.
    pub name: String,
    /// Plain value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Secure value (never returned by ARM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_value: Option<SecretString>,
    /// A Key Vault reference for the secure value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_value_reference: Option<String>,
}

/// `ContainerPort`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// TCP (default) or UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ContainerNetworkProtocol>,
    /// Port number.
    pub port: i32,
}

/// `Port` of the group's IP address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// TCP (default) or UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ContainerGroupNetworkProtocol>,
    /// Port number.
    pub port: i32,
}

/// `IpAddress`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    /// Exposed ports (required, may be empty).
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Public or Private.
    #[serde(rename = "type")]
    pub type_: ContainerGroupIpAddressType,
    /// The address (read from ARM; may be requested for private groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// DNS label of a public address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name_label: Option<String>,
    /// How the DNS label is made unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_generated_domain_name_label_scope: Option<DnsNameLabelReusePolicy>,
    /// Fully qualified domain name (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
}

/// `ResourceRequirements`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// Requests (required).
    #[serde(default)]
    pub requests: ResourceRequests,
    /// Limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceLimits>,
}

/// `ResourceRequests`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    /// Memory in GB.
    #[serde(rename = "memoryInGB", default)]
    pub memory_in_gb: f64,
    /// CPU cores.
    #[serde(default)]
    pub cpu: f64,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuResource>,
}

/// `ResourceLimits`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimits {
    /// Memory in GB.
    #[serde(
        rename = "memoryInGB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_in_gb: Option<f64>,
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuResource>,
}

/// `GpuResource`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuResource {
    /// Number of GPUs.
    pub count: i32,
    /// GPU model.
    pub sku: GpuSku,
}

/// `VolumeMount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// Volume name.
    pub name: String,
    /// Where in the container.
    pub mount_path: String,
    /// Read-only mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// An `emptyDir` volume: the empty JSON object `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyDir {}

/// `Volume`: exactly one of its kinds is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Volume name.
    pub name: String,
    /// An Azure Files share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_file: Option<AzureFileVolume>,
    /// An empty directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDir>,
    /// Secret files: file name to base64 contents (never returned by ARM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretMap>,
    /// Secret files from Key Vault: file name to secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_reference: Option<BTreeMap<String, String>>,
    /// A cloned git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_repo: Option<GitRepoVolume>,
}

/// `AzureFileVolume`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureFileVolume {
    /// Share name.
    pub share_name: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Storage account.
    pub storage_account_name: String,
    /// Storage account key (never returned by ARM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_key: Option<SecretString>,
    /// A Key Vault reference for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_key_reference: Option<String>,
    /// A user-assigned identity to mount with instead of a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_managed_identity_client_id: Option<String>,
}

/// `GitRepoVolume`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitRepoVolume {
    /// Target directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Repository URL.
    pub repository: String,
    /// Commit hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// `ContainerProbe`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProbe {
    /// Run a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ContainerExec>,
    /// GET a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<ContainerHttpGet>,
    /// Delay before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// Successes before healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Timeout of one probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// `ContainerExec` of a probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerExec {
    /// The command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
}

/// `ContainerHttpGet` of a probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerHttpGet {
    /// Path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Port.
    pub port: i32,
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
    /// Request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// `HttpHeader`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `SecurityContextDefinition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContextDefinition {
    /// Privileged container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Whether a process may gain more privileges than its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    /// Capabilities to add and drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<SecurityContextCapabilitiesDefinition>,
    /// Group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i32>,
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i32>,
    /// Base64 seccomp profile JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<String>,
}

/// `SecurityContextCapabilitiesDefinition`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContextCapabilitiesDefinition {
    /// Capabilities to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Capabilities to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// `InitContainerDefinition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitContainerDefinition {
    /// Name.
    pub name: String,
    /// The init container.
    pub properties: InitContainerPropertiesDefinition,
}

/// `InitContainerPropertiesDefinition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitContainerPropertiesDefinition {
    /// Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_variables: Vec<EnvironmentVariable>,
    /// State and events (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_view: Option<ContainerPropertiesInstanceView>,
    /// Volume mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContextDefinition>,
}

/// `ImageRegistryCredential`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRegistryCredential {
    /// Registry server (`myregistry.azurecr.io`).
    pub server: String,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (never returned by ARM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretString>,
    /// A Key Vault reference for the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_reference: Option<String>,
    /// A managed identity to pull with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The identity's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_url: Option<String>,
}

/// `DnsConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsConfiguration {
    /// Name servers (required).
    #[serde(default)]
    pub name_servers: Vec<String>,
    /// Search domains, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<String>,
    /// resolv.conf options, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// `ContainerGroupIdentity`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroupIdentity {
    /// Principal of the system-assigned identity (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Tenant of the system-assigned identity (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Which identities.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ResourceIdentityType>,
    /// User-assigned identities by resource id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user_assigned_identities: BTreeMap<String, UserAssignedIdentities>,
}

/// `UserAssignedIdentities` (a PUT sends `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserAssignedIdentities {
    /// Principal id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Client id (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// `ConfidentialComputeProperties`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfidentialComputeProperties {
    /// Base64 confidential-computing enforcement policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cce_policy: Option<String>,
}

/// `ContainerGroupSubnetId`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroupSubnetId {
    /// Subnet resource id.
    pub id: String,
    /// Friendly name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `ContainerPropertiesInstanceView` (and the identical
/// `InitContainerPropertiesDefinitionInstanceView`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPropertiesInstanceView {
    /// Restarts so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
    /// Current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<ContainerState>,
    /// State before the last restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<ContainerState>,
    /// Events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

/// `ContainerState`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// `Waiting`, `Running`, `Terminated` (others kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When it started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "lenient_time"
    )]
    pub start_time: Option<jiff::Timestamp>,
    /// Exit code of a terminated container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When it ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "lenient_time"
    )]
    pub finish_time: Option<jiff::Timestamp>,
    /// Details (`ContainerCreating`, `Completed`, `Error`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_status: Option<String>,
}

/// `Event`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// How often it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// First occurrence.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "lenient_time"
    )]
    pub first_timestamp: Option<jiff::Timestamp>,
    /// Last occurrence.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "lenient_time"
    )]
    pub last_timestamp: Option<jiff::Timestamp>,
    /// Name (`Pulling`, `Started`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// `ContainerGroupListResult`: one page of a LIST.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerGroupListResult {
    /// The groups of this page.
    #[serde(default)]
    pub value: Vec<ContainerGroup>,
    /// The next page, absolute URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

#[cfg(test)]
mod tests;
