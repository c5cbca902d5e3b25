//! What to do with a pod now: one pure function of what skylet knows of it,
//! [`decide`], so that the whole life of a pod on a virtual node is one
//! table of cases, tested without a cluster or a backend.
//!
//! | the pod | the backend | skylet's notes | decision |
//! |---|---|---|---|
//! | deleted, object removed by skylet already | any | | [`Decision::Nothing`] (a stale copy from the watch) |
//! | deleted | holds it | not asked to stop | [`Decision::Stop`] |
//! | deleted | holds it, grace period left | asked to stop | [`Decision::AwaitStop`] |
//! | deleted | holds it, grace period over | not asked to kill | [`Decision::Kill`] |
//! | deleted | holds it, grace period over | asked to kill | [`Decision::AwaitStop`] (until the backend confirms) |
//! | deleted | gone | | [`Decision::Finalize`] |
//!
//! A deleted pod is finalized (its object removed) only once the backend
//! no longer reports its instance: never on a delete call's answer alone,
//! never while the backend does not answer. That is what fences a pod that
//! fails over: its replacement may run elsewhere, the old instance is
//! stopped as soon as its backend answers again, and the pod stays
//! Terminating until then.
//! | live, past its `activeDeadlineSeconds` | holds it | not asked to stop | [`Decision::ExceedDeadline`] (stop it, fail the pod) |
//! | live, past its `activeDeadlineSeconds` | does not hold it, or stopping | | [`Decision::ExceedDeadline`] (fail the pod) |
//! | failed `DeadlineExceeded` | any | | [`Decision::Nothing`] (the backend's report of the stop wakes it) |
//! | a DaemonSet's, refused by policy | | | [`Decision::RefuseDaemonSet`] |
//! | live | holds it | | [`Decision::Sync`] (adopts it after a restart) |
//! | finished (Succeeded/Failed) | does not hold it | | [`Decision::Nothing`] |
//! | live | does not hold it | created < [`REPORT_WAIT`] ago | [`Decision::AwaitReport`] |
//! | live | does not hold it | created less than two sweeps ago | [`Decision::ReportCreating`] |
//! | live | does not hold it | never created, or lost long ago | [`Decision::Create`] |

use std::time::Duration;

use jiff::Timestamp;

/// After a create, how long skylet waits for the backend to report the pod
/// before it writes a `ContainerCreating` status; fast backends thus cost one
/// status write per pod instead of two.
pub(crate) const REPORT_WAIT: Duration = Duration::from_secs(1);

/// What skylet knows of a pod when it reconciles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `Some` once the pod is deleted: when its grace period ends.
    pub(crate) deadline: Option<Timestamp>,
    /// A DaemonSet's pod that the node's policy refuses.
    pub(crate) refused_daemonset: bool,
    /// Its phase is Succeeded or Failed.
    pub(crate) finished: bool,
    /// The backend reported it and has not reported it gone.
    pub(crate) in_backend: bool,
    /// skylet removed its object already.
    pub(crate) removed: bool,
    /// skylet asked the backend to stop it.
    pub(crate) stop_requested: bool,
    /// skylet asked the backend to stop it at once (grace period over).
    pub(crate) kill_requested: bool,
    /// How long ago skylet asked the backend to create it.
    pub(crate) created_ago: Option<Duration>,
    /// Its service-account token is due for a refresh.
    pub(crate) token_due: bool,
    /// The backend sweep interval.
    pub(crate) sweep_interval: Duration,
    /// When its `activeDeadlineSeconds` end (counted from its start time).
    pub(crate) active_deadline: Option<Timestamp>,
    /// It failed with reason `DeadlineExceeded` already.
    pub(crate) failed_by_deadline: bool,
}

/// The reason of a pod failed by its `activeDeadlineSeconds`, as the
/// kubelet says it.
pub(crate) const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing until the pod changes.
    Nothing,
    /// Fail the pod: DaemonSet pods are refused on this node.
    RefuseDaemonSet,
    /// Write the status the backend reports (this adopts a pod the backend
    /// already runs), refresh its token if `refresh_token`.
    Sync {
        /// The token is due.
        refresh_token: bool,
    },
    /// The create was moments ago: look again once the backend had time to
    /// report it.
    AwaitReport(Duration),
    /// Created but not reported yet: say `ContainerCreating`, look again
    /// after a sweep.
    ReportCreating,
    /// Ask the backend to run it (again: creates are idempotent).
    Create,
    /// Ask the backend to stop it within its grace period.
    Stop,
    /// Its grace period is over and the backend still holds it: ask the
    /// backend to stop it at once.
    Kill,
    /// The backend is stopping it: look again in a while (a report of the
    /// backend wakes the pod sooner).
    AwaitStop(Duration),
    /// The backend confirmed the instance is gone: remove the pod object.
    Finalize,
    /// Its `activeDeadlineSeconds` are over: fail it (reason
    /// [`DEADLINE_EXCEEDED`]), and ask the backend to stop it if `stop`.
    ExceedDeadline {
        /// The backend holds it and was not asked to stop it yet.
        stop: bool,
    },
}

/// What to do with a pod now, given `facts` at `now`.
pub(crate) fn decide(facts: &Facts, now: Timestamp) -> Decision {
    if let Some(deadline) = facts.deadline {
        return decide_deleted(facts, deadline, now);
    }
    if let Some(end) = facts.active_deadline
        && now >= end
        && (!facts.finished || facts.failed_by_deadline)
    {
        let stop = facts.in_backend && !facts.stop_requested;
        if stop || !facts.finished {
            return Decision::ExceedDeadline { stop };
        }
        return Decision::Nothing;
    }
    if facts.refused_daemonset {
        return Decision::RefuseDaemonSet;
    }
    if facts.in_backend {
        return Decision::Sync {
            refresh_token: facts.token_due,
        };
    }
    if facts.finished {
        return Decision::Nothing;
    }
    match facts.created_ago {
        Some(ago) if ago < REPORT_WAIT => Decision::AwaitReport(REPORT_WAIT - ago),
        // created long ago and no sweep has seen it since: create again
        // (idempotent), as the kubelet restarts a container that vanished
        Some(ago) if ago < 2 * facts.sweep_interval + REPORT_WAIT => Decision::ReportCreating,
        _ => Decision::Create,
    }
}

fn decide_deleted(facts: &Facts, deadline: Timestamp, now: Timestamp) -> Decision {
    if facts.removed {
        return Decision::Nothing;
    }
    if facts.in_backend && !facts.stop_requested {
        return Decision::Stop;
    }
    if !facts.in_backend {
        return Decision::Finalize;
    }
    if now < deadline {
        // look again within a second, and right at the deadline
        let left = now.duration_until(deadline).as_millis().clamp(100, 1000);
        return Decision::AwaitStop(Duration::from_millis(u64::try_from(left).unwrap_or(1000)));
    }
    if !facts.kill_requested {
        return Decision::Kill;
    }
    Decision::AwaitStop(facts.sweep_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Facts {
        Facts {
            deadline: None,
            refused_daemonset: false,
            finished: false,
            in_backend: false,
            removed: false,
            stop_requested: false,
            kill_requested: false,
            created_ago: None,
            token_due: false,
            sweep_interval: Duration::from_secs(10),
            active_deadline: None,
            failed_by_deadline: false,
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn the_life_of_a_pod() {
        let secs = Duration::from_secs;
        let deleted = |f: Facts| Facts {
            deadline: Some(t(30)),
            ..f
        };
        let cases: &[(&str, Facts, Timestamp, Decision)] = &[
            ("new pod: create", live(), t(0), Decision::Create),
            (
                "created 300 ms ago: wait for the report",
                Facts {
                    created_ago: Some(Duration::from_millis(300)),
                    ..live()
                },
                t(0),
                Decision::AwaitReport(Duration::from_millis(700)),
            ),
            (
                "created 5 s ago, not reported: ContainerCreating",
                Facts {
                    created_ago: Some(secs(5)),
                    ..live()
                },
                t(0),
                Decision::ReportCreating,
            ),
            (
                "created, lost for two sweeps: create again",
                Facts {
                    created_ago: Some(secs(22)),
                    ..live()
                },
                t(0),
                Decision::Create,
            ),
            (
                "the backend holds it: sync (adopts after a restart)",
                Facts {
                    in_backend: true,
                    ..live()
                },
                t(0),
                Decision::Sync {
                    refresh_token: false,
                },
            ),
            (
                "token due",
                Facts {
                    in_backend: true,
                    token_due: true,
                    ..live()
                },
                t(0),
                Decision::Sync {
                    refresh_token: true,
                },
            ),
            (
                "finished and gone from the backend: nothing",
                Facts {
                    finished: true,
                    ..live()
                },
                t(0),
                Decision::Nothing,
            ),
            (
                "a refused DaemonSet pod fails",
                Facts {
                    refused_daemonset: true,
                    in_backend: true,
                    ..live()
                },
                t(0),
                Decision::RefuseDaemonSet,
            ),
            (
                "deleted, in the backend: stop",
                deleted(Facts {
                    in_backend: true,
                    ..live()
                }),
                t(0),
                Decision::Stop,
            ),
            (
                "deleted, stopping, grace left: look again within a second",
                deleted(Facts {
                    in_backend: true,
                    stop_requested: true,
                    ..live()
                }),
                t(0),
                Decision::AwaitStop(secs(1)),
            ),
            (
                "deleted, gone from the backend: finalize",
                deleted(Facts {
                    stop_requested: true,
                    ..live()
                }),
                t(0),
                Decision::Finalize,
            ),
            (
                "deleted, never in the backend: finalize",
                deleted(live()),
                t(0),
                Decision::Finalize,
            ),
            (
                "deleted, grace over, still in the backend: kill",
                deleted(Facts {
                    in_backend: true,
                    stop_requested: true,
                    ..live()
                }),
                t(31),
                Decision::Kill,
            ),
            (
                "killed, not confirmed gone: wait, never finalize",
                deleted(Facts {
                    in_backend: true,
                    stop_requested: true,
                    kill_requested: true,
                    ..live()
                }),
                t(3600),
                Decision::AwaitStop(secs(10)),
            ),
            (
                "deleted while the backend is down (never asked): stop, not finalize",
                deleted(Facts {
                    in_backend: true,
                    ..live()
                }),
                t(3600),
                Decision::Stop,
            ),
            (
                "deleted and removed by skylet already: nothing",
                deleted(Facts {
                    removed: true,
                    in_backend: true,
                    ..live()
                }),
                t(0),
                Decision::Nothing,
            ),
            (
                "running past its active deadline: stop it and fail it",
                Facts {
                    in_backend: true,
                    active_deadline: Some(t(10)),
                    ..live()
                },
                t(10),
                Decision::ExceedDeadline { stop: true },
            ),
            (
                "running within its active deadline: sync",
                Facts {
                    in_backend: true,
                    active_deadline: Some(t(10)),
                    ..live()
                },
                t(9),
                Decision::Sync {
                    refresh_token: false,
                },
            ),
            (
                "past its deadline, asked to stop: fail it, no second stop",
                Facts {
                    in_backend: true,
                    stop_requested: true,
                    active_deadline: Some(t(10)),
                    ..live()
                },
                t(20),
                Decision::ExceedDeadline { stop: false },
            ),
            (
                "past its deadline, never created: fail it",
                Facts {
                    active_deadline: Some(t(10)),
                    ..live()
                },
                t(20),
                Decision::ExceedDeadline { stop: false },
            ),
            (
                "failed by its deadline, stopping: nothing more",
                Facts {
                    in_backend: true,
                    stop_requested: true,
                    finished: true,
                    failed_by_deadline: true,
                    active_deadline: Some(t(10)),
                    ..live()
                },
                t(20),
                Decision::Nothing,
            ),
            (
                "succeeded before its deadline: the deadline does not apply",
                Facts {
                    in_backend: true,
                    finished: true,
                    active_deadline: Some(t(10)),
                    ..live()
                },
                t(20),
                Decision::Sync {
                    refresh_token: false,
                },
            ),
            (
                "deleted past its deadline: the deletion goes on",
                deleted(Facts {
                    in_backend: true,
                    active_deadline: Some(t(-10)),
                    ..live()
                }),
                t(0),
                Decision::Stop,
            ),
            (
                "deletion wins over a DaemonSet refusal",
                deleted(Facts {
                    refused_daemonset: true,
                    ..live()
                }),
                t(0),
                Decision::Finalize,
            ),
        ];
        for (what, facts, now, want) in cases {
            assert_eq!(decide(facts, *now), *want, "{what}");
        }
    }
}
