//! The life of a run, of its nodes, of their attempts and of approval requests: a status enum
//! and one table of transitions `(status, event) -> status` per machine. Every status change
//! the store makes is spelled from these tables (see `store::spell`): a statement moves rows
//! out of exactly the statuses the table lists for its event, into the status the event leads
//! to. Anything the table does not list cannot happen.
//!
//! Who moves what:
//! - a trigger creates a run RUNNING with its roots READY and the other nodes PENDING;
//! - workers `Claim` READY nodes and record how attempts ended (`Complete`, `Retry`, `Fail`),
//!   which `Release`s dependents, `Skip`s descendants of a failure and ends the run;
//! - people `Approve`, `Reject`, cancel (`Cancel`) and retry from failure (`ResetReady`,
//!   `ResetPending`, run `Retry`);
//! - the rescuer fails attempts of lost workers, expires approvals, finishes runs nobody
//!   finished and releases or skips the nodes of stalled runs, through the same events.
//!
//! The diagrams in README.md are [`mermaid`] of these tables (a test keeps them equal).

use std::fmt;

/// A machine: its statuses, its events, and the table that links them.
pub trait Machine: Sized + 'static {
    type Status: Copy + Eq + fmt::Display + 'static;
    type Event: Copy + Eq + fmt::Debug + 'static;
    /// Name used in diagrams and statement templates (`run`, `node`, ...).
    const NAME: &'static str;
    /// Every legal transition; a `(status, event)` pair not listed is illegal.
    const TABLE: &'static [(Self::Status, Self::Event, Self::Status)];
    /// Statuses a new row starts in.
    const INITIAL: &'static [Self::Status];
    const STATUSES: &'static [Self::Status];
    const EVENTS: &'static [Self::Event];

    /// Where `event` takes a row in `from`, if it may happen there.
    fn next(from: Self::Status, event: Self::Event) -> Option<Self::Status> {
        Self::TABLE
            .iter()
            .find(|(f, e, _)| *f == from && *e == event)
            .map(|(_, _, to)| *to)
    }

    /// The statuses `event` moves rows out of.
    fn sources(event: Self::Event) -> Vec<Self::Status> {
        Self::TABLE
            .iter()
            .filter(|(_, e, _)| *e == event)
            .map(|(from, _, _)| *from)
            .collect()
    }

    /// The status `event` leads to (every event has one; a test checks it).
    fn target(event: Self::Event) -> Self::Status {
        Self::TABLE
            .iter()
            .find(|(_, e, _)| *e == event)
            .map(|(_, _, to)| *to)
            .unwrap_or_else(|| panic!("event {event:?} of {} has no transition", Self::NAME))
    }

    /// Statuses no event leads out of, apart from a reset that starts them over.
    fn is_final(status: Self::Status) -> bool;
}

spelled_enum!(
    /// A run is RUNNING from its trigger until no node can move; it waits while a node waits
    /// for a person. Runs written before runs started RUNNING may still be PENDING.
    RunStatus {
        Pending => "PENDING",
        Running => "RUNNING",
        WaitingApproval => "WAITING_APPROVAL",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
);
stored_text!(RunStatus);

spelled_enum!(
    /// What happens to a run.
    RunEvent {
        /// A node of the run now waits for a person.
        AwaitApproval => "AwaitApproval",
        /// No approval of the run is pending any more.
        Resume => "Resume",
        /// No node can move and none failed.
        Complete => "Complete",
        /// No node can move and one failed.
        Fail => "Fail",
        /// Someone cancelled it.
        Cancel => "Cancel",
        /// Someone retried it from where it stopped.
        Retry => "Retry",
    }
);

/// The run machine.
pub struct Run;

impl Machine for Run {
    type Status = RunStatus;
    type Event = RunEvent;
    const NAME: &'static str = "run";
    const STATUSES: &'static [RunStatus] = RunStatus::ALL;
    const EVENTS: &'static [RunEvent] = RunEvent::ALL;
    const INITIAL: &'static [RunStatus] = &[RunStatus::Running];
    const TABLE: &'static [(RunStatus, RunEvent, RunStatus)] = {
        use RunEvent::*;
        use RunStatus::*;
        &[
            (Running, AwaitApproval, WaitingApproval),
            (WaitingApproval, Resume, Running),
            (Pending, Complete, Completed),
            (Running, Complete, Completed),
            (WaitingApproval, Complete, Completed),
            (Pending, Fail, Failed),
            (Running, Fail, Failed),
            (WaitingApproval, Fail, Failed),
            (Pending, Cancel, Cancelled),
            (Running, Cancel, Cancelled),
            (WaitingApproval, Cancel, Cancelled),
            (Failed, Retry, Running),
            (Cancelled, Retry, Running),
        ]
    };

    fn is_final(status: RunStatus) -> bool {
        matches!(
            status,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl RunStatus {
    /// COMPLETED, FAILED or CANCELLED: the run has a `finishedAt`.
    pub fn is_terminal(self) -> bool {
        Run::is_final(self)
    }
}

spelled_enum!(
    /// PENDING waits on dependencies; READY is a job in the queue; RUNNING is held by a
    /// worker's lease; WAITING_APPROVAL waits for a person. The other four are final.
    NodeStatus {
        Pending => "PENDING",
        Ready => "READY",
        Running => "RUNNING",
        WaitingApproval => "WAITING_APPROVAL",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Skipped => "SKIPPED",
        Cancelled => "CANCELLED",
    }
);
stored_text!(NodeStatus);

spelled_enum!(
    /// What happens to a node.
    NodeEvent {
        /// Its last dependency completed (or the rescuer found them all completed).
        Release => "Release",
        /// A worker took its job.
        Claim => "Claim",
        /// Its attempt succeeded.
        Complete => "Complete",
        /// Its attempt failed with attempts left: the job is due again after a backoff.
        Retry => "Retry",
        /// Its attempt failed with no attempt left, or could never succeed.
        Fail => "Fail",
        /// A node it depends on did not complete.
        Skip => "Skip",
        /// Its run was cancelled.
        Cancel => "Cancel",
        /// It needs a person's approval before it runs.
        AwaitApproval => "AwaitApproval",
        /// A person approved it.
        Approve => "Approve",
        /// A person rejected it.
        Reject => "Reject",
        /// Nobody decided before the request expired.
        Expire => "Expire",
        /// Its run was retried and its dependencies are completed.
        ResetReady => "ResetReady",
        /// Its run was retried and a dependency has to run again first.
        ResetPending => "ResetPending",
    }
);

/// The node machine. A node's job exists exactly while it is READY.
pub struct Node;

impl Machine for Node {
    type Status = NodeStatus;
    type Event = NodeEvent;
    const NAME: &'static str = "node";
    const STATUSES: &'static [NodeStatus] = NodeStatus::ALL;
    const EVENTS: &'static [NodeEvent] = NodeEvent::ALL;
    const INITIAL: &'static [NodeStatus] = &[NodeStatus::Pending, NodeStatus::Ready];
    const TABLE: &'static [(NodeStatus, NodeEvent, NodeStatus)] = {
        use NodeEvent::*;
        use NodeStatus::*;
        &[
            (Pending, Release, Ready),
            (Ready, Claim, Running),
            (Running, Complete, Completed),
            (Running, Retry, Ready),
            (Running, Fail, Failed),
            (Pending, Skip, Skipped),
            (Ready, Skip, Skipped),
            (Pending, Cancel, Cancelled),
            (Ready, Cancel, Cancelled),
            (Running, Cancel, Cancelled),
            (WaitingApproval, Cancel, Cancelled),
            (Pending, AwaitApproval, WaitingApproval),
            (Ready, AwaitApproval, WaitingApproval),
            (WaitingApproval, Approve, Ready),
            (WaitingApproval, Reject, Failed),
            (WaitingApproval, Expire, Failed),
            (Failed, ResetReady, Ready),
            (Skipped, ResetReady, Ready),
            (Cancelled, ResetReady, Ready),
            (Failed, ResetPending, Pending),
            (Skipped, ResetPending, Pending),
            (Cancelled, ResetPending, Pending),
        ]
    };

    fn is_final(status: NodeStatus) -> bool {
        matches!(
            status,
            NodeStatus::Completed
                | NodeStatus::Failed
                | NodeStatus::Skipped
                | NodeStatus::Cancelled
        )
    }
}

impl NodeStatus {
    /// The status a new node starts in: READY when nothing comes before it.
    pub fn initial(dependencies: usize) -> NodeStatus {
        if dependencies == 0 {
            NodeStatus::Ready
        } else {
            NodeStatus::Pending
        }
    }

    /// The node may still move: it is neither done nor failed, skipped or cancelled.
    pub fn is_open(self) -> bool {
        !Node::is_final(self)
    }
}

spelled_enum!(
    /// One attempt of a node (an `agent_runs` row).
    AttemptStatus {
        Running => "RUNNING",
        Completed => "COMPLETED",
        Failed => "FAILED",
    }
);
stored_text!(AttemptStatus);

spelled_enum!(
    /// What ends an attempt.
    AttemptEvent {
        /// The agent's answer was a success.
        Succeed => "Succeed",
        /// The agent failed, timed out, was interrupted or its worker was lost.
        Fail => "Fail",
        /// Its run was cancelled while it ran.
        Abandon => "Abandon",
    }
);

/// The attempt machine: an attempt is opened RUNNING by the claim of its node.
pub struct Attempt;

impl Machine for Attempt {
    type Status = AttemptStatus;
    type Event = AttemptEvent;
    const NAME: &'static str = "attempt";
    const STATUSES: &'static [AttemptStatus] = AttemptStatus::ALL;
    const EVENTS: &'static [AttemptEvent] = AttemptEvent::ALL;
    const INITIAL: &'static [AttemptStatus] = &[AttemptStatus::Running];
    const TABLE: &'static [(AttemptStatus, AttemptEvent, AttemptStatus)] = &[
        (
            AttemptStatus::Running,
            AttemptEvent::Succeed,
            AttemptStatus::Completed,
        ),
        (
            AttemptStatus::Running,
            AttemptEvent::Fail,
            AttemptStatus::Failed,
        ),
        (
            AttemptStatus::Running,
            AttemptEvent::Abandon,
            AttemptStatus::Failed,
        ),
    ];

    fn is_final(status: AttemptStatus) -> bool {
        status != AttemptStatus::Running
    }
}

spelled_enum!(
    /// An approval request: PENDING until decided, expired or cancelled with its run.
    ApprovalStatus {
        Pending => "PENDING",
        Approved => "APPROVED",
        Rejected => "REJECTED",
        Expired => "EXPIRED",
        Cancelled => "CANCELLED",
    }
);
stored_text!(ApprovalStatus);

spelled_enum!(
    /// What closes an approval request.
    ApprovalEvent {
        Approve => "Approve",
        Reject => "Reject",
        Expire => "Expire",
        Cancel => "Cancel",
    }
);

/// The approval machine.
pub struct Approval;

impl Machine for Approval {
    type Status = ApprovalStatus;
    type Event = ApprovalEvent;
    const NAME: &'static str = "approval";
    const STATUSES: &'static [ApprovalStatus] = ApprovalStatus::ALL;
    const EVENTS: &'static [ApprovalEvent] = ApprovalEvent::ALL;
    const INITIAL: &'static [ApprovalStatus] = &[ApprovalStatus::Pending];
    const TABLE: &'static [(ApprovalStatus, ApprovalEvent, ApprovalStatus)] = &[
        (
            ApprovalStatus::Pending,
            ApprovalEvent::Approve,
            ApprovalStatus::Approved,
        ),
        (
            ApprovalStatus::Pending,
            ApprovalEvent::Reject,
            ApprovalStatus::Rejected,
        ),
        (
            ApprovalStatus::Pending,
            ApprovalEvent::Expire,
            ApprovalStatus::Expired,
        ),
        (
            ApprovalStatus::Pending,
            ApprovalEvent::Cancel,
            ApprovalStatus::Cancelled,
        ),
    ];

    fn is_final(status: ApprovalStatus) -> bool {
        status != ApprovalStatus::Pending
    }
}

impl ApprovalEvent {
    /// The event of a decision that closes a request as `status`.
    pub fn closing_as(status: ApprovalStatus) -> Option<ApprovalEvent> {
        ApprovalEvent::ALL
            .iter()
            .copied()
            .find(|e| Approval::target(*e) == status)
    }
}

/// A SQL list literal of statuses: `('PENDING', 'READY')`.
pub fn sql_list<S: fmt::Display>(statuses: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = statuses.into_iter().map(|s| format!("'{s}'")).collect();
    format!("({})", items.join(", "))
}

/// The state diagram of machine `M`, in Mermaid.
pub fn mermaid<M: Machine>() -> String {
    let mut out = String::from("stateDiagram-v2\n");
    for initial in M::INITIAL {
        out.push_str(&format!("    [*] --> {initial}\n"));
    }
    for (from, event, to) in M::TABLE {
        out.push_str(&format!("    {from} --> {to}: {event:?}\n"));
    }
    for status in M::STATUSES.iter().filter(|s| M::is_final(**s)) {
        out.push_str(&format!("    {status} --> [*]\n"));
    }
    out
}

/// The table of machine `M` as Markdown rows: event, from, to.
pub fn markdown<M: Machine>() -> String {
    let mut out = String::from("| event | from | to |\n|---|---|---|\n");
    for event in M::EVENTS {
        let sources: Vec<String> = M::sources(*event).iter().map(|s| s.to_string()).collect();
        out.push_str(&format!(
            "| {event:?} | {} | {} |\n",
            sources.join(", "),
            M::target(*event)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every legal transition, written as a sentence per event: the table must say exactly
    /// this, and every other (status, event) pair must be refused.
    fn expected_nodes() -> BTreeSet<(NodeStatus, NodeEvent, NodeStatus)> {
        use NodeEvent as E;
        use NodeStatus as S;
        let open = [S::Pending, S::Ready, S::Running, S::WaitingApproval];
        let rerun = [S::Failed, S::Skipped, S::Cancelled];
        let mut legal = BTreeSet::new();
        legal.insert((S::Pending, E::Release, S::Ready));
        legal.insert((S::Ready, E::Claim, S::Running));
        legal.insert((S::Running, E::Complete, S::Completed));
        legal.insert((S::Running, E::Retry, S::Ready));
        legal.insert((S::Running, E::Fail, S::Failed));
        for s in [S::Pending, S::Ready] {
            legal.insert((s, E::Skip, S::Skipped));
            legal.insert((s, E::AwaitApproval, S::WaitingApproval));
        }
        for s in open {
            legal.insert((s, E::Cancel, S::Cancelled));
        }
        legal.insert((S::WaitingApproval, E::Approve, S::Ready));
        legal.insert((S::WaitingApproval, E::Reject, S::Failed));
        legal.insert((S::WaitingApproval, E::Expire, S::Failed));
        for s in rerun {
            legal.insert((s, E::ResetReady, S::Ready));
            legal.insert((s, E::ResetPending, S::Pending));
        }
        legal
    }

    fn expected_runs() -> BTreeSet<(RunStatus, RunEvent, RunStatus)> {
        use RunEvent as E;
        use RunStatus as S;
        let active = [S::Pending, S::Running, S::WaitingApproval];
        let mut legal = BTreeSet::new();
        legal.insert((S::Running, E::AwaitApproval, S::WaitingApproval));
        legal.insert((S::WaitingApproval, E::Resume, S::Running));
        for s in active {
            legal.insert((s, E::Complete, S::Completed));
            legal.insert((s, E::Fail, S::Failed));
            legal.insert((s, E::Cancel, S::Cancelled));
        }
        legal.insert((S::Failed, E::Retry, S::Running));
        legal.insert((S::Cancelled, E::Retry, S::Running));
        legal
    }

    /// Walks every (status, event) pair of `M` against `expected`.
    fn walk<M: Machine>(expected: &BTreeSet<(M::Status, M::Event, M::Status)>)
    where
        M::Status: Ord + fmt::Debug,
        M::Event: Ord,
    {
        let mut legal = 0;
        for &status in M::STATUSES {
            for &event in M::EVENTS {
                let want = expected
                    .iter()
                    .find(|(f, e, _)| *f == status && *e == event)
                    .map(|(_, _, to)| *to);
                assert_eq!(
                    M::next(status, event),
                    want,
                    "{} {status} on {event:?}",
                    M::NAME
                );
                legal += usize::from(want.is_some());
            }
        }
        assert_eq!(
            legal,
            M::TABLE.len(),
            "{} lists a transition twice",
            M::NAME
        );
    }

    #[test]
    fn every_node_transition_is_legal_exactly_when_the_table_says_so() {
        walk::<Node>(&expected_nodes());
    }

    #[test]
    fn every_run_transition_is_legal_exactly_when_the_table_says_so() {
        walk::<Run>(&expected_runs());
    }

    #[test]
    fn attempts_and_approvals_only_leave_their_first_status() {
        for &event in AttemptEvent::ALL {
            for &status in AttemptStatus::ALL {
                let next = Attempt::next(status, event);
                assert_eq!(next.is_some(), status == AttemptStatus::Running);
            }
        }
        for &event in ApprovalEvent::ALL {
            for &status in ApprovalStatus::ALL {
                let next = Approval::next(status, event);
                assert_eq!(next.is_some(), status == ApprovalStatus::Pending);
            }
            assert_eq!(
                ApprovalEvent::closing_as(Approval::target(event)),
                Some(event)
            );
        }
    }

    fn one_target_per_event<M: Machine>() {
        for &event in M::EVENTS {
            let targets: Vec<M::Status> = M::TABLE
                .iter()
                .filter(|(_, e, _)| *e == event)
                .map(|(_, _, to)| *to)
                .collect();
            assert!(
                !targets.is_empty(),
                "{} event {event:?} never happens",
                M::NAME
            );
            assert!(
                targets.iter().all(|t| *t == targets[0]),
                "{} event {event:?} leads to several statuses",
                M::NAME
            );
        }
    }

    #[test]
    fn every_event_leads_to_one_status() {
        one_target_per_event::<Run>();
        one_target_per_event::<Node>();
        one_target_per_event::<Attempt>();
        one_target_per_event::<Approval>();
    }

    #[test]
    fn final_statuses_only_leave_by_a_reset() {
        for (from, event, _) in Node::TABLE {
            if Node::is_final(*from) {
                assert!(matches!(
                    event,
                    NodeEvent::ResetReady | NodeEvent::ResetPending
                ));
            }
        }
        for (from, event, _) in Run::TABLE {
            if Run::is_final(*from) {
                assert_eq!(*event, RunEvent::Retry);
            }
        }
        // A node can be cancelled exactly while it is open.
        let cancellable: Vec<NodeStatus> = Node::sources(NodeEvent::Cancel);
        let open: Vec<NodeStatus> = NodeStatus::ALL
            .iter()
            .copied()
            .filter(|s| s.is_open())
            .collect();
        assert_eq!(cancellable, open);
    }

    #[test]
    fn statuses_round_trip_their_stored_spelling() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(*s));
        }
        for s in NodeStatus::ALL {
            assert_eq!(NodeStatus::parse(s.as_str()), Some(*s));
        }
        assert!(RunStatus::parse("SKIPPED").is_none());
        assert_eq!(
            sql_list(Node::sources(NodeEvent::Skip)),
            "('PENDING', 'READY')"
        );
    }

    #[test]
    fn the_readme_shows_the_tables_as_they_are() {
        let readme = include_str!("../../README.md");
        for (what, text) in [
            ("run diagram", mermaid::<Run>()),
            ("node diagram", mermaid::<Node>()),
            ("run table", markdown::<Run>()),
            ("node table", markdown::<Node>()),
        ] {
            assert!(
                readme.contains(&text),
                "README.md's {what} differs from the lifecycle table; it should read:\n{text}"
            );
        }
    }
}
