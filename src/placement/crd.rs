//! The `PlacementPolicy` custom resource (`skylet.io/v1alpha1`, namespaced)
//! and its validation.
//!
//! The CRD manifest is generated from these types ([`crd_yaml`]) and
//! committed twice: `deploy/crds/placementpolicies.skylet.io.yaml` and the
//! Helm chart's `crds/`; a unit test fails when either differs from what the
//! types generate (`SKYLET_UPDATE_CRDS=1 cargo test -p skylet --lib
//! placement::crd` rewrites both).

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the pods a policy selects may run, in which order, and how they
/// fail over and back.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "skylet.io",
    version = "v1alpha1",
    kind = "PlacementPolicy",
    namespaced,
    status = "PlacementPolicyStatus",
    shortname = "placement",
    doc = "Where the pods it selects may run (ordered tiers of nodes), and how they fail over, fail back and scale in. See skylet's README.",
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PlacementPolicySpec {
    /// The pods of this namespace the policy applies to. An empty selector
    /// selects every pod of the namespace. When several policies select a
    /// pod, the oldest one (then the first by name) applies.
    #[serde(default)]
    pub selector: LabelSelector,
    /// Where the pods may run, best first. A pod runs only on nodes of some
    /// tier. A tier may select the cluster's own nodes (e.g. `type NotIn
    /// [virtual-kubelet]`), so "our nodes first, then the cloud" is one
    /// policy. A node in several tiers belongs to the first.
    #[schemars(length(min = 1, max = 20))]
    pub tiers: Vec<Tier>,
    /// How the tiers' nodes are ordered.
    #[serde(default)]
    pub strategy: Strategy,
    /// Spread the pods over a topology domain (regions by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Spread>,
    /// What happens when a node stops answering.
    #[serde(default)]
    pub failover: Failover,
    /// Whether pods move back to a better tier once it is healthy again.
    #[serde(default)]
    pub rebalance: Rebalance,
    /// Which replicas a scale-in removes first.
    #[serde(default)]
    pub scale_in: ScaleIn,
}

/// One tier: a set of nodes chosen by their labels.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tier {
    /// A name for messages and Events (default: `tier-<n>`, from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tier's nodes, by label. It must say something: an empty
    /// selector is refused.
    pub node_selector: LabelSelector,
}

/// How the nodes of the tiers are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Strategy {
    /// Tier by tier: the first tier while it has room, then the next.
    #[default]
    Ordered,
    /// By the price of the pod on each node, from the node annotations
    /// `skylet.io/price-vcpu-hour` and `skylet.io/price-memory-gib-hour`; a
    /// node without them (the cluster's own) counts as free.
    Cheapest,
}

/// A topology spread constraint over the pods of the policy.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Spread {
    /// The node label whose values are the domains.
    #[serde(default = "default_topology_key")]
    pub topology_key: String,
    /// The largest allowed difference of pod counts between two domains.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_skew: i32,
    /// What the scheduler does when no node keeps the skew.
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
}

fn default_topology_key() -> String {
    "topology.kubernetes.io/region".into()
}

fn one() -> i32 {
    1
}

/// `whenUnsatisfiable` of a topology spread constraint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum WhenUnsatisfiable {
    /// Prefer the domains with fewer pods, schedule anyway.
    #[default]
    ScheduleAnyway,
    /// Keep the pod Pending rather than exceed the skew.
    DoNotSchedule,
}

/// Fail-over settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// How long a pod stays on a NotReady or unreachable node before the
    /// node lifecycle controller evicts it (its controller then creates a
    /// replacement). Default: the cluster's (300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub toleration_seconds: Option<i64>,
    /// `Strict`: a replacement is held (scheduling gate `skylet.io/fencing`)
    /// while a pod of the same controller is still Terminating on a virtual
    /// node, i.e. until its backend confirmed that instance gone.
    #[serde(default)]
    pub fencing: Fencing,
}

/// Fencing of replacements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Fencing {
    /// Replacements start at once.
    #[default]
    #[serde(rename = "None")]
    Off,
    /// Replacements wait for their predecessors to be confirmed gone.
    Strict,
}

/// Fail-back settings.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rebalance {
    /// `OnRecovery`: move pods from lower tiers back to a higher tier that
    /// has been healthy for `afterSeconds`.
    #[serde(default)]
    pub mode: RebalanceMode,
    /// How long a node must have been Ready and free of skylet's taints.
    #[serde(default = "default_after")]
    #[schemars(range(min = 0))]
    pub after_seconds: i32,
    /// At most this many evictions per minute for the policy.
    #[serde(default = "default_max_per_minute")]
    #[schemars(range(min = 1))]
    pub max_per_minute: i32,
}

impl Default for Rebalance {
    fn default() -> Self {
        Self {
            mode: RebalanceMode::Never,
            after_seconds: default_after(),
            max_per_minute: default_max_per_minute(),
        }
    }
}

// i32, not u32: Kubernetes knows the OpenAPI formats int32 and int64 only
// (a u32's `format: uint32` draws a warning at every apply)
fn default_after() -> i32 {
    300
}

fn default_max_per_minute() -> i32 {
    6
}

/// Whether pods move back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum RebalanceMode {
    /// Pods stay where they are.
    #[default]
    Never,
    /// Pods move back through the Eviction API once a higher tier recovered.
    OnRecovery,
}

/// Which replicas a ReplicaSet removes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ScaleIn {
    /// The ReplicaSet's own ranking.
    #[default]
    Default,
    /// skylet keeps `controller.kubernetes.io/pod-deletion-cost` on the
    /// running pods: lowest tier and most expensive first.
    CostAware,
}

/// A label selector (the shape of `metav1.LabelSelector`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must have exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label's value is compared.
    pub operator: Operator,
    /// Values for `In` and `NotIn`; none for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Operator {
    /// The value is one of `values`.
    In,
    /// The label is missing or its value is none of `values`.
    NotIn,
    /// The label is set.
    Exists,
    /// The label is not set.
    DoesNotExist,
}

impl Operator {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        }
    }
}

/// What skylet found of a policy.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementPolicyStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: `True` when the policy is in force, `False` with reason
    /// `Invalid` and a message saying what to fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition (the shape of `metav1.Condition`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A PascalCase reason.
    pub reason: String,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation this condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The most tiers a policy may have (preferred node affinity weights run
/// from 100 down to 1, strictly decreasing).
pub const MAX_TIERS: usize = 20;

impl PlacementPolicySpec {
    /// The display name of tier `i` (0-based).
    pub fn tier_name(&self, i: usize) -> String {
        self.tiers
            .get(i)
            .and_then(|t| t.name.clone())
            .unwrap_or_else(|| format!("tier-{}", i + 1))
    }

    /// Checks what the schema cannot: `Err` names the field and the fix.
    ///
    /// # Errors
    /// The first problem found, as a message for the `Ready=False` condition.
    pub fn validate(&self) -> Result<(), String> {
        validate_selector("selector", &self.selector)?;
        if self.tiers.is_empty() {
            return Err("tiers: at least one tier is needed".into());
        }
        if self.tiers.len() > MAX_TIERS {
            return Err(format!(
                "tiers: at most {MAX_TIERS} tiers, got {}",
                self.tiers.len()
            ));
        }
        for (i, t) in self.tiers.iter().enumerate() {
            let field = format!("tiers[{i}].nodeSelector");
            if t.node_selector.match_labels.is_empty()
                && t.node_selector.match_expressions.is_empty()
            {
                return Err(format!(
                    "{field}: empty; say which nodes the tier holds (e.g. matchLabels: {{type: virtual-kubelet}})"
                ));
            }
            validate_selector(&field, &t.node_selector)?;
        }
        if let Some(s) = &self.spread {
            if s.topology_key.is_empty() {
                return Err("spread.topologyKey: empty".into());
            }
            if s.max_skew < 1 {
                return Err(format!(
                    "spread.maxSkew: must be at least 1, got {}",
                    s.max_skew
                ));
            }
        }
        if let Some(t) = self.failover.toleration_seconds
            && t < 0
        {
            return Err(format!(
                "failover.tolerationSeconds: must not be negative, got {t}"
            ));
        }
        if self.rebalance.after_seconds < 0 {
            return Err(format!(
                "rebalance.afterSeconds: must not be negative, got {}",
                self.rebalance.after_seconds
            ));
        }
        if self.rebalance.mode == RebalanceMode::OnRecovery && self.rebalance.max_per_minute < 1 {
            return Err("rebalance.maxPerMinute: must be at least 1".into());
        }
        Ok(())
    }
}

fn validate_selector(field: &str, s: &LabelSelector) -> Result<(), String> {
    for (k, v) in &s.match_labels {
        if k.is_empty() {
            return Err(format!("{field}.matchLabels: empty key (value {v:?})"));
        }
    }
    for (i, r) in s.match_expressions.iter().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        if r.key.is_empty() {
            return Err(format!("{f}.key: empty"));
        }
        match r.operator {
            Operator::In | Operator::NotIn if r.values.is_empty() => {
                return Err(format!(
                    "{f}: operator {} needs at least one value",
                    r.operator.as_str()
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                return Err(format!(
                    "{f}: operator {} takes no values",
                    r.operator.as_str()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The CRD manifest as committed in deploy/crds/.
pub fn crd_yaml() -> String {
    let crd = PlacementPolicy::crd();
    let body = serde_yaml_ng::to_string(&crd).unwrap_or_default();
    format!(
        "# Generated from src/placement/crd.rs; do not edit. Regenerate with\n\
         # SKYLET_UPDATE_CRDS=1 cargo test -p skylet --lib placement::crd\n{body}"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(yaml: &str) -> PlacementPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// The committed CRD manifests are what the types generate.
    #[test]
    fn committed_crd_matches_the_types() {
        let generated = crd_yaml();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for path in [
            "deploy/crds/placementpolicies.skylet.io.yaml",
            "deploy/helm/skylet/crds/placementpolicies.skylet.io.yaml",
        ] {
            let path = root.join(path);
            if std::env::var_os("SKYLET_UPDATE_CRDS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &generated).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{} differs from the CRD the types generate; run SKYLET_UPDATE_CRDS=1 cargo test -p skylet --lib placement::crd",
                path.display()
            );
        }
    }

    #[test]
    fn defaults_fill_a_minimal_policy() {
        let s = spec("tiers: [{nodeSelector: {matchLabels: {type: virtual-kubelet}}}]");
        assert_eq!(s.strategy, Strategy::Ordered);
        assert_eq!(s.failover.fencing, Fencing::Off);
        assert_eq!(s.rebalance.mode, RebalanceMode::Never);
        assert_eq!(s.rebalance.after_seconds, 300);
        assert_eq!(s.scale_in, ScaleIn::Default);
        assert!(s.selector.match_labels.is_empty());
        assert_eq!(s.tier_name(0), "tier-1");
        s.validate().unwrap();
        let s = spec(
            "tiers: [{name: own, nodeSelector: {matchLabels: {a: b}}}]\nspread: {}\nfailover: {fencing: Strict}",
        );
        let spread = s.spread.clone().unwrap();
        assert_eq!(spread.topology_key, "topology.kubernetes.io/region");
        assert_eq!(spread.max_skew, 1);
        assert_eq!(spread.when_unsatisfiable, WhenUnsatisfiable::ScheduleAnyway);
        assert_eq!(s.failover.fencing, Fencing::Strict);
        assert_eq!(s.tier_name(0), "own");
    }

    #[test]
    fn fencing_none_is_spelled_none() {
        let s = spec("tiers: [{nodeSelector: {matchLabels: {a: b}}}]\nfailover: {fencing: None}");
        assert_eq!(s.failover.fencing, Fencing::Off);
        let v = serde_json::to_value(&s.failover).unwrap();
        assert_eq!(v["fencing"], "None");
    }

    #[test]
    fn invalid_policies_say_what_to_fix() {
        for (yaml, needle) in [
            ("tiers: []", "at least one tier"),
            (
                "tiers: [{nodeSelector: {}}]",
                "tiers[0].nodeSelector: empty",
            ),
            (
                "tiers: [{nodeSelector: {matchExpressions: [{key: type, operator: In}]}}]",
                "operator In needs at least one value",
            ),
            (
                "tiers: [{nodeSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}]",
                "takes no values",
            ),
            (
                "tiers: [{nodeSelector: {matchLabels: {a: b}}}]\nspread: {maxSkew: 0}",
                "spread.maxSkew",
            ),
            (
                "tiers: [{nodeSelector: {matchLabels: {a: b}}}]\nrebalance: {mode: OnRecovery, maxPerMinute: 0}",
                "maxPerMinute",
            ),
            (
                "tiers: [{nodeSelector: {matchLabels: {a: b}}}]\nselector: {matchExpressions: [{key: '', operator: Exists}]}",
                "selector.matchExpressions[0].key",
            ),
        ] {
            let err = spec(yaml).validate().unwrap_err();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
