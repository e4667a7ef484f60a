//! SIGINT and SIGTERM during generation: the first one is remembered, so the work stops at the
//! next check and the staged files are dropped before anything is committed; a second one ends
//! the process at once (the user insists).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// Catch SIGINT and SIGTERM from now on (idempotent).
pub fn install() {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // The second signal exits (status 1); the first only sets the flag. Registration
            // fails only for forbidden signals, which these are not.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&flag));
            let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
        }
        flag
    });
}

/// An error if SIGINT or SIGTERM arrived since [`install`].
pub fn check() -> std::io::Result<()> {
    match FLAG.get() {
        Some(f) if f.load(Ordering::SeqCst) => Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted (SIGINT or SIGTERM): nothing was changed",
        )),
        _ => Ok(()),
    }
}
