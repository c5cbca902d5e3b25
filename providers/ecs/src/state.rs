//! What the provider remembers between calls: its tasks by ARN (from the
//! last sweep and from RunTask), the templates it registered, and the task
//! definitions and secrets it owns; and what the core sees of them.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use aws_sdk_ecs::types::Task;
use skylet_provider::{BackendPod, PodRef};

use crate::status::{self, Observation};

/// How long a task that RunTask returned is kept in the cache even when a
/// listing lacks it (ListTasks is eventually consistent).
const FRESH: Duration = Duration::from_secs(60);

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
    /// Whether it runs with ECS Exec (`enableExecuteCommand`).
    pub(crate) exec: bool,
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

impl TaskEntry {
    /// The entry of task `t`, which runs `pod` from task definition
    /// `td_arn`, as `observation` says.
    pub(crate) fn new(t: &Task, pod: PodRef, td_arn: String, observation: Observation) -> Self {
        Self {
            pod,
            td_arn,
            containers: t
                .containers()
                .iter()
                .filter_map(|c| c.name().map(str::to_owned))
                .collect(),
            stopped: status::is_stopped(t),
            observation,
            seen: Instant::now(),
            created_at: t
                .created_at()
                .map_or(i64::MAX, aws_smithy_types::DateTime::secs),
            exec: t.enable_execute_command(),
        }
    }
}

impl State {
    /// Of the ARNs a listing returned, those worth describing: each once,
    /// neither foreign nor known to have stopped (a stopped task never
    /// changes).
    pub(crate) fn to_describe(&self, arns: Vec<String>) -> Vec<String> {
        let mut seen = HashSet::new();
        arns.into_iter()
            .filter(|a| seen.insert(a.clone()))
            .filter(|a| !self.foreign.contains(a) && !self.tasks.get(a).is_some_and(|e| e.stopped))
            .collect()
    }

    /// Records what DescribeTasks said: an entry per task of skylet's, the
    /// ARN of any other.
    pub(crate) fn record(&mut self, described: &[Task]) {
        for t in described {
            let Some(arn) = t.task_arn() else { continue };
            let obs = status::observe(t);
            let pod = match &obs {
                Observation::Pod(bp) => bp.pod.clone(),
                Observation::Finished(p) => p.clone(),
                Observation::Foreign => {
                    self.foreign.insert(arn.to_owned());
                    continue;
                }
            };
            let td_arn = t.task_definition_arn().unwrap_or_default().to_owned();
            self.tasks
                .insert(arn.to_owned(), TaskEntry::new(t, pod, td_arn, obs));
        }
    }

    /// After a listing that began at `started` and returned `listed`:
    /// forgets the tasks ECS no longer lists (unless just created) and the
    /// released pods without a task left, and counts the state as listed.
    pub(crate) fn forget_unlisted(&mut self, listed: &HashSet<String>, started: Instant) {
        self.tasks
            .retain(|arn, e| listed.contains(arn) || e.seen >= started || e.seen.elapsed() < FRESH);
        self.foreign.retain(|a| listed.contains(a));
        let uids: HashSet<String> = self.tasks.values().map(|e| e.pod.uid.clone()).collect();
        self.released.retain(|u| uids.contains(u));
        self.listed = true;
    }

    /// Remembers a registered template: its task definition and, with
    /// secret values, its secret.
    pub(crate) fn remember_template(
        &mut self,
        key: &str,
        td_arn: &str,
        secret_arn: Option<String>,
    ) {
        let now = Instant::now();
        self.templates.insert(
            key.to_owned(),
            Template {
                td_arn: td_arn.to_owned(),
            },
        );
        self.owned_tds.insert(
            td_arn.to_owned(),
            Owned {
                id: key.to_owned(),
                last_used: now,
            },
        );
        if let Some(s) = secret_arn {
            self.owned_secrets.insert(
                key.to_owned(),
                Owned {
                    id: s,
                    last_used: now,
                },
            );
        }
    }

    /// The task definition of template `key`, if registered, marked used.
    pub(crate) fn template(&mut self, key: &str) -> Option<String> {
        let arn = self.templates.get(key).map(|t| t.td_arn.clone())?;
        if let Some(o) = self.owned_tds.get_mut(&arn) {
            o.last_used = Instant::now();
        }
        Some(arn)
    }

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
            exec: false,
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

    /// A described task; with a pod UID, tagged as skylet tags its tasks.
    fn described(arn: &str, uid: Option<&str>, last: &str) -> Task {
        use aws_sdk_ecs::types::{Container, Tag};
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let mut t = Task::builder()
            .task_arn(arn)
            .task_definition_arn("td1")
            .last_status(last)
            .desired_status(last)
            .created_at(aws_smithy_types::DateTime::from_secs(5))
            .containers(Container::builder().name("web").build());
        if let Some(uid) = uid {
            t = t
                .tags(tag(crate::names::TAG_POD_UID, uid))
                .tags(tag(crate::names::TAG_POD_NAMESPACE, "ns"))
                .tags(tag(crate::names::TAG_POD_NAME, uid));
        }
        t.build()
    }

    #[test]
    fn a_sweep_records_described_tasks_and_forgets_unlisted_ones() {
        let mut st = State::default();
        st.record(&[
            described("t1", Some("a"), "RUNNING"),
            described("t2", Some("b"), "STOPPED"),
            described("f", None, "RUNNING"),
        ]);
        assert_eq!(st.foreign, HashSet::from(["f".to_owned()]));
        let t1 = &st.tasks["t1"];
        assert_eq!(
            (t1.pod.uid.as_str(), t1.td_arn.as_str(), t1.created_at),
            ("a", "td1", 5)
        );
        assert_eq!(t1.containers, ["web"]);
        assert!(!t1.stopped && st.tasks["t2"].stopped);
        let arns = ["t1", "t2", "t1", "f", "t3"].map(str::to_owned).to_vec();
        assert_eq!(
            st.to_describe(arns),
            ["t1", "t3"],
            "once each; neither foreign nor stopped"
        );
        // a listing without t2 and f, begun after both were seen
        let mut old = entry("c", "td1", false, None);
        old.seen = Instant::now().checked_sub(FRESH * 2).unwrap();
        st.tasks.insert("t0".into(), old);
        st.released.insert("c".into());
        st.released.insert("a".into());
        st.forget_unlisted(&HashSet::from(["t1".to_owned()]), Instant::now());
        assert!(st.listed);
        assert!(st.foreign.is_empty());
        assert!(
            st.tasks.contains_key("t2"),
            "a task seen a moment ago stays"
        );
        assert!(!st.tasks.contains_key("t0"), "an old unlisted task goes");
        assert_eq!(
            st.released,
            HashSet::from(["a".to_owned()]),
            "a released pod without tasks is forgotten"
        );
    }

    #[test]
    fn templates_are_remembered_with_their_secret_and_marked_used() {
        let mut st = State::default();
        assert_eq!(st.template("k"), None);
        st.remember_template("k", "td-arn", Some("secret-arn".into()));
        assert_eq!(st.owned_secrets["k"].id, "secret-arn");
        assert_eq!(st.owned_tds["td-arn"].id, "k");
        let before = st.owned_tds["td-arn"].last_used;
        assert_eq!(st.template("k").as_deref(), Some("td-arn"));
        assert!(st.owned_tds["td-arn"].last_used >= before);
    }
}
