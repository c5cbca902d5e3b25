//! Names and tags skylet gives ACI container groups, and how it reads them
//! back.
//!
//! | resource | name | found again by |
//! |---|---|---|
//! | container group | `<namespace>-<name>` (sanitized, at most 46 chars) `-<16 hex of SHA-256(uid)>` | tags [`TAG_POD_UID`], [`TAG_NODE`] |
//! | container | the Kubernetes container name | itself |
//!
//! Group names follow ARM's rule for container groups: 1-63 characters,
//! lowercase letters, digits and `-`, neither first nor last, never two in a
//! row ([`is_valid_name`]). The readable part tells a human which pod a
//! group runs; the hash of the UID keeps groups of pods that share a
//! namespace and name (a StatefulSet pod re-created) apart. 64 bits of hash
//! make a collision between the groups of one resource group negligible
//! (about 3·10⁻⁸ with a million groups); skylet still matches a group to its
//! pod by the UID tag, never by the name alone.
//!
//! Azure tag names may not contain `< > % & \ ? /`, hence dashes where the
//! ECS backend uses `skylet.io/...`.

use std::collections::BTreeMap;

use ring::digest;
use skylet_provider::PodRef;

/// Group tag: the pod's UID (how a group is matched to its pod).
pub const TAG_POD_UID: &str = "skylet-pod-uid";
/// Group tag: the pod's namespace.
pub const TAG_POD_NAMESPACE: &str = "skylet-pod-namespace";
/// Group tag: the pod's name.
pub const TAG_POD_NAME: &str = "skylet-pod-name";
/// Group tag: the node name (which skylet owns the group).
pub const TAG_NODE: &str = "skylet-node";

/// Longest container group (and container) name ARM accepts.
pub const MAX_NAME: usize = 63;

/// Hex digits of the UID hash in a group name.
const HASH_LEN: usize = 16;

/// Longest readable part: room for `-` and the hash.
const READABLE_MAX: usize = MAX_NAME - 1 - HASH_LEN;

/// Whether `name` is a valid ACI container group or container name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Lowercase letters and digits of `s`, other runs as one `-`, no `-` at
/// either end, at most `max` characters.
fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        if out.len() == max {
            break;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The container group name of a pod: deterministic, unique by UID, valid.
pub fn group_name(pod: &PodRef) -> String {
    let hash: String = digest::digest(&digest::SHA256, pod.uid.as_bytes())
        .as_ref()
        .iter()
        .take(HASH_LEN / 2)
        .map(|b| format!("{b:02x}"))
        .collect();
    let readable = sanitize(&format!("{}-{}", pod.namespace, pod.name), READABLE_MAX);
    if readable.is_empty() {
        format!("pod-{hash}")
    } else {
        format!("{readable}-{hash}")
    }
}

/// The tags of a pod's group.
pub fn tags(pod: &PodRef, node: &str) -> BTreeMap<String, String> {
    [
        (TAG_POD_UID, pod.uid.as_str()),
        (TAG_POD_NAMESPACE, pod.namespace.as_str()),
        (TAG_POD_NAME, pod.name.as_str()),
        (TAG_NODE, node),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The pod a group runs, from its tags; `None` without a UID tag (not
/// skylet's group).
pub fn pod_ref_of(tags: &BTreeMap<String, String>) -> Option<PodRef> {
    let uid = tags.get(TAG_POD_UID).filter(|u| !u.is_empty())?;
    let get = |k: &str| tags.get(k).cloned().unwrap_or_default();
    Some(PodRef {
        namespace: get(TAG_POD_NAMESPACE),
        name: get(TAG_POD_NAME),
        uid: uid.clone(),
    })
}

/// Whether a group with these tags belongs to `node`.
pub fn owned_by(tags: &BTreeMap<String, String>, node: &str) -> bool {
    tags.get(TAG_NODE).is_some_and(|n| n == node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_readable_and_keyed_by_uid() {
        let p = PodRef::new(
            "shop",
            "web-7c5d4f9b8-x2kzp",
            "0d3c4a5e-8f61-4b1c-9a2e-1f0e2d3c4b5a",
        );
        let n = group_name(&p);
        assert!(n.starts_with("shop-web-7c5d4f9b8-x2kzp-"), "{n}");
        assert!(is_valid_name(&n), "{n}");
        assert_eq!(group_name(&p), n, "deterministic");
        let again = PodRef {
            uid: "another-uid".into(),
            ..p.clone()
        };
        assert_ne!(group_name(&again), n, "a re-created pod gets another group");
        let dotted = group_name(&PodRef::new("kube-system", "Web.Example--1", "u"));
        assert!(dotted.starts_with("kube-system-web-example-1-"), "{dotted}");
        let long = group_name(&PodRef::new("n".repeat(63), "p".repeat(253), "u"));
        assert_eq!(long.len(), MAX_NAME);
        assert!(is_valid_name(&long));
        assert!(group_name(&PodRef::new("", "", "u")).starts_with("pod-"));
    }

    #[test]
    fn tags_round_trip() {
        let p = PodRef::new("shop", "web-1", "uid-1");
        let t = tags(&p, "burst-1");
        assert_eq!(pod_ref_of(&t), Some(p));
        assert!(owned_by(&t, "burst-1") && !owned_by(&t, "other"));
        for k in t.keys() {
            assert!(
                !k.contains(['<', '>', '%', '&', '\\', '?', '/']),
                "{k} is not a valid Azure tag name"
            );
        }
        assert_eq!(pod_ref_of(&BTreeMap::new()), None);
        let foreign = BTreeMap::from([(TAG_POD_UID.to_owned(), String::new())]);
        assert_eq!(pod_ref_of(&foreign), None);
    }

    #[test]
    fn validity_rule() {
        for ok in ["a", "a-b", "0", &"a".repeat(63)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn every_group_name_is_valid(ns in "\\PC{0,70}", name in "\\PC{0,260}", uid in "\\PC{0,40}") {
            let n = group_name(&PodRef::new(ns, name, uid));
            prop_assert!(is_valid_name(&n), "{}", n);
        }

        #[test]
        fn distinct_uids_give_distinct_names(ns in "[a-z0-9-]{1,63}", name in "[a-z0-9.-]{1,253}", a in "[a-f0-9-]{36}", b in "[a-f0-9-]{36}") {
            prop_assume!(a != b);
            prop_assert_ne!(group_name(&PodRef::new(&ns, &name, a)), group_name(&PodRef::new(&ns, &name, b)));
        }
    }
}
