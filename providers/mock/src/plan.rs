//! What the containers of a resolved pod will run: a [`Plan`] per container,
//! its program (from its command and args) and its sandbox (the resolved
//! environment, and the files of its volume mounts by path).

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
    sync::{Arc, LazyLock, Mutex, Weak},
};

use bytes::Bytes;
use k8s_openapi::api::core::v1::Container;
use skylet_provider::ResolvedPod;
use skylet_toysh::{Program, Sandbox};

use crate::probe::{Probes, Restart};

/// One container to start.
pub(crate) struct Plan {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) program: Program,
    /// Environment and files, shared with exec.
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) init: bool,
    /// Its probes (app containers only).
    pub(crate) probes: Probes,
    /// The pod's restart policy (app containers).
    pub(crate) restart: Restart,
}

/// The plans of a pod's containers: init containers first, in order.
pub(crate) fn plans(rp: &ResolvedPod) -> Vec<Plan> {
    let spec = rp.pod.spec.clone().unwrap_or_default();
    let restart = Restart::of(spec.restart_policy.as_deref());
    let init = spec.init_containers.unwrap_or_default();
    init.into_iter()
        .map(|c| (true, c))
        .chain(spec.containers.into_iter().map(|c| (false, c)))
        .map(|(init, c)| plan(rp, c, init, restart))
        .collect()
}

fn plan(rp: &ResolvedPod, c: Container, init: bool, restart: Restart) -> Plan {
    let mut words: Vec<String> = c.command.clone().unwrap_or_default();
    words.extend(c.args.clone().unwrap_or_default());
    let env = rp
        .env
        .get(&c.name)
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| (k.clone(), v.as_str().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Plan {
        program: Program::parse(&words),
        sandbox: shared(Sandbox {
            env,
            files: files(rp, &c),
        }),
        probes: if init {
            Probes::default()
        } else {
            Probes::of(&c)
        },
        restart,
        image: c.image.unwrap_or_default(),
        name: c.name,
        init,
    }
}

/// `sandbox`, shared with every container that has the same one.
///
/// Containers of pods made from one template see the same environment
/// (the service links of their namespace, the same variables) and no
/// files of their own, so 10,000 such pods held 10,000 copies of one
/// sandbox (7 MB, heaptrack; BENCHMARKS.md). Sandboxes are never changed
/// once made, so identical ones are one: a pool of weak references by hash,
/// pruned of the dead ones as it doubles.
fn shared(sandbox: Sandbox) -> Arc<Sandbox> {
    /// The live sandboxes by hash, and the hasher.
    type Pool = (RandomState, HashMap<u64, Weak<Sandbox>>);
    static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(Mutex::default);
    let mut pool = POOL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (hasher, sandboxes) = &mut *pool;
    let hash = hasher.hash_one(&sandbox);
    if let Some(same) = sandboxes.get(&hash).and_then(Weak::upgrade)
        && *same == sandbox
    {
        return same;
    }
    let made = Arc::new(sandbox);
    sandboxes.insert(hash, Arc::downgrade(&made));
    if sandboxes.len() >= 1024 && sandboxes.len().is_power_of_two() {
        sandboxes.retain(|_, s| s.strong_count() > 0);
    }
    made
}

/// The files a container sees: every file of a resolved volume under its
/// mount path (only those under `subPath` for a mount with one).
fn files(rp: &ResolvedPod, c: &Container) -> BTreeMap<String, Bytes> {
    let mut files = BTreeMap::new();
    for m in c.volume_mounts.iter().flatten() {
        for f in rp.volumes.get(&m.name).into_iter().flatten() {
            let sub = m.sub_path.as_deref().unwrap_or("");
            let rel = f
                .path
                .strip_prefix(sub)
                .unwrap_or(&f.path)
                .trim_start_matches('/');
            if !sub.is_empty() && !f.path.starts_with(sub) {
                continue;
            }
            let path = if rel.is_empty() {
                m.mount_path.clone()
            } else {
                format!("{}/{}", m.mount_path.trim_end_matches('/'), rel)
            };
            files.insert(path, f.value.data.clone());
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(value: &str) -> Sandbox {
        Sandbox {
            env: vec![("KUBERNETES_SERVICE_HOST".into(), value.into())],
            files: BTreeMap::new(),
        }
    }

    #[test]
    fn identical_sandboxes_are_one_and_different_ones_are_not() {
        let a = shared(sandbox("10.0.0.1"));
        let b = shared(sandbox("10.0.0.1"));
        let c = shared(sandbox("10.0.0.2"));
        assert!(Arc::ptr_eq(&a, &b), "the same sandbox is shared");
        assert!(!Arc::ptr_eq(&a, &c), "a different one is not");
        assert_eq!(c.env[0].1, "10.0.0.2");
        drop((a, b));
        let again = shared(sandbox("10.0.0.1"));
        assert_eq!(
            again.env[0].1, "10.0.0.1",
            "made again once the others are gone"
        );
    }
}
