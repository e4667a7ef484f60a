//! Required tools: which `go` and `make` a build will use, and whether they are new enough for
//! what the repository asks (go.mod's `go` line, `.go-version`).

use std::path::Path;
use std::process::Command;

use semver::Version;

use super::SourceError;

/// The Go found on the build's PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTool {
    /// As Go spells it (`1.19.8`).
    pub version: String,
    /// The same as a semver version (`1.21` → `1.21.0`, `1.22rc1` → `1.22.0`).
    pub semver: Version,
}

/// Parse a Go version (`1.21`, `1.21.3`, `go1.22rc1`) into semver, leniently.
pub fn parse_go_version(s: &str) -> Option<Version> {
    let s = s.trim().trim_start_matches("go");
    let mut nums = s.split('.').map(|p| {
        let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<u64>().ok()
    });
    let major = nums.next()??;
    let minor = nums.next().flatten().unwrap_or(0);
    let patch = nums.next().flatten().unwrap_or(0);
    Some(Version::new(major, minor, patch))
}

/// Ask the `go` on `path` for its version (`go version`), or `None` when there is no `go`.
pub fn detect_go(path: &str) -> Option<GoTool> {
    let out = Command::new(find_on_path("go", path)?)
        .arg("version")
        .env_clear()
        .env("PATH", path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text.split_whitespace().find(|w| w.starts_with("go1"))?;
    let version = word.trim_start_matches("go").to_owned();
    Some(GoTool {
        semver: parse_go_version(&version)?,
        version,
    })
}

/// The first executable called `name` on `path`.
pub fn find_on_path(name: &str, path: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).map(|d| d.join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// What a work tree asks of Go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoWants {
    /// go.mod's `go` line: the minimum.
    pub go_mod: Option<String>,
    /// `.go-version`: what upstream builds with.
    pub go_version_file: Option<String>,
}

impl GoWants {
    /// Read go.mod and `.go-version` at the top of `tree`.
    pub fn read(tree: &Path) -> GoWants {
        GoWants::parse(
            std::fs::read_to_string(tree.join("go.mod")).ok().as_deref(),
            std::fs::read_to_string(tree.join(".go-version"))
                .ok()
                .as_deref(),
        )
    }

    /// What the texts of go.mod and `.go-version` ask (either may be absent).
    pub fn parse(go_mod: Option<&str>, go_version: Option<&str>) -> GoWants {
        let go_mod = go_mod.and_then(|t| {
            t.lines().find_map(|l| {
                let l = l.trim();
                l.strip_prefix("go ").map(|v| v.trim().to_owned())
            })
        });
        let go_version_file = go_version
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        GoWants {
            go_mod,
            go_version_file,
        }
    }

    /// Whether the repository is a Go project at all.
    pub fn needs_go(&self) -> bool {
        self.go_mod.is_some() || self.go_version_file.is_some()
    }
}

/// Check the tools a build needs before it starts. Returns warnings (a Go that differs from
/// `.go-version`).
pub fn check(
    component: &str,
    command: &[String],
    wants: &GoWants,
    go: Option<&GoTool>,
    path: &str,
) -> Result<Vec<String>, SourceError> {
    let mut warnings = Vec::new();
    if command.first().is_some_and(|c| c == "make") && find_on_path("make", path).is_none() {
        return Err(SourceError::MissingTool {
            component: component.to_owned(),
            tool: "make",
            needed: "any version".into(),
        });
    }
    if !wants.needs_go() {
        return Ok(warnings);
    }
    let needed = wants
        .go_mod
        .clone()
        .or_else(|| wants.go_version_file.clone())
        .unwrap_or_default();
    let Some(go) = go else {
        return Err(SourceError::MissingTool {
            component: component.to_owned(),
            tool: "go",
            needed: format!("{needed} or newer"),
        });
    };
    if let Some(min) = wants.go_mod.as_deref().and_then(parse_go_version)
        && go.semver < min
    {
        return Err(SourceError::GoTooOld {
            component: component.to_owned(),
            found: go.version.clone(),
            needed: wants.go_mod.clone().unwrap_or_default(),
            file: "go.mod",
        });
    }
    if let Some(want) = &wants.go_version_file
        && parse_go_version(want) != Some(go.semver.clone())
    {
        warnings.push(format!(
            "building {component} with Go {} but the repository's .go-version says {want}: \
             upstream builds with {want}, and a different Go can change behaviour",
            go.version
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_versions_parse_leniently() {
        assert_eq!(parse_go_version("1.21"), Some(Version::new(1, 21, 0)));
        assert_eq!(parse_go_version("go1.22.5"), Some(Version::new(1, 22, 5)));
        assert_eq!(parse_go_version("1.22rc1"), Some(Version::new(1, 22, 0)));
        assert_eq!(parse_go_version("x"), None);
    }
}
