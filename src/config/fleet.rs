//! The backends of the config file: one entry of `backends:` each, or the
//! single backend that the flags and the file's top-level keys describe (a
//! fleet of one).
//!
//! ```yaml
//! backends:
//! - name: fargate-use1          # the virtual node's name
//!   provider: aws-ecs           # a kind this binary knows
//!   region: us-east-1           # topology.kubernetes.io/region
//!   zone: us-east-1a            # topology.kubernetes.io/zone
//!   labels: {skylet.io/tier: "1"}
//!   taints: ["skylet.io/burst=true:NoSchedule"]   # default: the provider taint
//!   capacity: cpu=64,memory=256Gi,pods=200        # caps what the backend reports
//!   price: {vcpu-hour: 0.04048, memory-gib-hour: 0.004445, minimum-seconds: 60}
//!   listen: 0.0.0.0:10251       # default: the first backend's port + its index
//!   ecs: {cluster: burst, subnets: [subnet-a]}    # the kind's own section
//! ```

use std::{collections::BTreeMap, net::SocketAddr};

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::{Error, Result};
use crate::backends::{self, Registered};

/// One backend as the config describes it, before validation.
pub(super) struct Entry {
    /// The virtual node's name.
    pub(super) name: String,
    /// Its kind.
    pub(super) kind: &'static dyn Registered,
    /// The kind's section of the file.
    pub(super) section: Option<Value>,
    /// What the entry sets besides the kind's settings.
    pub(super) common: Common,
    /// Whether the command-line flags describe this backend (a fleet of
    /// one given by flags) and the kind reads its flags.
    pub(super) from_flags: bool,
}

/// What every entry may set, besides its kind's section.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(super) struct Common {
    #[serde(default)]
    pub(super) region: Option<String>,
    #[serde(default)]
    pub(super) zone: Option<String>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) taints: Option<Vec<String>>,
    #[serde(default)]
    pub(super) no_taint: Option<bool>,
    #[serde(default)]
    pub(super) capacity: Option<String>,
    #[serde(default)]
    pub(super) price: Option<Value>,
    #[serde(default)]
    pub(super) listen: Option<SocketAddr>,
}

/// The entries of `backends:`, the `i`-th named `backends[i]` in errors.
pub(super) fn entries(list: Vec<Mapping>) -> Result<Vec<Entry>> {
    if list.is_empty() {
        return Err(Error::Backends {
            at: "backends".into(),
            message: "the list is empty; give at least one backend".into(),
        });
    }
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, map) in list.into_iter().enumerate() {
        let at = format!("backends[{i}]");
        let e = entry(&at, map)?;
        if !names.insert(e.name.clone()) {
            return Err(Error::Backends {
                at,
                message: format!("the name {:?} is taken by an earlier backend", e.name),
            });
        }
        out.push(e);
    }
    Ok(out)
}

fn entry(at: &str, mut map: Mapping) -> Result<Entry> {
    let bad = |message: String| Error::Backends {
        at: at.to_owned(),
        message,
    };
    let text = |map: &mut Mapping, key: &str| -> Result<String> {
        match map.remove(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(bad(format!("{key} must be a string"))),
            None => Err(bad(format!("{key} is missing"))),
        }
    };
    let name = text(&mut map, "name")?;
    let provider = text(&mut map, "provider")?;
    let kind = backends::kind(&provider).ok_or_else(|| {
        bad(format!(
            "provider {provider:?} is not a backend of this binary; one of {}",
            backends::names().join(", ")
        ))
    })?;
    let section = map.remove(kind.section());
    for other in backends::KINDS {
        if other.section() != kind.section() && map.contains_key(other.section()) {
            return Err(bad(format!(
                "has a `{}` section but its provider is {provider}",
                other.section()
            )));
        }
    }
    let common: Common =
        serde_yaml_ng::from_value(Value::Mapping(map)).map_err(|e| bad(format!("{name}: {e}")))?;
    Ok(Entry {
        name,
        kind,
        section,
        common,
        from_flags: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<Entry>> {
        entries(serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn entries_take_their_kind_section_and_common_keys() {
        let e = parse(
            "- {name: a, provider: mock, region: eu, labels: {skylet.io/tier: '1'}, mock: {start-latency: 1}}\n\
             - {name: b, provider: mock, price: {vcpu-hour: 0.04, memory-gib-hour: 0.004}}\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].name.as_str(), e[0].kind.name()), ("a", "mock"));
        assert!(e[0].section.is_some() && e[1].section.is_none());
        assert_eq!(e[0].common.region.as_deref(), Some("eu"));
        assert!(e[1].common.price.is_some());
    }

    #[test]
    fn bad_entries_are_named() {
        for (yaml, needle) in [
            ("[]", "empty"),
            ("- {provider: mock}", "backends[0]: name is missing"),
            ("- {name: a, provider: gce}", "not a backend"),
            (
                "- {name: a, provider: mock}\n- {name: a, provider: mock}",
                "backends[1]: the name \"a\" is taken",
            ),
            (
                "- {name: a, provider: mock, ecs: {cluster: c}}",
                "has a `ecs` section",
            ),
            ("- {name: a, provider: mock, regoin: eu}", "regoin"),
        ] {
            let err = match parse(yaml) {
                Ok(_) => panic!("{yaml} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }
}
