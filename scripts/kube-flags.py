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


# --------------------------------------------------------------------------------------------
# command-line flags

# Where Kubernetes' Go source of each minor is read. kubernetes/kubernetes is too large for the
# tools this was made with, so the source is OpenShift's fork as two public repositories carry
# it: openshift/microshift (its release-4.N branch carries Kubernetes 1.(N+13): the whole tree
# under deps/github.com/openshift/kubernetes from 4.18, the vendored packages under vendor/
# before) and, for kube-proxy before 4.18 (microshift does not vendor it), openshift/sdn's
# release-4.N vendor/. CARRIED removes the flags OpenShift adds.
def flag_tree(minor, component):
    branch = f"release-4.{minor - 13}"
    if minor >= 31:
        root = "deps/github.com/openshift/kubernetes/"
        return "openshift+microshift", branch, root, root + "staging/src/"
    repo = "openshift+sdn" if component == "kube-proxy" else "openshift+microshift"
    return repo, branch, "vendor/k8s.io/kubernetes/", "vendor/"


# Flags OpenShift's fork adds to upstream's (its "UPSTREAM: <carry>" patches).
CARRIED = re.compile(r"openshift|^unsupported-kube-api-over-localhost$")

# Shared helpers: (file, functions); file is relative to the Kubernetes tree (cmd/, pkg/) or a
# staging module (k8s.io/NAME/...); a file ending in / is every Linux .go file of that directory.
SECURE_SERVING = ("k8s.io/apiserver/pkg/server/options/serving.go",
                  r"\(s \*SecureServingOptions\) AddFlags\(")
DELEGATED_AUTH = [
    ("k8s.io/apiserver/pkg/server/options/authentication.go",
     r"\*(DelegatingAuthenticationOptions|ClientCertAuthenticationOptions|"
     r"RequestHeaderAuthenticationOptions)\) AddFlags\("),
    ("k8s.io/apiserver/pkg/server/options/authorization.go",
     r"\*DelegatingAuthorizationOptions\) AddFlags\("),
]
COMMON = [
    # (file, functions, only when the component's flag code calls this)
    ("k8s.io/component-base/metrics/options.go", r"\) AddFlags\(", r"Metrics\.AddFlags"),
    ("k8s.io/component-base/logs/api/v1/options.go", r"^func (addFlags|AddFlags)\(",
     r"logsapi\.AddFlags|logs\.AddFlags\(\w*\.?Logs?\b|\bAddFlags\(&?\w+\.Logging"),
    ("k8s.io/component-base/version/verflag/verflag.go", r"^func AddFlags\(", r"verflag\.AddFlags"),
    ("k8s.io/component-base/cli/globalflag/globalflags.go", r"^func AddGlobalFlags\(",
     r"globalflag\.AddGlobalFlags"),
    ("k8s.io/component-base/featuregate/feature_gate.go", r"\) AddFlag\(",
     r"FeatureGate\.AddFlag\(|ComponentGlobalsRegistry\.AddFlags\(|Features?Gate\w*\.AddFlag\("),
    ("k8s.io/component-base/compatibility/registry.go", r"\) AddFlags\(",
     r"ComponentGlobalsRegistry\.AddFlags\("),
    ("k8s.io/apiserver/pkg/util/version/registry.go", r"\) AddFlags\(",
     r"ComponentGlobalsRegistry\.AddFlags\("),
    ("k8s.io/component-base/featuregate/registry.go", r"\) AddFlags\(",
     r"ComponentGlobalsRegistry\.AddFlags\("),
    ("pkg/kubelet/config/flags.go", r"\) AddFlags\(", r"ContainerRuntimeOptions\.AddFlags\("),
    ("k8s.io/component-base/config/options/leaderelectionconfig.go",
     r"^func BindLeaderElectionFlags\(", r"BindLeaderElectionFlags\("),
    ("pkg/kubeapiserver/options/cloudprovider.go", r"\) AddFlags\(", r"CloudProvider\.AddFlags\("),
    ("k8s.io/cloud-provider/options/cloudprovider.go", r"\) AddFlags\(",
     r"CloudProvider\.AddFlags\("),
]
APISERVER_OPTIONS = "k8s.io/apiserver/pkg/server/options/"
FLAG_SOURCES = {
    "kube-apiserver": [
        ("cmd/kube-apiserver/app/options/options.go", r"\) (Flags|AddFlags)\("),
        ("cmd/kube-apiserver/app/server.go", r"^func NewAPIServerCommand\("),
        ("pkg/controlplane/apiserver/options/options.go", r"\) AddFlags\("),
        (APISERVER_OPTIONS + "server_run_options.go", r"\) AddUniversalFlags\("),
        (APISERVER_OPTIONS + "etcd.go", r"\) AddFlags\("),
        SECURE_SERVING,
        (APISERVER_OPTIONS + "audit.go", r"\) AddFlags\("),
        (APISERVER_OPTIONS + "feature.go", r"\) AddFlags\("),
        (APISERVER_OPTIONS + "authentication.go",
         r"\*(ClientCertAuthenticationOptions|RequestHeaderAuthenticationOptions)\) AddFlags\("),
        (APISERVER_OPTIONS + "api_enablement.go", r"\) AddFlags\("),
        (APISERVER_OPTIONS + "egress_selector.go", r"\) AddFlags\("),
        (APISERVER_OPTIONS + "admission.go", r"\) AddFlags\("),
        (APISERVER_OPTIONS + "tracing.go", r"\) AddFlags\("),
        ("pkg/kubeapiserver/options/authentication.go", r"\*BuiltInAuthenticationOptions\) AddFlags\("),
        ("pkg/kubeapiserver/options/authorization.go", r"\*BuiltInAuthorizationOptions\) AddFlags\("),
        ("pkg/kubeapiserver/options/admission.go", r"\) AddFlags\("),
    ],
    "kube-controller-manager": [
        ("cmd/kube-controller-manager/app/options/", r"\) (Flags|AddFlags)\("),
        ("cmd/kube-controller-manager/app/controllermanager.go", r"^func NewControllerManagerCommand\("),
        ("k8s.io/controller-manager/options/", r"\) AddFlags\("),
        ("k8s.io/controller-manager/pkg/leadermigration/options/options.go", r"\) AddFlags\("),
        ("k8s.io/cloud-provider/options/kubecloudshared.go", r"\) AddFlags\("),
        ("k8s.io/cloud-provider/options/servicecontroller.go", r"\) AddFlags\("),
        SECURE_SERVING,
    ] + DELEGATED_AUTH,
    "kube-scheduler": [
        ("cmd/kube-scheduler/app/options/options.go", r"\) (initFlags|Flags)\("),
        ("cmd/kube-scheduler/app/options/deprecated.go", r"\) AddFlags\("),
        ("cmd/kube-scheduler/app/server.go", r"^func NewSchedulerCommand\("),
        SECURE_SERVING,
    ] + DELEGATED_AUTH,
    "kubelet": [
        ("cmd/kubelet/app/options/", r"\) AddFlags\(|^func (AddKubeletConfigFlags|AddGlobalFlags|add\w*Flags)\("),
        ("cmd/kubelet/app/server.go", r"^func NewKubeletCommand\("),
    ],
    "kube-proxy": [
        ("cmd/kube-proxy/app/", r"\) (AddFlags|addOSFlags)\(|^func NewProxyCommand\("),
    ],
}

FLAG_NAME = re.compile(r"[a-z][a-z0-9_-]*")
NONVAR_METHODS = {
    "Bool", "String", "Int", "Int32", "Int64", "Uint", "Uint16", "Uint32", "Uint64", "Float32",
    "Float64", "Duration", "StringSlice", "StringArray", "IntSlice", "IP", "IPNet", "IPSlice",
    "StringToString", "BoolP", "StringP", "IntP", "DurationP",
}
REGISTER_FUNCS = {"register": 2, "registerDeprecated": 2, "pflagRegister": 2}
AUDIT_BACKENDS = ["log", "webhook"]


def go_build_ok(src, filename):
    """Whether a file is in the Linux build of the official binaries."""
    if re.search(r"_(windows|darwin|freebsd|test)\.go$", filename):
        return False
    m = re.search(r"^//go:build (.*)$", src, flags=re.M)
    if m:
        expr = m.group(1)
        if re.search(r"(?<!!)\b(windows|darwin|providerless)\b", expr) and "linux" not in expr:
            return False
        if re.search(r"!linux\b", expr):
            return False
    return True


def functions(src, header_re):
    """The bodies of the top-level functions whose header line matches header_re."""
    out = []
    for m in re.finditer(r"^func [^\n]*$", src, flags=re.M):
        header = m.group(0)
        if not re.search(header_re, header):
            continue
        end = re.search(r"^\}", src[m.end():], flags=re.M)
        out.append(src[m.start(): m.end() + (end.end() if end else len(src))])
    return out


def call_args(text, start):
    """The top-level argument texts of the call whose '(' is at text[start]."""
    depth, i, args, cur = 0, start, [], []
    while i < len(text):
        c = text[i]
        if c in "\"`":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if (c == '"' and text[j] == "\\") else 1
            cur.append(text[i: j + 1])
            i = j + 1
            continue
        if c in "([{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    return args


def flag_names(body, consts, warn):
    names = set()
    for m in re.finditer(r"(?:\.|\b)(\w+)\(", body):
        method = m.group(1)
        if method in REGISTER_FUNCS:
            idx = REGISTER_FUNCS[method]
        elif re.fullmatch(r"\w*Var(P)?", method) and m.group(0).startswith("."):
            idx = 1
        elif method in NONVAR_METHODS and m.group(0).startswith("."):
            idx = 0
        elif method == "Lookup" and body[: m.start()].endswith("AddFlag(flag"):
            idx = 0  # verflag: fs.AddFlag(flag.Lookup(versionFlagName))
        else:
            continue
        args = call_args(body, m.end() - 1)
        if len(args) <= idx:
            continue
        arg = args[idx]
        found = []
        lit = re.fullmatch(r'"([^"]*)"', arg)
        if lit:
            found = [lit.group(1)]
        elif re.fullmatch(r"[\w\.]+", arg):
            key = arg.rsplit(".", 1)[-1]
            if key in consts:
                found = [consts[key]]
            elif idx == 1 or method in REGISTER_FUNCS:
                warn(f"unresolved flag name {arg} in {method}(...)")
        else:
            sp = re.fullmatch(r'fmt\.Sprintf\("(audit-%s-[a-z-]+)",\s*\w+\)', arg)
            if sp:
                found = [sp.group(1) % b for b in AUDIT_BACKENDS]
            elif idx == 1 or method in REGISTER_FUNCS:
                warn(f"unresolved flag name {arg} in {method}(...)")
        for name in found:
            # Every one of these commands normalizes "_" to "-" (cliflag.WordSepNormalizeFunc).
            name = name.replace("_", "-")
            if FLAG_NAME.fullmatch(name):
                names.add(name)
    return names


def flags(mirrors, minor):
    """{component: (sorted flag names, source lines)} for one minor."""
    result = {}
    for comp, entries in FLAG_SOURCES.items():
        repo_dir, branch, kroot, sroot = flag_tree(minor, comp)
        repo = Repo(os.path.join(mirrors, repo_dir, "repo"), repo_dir.replace("+", "/"))

        def files(path):
            real = (sroot + path) if path.startswith("k8s.io/") else (kroot + path)
            if real.endswith("/"):
                names = [real + n for n in repo.ls(branch, real.rstrip("/")) if n.endswith(".go")]
            else:
                names = [real]
            out = []
            for n in names:
                src = repo.show(branch, n)
                if src is not None and go_build_ok(src, n):
                    out.append((n, strip_comments(src)))
            return out

        bodies, used = [], []
        consts = {}

        def take(path, header_re):
            got = 0
            for name, src in files(path):
                for cm in re.finditer(r'^\s*(\w+)\s*(?:string\s*)?=\s*"([a-z][a-z0-9_-]*)"\s*$', src, flags=re.M):
                    consts.setdefault(cm.group(1), cm.group(2))
                fs = functions(src, header_re)
                bodies.extend(fs)
                got += len(fs)
            if got:
                used.append(path)
            return got

        for path, header_re in entries:
            take(path, header_re)
        pending = list(COMMON)
        changed = True
        while changed:
            changed = False
            for entry in list(pending):
                path, header_re, when = entry
                if re.search(when, "\n".join(bodies)):
                    take(path, header_re)
                    pending.remove(entry)
                    changed = True
        names = set()
        for body in bodies:
            names |= flag_names(body, consts,
                                lambda w: print(f"1.{minor} {comp}: {w}", file=sys.stderr))
        # cobra gives every command -h/--help; verflag defines --version on pflag.CommandLine,
        # which cobra merges into every command of a binary that uses it.
        joined = "\n".join(bodies)
        if "cobra.Command" in joined:
            names.add("help")
        if "verflag." in joined:
            names.add("version")
        # kube-proxy adds Go's global flag set for cadvisor's two flags, named in the comment.
        for body in bodies:
            m = re.search(r"AddGoFlagSet\(goflag\.CommandLine\)", body)
            if m and comp == "kube-proxy":
                src = repo.show(branch, kroot + "cmd/kube-proxy/app/server.go") or ""
                cm = re.search(r"AddGoFlagSet\(goflag\.CommandLine\)\s*//(.*)", src)
                if cm:
                    names |= set(re.findall(r"--([a-z][a-z0-9-]+)", cm.group(1)))
        carried = sorted(n for n in names if CARRIED.search(n))
        names -= set(carried)
        header = [
            f"{comp}, Kubernetes 1.{minor}: long flag names (Linux build).",
            f"{repo.name} branch {branch} (commit {repo.commit(branch)}), {kroot or './'}:",
            "  the flag registrations of: " + ", ".join(used),
        ]
        if carried:
            header.append("  minus OpenShift's own: " + ", ".join(carried))
        result[comp] = (sorted(names), header)
    return result


if __name__ == "__main__":
    main()
