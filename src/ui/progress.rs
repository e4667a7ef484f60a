//! Download progress: indicatif bars on a terminal, one line per finished download in a pipe,
//! nothing with `-q` or `--json`.

use std::sync::Arc;
use std::time::Instant;

use super::Ui;
use crate::fetch::Progress;

/// Download progress: indicatif bars on a terminal, one line per artifact in a pipe, nothing
/// with `-q`.
pub struct Bars {
    multi: Option<indicatif::MultiProgress>,
    /// Bytes of every download so far against the sizes announced so far.
    overall: Option<indicatif::ProgressBar>,
    lines: bool,
}

/// One artifact's progress (and its share of the overall bar).
pub struct Bar(
    Option<indicatif::ProgressBar>,
    Option<indicatif::ProgressBar>,
    Instant,
);

impl Progress for Bar {
    fn begin(&self, total: Option<u64>, already: u64) {
        if let Some(b) = &self.0 {
            if let Some(t) = total {
                b.set_length(t);
            }
            b.set_position(already);
        }
        if let Some(o) = &self.1 {
            o.inc_length(total.unwrap_or(0));
            o.inc(already);
        }
    }
    fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
        if let Some(o) = &self.1 {
            o.inc(n);
        }
    }
    fn finish(&self) {}
}

impl Bars {
    /// The bars for one install (an overall bar, then one per download as they start).
    pub fn new(ui: &Ui) -> Self {
        let multi = ui.progress().then(indicatif::MultiProgress::new);
        let overall = multi.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new(0));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4} [{bar:20}]",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            b.set_message("all downloads");
            b
        });
        Bars {
            multi,
            overall,
            lines: ui.lines() && !ui.json(),
        }
    }

    /// A bar for the download of `name`.
    pub fn add(&self, name: &str) -> Arc<Bar> {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::no_length());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4} [{bar:20}]",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            b.set_message(name.to_owned());
            b
        });
        Arc::new(Bar(bar, self.overall.clone(), Instant::now()))
    }

    /// The download of `name` ended: clear its bar; in a pipe, say its size and speed (`size`
    /// is `None` when it failed).
    pub fn finish(&self, bar: &Bar, name: &str, size: Option<u64>) {
        if let Some(b) = &bar.0 {
            b.finish_and_clear();
        }
        if self.lines
            && let Some(size) = size
        {
            let secs = bar.2.elapsed().as_secs_f64().max(1e-3);
            super::say(&format!(
                "downloaded {name} ({:.1} MB, {:.1} MB/s)",
                size as f64 / 1e6,
                size as f64 / 1e6 / secs
            ));
        }
    }

    /// Every download ended: clear the bars.
    pub fn done(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
