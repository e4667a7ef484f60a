//! Error rendering and hints.
//!
//! Modules return their own `thiserror` enums; commands wrap them with context. A [`Hint`] can be
//! attached anywhere in the chain (`.hint("…")`): [`render`] prints the chain as `error:` and
//! `Caused by:` lines and every hint as a `hint:` line naming the next step.

use std::fmt;
use std::io::Write;

/// An error with a suggestion for what to do next. It displays as the error it wraps and is
/// transparent in the chain, so the hint never shows up as a cause.
#[derive(Debug)]
pub struct Hinted {
    hint: String,
    inner: anyhow::Error,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.inner, f)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.chain().nth(1)
    }
}

/// Attach a hint to a result's error.
pub trait WithHint<T> {
    /// Attach `hint` to the error, if any.
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T>;
}

impl<T, E> WithHint<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| with_hint(e.into(), hint))
    }
}

/// Wrap `err` so that [`render`] prints `hint` after it.
pub fn with_hint(err: anyhow::Error, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        hint: hint.into(),
        inner: err,
    })
}

/// The hints carried by an error chain, outermost first.
pub fn hints(err: &anyhow::Error) -> Vec<String> {
    err.chain()
        .filter_map(|e| e.downcast_ref::<Hinted>())
        .map(|h| h.hint.clone())
        .collect()
}

/// Print `err` as `error: …`, one `Caused by: …` per source, then `hint: …` lines.
pub fn render(err: &anyhow::Error, out: &mut dyn Write) {
    let mut causes = err.chain();
    if let Some(first) = causes.next() {
        let _ = writeln!(out, "error: {first}");
    }
    for cause in causes {
        let _ = writeln!(out, "  Caused by: {cause}");
    }
    for hint in hints(err) {
        let _ = writeln!(out, "hint: {hint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_prints_chain_then_hints() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("inner"));
        let err = err
            .map_err(|e| e.context("middle"))
            .hint("do the thing")
            .map_err(|e| e.context("outer"))
            .unwrap_err();
        let mut buf = Vec::new();
        render(&err, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "error: outer\n  Caused by: middle\n  Caused by: inner\nhint: do the thing\n"
        );
    }
}
