//! The documentation cannot drift: every fenced shell block of README.md and docs/*.md is run
//! here, as written, by bash, against a fake upstream on 127.0.0.1 (tests/common/upstream.rs:
//! KBIN_MIRROR and KBIN_MANIFEST set, so `kbin install 1.30` works as typed), with KBIN_HOME,
//! HOME and the working directory in a temporary directory. The blocks of one file run in order
//! in one working directory (a page is a story: install, then generate, then check).
//!
//! The convention (docs/TESTING.md says it for writers):
//! - a block whose info string is `sh`, `bash` or `shell` is a script; in a `console` block the
//!   lines starting with `$ ` are the commands and the rest is sample output, not compared;
//! - a block that cannot run here starts with the line `# not-run: <reason>` (root, real
//!   upstream binaries, the internet, `cargo install`, ...); it is not run, but the reason must
//!   be there;
//! - every `kbin` command of every shell block, run or not, must parse with kbin's own command
//!   line definition (`kbin::cli::Cli`): a misspelled subcommand or flag fails here;
//! - a `kbin` command in any other block (```text, ```toml, a bare ```) is refused: it would
//!   escape both checks.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;

/// The marker that opens a block the test does not run.
const NOT_RUN: &str = "# not-run:";

/// A fenced code block.
#[derive(Debug, Clone)]
struct Block {
    /// `README.md:12` (where the fence opens).
    at: String,
    /// The first word of the info string (`sh`, `console`, `toml`, or empty).
    lang: String,
    /// The lines between the fences.
    body: Vec<String>,
}

impl Block {
    fn is_shell(&self) -> bool {
        matches!(self.lang.as_str(), "sh" | "bash" | "shell" | "console")
    }

    /// `Some(reason)` for a block marked not to run (the reason may be empty: an error).
    fn not_run(&self) -> Option<&str> {
        let first = self.body.iter().find(|l| !l.trim().is_empty())?;
        first.trim().strip_prefix(NOT_RUN).map(str::trim)
    }

    /// The shell text to run: the whole body, or a console block's `$ ` lines (with their
    /// `\` continuations).
    fn script(&self) -> String {
        if self.lang != "console" {
            return self.body.join("\n") + "\n";
        }
        let mut out = String::new();
        let mut continued = false;
        for l in &self.body {
            if let Some(cmd) = l.strip_prefix("$ ") {
                out.push_str(cmd);
            } else if continued {
                out.push_str(l);
            } else {
                continue;
            }
            out.push('\n');
            continued = l.trim_end().ends_with('\\');
        }
        out
    }
}

/// Every fenced block of `text` (a Markdown file called `name`).
fn blocks(name: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        match &mut open {
            None => {
                let Some(ch @ ('`' | '~')) = t.chars().next() else {
                    continue;
                };
                let run = t.len() - t.trim_start_matches(ch).len();
                if run < 3 {
                    continue;
                }
                let lang = t[run..]
                    .trim()
                    .split(|c: char| c.is_whitespace() || c == '{')
                    .next()
                    .unwrap_or("")
                    .to_string();
                open = Some((
                    t[..run].to_string(),
                    Block {
                        at: format!("{name}:{}", i + 1),
                        lang,
                        body: Vec::new(),
                    },
                ));
            }
            Some((fence, b)) => {
                if t.starts_with(fence.as_str())
                    && t.trim_start_matches(&fence[..1]).trim().is_empty()
                {
                    out.push(b.clone());
                    open = None;
                } else {
                    b.body.push(line.to_string());
                }
            }
        }
    }
    if let Some((_, b)) = open {
        out.push(Block {
            lang: "unclosed".into(),
            ..b
        });
    }
    out
}

/// Shell words of one logical line, with `$(` `)` `&&` `||` `;` `|` `>` `<` as words of their
/// own and quotes removed. Enough for documentation, not a shell.
fn words(line: &str) -> Vec<String> {
    let line = line.replace("\"$(", " $( ").replace(")\"", " ) ");
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => flush(&mut cur, &mut out),
            (None, '#') if cur.is_empty() => break,
            (None, '$') if chars.peek() == Some(&'(') => {
                chars.next();
                flush(&mut cur, &mut out);
                out.push("$(".into());
            }
            (None, '&' | '|' | ';' | '>' | '<' | '(' | ')') => {
                flush(&mut cur, &mut out);
                let mut op = c.to_string();
                if let Some(&n) = chars.peek()
                    && ((c == '&' || c == '|' || c == '>') && n == c)
                {
                    op.push(n);
                    chars.next();
                }
                out.push(op);
            }
            (None, c) => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// The arguments of every `kbin` command in `script` (after `kbin`), each with its line.
fn kbin_commands(script: &str) -> Vec<Vec<String>> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for l in script.lines() {
        match l.trim_end().strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(l);
                logical.push(std::mem::take(&mut cur));
            }
        }
    }
    logical.push(cur);
    let mut out = Vec::new();
    for line in logical {
        let mut command_position = true;
        let mut args: Option<Vec<String>> = None;
        let mut skip_next = false;
        for w in words(&line) {
            if skip_next {
                skip_next = false;
                continue;
            }
            let op = matches!(w.as_str(), "&&" | "||" | ";" | "|" | "&" | "$(" | "(" | ")");
            let redirect = matches!(w.as_str(), ">" | ">>" | "<");
            if op || redirect {
                if let Some(a) = args.take() {
                    out.push(a);
                }
                command_position = op;
                skip_next = redirect;
                continue;
            }
            if let Some(a) = &mut args {
                a.push(w);
                continue;
            }
            if !command_position {
                continue;
            }
            let assignment = w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            });
            if assignment || w == "sudo" || w == "eval" {
                continue;
            }
            if w == "kbin" || w.ends_with("/kbin") {
                args = Some(Vec::new());
            }
            command_position = false;
        }
        if let Some(a) = args {
            out.push(a);
        }
    }
    out
}

/// The inline code spans of `text` outside fenced blocks that are kbin commands (`kbin …`), with
/// line breaks inside a span made spaces.
fn inline_commands(text: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            prose.push('\n');
            continue;
        }
        if !fenced {
            prose.push_str(line);
        }
        prose.push('\n');
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.replace('\n', " "))
        .filter(|span| span.starts_with("kbin "))
        .collect()
}

/// Check a command written in prose, where placeholders (`VERSION…`, `[--json]`, `up|down`)
/// keep clap from parsing it: each subcommand named must exist, and each `--flag` on the
/// command it follows (or among the global options).
fn check_inline(span: &str) -> Result<(), String> {
    use clap::CommandFactory as _;
    let root = kbin::cli::Cli::command();
    let global: Vec<String> = root
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut cmd = &root;
    let mut path = vec!["kbin".to_string()];
    for raw in span.split_whitespace().skip(1) {
        let t = raw
            .trim_start_matches('[')
            .trim_end_matches([']', '…', '.', ',']);
        if let Some(flag) = t.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap_or(flag);
            let known = ["help", "version"].contains(&flag)
                || global.iter().any(|g| g == flag)
                || cmd.get_arguments().any(|a| a.get_long() == Some(flag));
            if !known {
                return Err(format!("`{}` has no option --{flag}", path.join(" ")));
            }
        } else if !t.starts_with('-') && cmd.has_subcommands() {
            let mut next = None;
            for name in t.split(['|', '/']) {
                match cmd.find_subcommand(name) {
                    Some(c) => next = next.or(Some(c)),
                    None => return Err(format!("`{}` has no subcommand {name}", path.join(" "))),
                }
            }
            path.push(t.to_string());
            cmd = next.expect("split yields at least one name");
        }
    }
    Ok(())
}

/// Everything wrong with the blocks, by the convention above; empty when all is well.
fn check(blocks: &[Block]) -> Vec<String> {
    let mut errors = Vec::new();
    for b in blocks {
        if b.lang == "unclosed" {
            errors.push(format!("{}: the fence is never closed", b.at));
            continue;
        }
        if !b.is_shell() {
            if let Some(l) = b.body.iter().find(|l| {
                let t = l
                    .trim_start()
                    .trim_start_matches("$ ")
                    .trim_start_matches("sudo ");
                t.starts_with("kbin ")
            }) {
                errors.push(format!(
                    "{}: a kbin command in a ```{} block ({l:?}): make it ```sh so the docs test runs or checks it",
                    b.at, b.lang
                ));
            }
            continue;
        }
        match b.not_run() {
            Some(reason) if reason.split_whitespace().count() < 2 => errors.push(format!(
                "{}: `{NOT_RUN}` needs its reason (what the block needs that the test cannot give)",
                b.at
            )),
            _ => {}
        }
        if b.not_run().is_none() && b.body.iter().any(|l| l.contains("not-run")) {
            errors.push(format!(
                "{}: `{NOT_RUN} reason` goes on the block's first line",
                b.at
            ));
        }
        for args in kbin_commands(&b.script()) {
            let argv = std::iter::once("kbin".to_string()).chain(args.iter().cloned());
            if let Err(e) = kbin::cli::Cli::try_parse_from(argv) {
                use clap::error::ErrorKind as K;
                if !matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
                    let first = e.to_string();
                    let first = first.lines().next().unwrap_or("");
                    errors.push(format!("{}: `kbin {}`: {first}", b.at, args.join(" ")));
                }
            }
        }
    }
    errors
}

/// README.md, then docs/*.md in name order, each with its blocks.
fn pages() -> Vec<(String, Vec<Block>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .iter()
        .map(|p| {
            let name = p.strip_prefix(root).unwrap().display().to_string();
            let text = std::fs::read_to_string(p).unwrap();
            let b = blocks(&name, &text);
            (name, b)
        })
        .collect()
}

#[test]
fn every_kbin_command_in_the_docs_parses_and_every_skipped_block_says_why() {
    let pages = pages();
    let all: Vec<Block> = pages.iter().flat_map(|(_, b)| b.clone()).collect();
    let shell = all.iter().filter(|b| b.is_shell()).count();
    let commands: usize = all
        .iter()
        .filter(|b| b.is_shell())
        .map(|b| kbin_commands(&b.script()).len())
        .sum();
    assert!(
        shell > 20,
        "only {shell} shell blocks found: is the extractor broken?"
    );
    let mut errors = check(&all);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inline = 0;
    for (name, _) in &pages {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        for span in inline_commands(&text) {
            inline += 1;
            if let Err(e) = check_inline(&span) {
                errors.push(format!("{name}: `{span}`: {e}"));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "the docs have errors:\n{}",
        errors.join("\n")
    );
    println!(
        "{shell} shell blocks, {commands} kbin commands in them and {inline} in the prose checked against kbin's CLI"
    );
}

#[test]
fn a_misspelled_command_or_flag_or_a_reasonless_skip_fails_the_check() {
    let md = "\
```sh
kbin instal 1.30
```

```sh
kbin gen cluster --control-plan cp1=10.0.0.10
```

```sh
# not-run: needs root and real binaries
sudo kbin up --out cluster --imagez ./images
```

```sh
# not-run:
kbin status
```

```text
kbin cache verify
```

```sh
kbin install 1.30 && kbin gen cluster --out c --worker w1=10.0.0.21 && eval \"$(kbin env --cluster c)\"
```
";
    let errors = check(&blocks("t.md", md));
    let expect = [
        "t.md:1: `kbin instal 1.30`",
        "t.md:5: `kbin gen cluster --control-plan",
        "t.md:9: `kbin up --out cluster --imagez",
        "t.md:14: `# not-run:` needs its reason",
        "t.md:19: a kbin command in a ```text block",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|x| x.starts_with(e)),
            "no error starting {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    // Prose: placeholders are fine, unknown subcommands and options are not.
    let prose = "Run `kbin update\n[COMPONENT…] [--json]`, `kbin up|down|status`, `kbin instal 1.30`,\n\
                 `kbin gen cluster --dif` and `kbin certs renew [NAME…]`.";
    let found: Vec<Result<(), String>> = inline_commands(prose)
        .iter()
        .map(|s| check_inline(s))
        .collect();
    assert_eq!(
        found,
        [
            Ok(()),
            Ok(()),
            Err("`kbin` has no subcommand instal".to_string()),
            Err("`kbin gen cluster` has no option --dif".to_string()),
            Ok(()),
        ]
    );
    // The last block's three commands are found, `$(…)` included, and all parse.
    let cmds = kbin_commands(&blocks("t.md", md)[5].script());
    assert_eq!(
        cmds,
        [
            vec!["install", "1.30"],
            vec!["gen", "cluster", "--out", "c", "--worker", "w1=10.0.0.21"],
            vec!["env", "--cluster", "c"],
        ]
    );
}

#[test]
fn readme_is_short_and_keeps_the_test_command_that_ci_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let command = "scripts/setup-test-deps && cargo test --locked";
    assert!(
        readme.contains(command),
        "README.md lost the test command {command:?}"
    );
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run no longer runs {command:?}"
    );
    let lines = readme.lines().count();
    assert!(
        lines <= 150,
        "README.md has {lines} lines (at most 150: move the rest to docs/)"
    );
}

#[test]
fn relative_links_in_the_docs_point_at_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for (name, _) in pages() {
        let text = std::fs::read_to_string(root.join(&name)).unwrap();
        let dir = root.join(&name).parent().unwrap().to_path_buf();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !dir.join(target).exists() {
                missing.push(format!("{name}: ({target})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "links to nothing:\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_missing_tool_fails_the_test_whether_or_not_ci_is_set() {
    // tests/common::tool() never skips: the docs say a missing tool fails its test everywhere,
    // and nothing reads CI.
    let r = std::panic::catch_unwind(|| common::tool("kbin-docs-no-such-tool"));
    let msg = r.expect_err("a missing tool must fail the test");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("scripts/setup-test-deps"), "{msg}");
}

/// What running one page's blocks gave.
#[derive(Default)]
struct PageRun {
    run: usize,
    skipped: usize,
    failures: Vec<String>,
}

/// Run the blocks of one page in order, in `dir/work` with `dir/home` as HOME and KBIN_HOME
/// under it, against `up`, with `path` as PATH (kbin first).
fn run_page(blocks: &[Block], dir: &Path, up: &upstream::Upstream, path: &str) -> PageRun {
    let (home, work) = (dir.join("home"), dir.join("work"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let mut r = PageRun::default();
    for b in blocks.iter().filter(|b| b.is_shell()) {
        if b.not_run().is_some() {
            r.skipped += 1;
            continue;
        }
        r.run += 1;
        let started = std::time::Instant::now();
        // `timeout` so that a block that never ends fails instead of hanging the suite.
        let out = Command::new("timeout")
            .args(["120", "bash", "-e", "-o", "pipefail", "-c"])
            .arg(b.script())
            .current_dir(&work)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &home)
            .env("KBIN_HOME", home.join(".kbin"))
            .env("KBIN_MANIFEST", &up.manifest)
            .env("KBIN_MIRROR", up.server.base())
            .env("KBIN_HTTP_BACKOFF_MS", "10")
            .env("TERM", "dumb")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash and timeout are missing: run scripts/setup-test-deps");
        println!("{}: {:.1} s", b.at, started.elapsed().as_secs_f64());
        if !out.status.success() {
            r.failures.push(format!(
                "{} ({}):\n{}--- stdout\n{}--- stderr\n{}",
                b.at,
                out.status,
                b.script(),
                tail(&out.stdout),
                tail(&out.stderr)
            ));
        }
    }
    r
}

#[test]
fn every_shell_block_in_readme_and_docs_runs_as_written() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let up = upstream::Upstream::start(tmp.path());
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin!("kbin"), bin.join("kbin")).unwrap();
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        bin.display()
    );

    // Pages are independent stories: each runs on its own thread, its blocks in order.
    let pages = pages();
    let runs: Vec<PageRun> = std::thread::scope(|s| {
        let handles: Vec<_> = pages
            .iter()
            .map(|(name, blocks)| {
                let dir = tmp.path().join(name.replace('/', "_"));
                let (up, path) = (&up, &path);
                s.spawn(move || run_page(blocks, &dir, up, path))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let run: usize = runs.iter().map(|r| r.run).sum();
    let skipped: usize = runs.iter().map(|r| r.skipped).sum();
    let failures: Vec<String> = runs.into_iter().flat_map(|r| r.failures).collect();
    println!(
        "docs: {run} blocks run, {skipped} not run (each says why), in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {run} doc blocks failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The last 40 lines of a command's output.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    lines[from..].join("\n") + "\n"
}

use crate::common::upstream;
