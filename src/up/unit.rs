//! Reading back the systemd units `kbin gen` writes (`gen::configs::Unit`): sections, settings
//! and the `ExecStart=` command line as the words systemd would pass to `execve`.
//!
//! Only what those units use is understood: `\` line continuations, `#`/`;` comments, words
//! quoted with `"`/`'` and C escapes (systemd.syntax(7)), `%%` and `$$`. Anything that would need
//! systemd to expand it (another `%` specifier, a `$VARIABLE`, an `ExecStart=` prefix such as `-`
//! or `+`) is an error naming the unit: kbin never guesses what systemd would have run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors reading a unit.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The unit file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a unit kbin can run.
    #[error("{path}, line {line}: {reason}")]
    Syntax {
        /// The unit file.
        path: PathBuf,
        /// The (first) line of the setting.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// `Type=` of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceType {
    /// `simple` (the default): started once `execve` ran.
    Simple,
    /// `exec`: the same for kbin.
    Exec,
    /// `notify`: the service says when it is ready (sd_notify). kbin does not provide a notify
    /// socket; the step's health check tells readiness instead.
    Notify,
    /// `oneshot`: runs to completion (exit 0 is success), then `ExecStop=` undoes it.
    Oneshot,
}

/// `KillMode=` of a service: which processes a stop signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    /// `control-group` (the default): every process the service started.
    ControlGroup,
    /// `process`: the main process only (containerd: its shims and containers outlive it).
    Process,
}

/// A parsed service unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    /// The unit's file.
    pub path: PathBuf,
    /// `ExecStart=`: the program and its arguments, unescaped.
    pub exec_start: Vec<String>,
    /// `ExecStop=`, when there is one (a oneshot's undo).
    pub exec_stop: Option<Vec<String>>,
    /// `Type=`.
    pub service_type: ServiceType,
    /// `KillMode=`.
    pub kill_mode: KillMode,
    /// `LimitNOFILE=`, when set to a number.
    pub limit_nofile: Option<u64>,
    /// Every `(section, key)` with its values in order (a key may repeat).
    pub settings: BTreeMap<(String, String), Vec<String>>,
}

impl ServiceUnit {
    /// Read and parse the unit at `path`.
    pub fn load(path: &Path) -> Result<ServiceUnit, UnitError> {
        let text = std::fs::read_to_string(path).map_err(|source| UnitError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parse `text`, the content of the unit at `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ServiceUnit, UnitError> {
        let err = |line: usize, reason: String| UnitError::Syntax {
            path: path.to_owned(),
            line,
            reason,
        };
        let (settings, exec) = read_settings(text, err)?;
        let Some((exec_line, exec)) = exec else {
            return Err(err(0, "no ExecStart= in [Service]".into()));
        };
        let exec_start = exec_words(&exec).map_err(|r| err(exec_line, r))?;
        if exec_start.is_empty() {
            return Err(err(exec_line, "ExecStart= is empty".into()));
        }
        if !exec_start[0].starts_with('/') {
            return Err(err(
                exec_line,
                format!(
                    "ExecStart= starts with {:?}: kbin runs only an absolute path, without prefixes",
                    exec_start[0]
                ),
            ));
        }
        let get = |key: &str| {
            settings
                .get(&("Service".to_owned(), key.to_owned()))
                .and_then(|v| v.last())
                .map(String::as_str)
        };
        let service_type = match get("Type") {
            None | Some("simple") => ServiceType::Simple,
            Some("exec") => ServiceType::Exec,
            Some("notify") => ServiceType::Notify,
            Some("oneshot") => ServiceType::Oneshot,
            Some(other) => return Err(err(0, format!("Type={other} is not supported by kbin up"))),
        };
        let kill_mode = match get("KillMode") {
            None | Some("control-group") | Some("mixed") => KillMode::ControlGroup,
            Some("process") => KillMode::Process,
            Some(other) => return Err(err(0, format!("KillMode={other} is not supported"))),
        };
        let limit_nofile = get("LimitNOFILE").and_then(|v| v.parse().ok());
        let exec_stop = match get("ExecStop") {
            None => None,
            Some(v) => {
                let words = exec_words(v).map_err(|r| err(0, format!("ExecStop=: {r}")))?;
                if words.first().is_none_or(|w| !w.starts_with('/')) {
                    return Err(err(
                        0,
                        "ExecStop= must start with an absolute path, without prefixes".into(),
                    ));
                }
                Some(words)
            }
        };
        Ok(ServiceUnit {
            path: path.to_owned(),
            exec_start,
            exec_stop,
            service_type,
            kill_mode,
            limit_nofile,
            settings,
        })
    }

    /// The program `ExecStart=` runs.
    pub fn program(&self) -> &Path {
        Path::new(&self.exec_start[0])
    }

    /// The command line as one shell-readable line (for logs and error messages).
    pub fn command_line(&self) -> String {
        shell_line(&self.exec_start)
    }
}

/// `words` as a line a POSIX shell splits back into the same words (each quoted by
/// [`crate::util::shell_quote`], the one quoter).
pub fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| crate::util::shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Split an `ExecStart=` value into words: quotes and C escapes first (systemd.syntax(7)),
/// then `%%` → `%` and `$$` → `$` in each word (systemd.service(5)).
/// Every `KEY=VALUE` of `text` by (section, key), in order, continuation lines joined as
/// systemd joins them, and the line and value of `[Service]`'s one ExecStart=.
#[allow(clippy::type_complexity)]
fn read_settings(
    text: &str,
    err: impl Fn(usize, String) -> UnitError,
) -> Result<
    (
        BTreeMap<(String, String), Vec<String>>,
        Option<(usize, String)>,
    ),
    UnitError,
> {
    let mut settings: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut exec: Option<(usize, String)> = None;
    let mut section = String::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((no, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        // A trailing backslash continues the setting on the next line; systemd joins the
        // pieces with a space (comment lines inside are skipped).
        let mut full = trimmed.to_owned();
        while full.ends_with('\\') {
            full.pop();
            full.push(' ');
            match lines.next() {
                Some((_, next)) => {
                    let next = next.trim();
                    if next.starts_with('#') || next.starts_with(';') {
                        full.push('\\');
                        continue;
                    }
                    full.push_str(next);
                }
                None => break,
            }
        }
        let Some((key, value)) = full.split_once('=') else {
            return Err(err(no, format!("{trimmed:?} is not KEY=VALUE")));
        };
        let (key, value) = (key.trim().to_owned(), value.trim().to_owned());
        if section == "Service" && key == "ExecStart" {
            if exec.is_some() {
                return Err(err(no, "more than one ExecStart= line".into()));
            }
            exec = Some((no, value.clone()));
        }
        settings
            .entry((section.clone(), key))
            .or_default()
            .push(value);
    }
    Ok((settings, exec))
}

fn exec_words(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == first {
                    closed = true;
                    break;
                }
                if c == '\\' {
                    word.push(unescape(chars.next())?);
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated {first} quote in ExecStart="));
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err("a quoted word must end at a space in ExecStart=".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    word.push(unescape(chars.next())?);
                } else {
                    word.push(c);
                }
            }
        }
        words.push(expand(&word)?);
    }
    Ok(words)
}

fn unescape(c: Option<char>) -> Result<char, String> {
    Ok(match c {
        Some('n') => '\n',
        Some('t') => '\t',
        Some('r') => '\r',
        Some(c @ ('\\' | '"' | '\'' | ' ' | ';')) => c,
        Some(c) => return Err(format!("unsupported escape \\{c} in ExecStart=")),
        None => return Err("ExecStart= ends with a backslash".into()),
    })
}

/// `%%` → `%`, `$$` → `$`; any other specifier or variable would need systemd to expand it.
fn expand(word: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = word.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' || c == '$' {
            if chars.peek() == Some(&c) {
                chars.next();
                out.push(c);
            } else {
                return Err(format!(
                    "{word:?} needs systemd to expand {c}{}: kbin up runs only literal command lines",
                    chars.peek().map(|c| c.to_string()).unwrap_or_default()
                ));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::r#gen::configs::{Unit, exec_word};

    fn render(args: &[&str], extra: &'static [&'static str]) -> String {
        Unit {
            name: "demo",
            teach: "a teaching line\nand another",
            doc: "https://example.com",
            after: &["network.target"],
            requires: &[],
            binary: "demo",
            args: args.iter().map(|s| s.to_string()).collect(),
            service_extra: extra,
        }
        .render()
    }

    #[test]
    fn exec_start_reads_back_exactly_the_words_the_unit_writer_wrote() {
        let args = [
            "--plain=value",
            "--percent=50%",
            "--dollar=$HOME",
            "--space=a b",
            "--quote=a\"b\\c",
            "--single='x'",
            "--semi=a;b",
            "--tab=a\tb",
            "",
        ];
        let text = render(
            &args,
            &["Type=notify", "KillMode=process", "LimitNOFILE=65536"],
        );
        let u = ServiceUnit::parse(Path::new("demo.service"), &text).unwrap();
        let mut want = vec!["/usr/local/bin/demo".to_owned()];
        want.extend(args.iter().map(|s| s.to_string()));
        assert_eq!(u.exec_start, want);
        assert_eq!(u.service_type, ServiceType::Notify);
        assert_eq!(u.kill_mode, KillMode::Process);
        assert_eq!(u.limit_nofile, Some(65536));
        // The escaping itself is gen's: reading back every word it escapes is the contract.
        for a in args {
            assert_eq!(exec_words(&exec_word(a)).unwrap(), vec![a.to_owned()]);
        }
    }

    #[test]
    fn defaults_are_simple_and_control_group() {
        let u = ServiceUnit::parse(Path::new("d"), &render(&["--x=1"], &[])).unwrap();
        assert_eq!(u.service_type, ServiceType::Simple);
        assert_eq!(u.kill_mode, KillMode::ControlGroup);
        assert_eq!(u.command_line(), "/usr/local/bin/demo --x=1");
    }

    #[test]
    fn what_only_systemd_could_expand_is_refused() {
        for bad in [
            "[Service]\nExecStart=/bin/x %n\n",
            "[Service]\nExecStart=/bin/x $HOME\n",
            "[Service]\nExecStart=-/bin/x\n",
            "[Service]\nExecStart=/bin/x \"open\n",
            "[Service]\nType=forking\nExecStart=/bin/x\n",
            "[Unit]\nDescription=x\n",
        ] {
            let e = ServiceUnit::parse(Path::new("bad.service"), bad).unwrap_err();
            assert!(e.to_string().contains("bad.service"), "{e}");
        }
    }

    #[test]
    fn shell_lines_quote_what_a_shell_would_split() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(shell_line(&w(&["/bin/x", "--a=1"])), "/bin/x --a=1");
        assert_eq!(shell_line(&w(&["--a=b c", "it's"])), "'--a=b c' 'it'\\''s'");
    }
}
