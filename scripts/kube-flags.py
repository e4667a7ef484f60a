#!/usr/bin/env python3
"""Regenerate data/kube-flags/: per Kubernetes minor, the command-line flags of kube-apiserver,
kube-controller-manager, kube-scheduler, kubelet and kube-proxy, and the field paths of
KubeletConfiguration, KubeProxyConfiguration and KubeSchedulerConfiguration.

Python standard library only; it reads git repositories (no network), by `git show REV:PATH`:

  config fields   the upstream staging repositories, at the newest patch tag v0.NN.P of each minor
                  (a tag there is cut with the Kubernetes release v1.NN.P):
                    kubernetes/kubelet         config/v1beta1/*.go
                    kubernetes/kube-proxy      config/v1alpha1/*.go
                    kubernetes/kube-scheduler  config/v1/*.go
                    kubernetes/component-base  config/v1alpha1, logs/api/v1, tracing/api/v1
  flags           Kubernetes' Go source of each minor, as OpenShift carries it (see FLAG_TREES):
                  the flag registrations of the functions each component's command calls
                  (see FLAG_SOURCES), minus the flags OpenShift adds (CARRIED).

Usage:
  scripts/kube-flags.py --mirrors DIR [--out data/kube-flags]

DIR holds bare or normal clones named like the search tool's mirrors: kubernetes+kubelet/repo,
kubernetes+kube-proxy/repo, kubernetes+kube-scheduler/repo, kubernetes+component-base/repo,
openshift+microshift/repo, openshift+sdn/repo (`git clone https://github.com/OWNER/NAME
DIR/OWNER+NAME/repo` makes one).
"""

import argparse
import os
import re
import subprocess
import sys

MINORS = range(28, 37)

# --------------------------------------------------------------------------------------------
# git


class Repo:
    """A git repository read with `git show` / `git ls-tree` at one revision."""

    def __init__(self, path, name):
        self.path = path
        self.name = name

    def git(self, *args):
        return subprocess.run(
            ["git", "-C", self.path, *args], check=True, capture_output=True, text=True
        ).stdout

    def show(self, rev, path):
        r = subprocess.run(
            ["git", "-C", self.path, "show", f"{rev}:{path}"], capture_output=True, text=True
        )
        return r.stdout if r.returncode == 0 else None

    def ls(self, rev, directory):
        r = subprocess.run(
            ["git", "-C", self.path, "ls-tree", "--name-only", f"{rev}:{directory}"],
            capture_output=True,
            text=True,
        )
        return r.stdout.split() if r.returncode == 0 else []

    def commit(self, rev):
        return self.git("rev-parse", f"{rev}^{{commit}}").strip()

    def newest_patch_tag(self, minor):
        tags = self.git("tag", "-l", f"v0.{minor}.*").split()
        tags = [t for t in tags if re.fullmatch(rf"v0\.{minor}\.\d+", t)]
        if not tags:
            return None
        return max(tags, key=lambda t: int(t.rsplit(".", 1)[1]))


# --------------------------------------------------------------------------------------------
# Go struct types -> JSON field paths


def strip_comments(src):
    # Line comments first: a line comment may hold "/*" (a glob), which is no block comment.
    src = "\n".join(re.sub(r"//.*$", "", line) for line in src.splitlines())
    return re.sub(r"/\*.*?\*/", "", src, flags=re.S)


class GoPackage:
    """The type declarations of one Go package (non-test files), enough to walk JSON fields."""

    def __init__(self, files):
        self.structs = {}  # name -> [(go_name, type, json_tag)]
        self.named = {}  # name -> underlying type text, for non-struct types
        self.custom_json = set()  # types with their own UnmarshalJSON: scalars in YAML
        self.imports = {}  # alias -> import path
        for src in files:
            self._parse(src)

    def _parse(self, src):
        for m in re.finditer(r"func \(\w+ \*?(\w+)\) UnmarshalJSON", src):
            self.custom_json.add(m.group(1))
        src = strip_comments(src)
        for block in re.findall(r"^import \((.*?)^\)", src, flags=re.S | re.M):
            for line in block.splitlines():
                m = re.match(r'\s*(\w+)?\s*"([^"]+)"', line)
                if m:
                    alias = m.group(1) or m.group(2).rsplit("/", 1)[-1]
                    self.imports[alias] = m.group(2)
        for m in re.finditer(r"^type (\w+) struct \{(.*?)^\}", src, flags=re.S | re.M):
            fields = []
            for line in m.group(2).splitlines():
                fm = re.match(r"\s*(?:(\w+)\s+)?([\w\.\*\[\]]+(?:\[[\w\.]+\][\w\.\*\[\]]+)?)\s*(`.*`)?\s*$", line)
                if not fm or not line.strip():
                    continue
                go_name, typ, tag = fm.group(1), fm.group(2), fm.group(3) or ""
                jm = re.search(r'json:"([^"]*)"', tag)
                fields.append((go_name, typ, jm.group(1) if jm else None))
            self.structs[m.group(1)] = fields
        for m in re.finditer(r"^type (\w+) (?!struct)(\S[^\n{]*)$", src, flags=re.M):
            self.named[m.group(1)] = m.group(2).strip()
        for block in re.findall(r"^type \((.*?)^\)", src, flags=re.S | re.M):
            for m in re.finditer(r"^\s*(\w+)\s+(?!struct)([\w\.\*\[\]]+)\s*$", block, flags=re.M):
                self.named[m.group(1)] = m.group(2)


# Types of other packages that are scalars in YAML, and those whose inside kbin does not check
# (any path below them is accepted: written `PATH.*` in the data).
SCALAR_TYPES = {
    ("k8s.io/apimachinery/pkg/apis/meta/v1", "Duration"),
    ("k8s.io/apimachinery/pkg/apis/meta/v1", "Time"),
    ("k8s.io/apimachinery/pkg/api/resource", "Quantity"),
    ("k8s.io/apimachinery/pkg/api/resource", "QuantityValue"),
}
TYPE_META = ("k8s.io/apimachinery/pkg/apis/meta/v1", "TypeMeta")
GO_SCALARS = {
    "string", "bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16",
    "uint32", "uint64", "float32", "float64", "byte",
}


class FieldWalker:
    def __init__(self, packages):
        self.packages = packages  # import path -> GoPackage

    def walk(self, pkg_path, type_name):
        """Every JSON path of type_name: `a`, `a.b`, ...; `a.*` where anything below a goes."""
        out = set()
        self._struct(pkg_path, type_name, "", out, 0)
        return out

    def _struct(self, pkg_path, name, prefix, out, depth):
        pkg = self.packages[pkg_path]
        if depth > 12:
            raise SystemExit(f"type nesting too deep at {pkg_path}.{name}")
        for go_name, typ, tag in pkg.structs[name]:
            json_name = None
            inline = False
            if tag is not None:
                parts = tag.split(",")
                if parts[0] == "-":
                    continue
                json_name = parts[0] or None
                inline = "inline" in parts[1:]
            if go_name is None and json_name is None:
                inline = True  # an embedded struct without a name: its fields, as Go's json does
            if go_name is not None and go_name[0].islower():
                continue  # unexported
            if inline:
                self._type(pkg_path, typ, prefix.rstrip("."), out, depth, inline=True)
                continue
            path = prefix + (json_name or go_name)
            out.add(path)
            self._type(pkg_path, typ, path, out, depth)

    def _type(self, pkg_path, typ, path, out, depth, inline=False):
        typ = typ.lstrip("*")
        while typ.startswith("[]"):
            typ = typ[2:].lstrip("*")
        if typ.startswith("map["):
            out.add(path + ".*")
            return
        if "." in typ:
            alias, name = typ.split(".", 1)
            imp = self.packages[pkg_path].imports.get(alias)
            if (imp, name) == TYPE_META:
                prefix = path + "." if path else ""
                out.update({prefix + "apiVersion", prefix + "kind"})
                return
            if (imp, name) in SCALAR_TYPES:
                return
            if imp in self.packages:
                self._named(imp, name, path, out, depth, inline)
                return
            out.add(path + ".*")  # a type kbin's data does not go into (core/v1, runtime)
            return
        if typ in GO_SCALARS or typ == "interface{}":
            return
        self._named(pkg_path, typ, path, out, depth, inline)

    def _named(self, pkg_path, name, path, out, depth, inline):
        pkg = self.packages[pkg_path]
        if name in pkg.custom_json:
            return  # its own JSON form: a scalar
        if name in pkg.structs:
            self._struct(pkg_path, name, (path + ".") if path else "", out, depth + 1)
            return
        if name in pkg.named:
            self._type(pkg_path, pkg.named[name], path, out, depth + 1, inline)
            return
        raise SystemExit(f"unknown type {name} in {pkg_path}")


CONFIGS = [
    # (data file stem, staging repo, package dir, import path, root type, apiVersion)
    ("kubelet-config", "kubernetes+kubelet", "config/v1beta1", "k8s.io/kubelet/config/v1beta1",
     "KubeletConfiguration", "kubelet.config.k8s.io/v1beta1"),
    ("kube-proxy-config", "kubernetes+kube-proxy", "config/v1alpha1",
     "k8s.io/kube-proxy/config/v1alpha1", "KubeProxyConfiguration",
     "kubeproxy.config.k8s.io/v1alpha1"),
    ("kube-scheduler-config", "kubernetes+kube-scheduler", "config/v1",
     "k8s.io/kube-scheduler/config/v1", "KubeSchedulerConfiguration",
     "kubescheduler.config.k8s.io/v1"),
]
COMPONENT_BASE_PACKAGES = ["config/v1alpha1", "logs/api/v1", "tracing/api/v1"]


def go_files(repo, rev, directory):
    out = []
    for name in repo.ls(rev, directory):
        if name.endswith(".go") and not name.endswith("_test.go") and not name.startswith("zz_"):
            out.append(repo.show(rev, f"{directory}/{name}"))
    return out


def config_fields(mirrors, minor):
    """{stem: (sorted paths, source lines)} for one minor."""
    base = Repo(os.path.join(mirrors, "kubernetes+component-base/repo"), "kubernetes/component-base")
    base_tag = base.newest_patch_tag(minor)
    packages = {}
    for d in COMPONENT_BASE_PACKAGES:
        files = go_files(base, base_tag, d)
        if files:
            packages[f"k8s.io/component-base/{d}"] = GoPackage(files)
    result = {}
    for stem, repo_dir, pkg_dir, imp, root, api_version in CONFIGS:
        repo = Repo(os.path.join(mirrors, repo_dir, "repo"), repo_dir.replace("+", "/"))
        tag = repo.newest_patch_tag(minor)
        pkgs = dict(packages)
        pkgs[imp] = GoPackage(go_files(repo, tag, pkg_dir))
        paths = FieldWalker(pkgs).walk(imp, root)
        sources = [
            f"{repo.name} {pkg_dir}/*.go at tag {tag} (commit {repo.commit(tag)})",
            f"{base.name} {', '.join(COMPONENT_BASE_PACKAGES)} at tag {base_tag}"
            f" (commit {base.commit(base_tag)})",
        ]
        header = [f"{root} ({api_version}), Kubernetes 1.{minor}: JSON field paths."] + sources
        result[stem] = (sorted(paths), header)
    return result


# --------------------------------------------------------------------------------------------
# output


def write_list(path, header, names):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for line in header:
            f.write(f"# {line}\n")
        f.write("# Generated by scripts/kube-flags.py; see data/kube-flags/SOURCES.md.\n")
        for n in names:
            f.write(n + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mirrors", required=True)
    ap.add_argument("--out", default="data/kube-flags")
    ap.add_argument("--only", choices=["fields", "flags"])
    args = ap.parse_args()
    for minor in MINORS:
        if args.only != "flags":
            for stem, (paths, header) in config_fields(args.mirrors, minor).items():
                write_list(os.path.join(args.out, f"1.{minor}", f"{stem}.fields"), header, paths)
                print(f"1.{minor} {stem}: {len(paths)} paths", file=sys.stderr)
        if args.only != "fields":
            for comp, (names, header) in flags(args.mirrors, minor).items():
                write_list(os.path.join(args.out, f"1.{minor}", f"{comp}.flags"), header, names)
                print(f"1.{minor} {comp}: {len(names)} flags", file=sys.stderr)


def flags(mirrors, minor):
    return {}


if __name__ == "__main__":
    main()
