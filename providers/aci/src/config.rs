//! Settings of the ACI backend, as [`crate::Aci`] fills them from flags
//! (`--aci-*`), environment (`SKYLET_ACI_*`, `AZURE_*`) and the `aci:`
//! section of the config file.

use std::{path::PathBuf, time::Duration};

/// How skylet authenticates to Azure Resource Manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Workload identity when its environment is set (the AKS webhook sets
    /// `AZURE_FEDERATED_TOKEN_FILE`), else managed identity, else the Azure CLI.
    #[default]
    Default,
    /// A service principal's client secret (`tenant_id`, `client_id`, `client_secret`).
    ClientSecret,
    /// Workload identity federation (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE`, or the settings).
    WorkloadIdentity,
    /// The managed identity of the VM or container skylet runs in
    /// (`client_id` selects a user-assigned one).
    ManagedIdentity,
    /// The signed-in Azure CLI (development).
    AzureCli,
}

/// Node capacity; `None` fields come from the location's usage API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// CPU cores, a Kubernetes quantity.
    pub cpu: Option<String>,
    /// Memory, a Kubernetes quantity.
    pub memory: Option<String>,
    /// Pods (container groups).
    pub pods: Option<String>,
    /// `nvidia.com/gpu`.
    pub gpu: Option<String>,
}

/// Everything the ACI backend needs.
#[derive(Clone)]
pub struct Config {
    /// The node's name: tag `skylet-node` on every container group.
    pub node_name: String,
    /// Azure subscription id.
    pub subscription_id: String,
    /// Resource group the container groups are created in (and listed from).
    pub resource_group: String,
    /// Azure region of the container groups (`westeurope`).
    pub location: String,
    /// Availability zones the node may use; with exactly one, groups are pinned to it.
    pub zones: Vec<String>,
    /// Azure Resource Manager endpoint.
    pub arm_endpoint: String,
    /// Azure Monitor's metrics endpoint (`kubectl top`); `None` is the
    /// public cloud's of the location, `https://<location>.metrics.monitor.azure.com`.
    pub metrics_endpoint: Option<String>,
    /// Entra ID authority (sovereign clouds, tests).
    pub authority_host: Option<String>,
    /// Extra CA certificates (PEM) trusted for ARM, Entra ID and exec sockets.
    pub ca_file: Option<PathBuf>,
    /// How to authenticate.
    pub auth: AuthMode,
    /// Entra ID tenant.
    pub tenant_id: Option<String>,
    /// Application (client) id, or a user-assigned managed identity's client id.
    pub client_id: Option<String>,
    /// Client secret (from a file or `AZURE_CLIENT_SECRET`, never a flag).
    pub client_secret: Option<String>,
    /// Delegated subnets for private IPs (`/subscriptions/.../subnets/...`).
    pub subnet_ids: Vec<String>,
    /// DNS servers for the groups (the cluster DNS, reachable from the subnet).
    pub dns_nameservers: Vec<String>,
    /// DNS search domains (e.g. `svc.cluster.local cluster.local`).
    pub dns_search_domains: Vec<String>,
    /// DNS resolver options (`ndots:5`).
    pub dns_options: Option<String>,
    /// The cluster's DNS domain: with nameservers set, ClusterFirst pods get
    /// the kubelet's search domains under it (`<ns>.svc.<domain>` ...).
    pub cluster_domain: Option<String>,
    /// Node capacity.
    pub capacity: Capacity,
    /// Changes to the published API rate limits kept on skylet's side
    /// ([`crate::client::limits`]); empty: the published figures.
    pub rate_limits: Vec<skylet_provider::ratelimit::Override>,
    /// How often `kubectl logs -f` polls ACI for new lines.
    pub log_poll_interval: Duration,
    /// Attempts per ARM call (429 and 5xx are retried).
    pub max_attempts: u32,
    /// Run exec commands under `/bin/sh` so that their exit code is known
    /// (ACI reports none; `crate::stream`); off: as ACI runs them, exit
    /// code always 0.
    pub exec_exit_code: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("node_name", &self.node_name)
            .field("subscription_id", &self.subscription_id)
            .field("resource_group", &self.resource_group)
            .field("location", &self.location)
            .field("zones", &self.zones)
            .field("arm_endpoint", &self.arm_endpoint)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field("authority_host", &self.authority_host)
            .field("ca_file", &self.ca_file)
            .field("auth", &self.auth)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("subnet_ids", &self.subnet_ids)
            .field("dns_nameservers", &self.dns_nameservers)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for everything but the required settings.
    pub fn new(
        node_name: impl Into<String>,
        subscription_id: impl Into<String>,
        resource_group: impl Into<String>,
        location: impl Into<String>,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            subscription_id: subscription_id.into(),
            resource_group: resource_group.into(),
            location: location.into(),
            zones: Vec::new(),
            arm_endpoint: "https://management.azure.com".into(),
            metrics_endpoint: None,
            authority_host: None,
            ca_file: None,
            auth: AuthMode::Default,
            tenant_id: None,
            client_id: None,
            client_secret: None,
            subnet_ids: Vec::new(),
            dns_nameservers: Vec::new(),
            dns_search_domains: Vec::new(),
            dns_options: None,
            cluster_domain: None,
            capacity: Capacity::default(),
            rate_limits: Vec::new(),
            log_poll_interval: Duration::from_secs(2),
            exec_exit_code: true,
            max_attempts: 5,
        }
    }

    /// Checks what can be checked without calling Azure; the message starts
    /// with the setting's name and a colon.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check(&self) -> Result<(), String> {
        let uuid_like = |s: &str| {
            s.len() == 36
                && s.bytes().enumerate().all(|(i, b)| {
                    if [8, 13, 18, 23].contains(&i) {
                        b == b'-'
                    } else {
                        b.is_ascii_hexdigit()
                    }
                })
        };
        if !uuid_like(&self.subscription_id) {
            return Err(format!(
                "aci-subscription-id: {:?} is not a subscription id (a GUID)",
                self.subscription_id
            ));
        }
        let rg_ok = !self.resource_group.is_empty()
            && self.resource_group.len() <= 90
            && !self.resource_group.ends_with('.')
            && self
                .resource_group
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.()".contains(c));
        if !rg_ok {
            return Err(format!(
                "aci-resource-group: {:?} is not a valid resource group name",
                self.resource_group
            ));
        }
        if self.location.is_empty()
            || !self
                .location
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(format!(
                "aci-location: {:?} is not an Azure region name like westeurope",
                self.location
            ));
        }
        for s in &self.subnet_ids {
            if !s
                .to_ascii_lowercase()
                .contains("/providers/microsoft.network/virtualnetworks/")
                || !s.contains("/subnets/")
            {
                return Err(format!(
                    "aci-subnet-ids: {s:?} is not a subnet resource id (/subscriptions/../virtualNetworks/../subnets/..)"
                ));
            }
        }
        if !self.arm_endpoint.starts_with("https://") {
            return Err(format!(
                "aci-arm-endpoint: {:?} must be an https URL",
                self.arm_endpoint
            ));
        }
        if self.auth == AuthMode::ClientSecret {
            for (name, v) in [
                ("aci-tenant-id", &self.tenant_id),
                ("aci-client-id", &self.client_id),
                ("aci-client-secret-file", &self.client_secret),
            ] {
                if v.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{name}: needed with --aci-auth client-secret"));
                }
            }
        }
        if self.max_attempts == 0 {
            return Err("aci-max-attempts: must be at least 1".into());
        }
        self.buckets().map_err(|e| format!("aci-rate-limit: {e}"))?;
        Ok(())
    }

    /// The API rate limits in force: the published buckets with
    /// [`Config::rate_limits`] applied.
    ///
    /// # Errors
    /// A change naming no published bucket.
    pub fn buckets(&self) -> Result<skylet_provider::ratelimit::Buckets, String> {
        skylet_provider::ratelimit::Buckets::new(
            crate::client::limits::PUBLISHED,
            &self.rate_limits,
        )
    }
}
