//! What the provider remembers between calls: its tasks by ARN (from the
//! last sweep and from RunTask), the templates it registered, and the task
//! definitions and secrets it owns; and what the core sees of them.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use skylet_provider::{BackendPod, PodRef};

use crate::status::Observation;

/// The provider's memory, behind one mutex.
#[derive(Default)]
pub(crate) struct State {
    /// Tasks by ARN.
    pub(crate) tasks: HashMap<String, TaskEntry>,
    /// Tasks without skylet's tags.
    pub(crate) foreign: HashSet<String>,
    /// Whether a full listing was taken by this process.
    pub(crate) listed: bool,
    /// Pods whose stopped task the core has deleted.
    pub(crate) released: HashSet<String>,
    /// Registered templates by key.
    pub(crate) templates: HashMap<String, Template>,
    /// Task definitions of this node, by ARN.
    pub(crate) owned_tds: HashMap<String, Owned>,
    /// Secrets of this node, by template key.
    pub(crate) owned_secrets: HashMap<String, Owned>,
    /// Whether existing task definitions and secrets were looked up.
    pub(crate) discovered: bool,
}

/// One task of the node, as last described.
#[derive(Clone, Debug)]
pub(crate) struct TaskEntry {
    /// The pod it runs.
    pub(crate) pod: PodRef,
    /// Its task definition.
    pub(crate) td_arn: String,
    /// ECS container names.
    pub(crate) containers: Vec<String>,
    /// What the last description said; final once the task has stopped.
    pub(crate) observation: Observation,
    /// Whether it has stopped.
    pub(crate) stopped: bool,
    /// When it was last described.
    pub(crate) seen: Instant,
    /// `createdAt` (seconds), to tell the first of duplicates.
    pub(crate) created_at: i64,
}

/// A registered template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    /// Its task definition.
    pub(crate) td_arn: String,
}

/// A task definition or secret of this node.
#[derive(Clone, Debug)]
pub(crate) struct Owned {
    /// For task definitions: the template key; for secrets: the ARN.
    pub(crate) id: String,
    /// When a live task last used it.
    pub(crate) last_used: Instant,
}

impl State {
    /// Entries of a pod, live ones first, then newest.
    pub(crate) fn entries(&self, uid: &str) -> Vec<(String, TaskEntry)> {
        let mut v: Vec<_> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.pod.uid == uid)
            .map(|(a, e)| (a.clone(), e.clone()))
            .collect();
        v.sort_by_key(|(_, e)| (e.stopped, std::cmp::Reverse(e.seen)));
        v
    }
}

/// The pods of a state: per pod its live task (else its newest), minus
/// finished and released ones.
pub(crate) fn listing_of(st: &State) -> Vec<BackendPod> {
    let mut best: HashMap<&str, &TaskEntry> = HashMap::new();
    for e in st.tasks.values() {
        if !matches!(e.observation, Observation::Pod(_))
            || (e.stopped && st.released.contains(&e.pod.uid))
        {
            continue;
        }
        let better = best.get(e.pod.uid.as_str()).is_none_or(|b| {
            (e.stopped, std::cmp::Reverse(e.seen)) < (b.stopped, std::cmp::Reverse(b.seen))
        });
        if better {
            best.insert(&e.pod.uid, e);
        }
    }
    best.values()
        .filter_map(|e| match &e.observation {
            Observation::Pod(bp) => Some(BackendPod::clone(bp)),
            _ => None,
        })
        .collect()
}

/// Live tasks beyond the first of each pod.
pub(crate) fn duplicates_of(st: &State) -> Vec<String> {
    let mut live: HashMap<&str, Vec<(&String, &TaskEntry)>> = HashMap::new();
    for (arn, e) in &st.tasks {
        if !e.stopped && matches!(e.observation, Observation::Pod(_)) {
            live.entry(&e.pod.uid).or_default().push((arn, e));
        }
    }
    let mut out = Vec::new();
    for (_, mut v) in live {
        if v.len() > 1 {
            // keep the one created first (then by ARN, for stability)
            v.sort_by_key(|(a, e)| (e.created_at, (*a).clone()));
            out.extend(v.into_iter().skip(1).map(|(a, _)| a.clone()));
        }
    }
    out
}
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) fn entry(uid: &str, td: &str, stopped: bool, obs: Option<Observation>) -> TaskEntry {
        let pod = PodRef::new("ns", uid, uid);
        TaskEntry {
            observation: obs.unwrap_or_else(|| {
                Observation::Pod(Box::new(BackendPod {
                    pod: pod.clone(),
                    status: Default::default(),
                }))
            }),
            pod,
            td_arn: td.into(),
            containers: vec![],
            stopped,
            seen: Instant::now(),
            created_at: 0,
        }
    }

    #[test]
    fn listing_hides_finished_and_released_tasks_and_prefers_live_ones() {
        let mut st = State::default();
        st.tasks.insert("t1".into(), entry("a", "td1", false, None));
        st.tasks.insert("t0".into(), entry("a", "td1", true, None));
        st.tasks.insert(
            "t2".into(),
            entry(
                "b",
                "td1",
                true,
                Some(Observation::Finished(PodRef::new("ns", "b", "b"))),
            ),
        );
        st.tasks.insert("t3".into(), entry("c", "td1", true, None));
        st.released.insert("c".into());
        let l = listing_of(&st);
        assert_eq!(
            l.iter().map(|b| b.pod.uid.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert!(duplicates_of(&st).is_empty());
        let mut later = entry("a", "td1", false, None);
        later.created_at = 10;
        st.tasks.insert("t4".into(), later);
        assert_eq!(
            duplicates_of(&st),
            ["t4"],
            "the later of two live tasks is the duplicate"
        );
    }
}
