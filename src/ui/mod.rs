//! Output: results to stdout as text or `--json`, progress and messages to stderr.
//!
//! Commands build a serializable report and hand it to [`Ui::report`] (what a command that
//! changes things did: hidden by `-q`) or [`Ui::answer`] (what a query was asked for: always
//! shown) with a text renderer, so every reporting command has `--json` for free and the two
//! forms never disagree. `--json` output is printed even with `-q`: it was asked for by name.

pub mod progress;

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// How much to say, and in which form.
#[derive(Debug, Clone)]
pub struct Ui {
    json: bool,
    quiet: bool,
    verbose: u8,
    stderr_tty: bool,
}

impl Ui {
    /// From the global flags; checks whether stderr is a terminal.
    pub fn new(json: bool, quiet: bool, verbose: u8) -> Self {
        Ui {
            json,
            quiet,
            verbose,
            stderr_tty: std::io::stderr().is_terminal(),
        }
    }

    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// `-q` was given.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// The `-v` count.
    pub fn verbose(&self) -> u8 {
        self.verbose
    }

    /// Whether to draw progress bars: a terminal on stderr, and neither `-q` nor `--json`.
    pub fn progress(&self) -> bool {
        self.stderr_tty && !self.quiet && !self.json
    }

    /// Whether to print one line per finished step (not a terminal, not quiet).
    pub fn lines(&self) -> bool {
        !self.stderr_tty && !self.quiet
    }

    /// What a command that changes things did (install, build, gc, gen): [`Ui::answer`], but
    /// in text mode `-q` hides it, since `-q` means nothing but errors.
    pub fn report<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> std::io::Result<()> {
        if self.quiet && !self.json {
            return Ok(());
        }
        self.answer(value, text)
    }

    /// Print `value` as JSON, or `text(value)` as text, on stdout: the product of a query (`env`,
    /// `show-versions`, `certs check`), shown even with `-q` (`eval "$(kbin env -q)"` must
    /// work). A reader that closed the pipe (`kbin … | head -1`) is not an error: the work is
    /// done, nobody wants the rest.
    pub fn answer<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let r = if self.json {
            let s = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
            writeln!(out, "{s}")
        } else {
            let s = text(value);
            out.write_all(s.as_bytes()).and_then(|()| {
                if !s.is_empty() && !s.ends_with('\n') {
                    writeln!(out)?;
                }
                Ok(())
            })
        };
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r,
        }
    }

    /// A status line on stderr (suppressed by `-q` and `--json`).
    pub fn status(&self, msg: impl AsRef<str>) {
        if !self.quiet && !self.json {
            say(msg.as_ref());
        }
    }

    /// A detail line on stderr, shown with `-v`.
    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 && !self.quiet {
            say(msg.as_ref());
        }
    }

    /// A warning on stderr (shown even with `--json`, which keeps stdout clean; hidden by `-q`).
    pub fn warn(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            say(&format!("warning: {}", msg.as_ref()));
        }
    }
}

/// One line on stderr. A closed stderr (`2>&1 | head -1`) must not stop the work half-way: the
/// line is dropped (`eprintln!` would panic).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Render rows as a left-aligned table with a header, two spaces between columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let t = super::table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz\n");
    }
}
