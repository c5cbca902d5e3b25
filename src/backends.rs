//! The backends this binary knows, one line each in [`KINDS`].
//!
//! A backend crate implements [`skylet_provider::Kind`]: its flags, its
//! section of the config file, their validation, and how it is built. The
//! core only delegates: [`crate::config`] adds every kind's flags to the
//! command line and hands the selected kind its settings, and
//! [`Configured::start`] builds the backend and runs its node with
//! [`crate::run_node`]. Nothing here knows a backend's settings.

use std::{fmt, marker::PhantomData};

use clap::{ArgMatches, FromArgMatches};
use futures::future::BoxFuture;
use skylet_provider::{BuildContext, ConfigError, Kind, NodeContext, Sink};

use crate::{Error, NodeParts};

/// Every backend kind of this binary. Adding a backend: its crate, and one
/// line here.
pub(crate) static KINDS: &[&dyn Registered] = &[
    &Registration::<skylet_mock::Mock>::NEW,
    &Registration::<skylet_kube::Kube>::NEW,
    &Registration::<skylet_ecs::Ecs>::NEW,
    &Registration::<skylet_aci::Aci>::NEW,
];

/// The names of every kind (`--provider` values).
pub(crate) fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name()).collect()
}

/// The kind called `name`.
pub(crate) fn kind(name: &str) -> Option<&'static dyn Registered> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// A registered kind, object-safe: what the configuration needs of it.
pub(crate) trait Registered: Sync {
    /// [`Kind::NAME`].
    fn name(&self) -> &'static str;
    /// [`Kind::SECTION`].
    fn section(&self) -> &'static str;
    /// Adds the kind's flags to the command line.
    fn augment_args(&self, cmd: clap::Command) -> clap::Command;
    /// Validates the kind's settings: from `flags` (the whole command line,
    /// when this backend is the one given there) over `section` (its part
    /// of the config file).
    fn configure(
        &self,
        flags: Option<&ArgMatches>,
        section: Option<serde_yaml_ng::Value>,
        node: &NodeContext,
        read_env: bool,
    ) -> Result<Box<dyn Configured>, ConfigError>;
}

/// A backend with validated settings, ready to start.
pub trait Configured: Send + Sync + fmt::Debug {
    /// The kind's name.
    fn kind(&self) -> &'static str;

    /// Builds the backend and runs its node until `parts.shutdown`.
    fn start(self: Box<Self>, parts: NodeParts) -> BoxFuture<'static, Result<(), Error>>;
}

struct Registration<K>(PhantomData<fn() -> K>);

impl<K> Registration<K> {
    const NEW: Self = Self(PhantomData);
}

impl<K: Kind> Registered for Registration<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn section(&self) -> &'static str {
        K::SECTION
    }

    fn augment_args(&self, cmd: clap::Command) -> clap::Command {
        <K::Args as clap::Args>::augment_args(cmd)
    }

    fn configure(
        &self,
        flags: Option<&ArgMatches>,
        section: Option<serde_yaml_ng::Value>,
        node: &NodeContext,
        read_env: bool,
    ) -> Result<Box<dyn Configured>, ConfigError> {
        let mut args = match flags {
            Some(m) => K::Args::from_arg_matches(m)
                .map_err(|e| ConfigError::new(K::NAME, e.to_string()))?,
            None => K::Args::default(),
        };
        if read_env {
            K::read_env(&mut args);
        }
        let file = match section {
            Some(v) => serde_yaml_ng::from_value(v).map_err(|e| {
                ConfigError::new(
                    format!("{} section of the config file", K::SECTION),
                    e.to_string(),
                )
            })?,
            None => K::File::default(),
        };
        let config = K::configure(args, file, node)?;
        Ok(Box::new(Ready::<K> { config }))
    }
}

/// The settings of a backend of kind `K`.
struct Ready<K: Kind> {
    config: K::Config,
}

impl<K: Kind> fmt::Debug for Ready<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Configured")
            .field("kind", &K::NAME)
            .field("config", &self.config)
            .finish()
    }
}

impl<K: Kind> Configured for Ready<K> {
    fn kind(&self) -> &'static str {
        K::NAME
    }

    fn start(self: Box<Self>, parts: NodeParts) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async move {
            let (sink, events) = Sink::channel();
            let ctx = BuildContext {
                node: parts.node_context(),
                home: parts.client.clone(),
                sink,
                api_metrics: parts.api_metrics.for_backend(&parts.node.name),
            };
            let provider = K::build(self.config, ctx)
                .await
                .map_err(|source| Error::Backend {
                    kind: K::NAME,
                    source,
                })?;
            crate::run_node(parts, provider, events).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_names_and_sections() {
        let mut names = names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        let mut sections: Vec<_> = KINDS.iter().map(|k| k.section()).collect();
        sections.sort_unstable();
        sections.dedup();
        assert_eq!(sections.len(), KINDS.len());
    }
}
