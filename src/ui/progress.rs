//! Download progress that tells the truth: indicatif bars on a terminal, one line per event in
//! a pipe (a retry, a finished download), nothing with `-q` or `--json`.
//!
//! Two rules the drawing keeps:
//! - a bar whose total is unknown (no answer yet, or a server that sends no length) is drawn
//!   as bytes so far and a spinner, never as a bar, so it can never look complete; the
//!   "all downloads" bar has a total only once every download under way has announced one;
//! - a failed attempt that will be retried says so on its line: the reason, attempt n of m,
//!   and when the next try is. A retry restates the totals, which replace (not add to) the
//!   ones it announced before.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::Ui;
use crate::fetch::{Progress, Retry};

const KNOWN: &str =
    "{msg:40!} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4} [{bar:20}]";
const UNKNOWN: &str = "{msg:40!} {bytes:>10}/?          {bytes_per_sec:>12}      {spinner}";
const RETRYING: &str = "{msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the templates are valid")
        .progress_chars("=> ")
}

/// What one download has announced: its total (if known) and its bytes so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// Whether the transfer has begun (a response arrived).
    pub begun: bool,
    /// The total the server announced.
    pub total: Option<u64>,
    /// Bytes so far (on disk before, plus received).
    pub pos: u64,
}

/// The sum of every download's [`Share`]: what the "all downloads" bar shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overall {
    /// Downloads started (a bar exists for them).
    pub downloads: usize,
    /// Of those, how many have announced a total.
    pub known: usize,
    /// The sum of the announced totals.
    pub total: u64,
    /// Bytes so far, over all downloads.
    pub pos: u64,
}

impl Overall {
    /// Replace `old` by `new` in the sums (a retry restates a download's share).
    pub fn replace(&mut self, old: Share, new: Share) {
        if old.total.is_some() {
            self.known -= 1;
            self.total -= old.total.unwrap_or(0);
        }
        if new.total.is_some() {
            self.known += 1;
            self.total += new.total.unwrap_or(0);
        }
        self.pos = self.pos - old.pos + new.pos;
    }

    /// The total to draw: only when every download under way has announced one. Until then
    /// the sum is a lie (a dead mirror announces nothing, and 0 of 0 draws as complete).
    pub fn drawn_total(&self) -> Option<u64> {
        (self.downloads > 0 && self.known == self.downloads).then_some(self.total)
    }
}

/// Set `bar` to `total` and `pos`, as a bar when the total is known, else as a spinner.
fn draw(bar: &ProgressBar, total: Option<u64>, pos: u64) {
    match total {
        Some(t) => {
            bar.set_style(style(KNOWN));
            bar.set_length(t);
        }
        None => {
            bar.set_style(style(UNKNOWN));
            bar.unset_length();
        }
    }
    bar.set_position(pos);
}

/// The progress of every download of one install.
pub struct Bars {
    multi: Option<indicatif::MultiProgress>,
    overall: Option<(ProgressBar, Mutex<Overall>)>,
    lines: bool,
}

/// One download's progress (and its share of the "all downloads" bar).
pub struct Bar {
    name: String,
    bar: Option<ProgressBar>,
    bars: Arc<Bars>,
    share: Mutex<Share>,
    started: Instant,
}

impl Bar {
    /// Its share now.
    pub fn share(&self) -> Share {
        *self.share.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, new: Share) {
        let old = {
            let mut s = self.share.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *s, new)
        };
        if let Some(b) = &self.bar {
            if !old.begun || old.total != new.total || old.pos > new.pos {
                b.set_message(self.name.clone());
                draw(b, new.total, new.pos);
            } else {
                b.inc(new.pos - old.pos);
            }
        }
        self.bars.update(old, new);
    }
}

impl Progress for Bar {
    fn begin(&self, total: Option<u64>, already: u64) {
        self.set(Share {
            begun: true,
            total,
            pos: already,
        });
    }

    fn inc(&self, n: u64) {
        let s = self.share();
        self.set(Share {
            pos: s.pos + n,
            ..s
        });
    }

    fn finish(&self) {}

    fn retrying(&self, retry: &Retry) {
        let line = format!("{}: {retry}", self.name);
        if let Some(b) = &self.bar {
            b.set_style(style(RETRYING));
            b.set_message(line.clone());
            // The next begin redraws the bar from scratch.
            let mut s = self.share.lock().unwrap_or_else(PoisonError::into_inner);
            s.begun = false;
        }
        if self.bars.lines {
            super::say(&line);
        }
    }
}

impl Bars {
    /// The bars for one install; each download adds its own with [`Bars::add`].
    pub fn new(ui: &Ui) -> Arc<Self> {
        let multi = ui.progress().then(indicatif::MultiProgress::new);
        let overall = multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::no_length());
            draw(&b, None, 0);
            b.set_message("all downloads");
            (b, Mutex::new(Overall::default()))
        });
        Arc::new(Bars {
            multi,
            overall,
            lines: ui.lines() && !ui.json(),
        })
    }

    /// A bar for the download of `name`, drawn with an unknown total until the server answers.
    pub fn add(self: &Arc<Self>, name: &str) -> Arc<Bar> {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::no_length());
            draw(&b, None, 0);
            b.set_message(name.to_owned());
            b
        });
        if let Some((_, o)) = &self.overall {
            o.lock().unwrap_or_else(PoisonError::into_inner).downloads += 1;
            self.update(Share::default(), Share::default());
        }
        Arc::new(Bar {
            name: name.to_owned(),
            bar,
            bars: self.clone(),
            share: Mutex::new(Share::default()),
            started: Instant::now(),
        })
    }

    fn update(&self, old: Share, new: Share) {
        if let Some((b, o)) = &self.overall {
            let mut o = o.lock().unwrap_or_else(PoisonError::into_inner);
            let was = o.drawn_total();
            o.replace(old, new);
            if was != o.drawn_total() {
                draw(b, o.drawn_total(), o.pos);
            } else {
                b.set_position(o.pos);
            }
        }
    }

    /// The download of `bar` ended: clear it; in a pipe, say its size and speed (`size` is
    /// `None` when it failed or nothing was downloaded).
    pub fn finish(&self, bar: &Bar, size: Option<u64>) {
        if let Some(b) = &bar.bar {
            b.finish_and_clear();
        }
        if self.lines
            && let Some(size) = size
        {
            let secs = bar.started.elapsed().as_secs_f64().max(1e-3);
            super::say(&format!(
                "downloaded {} ({:.1} MB, {:.1} MB/s)",
                bar.name,
                size as f64 / 1e6,
                size as f64 / 1e6 / secs
            ));
        }
    }

    /// A [`Progress`] for a request with no bar of its own (a checksum file): only its retries
    /// are shown, as a line above the bars or in the pipe.
    pub fn retries(self: &Arc<Self>, name: &str) -> Retries {
        Retries {
            name: name.to_owned(),
            bars: self.clone(),
        }
    }

    /// Every download ended: clear the bars.
    pub fn done(&self) {
        if let Some((b, _)) = &self.overall {
            b.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

/// See [`Bars::retries`].
pub struct Retries {
    name: String,
    bars: Arc<Bars>,
}

impl Progress for Retries {
    fn begin(&self, _: Option<u64>, _: u64) {}
    fn inc(&self, _: u64) {}
    fn finish(&self) {}
    fn retrying(&self, retry: &Retry) {
        let line = format!("{}: {retry}", self.name);
        if let Some(m) = &self.bars.multi {
            let _ = m.println(&line);
        } else if self.bars.lines {
            super::say(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(total: Option<u64>, pos: u64) -> Share {
        Share {
            begun: true,
            total,
            pos,
        }
    }

    #[test]
    fn the_overall_bar_has_no_total_until_every_download_announced_one() {
        let mut o = Overall::default();
        assert_eq!(
            o.drawn_total(),
            None,
            "nothing started: no total, not 0 of 0"
        );
        o.downloads = 2;
        assert_eq!(o.drawn_total(), None, "a dead mirror announces nothing");
        o.replace(Share::default(), share(Some(100), 0));
        assert_eq!(o.drawn_total(), None, "one of two is still unknown");
        o.replace(Share::default(), share(None, 30));
        assert_eq!(
            o.drawn_total(),
            None,
            "a server with no length stays unknown"
        );
        o.replace(share(None, 30), share(Some(50), 30));
        assert_eq!(o.drawn_total(), Some(150));
        assert_eq!(o.pos, 30);
    }

    #[test]
    fn a_retry_restates_a_share_instead_of_adding_to_it() {
        let mut o = Overall {
            downloads: 1,
            ..Overall::default()
        };
        o.replace(Share::default(), share(Some(100), 0));
        o.replace(share(Some(100), 0), share(Some(100), 40));
        // The retry resumes at 40 of the same 100.
        o.replace(share(Some(100), 40), share(Some(100), 40));
        assert_eq!((o.drawn_total(), o.pos), (Some(100), 40));
    }

    #[test]
    fn a_bar_with_an_unknown_total_is_not_drawn_complete() {
        let b = ProgressBar::hidden();
        draw(&b, None, 0);
        assert_eq!(b.length(), None);
        assert!(!b.is_finished());
        draw(&b, Some(10), 4);
        assert_eq!((b.length(), b.position()), (Some(10), 4));
        draw(&b, None, 4);
        assert_eq!(
            b.length(),
            None,
            "a restated unknown total forgets the old one"
        );
    }

    #[test]
    fn a_retry_line_names_the_reason_the_attempt_and_the_wait() {
        let r = Retry {
            reason: "cannot connect to http://127.0.0.1:1/x".into(),
            attempt: 2,
            attempts: 5,
            wait: std::time::Duration::from_millis(1500),
        };
        assert_eq!(
            r.to_string(),
            "cannot connect to http://127.0.0.1:1/x; attempt 2 of 5 failed, next try in 2 s"
        );
        let soon = Retry {
            wait: std::time::Duration::from_millis(250),
            ..r
        };
        assert!(soon.to_string().ends_with("next try in 250 ms"), "{soon}");
    }
}
