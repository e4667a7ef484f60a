//! `kbin status`: each component's state, PID, health and start time, and the exit code that
//! tells scripts whether the node is healthy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::check::Checker;
use super::down::nodes_with_state;
use super::process::{self, State};
use super::systemd::systemd_state;
use super::{CheckKind, Supervisor, Tree, UpError, io};

/// One component in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    /// The component.
    pub component: String,
    /// `running`, `exited` (kbin started it and it ended), `failed` (systemd says so),
    /// `done` (a oneshot kbin ran: what it set up stays until `down`) or `not-started`.
    pub state: &'static str,
    /// Its PID.
    pub pid: Option<i32>,
    /// Whether its check passes now.
    pub healthy: bool,
    /// What the check saw, or why it fails.
    pub health: String,
    /// When it was started (RFC 3339).
    pub since: Option<String>,
    /// Its log.
    pub log: Option<PathBuf>,
}

/// `status` of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// The node.
    pub node: String,
    /// Its components in start order.
    pub components: Vec<ComponentStatus>,
}

/// `kbin status`'s exit code when the cluster runs and passes every check.
pub const STATUS_HEALTHY: u8 = 0;
/// `kbin status`'s exit code when a component that was started is not running (exited,
/// failed) or not healthy, or when nothing runs at all. (1 is an error: no tree, no such node.)
pub const STATUS_NOT_HEALTHY: u8 = 3;

/// Whether `nodes` are healthy, as `kbin status`'s exit code tells scripts: at least one
/// component runs, and every component that was started (kbin's state or systemd) runs and
/// passes its check. A component never started here (a worker's, after `--control-plane-only`)
/// does not count.
pub fn healthy(nodes: &[NodeStatus]) -> bool {
    let started: Vec<&ComponentStatus> = nodes
        .iter()
        .flat_map(|n| &n.components)
        .filter(|c| c.state != "not-started")
        .collect();
    !started.is_empty()
        && started
            .iter()
            .all(|c| (c.state == "running" || c.state == "done") && c.healthy)
}

/// `kbin status`: each component's PID, state, health and start time.
pub fn status(
    out: &Path,
    node: Option<&str>,
    supervisor: Supervisor,
) -> Result<Vec<NodeStatus>, UpError> {
    let tree = Tree::load(out)?;
    let supervisor = supervisor.resolve();
    let names = match node {
        Some(n) => vec![n.to_owned()],
        None => {
            let with_state = nodes_with_state(&tree, None);
            if with_state.is_empty() {
                tree.local_nodes(None)?
                    .into_iter()
                    .map(|n| n.name)
                    .collect()
            } else {
                with_state
            }
        }
    };
    let mut all = Vec::new();
    for name in names {
        let Some(node) = tree.spec.node(&name).cloned() else {
            return Err(UpError::UnknownNode {
                dir: out.to_owned(),
                name,
                nodes: tree.node_list(),
            });
        };
        let run_dir = tree.run_dir(&name);
        let state =
            State::load(&run_dir, &name).map_err(io("cannot read", &State::path(&run_dir)))?;
        let steps = tree.steps(&node, false)?;
        let checker = Checker::new(&tree, &node);
        let mut comps = Vec::new();
        for (s, unit) in &steps {
            let p = state.components.get(s.unit);
            let (st, pid) = match supervisor {
                Supervisor::Systemd => systemd_state(s.unit),
                _ if s.check == CheckKind::Oneshot => match state.done.get(s.unit) {
                    Some(_) => ("done", None),
                    None => ("not-started", None),
                },
                _ => match p {
                    Some(p) if p.alive() => ("running", Some(p.pid)),
                    Some(p) => ("exited", Some(p.pid)),
                    None => ("not-started", None),
                },
            };
            let (healthy, health) = if st == "running" || st == "done" {
                let mut notes = Vec::new();
                match checker.probe(s, unit, Duration::from_secs(2), &mut notes) {
                    Ok(h) => (true, h),
                    Err(e) => (false, e),
                }
            } else {
                (false, "not running".to_owned())
            };
            comps.push(ComponentStatus {
                component: s.unit.to_owned(),
                state: st,
                pid,
                healthy,
                health,
                since: p.map(|p| process::rfc3339(p.started)),
                log: p.map(|p| p.log.clone()),
            });
        }
        all.push(NodeStatus {
            node: name,
            components: comps,
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(state: &'static str, healthy: bool) -> ComponentStatus {
        ComponentStatus {
            component: "etcd".into(),
            state,
            pid: None,
            healthy,
            health: String::new(),
            since: None,
            log: None,
        }
    }

    #[test]
    fn status_is_healthy_only_when_something_runs_and_everything_started_passes() {
        let node = |c: Vec<ComponentStatus>| {
            vec![NodeStatus {
                node: "n".into(),
                components: c,
            }]
        };
        assert!(healthy(&node(vec![
            comp("running", true),
            comp("not-started", false)
        ])));
        assert!(
            !healthy(&node(vec![comp("not-started", false)])),
            "nothing runs"
        );
        assert!(!healthy(&node(vec![])));
        assert!(!healthy(&node(vec![
            comp("running", true),
            comp("exited", false)
        ])));
        assert!(!healthy(&node(vec![
            comp("running", true),
            comp("failed", false)
        ])));
        assert!(!healthy(&node(vec![comp("running", false)])));
    }
}
