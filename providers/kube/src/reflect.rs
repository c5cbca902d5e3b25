//! Reflection: copies of the home ConfigMaps and Secrets that remote pods
//! reference, owned by those remote pods and kept in sync.
//!
//! A copy lists every remote pod that uses it in its ownerReferences, so the
//! remote cluster's garbage collector deletes it with its last pod. Each
//! sweep compares the home object's resourceVersion with the one last copied
//! and updates the copy when it changed: a ConfigMap change at home reaches
//! the remote copy (and, through the remote kubelet, mounted volumes of
//! running pods) within one sweep interval. Costs one GET of the home
//! object per reflected object per sweep, and remote calls only for what
//! changed (counted per sweep, `crate::calls`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{ConfigMap, Pod, Secret},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, Client, Resource, api::PostParams};
use serde::{Serialize, de::DeserializeOwned};
use skylet_provider::Result;

use crate::{
    calls::{Calls, op},
    classify,
    translate::{CLUSTER_ID, Context, References},
};

/// Annotation with the home object's `namespace/name`.
pub(crate) const ORIGIN: &str = "skylet.io/origin";
/// Annotation with the home resourceVersion last copied.
pub(crate) const ORIGIN_VERSION: &str = "skylet.io/origin-resource-version";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    ConfigMap,
    Secret,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    home_ns: String,
    remote_ns: String,
    name: String,
}

/// The reflected objects and the home versions last copied.
pub(crate) struct Reflections {
    home: Client,
    remote: Client,
    ctx: Context,
    calls: Calls,
    tracked: Mutex<HashMap<Key, String>>,
}

/// Remote calls made, per operation.
#[derive(Debug, Default)]
struct Tally(BTreeMap<&'static str, u64>);

impl Tally {
    fn add(&mut self, op: &'static str) {
        *self.0.entry(op).or_default() += 1;
    }

    fn get(&self, op: &'static str) -> u64 {
        self.0.get(op).copied().unwrap_or(0)
    }
}

/// What differs between ConfigMaps and Secrets.
trait Reflected:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The remote calls on this kind (`crate::calls::op`).
    const READ: &'static str;
    const CREATE: &'static str;
    const REPLACE: &'static str;

    /// Copies the payload of `from` into `self`.
    fn copy_payload(&mut self, from: &Self);
}

impl Reflected for ConfigMap {
    const READ: &'static str = op::READ_CONFIG_MAP;
    const CREATE: &'static str = op::CREATE_CONFIG_MAP;
    const REPLACE: &'static str = op::REPLACE_CONFIG_MAP;

    fn copy_payload(&mut self, from: &Self) {
        self.data = from.data.clone();
        self.binary_data = from.binary_data.clone();
    }
}

impl Reflected for Secret {
    const READ: &'static str = op::READ_SECRET;
    const CREATE: &'static str = op::CREATE_SECRET;
    const REPLACE: &'static str = op::REPLACE_SECRET;

    fn copy_payload(&mut self, from: &Self) {
        self.data = from.data.clone();
        self.type_ = from.type_.clone();
    }
}

fn owner(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    }
}

impl Reflections {
    pub(crate) fn new(home: Client, remote: Client, ctx: Context, calls: Calls) -> Self {
        Self {
            home,
            remote,
            ctx,
            calls,
            tracked: Mutex::default(),
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Copies what `refs` names from `home_ns` to `remote_ns`, adding `pod` as an owner.
    pub(crate) async fn reflect(
        &self,
        home_ns: &str,
        remote_ns: &str,
        refs: &References,
        pod: &Pod,
    ) -> Result<()> {
        for name in &refs.config_maps {
            let key = Key {
                kind: Kind::ConfigMap,
                home_ns: home_ns.into(),
                remote_ns: remote_ns.into(),
                name: name.clone(),
            };
            self.copy::<ConfigMap>(&key, Some(pod), &mut Tally::default())
                .await?;
        }
        for name in &refs.secrets {
            let key = Key {
                kind: Kind::Secret,
                home_ns: home_ns.into(),
                remote_ns: remote_ns.into(),
                name: name.clone(),
            };
            self.copy::<Secret>(&key, Some(pod), &mut Tally::default())
                .await?;
        }
        Ok(())
    }

    /// Brings every copy up to date with its home object; returns the
    /// remote calls it made per operation (zeros included).
    pub(crate) async fn sync(&self) -> Vec<(&'static str, u64)> {
        let keys: Vec<Key> = self.tracked().keys().cloned().collect();
        let mut tally = Tally::default();
        for key in keys {
            let r = match key.kind {
                Kind::ConfigMap => self.copy::<ConfigMap>(&key, None, &mut tally).await,
                Kind::Secret => self.copy::<Secret>(&key, None, &mut tally).await,
            };
            if let Err(e) = r {
                tracing::warn!(name = %key.name, namespace = %key.remote_ns, error = %e, "cannot sync a reflected object");
            }
        }
        [
            op::READ_CONFIG_MAP,
            op::REPLACE_CONFIG_MAP,
            op::READ_SECRET,
            op::REPLACE_SECRET,
        ]
        .into_iter()
        .map(|op| (op, tally.get(op)))
        .collect()
    }

    /// Creates or updates the remote copy of one object; with `pod`, adds it
    /// as an owner. Without `pod` (a sync), only copies a changed payload and
    /// forgets copies the remote garbage collector removed.
    async fn copy<K: Reflected>(
        &self,
        key: &Key,
        pod: Option<&Pod>,
        tally: &mut Tally,
    ) -> Result<()> {
        let what = format!("{:?} {}/{}", key.kind, key.home_ns, key.name);
        let home: Api<K> = Api::namespaced(self.home.clone(), &key.home_ns);
        let Some(src) = home
            .get_opt(&key.name)
            .await
            .map_err(|e| classify(&format!("reading home {what}"), e))?
        else {
            // an optional reference to a missing object; nothing to copy
            return Ok(());
        };
        let version = src.meta().resource_version.clone().unwrap_or_default();
        if pod.is_none() && self.tracked().get(key) == Some(&version) {
            return Ok(());
        }
        let remote: Api<K> = Api::namespaced(self.remote.clone(), &key.remote_ns);
        for _attempt in 0..3 {
            tally.add(K::READ);
            let existing = self
                .calls
                .run(K::READ, remote.get_opt(&key.name))
                .await
                .map_err(|e| classify(&format!("reading remote {what}"), e))?;
            let r = match existing {
                None if pod.is_none() => {
                    // its last pod is gone and so is the copy
                    self.tracked().remove(key);
                    return Ok(());
                }
                None => {
                    let mut obj = src.clone();
                    let m = obj.meta_mut();
                    *m = Default::default();
                    m.name = Some(key.name.clone());
                    m.namespace = Some(key.remote_ns.clone());
                    m.labels = Some(BTreeMap::from([(
                        CLUSTER_ID.to_owned(),
                        self.ctx.cluster_id.clone(),
                    )]));
                    m.annotations = Some(BTreeMap::from([
                        (ORIGIN.to_owned(), format!("{}/{}", key.home_ns, key.name)),
                        (ORIGIN_VERSION.to_owned(), version.clone()),
                    ]));
                    m.owner_references = pod.map(|p| vec![owner(p)]);
                    tally.add(K::CREATE);
                    self.calls
                        .run(K::CREATE, remote.create(&PostParams::default(), &obj))
                        .await
                        .map(|_| ())
                }
                Some(mut obj) => {
                    obj.copy_payload(&src);
                    let m = obj.meta_mut();
                    m.annotations
                        .get_or_insert_with(Default::default)
                        .insert(ORIGIN_VERSION.to_owned(), version.clone());
                    if let Some(p) = pod {
                        let owners = m.owner_references.get_or_insert_with(Vec::new);
                        let o = owner(p);
                        if !owners.iter().any(|x| x.uid == o.uid) {
                            owners.push(o);
                        }
                    }
                    tally.add(K::REPLACE);
                    self.calls
                        .run(
                            K::REPLACE,
                            remote.replace(&key.name, &PostParams::default(), &obj),
                        )
                        .await
                        .map(|_| ())
                }
            };
            match r {
                Ok(()) => {
                    self.tracked().insert(key.clone(), version);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue, // raced; read again
                Err(e) => return Err(classify(&format!("copying {what}"), e)),
            }
        }
        Err(skylet_provider::ProviderError::transient(format!(
            "copying {what}: conflicting updates"
        )))
    }
}
