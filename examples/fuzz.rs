//! Long fuzzing runs of kbin's untrusted-input parsers (issue 15); the harness is
//! `fuzz/harness.rs`, which `tests/fuzz.rs` also runs briefly in CI.
//!
//! ```text
//! cargo run --release --example fuzz -- all --execs 10000000
//! cargo run --release --example fuzz -- archive --secs 60 --seed 7 --jobs 2
//! cargo run --release --example fuzz -- --list
//! ```
//!
//! Prints one line per target (executions, seconds, executions per second) and, as the last
//! line, a JSON summary. Exits 1 when a crash was found (saved under `fuzz/crashes/<target>/`),
//! 3 on a hang.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fuzz TARGET|all [--execs N] [--secs S] [--seed N] [--jobs N] [--list]";
    let mut which = None;
    let mut execs = u64::MAX;
    let mut secs = None;
    let mut seed = 0x6b62_696e_u64;
    let mut jobs = 1;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> u64 {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("error: {what} needs a number\n{usage}");
                    std::process::exit(2)
                })
        };
        match a.as_str() {
            "--execs" => execs = num("--execs"),
            "--secs" => secs = Some(Duration::from_secs(num("--secs"))),
            "--seed" => seed = num("--seed"),
            "--jobs" => jobs = num("--jobs"),
            "--list" => {
                for t in harness::targets() {
                    println!("{}", t.name);
                }
                return;
            }
            "-h" | "--help" => {
                println!("{usage}");
                return;
            }
            t if which.is_none() && !t.starts_with('-') => which = Some(t.to_owned()),
            other => {
                eprintln!("error: unexpected argument {other:?}\n{usage}");
                std::process::exit(2)
            }
        }
    }
    let Some(which) = which else {
        eprintln!("error: name a target or `all`\n{usage}");
        std::process::exit(2)
    };
    if execs == u64::MAX && secs.is_none() {
        eprintln!("error: bound the run with --execs or --secs\n{usage}");
        std::process::exit(2)
    }
    let targets: Vec<_> = harness::targets()
        .into_iter()
        .filter(|t| which == "all" || t.name == which)
        .collect();
    if targets.is_empty() {
        eprintln!("error: no target {which:?} (see --list)");
        std::process::exit(2)
    }
    let mut reports = Vec::new();
    for t in &targets {
        let r = harness::fuzz(t, execs, secs, seed, jobs);
        println!(
            "{:17} {:>11} execs {:>9.1} s {:>9.0} execs/s  crashes {}",
            r.target,
            r.execs,
            r.secs,
            r.execs as f64 / r.secs.max(1e-9),
            r.crashes.len()
        );
        reports.push(r);
    }
    let json: Vec<_> = reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "target": r.target, "execs": r.execs, "secs": r.secs, "seed": seed, "jobs": jobs,
                "crashes": r.crashes.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(json));
    if reports.iter().any(|r| !r.crashes.is_empty()) {
        std::process::exit(1);
    }
}
