//! [`Kind`]: a kind of backend owns its settings and its construction.
//!
//! A backend crate implements [`Kind`] once; the core registers it with one
//! line and from then on only delegates: it adds the kind's flags to the
//! command line, hands it its section of the config file, and calls
//! [`Kind::build`] with what every backend gets from the core
//! ([`BuildContext`]). Adding a backend touches its crate and that line.

use std::{collections::BTreeMap, fmt, future::Future};

use crate::{BoxError, Provider, Sink, metrics::ApiMetrics};

/// A setting a backend cannot use: the process exits 64 with this message
/// before anything starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct ConfigError {
    /// The setting, as the user wrote it (`ecs-cluster`, `aci.location`).
    pub field: String,
    /// What is wrong and what to change.
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses a capacity setting, `cpu=64,memory=256Gi,pods=500`, into
/// resource names and quantities; `cpu`, `memory` and `pods` are required.
/// `field` names the setting in errors.
///
/// # Errors
/// A part that is not `resource=quantity`, a value that is not a
/// Kubernetes quantity, or a required resource missing.
pub fn parse_capacity(field: &str, spec: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::new(field, format!("{part:?} is not resource=quantity")))?;
        if crate::quantity::Quantity::parse(v).is_none() {
            return Err(ConfigError::new(
                field,
                format!("{v:?} (for {k}) is not a quantity"),
            ));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    for required in ["cpu", "memory", "pods"] {
        if !out.contains_key(required) {
            return Err(ConfigError::new(field, format!("{required} is missing")));
        }
    }
    Ok(out)
}

/// The virtual node a backend serves, as known before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeContext {
    /// The Node's name: backends tag their resources with it.
    pub name: String,
    /// The Node's labels (skylet's and the configured ones; not yet those
    /// the backend adds in [`Provider::configure_node`]).
    pub labels: BTreeMap<String, String>,
}

/// What the core gives a backend to build it.
#[derive(Clone)]
pub struct BuildContext {
    /// The node the backend serves.
    pub node: NodeContext,
    /// A client of the home cluster (the one the Node is registered in),
    /// for backends that read from it (the remote-cluster backend reflects
    /// ConfigMaps and Secrets). Events go through `sink`, not this client.
    pub home: kube::Client,
    /// Where the backend reports status changes and Events.
    pub sink: Sink,
    /// The backend's API metrics.
    pub api_metrics: ApiMetrics,
}

impl fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildContext")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// A kind of backend: its name, its settings, how it is built.
///
/// Settings come from the command line (`Args`, for a single backend) and
/// from its section of the YAML file (`File`, under [`Kind::SECTION`]), the
/// flags winning; [`Kind::configure`] merges and validates them before
/// anything starts.
pub trait Kind: 'static {
    /// The `--provider` value and the file's `provider:` (`aws-ecs`); equal
    /// to [`Provider::name`] of what [`Kind::build`] returns.
    const NAME: &'static str;
    /// The key of its section in the config file (`ecs`).
    const SECTION: &'static str;
    /// Its command-line flags, each with a prefix of its own (`--ecs-*`).
    type Args: clap::Args + Default + Send;
    /// Its section of the config file (kebab-case keys, unknown ones refused).
    type File: serde::de::DeserializeOwned + Default + Send;
    /// Its validated settings.
    type Config: Clone + fmt::Debug + Send + Sync + 'static;
    /// The backend.
    type Provider: Provider;

    /// Reads settings that must come from the environment only (secrets:
    /// never a flag, which `ps` shows) into `args`. The default reads none.
    fn read_env(args: &mut Self::Args) {
        let _ = args;
    }

    /// Merges `args` over `file` and validates them for `node`.
    ///
    /// # Errors
    /// A setting that is missing or invalid, named as the user wrote it.
    fn configure(
        args: Self::Args,
        file: Self::File,
        node: &NodeContext,
    ) -> Result<Self::Config, ConfigError>;

    /// Builds the backend (clients, credentials). Background work starts
    /// later, in [`Provider::run`].
    fn build(
        config: Self::Config,
        ctx: BuildContext,
    ) -> impl Future<Output = Result<Self::Provider, BoxError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_parses_and_names_what_is_wrong() {
        let c = parse_capacity("ecs-capacity", "cpu=8, memory=32Gi,pods=40").unwrap();
        assert_eq!(
            (c["cpu"].as_str(), c["memory"].as_str(), c["pods"].as_str()),
            ("8", "32Gi", "40")
        );
        for (spec, needle) in [
            ("cpu=1,pods=1", "memory is missing"),
            ("cpu", "not resource=quantity"),
            ("cpu=lots,memory=1,pods=1", "not a quantity"),
        ] {
            let e = parse_capacity("mock-capacity", spec).unwrap_err();
            assert_eq!(e.field, "mock-capacity");
            assert!(e.message.contains(needle), "{spec}: {e}");
        }
    }
}
