//! ACI on the in-repo emulator (in this test's process): the container
//! groups tagged with the node, told apart by their `skylet-pod-uid` tag.

use skylet_aci_emulator::{Config as EmulatorConfig, Emulator};

use super::skylet_bin;
use crate::{
    ControlPlane, Skylet,
    proxy::{Api, FaultProxy, Faults, Upstream},
    suite::{BackendUnderTest, BehindProxy, Instance, Probing, WithQuota},
};

/// An ACI emulator (room for 1000 groups unless started with another
/// configuration), and where its CA is written.
pub struct Aci {
    emu: Emulator,
    config: EmulatorConfig,
    dir: tempfile::TempDir,
    /// Flags every skylet on it gets ([`WithQuota`]: `--aci-capacity`).
    flags: Vec<&'static str>,
}

impl std::fmt::Debug for Aci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aci")
            .field("url", &self.emu.url())
            .finish_non_exhaustive()
    }
}

impl Aci {
    /// An emulator of `config`.
    ///
    /// # Panics
    /// If the emulator does not start.
    pub async fn start_with(config: EmulatorConfig) -> Self {
        let emu = Emulator::start(config.clone()).await.expect(
            "the ACI emulator starts (is ../shared/specs/aci/containerInstance.json there?)",
        );
        let dir = tempfile::tempdir().expect("a tempdir");
        emu.write_ca(dir.path().join("emulator-ca.pem"))
            .expect("the emulator's CA written");
        Self {
            emu,
            config,
            dir,
            flags: Vec::new(),
        }
    }

    /// The emulator's configuration (its subscription, location, ...).
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// How many `op` requests (an operation id of the spec) the emulator
    /// answered.
    pub fn calls(&self, op: &str) -> u64 {
        self.emu.stats().requests.get(op).copied().unwrap_or(0)
    }

    /// The emulator.
    pub fn emulator(&self) -> &Emulator {
        &self.emu
    }

    /// skylet on this emulator, reaching ARM and Entra ID at `url` and
    /// trusting the CA in `ca`.
    fn start_skylet(
        &self,
        cp: &ControlPlane,
        node: &str,
        url: &str,
        ca: &str,
        extra: &[&str],
    ) -> Skylet {
        let c = &self.config;
        let mut args = vec![
            "--provider",
            "azure-aci",
            "--aci-subscription-id",
            &c.subscription_id,
            "--aci-resource-group",
            &c.resource_groups[0],
            "--aci-location",
            &c.location,
            "--aci-arm-endpoint",
            url,
            "--aci-authority-host",
            url,
            "--aci-ca-file",
            ca,
            "--aci-auth",
            "client-secret",
            "--aci-tenant-id",
            &c.tenant_id,
            "--aci-client-id",
            &c.client_id,
        ];
        args.extend_from_slice(&self.flags);
        args.extend_from_slice(extra);
        Skylet::start_with_env(
            cp,
            &skylet_bin(),
            node,
            &args,
            &[("AZURE_CLIENT_SECRET", &c.client_secret)],
        )
    }

    /// The groups of `node` as the emulator stores them (write-only
    /// values included).
    pub fn groups_of(&self, node: &str) -> Vec<serde_json::Value> {
        self.emu
            .groups()
            .into_iter()
            .filter(|g| g["tags"]["skylet-node"] == node)
            .collect()
    }
}

fn instance(g: &serde_json::Value) -> Instance {
    let tag = |k: &str| g["tags"][k].as_str().unwrap_or_default().to_owned();
    Instance {
        uid: tag("skylet-pod-uid"),
        namespace: tag("skylet-pod-namespace"),
        name: tag("skylet-pod-name"),
        // the stored body is what skylet sent: no address
        ip: None,
    }
}

impl BackendUnderTest for Aci {
    const PROVIDER: &'static str = "azure-aci";
    const SHORT: &'static str = "aci";

    async fn start() -> Self {
        Self::start_with(EmulatorConfig {
            container_group_quota: 1000,
            core_quota: 1000,
            ..EmulatorConfig::default()
        })
        .await
    }

    fn skylet(&self, cp: &ControlPlane, node: &str, extra: &[&str]) -> Skylet {
        let ca = self.dir.path().join("emulator-ca.pem");
        let url = self.emu.url();
        // Azure Monitor's batch metrics API, served by the emulator too
        let mut args = vec![
            "--aci-metrics-endpoint",
            &url,
            "--aci-log-poll-interval",
            "0.5",
        ];
        args.extend_from_slice(extra);
        self.start_skylet(cp, node, &url, &ca.display().to_string(), &args)
    }

    fn node_labels(&self) -> Vec<(&'static str, String)> {
        vec![(
            "topology.kubernetes.io/region",
            self.config.location.clone(),
        )]
    }

    /// Groups not stopped and not being deleted (a stopped group runs
    /// nothing and costs nothing; skylet deletes it at its next sweep).
    async fn instances(&self, s: &Skylet) -> Vec<Instance> {
        self.groups_of(&s.node)
            .iter()
            .filter(|g| g["state"] != "Stopped" && g["provisioningState"] != "Deleting")
            .map(instance)
            .collect()
    }

    /// Every group of the node, stopped ones included.
    async fn instances_ever(&self, s: &Skylet) -> Vec<Instance> {
        self.groups_of(&s.node).iter().map(instance).collect()
    }

    async fn creates(&self, _: &Skylet) -> u64 {
        self.emu.stats().count("ContainerGroups_CreateOrUpdate")
    }

    // ACI reports no probe results and keeps no log of an earlier run
    const PROBING: Probing = Probing {
        readiness: false,
        restarts: true,
        previous_logs: false,
    };

    fn probe_not_run(&self) -> Option<(serde_json::Value, &'static str)> {
        Some((
            serde_json::json!({"readinessProbe": {"tcpSocket": {"port": 8080}}}),
            "readinessProbe.tcpSocket",
        ))
    }

    fn make_unsupported(&self, pod: &mut serde_json::Value) -> &'static str {
        pod["spec"]["hostNetwork"] = serde_json::json!(true);
        "hostNetwork"
    }

    fn verify(&self) {
        assert_eq!(
            self.emu.stats().invalid_responses,
            0,
            "every emulator answer matched the spec"
        );
    }
}

impl BehindProxy for Aci {
    const API: Api = Api::Arm;

    /// A TLS proxy with its own CA; ARM calls (`/subscriptions/...`) get
    /// faults, Entra ID's token endpoint does not.
    fn proxy(&self, mut faults: Faults) -> FaultProxy {
        faults.eligible = |_, path| path.starts_with("/subscriptions/");
        let upstream = Upstream::https(&self.emu.url(), self.emu.ca_pem()).expect("the emulator");
        FaultProxy::start(Api::Arm, upstream, true, Some(&self.emu.url()), faults)
            .expect("a fault proxy")
    }

    fn skylet_through(
        &self,
        cp: &ControlPlane,
        node: &str,
        proxy: &FaultProxy,
        extra: &[&str],
    ) -> Skylet {
        let ca = self.dir.path().join(format!("proxy-ca-{node}.pem"));
        std::fs::write(&ca, proxy.ca_pem().expect("a TLS proxy")).expect("the proxy's CA written");
        self.start_skylet(cp, node, &proxy.url(), &ca.display().to_string(), extra)
    }
}

impl WithQuota for Aci {
    /// The subscription's container group quota in the location is `pods`;
    /// the node advertises 100 (`--aci-capacity`), as with a quota others
    /// use too.
    async fn start_with_quota(pods: u32) -> Self {
        let mut aci = Self::start_with(EmulatorConfig {
            container_group_quota: pods,
            ..EmulatorConfig::default()
        })
        .await;
        aci.flags = vec!["--aci-capacity", "cpu=100,memory=400Gi,pods=100"];
        aci
    }
}
