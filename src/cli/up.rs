//! `kbin up`, `kbin down`, `kbin status`: run the generated node(s) of this machine (see
//! [`crate::up`] for what is installed where and who supervises).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::Context;
use crate::error::with_hint;
use crate::ui;
use crate::up::{self, Supervisor, UpError};

/// Arguments of `kbin up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The cluster directory (`kbin gen cluster --out`)
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// Bring up this node [default: every node whose address is this machine's]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler only
    #[arg(long)]
    pub control_plane_only: bool,

    /// Image archives to import into containerd (k8s.io namespace) before the kubelet starts:
    /// a .tar file, or a directory of them (the pause image the tree names, at least)
    #[arg(long, value_name = "DIR|FILE")]
    pub images: Option<PathBuf>,

    /// Wait at most this many seconds for each step [default: per component, 60 to 180]
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,

    /// Who runs the components
    #[arg(long, value_enum, default_value_t = Supervisor::Auto)]
    pub supervisor: Supervisor,
}

/// Arguments of `kbin down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// Stop this node [default: every node `kbin up` started here]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Also delete etcd's data and the kubelet's state (/var/lib/kubelet)
    #[arg(long)]
    pub purge: bool,

    /// Seconds between SIGTERM and SIGKILL
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub grace: u64,

    /// Who runs the components
    #[arg(long, value_enum, default_value_t = Supervisor::Auto)]
    pub supervisor: Supervisor,
}

/// Arguments of `kbin status`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the node(s) run and every component that was \
started is running and passes its check; 3 when one of them has exited, failed or is not \
healthy, or when nothing runs; 1 on an error (no cluster tree, unknown node)."
)]
pub struct StatusArgs {
    /// The cluster directory
    #[arg(long, value_name = "DIR", default_value = "cluster")]
    pub out: PathBuf,

    /// Only this node
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,

    /// Who runs the components
    #[arg(long, value_enum, default_value_t = Supervisor::Auto)]
    pub supervisor: Supervisor,
}

/// A hint for each kind of failure; a failed step also prints its log tail first.
fn explain(out: &std::path::Path, e: UpError) -> anyhow::Error {
    let dir = out.display();
    let hint = match &e {
        UpError::Spec { .. } | UpError::NoTree { .. } => Some(format!(
            "generate the tree first: kbin gen cluster --out {dir}"
        )),
        UpError::NoLocalNode { .. } => {
            Some("name the node to run here: kbin up --node NAME".into())
        }
        UpError::Step(f) => {
            let (log, tail, next) = (&f.log, &f.tail, &f.next);
            if !tail.is_empty() {
                ui::say(&format!("last {} lines of {}:", tail.len(), log.display()));
                for l in tail {
                    ui::say(&format!("  | {l}"));
                }
            }
            Some(format!(
                "look further: {next}; see every component: kbin status --out {dir}; stop what runs: kbin down --out {dir}"
            ))
        }
        UpError::Preflight { .. } => Some("fix the problems above, then run kbin up again".into()),
        _ => None,
    };
    match hint {
        Some(h) => with_hint(e.into(), h),
        None => e.into(),
    }
}

pub(super) fn up(ctx: &Context, a: UpArgs) -> anyhow::Result<ExitCode> {
    let opts = up::UpOptions {
        out: a.out.clone(),
        node: a.node,
        control_plane_only: a.control_plane_only,
        images: a.images,
        timeout: a.timeout.map(Duration::from_secs),
        supervisor: a.supervisor,
    };
    let reports = up::up(&opts, &ctx.ui).map_err(|e| explain(&a.out, e))?;
    ctx.ui.report(&reports, |reports| {
        let mut s = String::new();
        for r in reports {
            s.push_str(&format!(
                "node {} is up ({:.1}s, supervised by {:?}):\n",
                r.node, r.seconds, r.supervisor
            ));
            let rows: Vec<Vec<String>> = r
                .steps
                .iter()
                .map(|st| {
                    vec![
                        st.component.clone(),
                        st.action.to_owned(),
                        st.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        format!("{:.1}s", st.seconds),
                    ]
                })
                .collect();
            s.push_str(&ui::table(
                &["COMPONENT", "ACTION", "PID", "HEALTHY AFTER"],
                &rows,
            ));
        }
        s
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn down(ctx: &Context, a: DownArgs) -> anyhow::Result<ExitCode> {
    let opts = up::DownOptions {
        out: a.out.clone(),
        node: a.node,
        purge: a.purge,
        grace: Duration::from_secs(a.grace),
        supervisor: a.supervisor,
    };
    let reports = up::down(&opts, &ctx.ui).map_err(|e| explain(&a.out, e))?;
    ctx.ui.report(&reports, |reports| {
        if reports.is_empty() {
            return "nothing runs: no node of this tree was started by kbin up here\n".into();
        }
        reports
            .iter()
            .map(|r| {
                format!(
                    "node {}: {} component(s) stopped, {} installed file(s) removed{}\n",
                    r.node,
                    r.stopped.len(),
                    r.removed,
                    if r.purged.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", purged {}",
                            r.purged
                                .iter()
                                .map(|p| p.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )
            })
            .collect()
    })?;
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| &r.stopped)
        .filter(|s| s.outcome == up::process::Stopped::Failed)
        .map(|s| {
            format!(
                "{}: {}",
                s.component,
                s.error.as_deref().unwrap_or("unknown cause")
            )
        })
        .collect();
    let refused: Vec<String> = reports
        .iter()
        .flat_map(|r| &r.refused)
        .map(|r| format!("{} ({})", r.path.display(), r.reason))
        .collect();
    if !refused.is_empty() {
        return Err(with_hint(
            anyhow::anyhow!(
                "refused to remove what kbin did not install: {}",
                refused.join("; ")
            ),
            "the state file lists them (DIR/run/NODE/state.json): check who edited it; they stay listed",
        ));
    }
    if !failed.is_empty() {
        return Err(with_hint(
            anyhow::anyhow!("could not stop: {}", failed.join("; ")),
            "see why: systemctl status UNIT; then run kbin down again",
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(ctx: &Context, a: StatusArgs) -> anyhow::Result<ExitCode> {
    let nodes =
        up::status(&a.out, a.node.as_deref(), a.supervisor).map_err(|e| explain(&a.out, e))?;
    ctx.ui.report(&nodes, |nodes| {
        let mut s = String::new();
        for n in nodes {
            s.push_str(&format!("node {}:\n", n.node));
            let rows: Vec<Vec<String>> = n
                .components
                .iter()
                .map(|c| {
                    vec![
                        c.component.clone(),
                        c.state.to_owned(),
                        c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        if c.healthy {
                            "healthy".into()
                        } else {
                            format!("unhealthy: {}", c.health)
                        },
                        c.since.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            s.push_str(&ui::table(
                &["COMPONENT", "STATE", "PID", "HEALTH", "SINCE"],
                &rows,
            ));
        }
        s
    })?;
    Ok(ExitCode::from(if up::healthy(&nodes) {
        up::STATUS_HEALTHY
    } else {
        up::STATUS_NOT_HEALTHY
    }))
}
