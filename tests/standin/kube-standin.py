#!/usr/bin/env python3
"""A stand-in for kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy
in kbin up's tests (CI has no Kubernetes server binaries).

It takes the component's real command line and serves the endpoints kbin up checks, the way the
real component does: kube-apiserver /readyz, leases, Nodes and ClusterRoleBindings over TLS with
the generated certificates; the controller manager and scheduler /healthz over TLS on
10257/10259; the kubelet registers its Node (through a file the apiserver stand-in reads);
kube-proxy /healthz over HTTP on 10256.

Usage: kube-standin.py COMPONENT [the component's flags...]
Behaviour per component comes from STATE/modes (STATE is ./state beside this script), one
`component=mode` a line: healthy (default), never-healthy, crash, ignore-term,
no-serviceaccounts (a controller manager whose controllers make no ServiceAccount), no-rollout
(an apiserver whose Deployments never have an available replica: pods that never get ready).

Self-contained (tests/testsuite/ansible.rs installs it on machines as the component's binary): a copy
that starts with `COMPONENT = "..."`, `VERSION = "v1.30.14"` and `STATE_DIR = "..."` lines takes
its component from there and its flags from all of argv, keeps its state in STATE_DIR, answers
`--version` and /version with VERSION, and its kubelet registers the Node with the API server
named in its kubeconfig (a POST, as the real one does), so kubectl on another machine sees it.
kube-apiserver serves enough discovery for `kubectl get/patch/drain/uncordon/delete node` and
`kubectl create clusterrolebinding`, and server-side apply (GET and PATCH) of the add-on objects
kbin applies (ServiceAccount, ConfigMap, Service, Deployment, PodDisruptionBudget, ClusterRole,
ClusterRoleBinding), each Deployment reported rolled out.
"""
import http.server
import json
import re
import os
import signal
import ssl
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STATE = globals().get("STATE_DIR") or os.path.join(HERE, "state")
VERSION_TEXT = globals().get("VERSION") or "v0.0.0-standin"


# Set on SIGTERM by an API server started with --shutdown-delay-duration (as the real one
# does: /readyz fails while it keeps serving for that long, then it exits).
SHUTTING_DOWN = False


def shutdown_after(delay):
    def handler(signum, frame):
        global SHUTTING_DOWN
        import threading
        SHUTTING_DOWN = True
        print("kube-apiserver: SIGTERM: /readyz fails for %ss, then exit" % delay, flush=True)
        threading.Timer(delay, lambda: os._exit(0)).start()
    signal.signal(signal.SIGTERM, handler)


def flags(argv):
    out = {}
    for a in argv:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k] = v
    return out


def mode(component):
    try:
        with open(os.path.join(STATE, "modes")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k == component:
                    return v
    except FileNotFoundError:
        pass
    return "healthy"


def not_found(kind, name):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
            "code": 404, "message": "%s \"%s\" not found" % (kind, name),
            "details": {"name": name, "kind": kind}}


def node_file(name):
    return os.path.join(STATE, "node-" + name)


class Handler(http.server.BaseHTTPRequestHandler):
    component = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.component, fmt % args))
        sys.stderr.flush()

    def reply(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        p = self.path
        if p == "/readyz" and SHUTTING_DOWN:
            return self.reply(500, "[-]shutdown failed: process is shutting down", "text/plain")
        if p in ("/healthz", "/readyz", "/livez"):
            return self.reply(200, "ok", "text/plain")
        if p == "/version":
            return self.reply(200, {"gitVersion": VERSION_TEXT, "major": "1", "minor": VERSION_TEXT.split(".")[1]})
        if self.component != "kube-apiserver":
            return self.reply(404, {"kind": "Status", "code": 404})
        if p.split("?")[0] in DISCOVERY:
            return self.reply(200, DISCOVERY[p.split("?")[0]])
        if ADDON_PATH.fullmatch(p.split("?")[0]) and load_object(p.split("?")[0]) is not None:
            return self.reply(200, with_status(load_object(p.split("?")[0])))
        if p.startswith("/api/v1/pods") or p.startswith("/api/v1/namespaces/kube-system/pods"):
            return self.reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        if p.startswith("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/"):
            name = p.rsplit("/", 1)[1]
            try:
                with open(os.path.join(STATE, "crb-" + name)) as f:
                    return self.reply(200, json.load(f))
            except FileNotFoundError:
                return self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404})
        if p.startswith("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"):
            name = p.rsplit("/", 1)[1]
            return self.reply(200, {"kind": "Lease", "spec": {"holderIdentity": name + "-standin"}})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/serviceaccounts/([^/?]+)", p)
        if m:
            if not os.path.exists(os.path.join(STATE, "sa-%s-%s" % m.groups())):
                return self.reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            return self.reply(200, {"kind": "ServiceAccount", "metadata": {"namespace": m[1], "name": m[2]}})
        if p.startswith("/api/v1/nodes/"):
            name = p.rsplit("/", 1)[1]
            try:
                with open(node_file(name)) as f:
                    cidr = f.read().strip()
            except FileNotFoundError:
                return self.reply(404, not_found("nodes", name))
            return self.reply(200, node_object(name, cidr))
        if ADDON_PATH.fullmatch(p.split("?")[0]):
            obj = load_object(p.split("?")[0])
            if obj is None:
                return self.reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            return self.reply(200, with_status(obj))
        return self.reply(404, {"kind": "Status", "code": 404})

    def body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(n) or b"{}")

    def do_POST(self):
        path = self.path.split("?")[0]
        if path == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings":
            b = self.body()
            crb = os.path.join(STATE, "crb-" + b["metadata"]["name"])
            if os.path.exists(crb):
                return self.reply(409, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "AlreadyExists", "code": 409,
                                        "message": "clusterrolebindings \"%s\" already exists" % b["metadata"]["name"]})
            with open(crb, "w") as f:
                json.dump(b, f)
            return self.reply(201, b)
        if path == "/api/v1/nodes":
            b = self.body()
            name = b["metadata"]["name"]
            if not os.path.exists(node_file(name)):
                open(node_file(name), "w").close()
            return self.reply(201, node_object(name, ""))
        return self.reply(404, {"kind": "Status", "code": 404})

    def do_DELETE(self):
        path = self.path.split("?")[0]
        if self.component == "kube-apiserver" and path.startswith("/api/v1/nodes/"):
            name = path.rsplit("/", 1)[1]
            try:
                os.remove(node_file(name))
            except FileNotFoundError:
                return self.reply(404, not_found("nodes", name))
            with open(os.path.join(STATE, "deleted-" + name), "a") as f:
                f.write("%f\n" % time.time())
            return self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                                    "details": {"name": name, "kind": "nodes"}})
        return self.reply(404, {"kind": "Status", "code": 404})

    def do_PATCH(self):
        path = self.path.split("?")[0]
        if self.component == "kube-apiserver" and ADDON_PATH.fullmatch(path):
            return self.apply(path)
        if self.path.startswith("/api/v1/nodes/"):
            name = self.path.split("?")[0].rsplit("/", 1)[1]
            b = self.body()
            spec = b.get("spec", {})
            if "podCIDR" in spec:
                with open(node_file(name), "w") as f:
                    f.write(spec["podCIDR"])
            if "unschedulable" in spec:
                with open(os.path.join(STATE, "cordon-" + name), "a") as f:
                    f.write("%s %f\n" % (bool(spec["unschedulable"]), time.time()))
            with open(os.path.join(STATE, "patch-" + name), "w") as f:
                f.write(self.headers.get("Content-Type", "") + "\n" + json.dumps(b))
            try:
                with open(node_file(name)) as f:
                    cidr = f.read().strip()
            except FileNotFoundError:
                cidr = ""
            return self.reply(200, node_object(name, cidr))
        return self.reply(404, {"kind": "Status", "code": 404})


    def apply(self, path):
        """Server-side apply, as far as kbin's add-ons need it: the object is stored as sent;
        its resourceVersion (and a Deployment's generation) moves only when its content changes.
        Each request is logged to STATE/applied (method, path, content type, query)."""
        ctype = self.headers.get("Content-Type", "")
        query = self.path.partition("?")[2]
        with open(os.path.join(STATE, "applied"), "a") as f:
            f.write("PATCH %s %s %s\n" % (path, ctype, query))
        if ctype != "application/apply-patch+yaml" or "fieldManager=" not in query:
            return self.reply(415, {"kind": "Status", "code": 415,
                                    "message": "stand-in: only server-side apply with a fieldManager"})
        n = int(self.headers.get("Content-Length", "0"))
        sent = json.loads(self.rfile.read(n))
        old = load_object(path)
        content = {k: v for k, v in sent.items() if k != "status"}
        if old is not None and strip(old) == strip(content):
            return self.reply(200, with_status(old))
        meta = content.setdefault("metadata", {})
        version = int((old or {}).get("metadata", {}).get("resourceVersion", "0")) + 1
        meta["resourceVersion"] = str(version)
        meta["generation"] = (old or {}).get("metadata", {}).get("generation", 0) + 1
        with open(object_file(path), "w") as f:
            json.dump(content, f)
        return self.reply(201 if old is None else 200, with_status(content))


# The add-on objects kbin applies (namespaced or not).
ADDON_PATH = re.compile(
    r"/(api/v1|apis/[a-z0-9.]+/v1)(/namespaces/[a-z0-9-]+)?/"
    r"(serviceaccounts|configmaps|services|deployments|poddisruptionbudgets|clusterroles|"
    r"clusterrolebindings)/[a-z0-9:.-]+")


def object_file(path):
    return os.path.join(STATE, "obj" + path.replace("/", "_"))


def load_object(path):
    try:
        with open(object_file(path)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def strip(obj):
    """An object without what the server sets, to compare what was applied."""
    o = json.loads(json.dumps(obj))
    for k in ("resourceVersion", "generation"):
        o.get("metadata", {}).pop(k, None)
    o.pop("status", None)
    return o


def with_status(obj):
    """A Deployment as its controller and kubelets would make it: every replica updated and
    available, unless the apiserver's mode is no-rollout (pods that never become ready)."""
    if obj.get("kind") != "Deployment":
        return obj
    o = dict(obj)
    want = obj.get("spec", {}).get("replicas", 1)
    ready = 0 if mode("kube-apiserver") == "no-rollout" else want
    o["status"] = {"observedGeneration": obj["metadata"].get("generation", 1), "replicas": want,
                   "updatedReplicas": ready, "availableReplicas": ready, "readyReplicas": ready}
    return o


def node_object(name, cidr):
    spec = {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {}
    if cordoned(name):
        spec["unschedulable"] = True
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": "standin-" + name, "resourceVersion": "1"},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True", "message": "stand-in"}]},
    }


def cordoned(name):
    try:
        with open(os.path.join(STATE, "cordon-" + name)) as f:
            return f.read().strip().splitlines()[-1].split()[0] == "True"
    except (FileNotFoundError, IndexError):
        return False


def resource(name, kind, namespaced, verbs=("get", "list", "create", "patch", "update", "delete")):
    return {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
            "verbs": list(verbs)}


# Just enough legacy discovery for kubectl's node, pod and RBAC commands.
DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": g + "/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": g + "/v1", "version": "v1"}}
        for g in ("rbac.authorization.k8s.io", "coordination.k8s.io", "policy")]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        resource("nodes", "Node", False), resource("pods", "Pod", True),
        resource("pods/eviction", "Eviction", True, ("create",))]},
    "/apis/rbac.authorization.k8s.io/v1": {"kind": "APIResourceList",
        "groupVersion": "rbac.authorization.k8s.io/v1", "resources": [
            resource("clusterrolebindings", "ClusterRoleBinding", False)]},
    "/apis/coordination.k8s.io/v1": {"kind": "APIResourceList", "groupVersion": "coordination.k8s.io/v1",
        "resources": [resource("leases", "Lease", True)]},
    "/apis/policy/v1": {"kind": "APIResourceList", "groupVersion": "policy/v1", "resources": []},
}


def register_node(kubeconfig, name):
    """POST the Node to the API server the kubeconfig names, until it answers."""
    import base64
    import re
    import tempfile
    import urllib.request
    with open(kubeconfig) as f:
        text = f.read()
    field = lambda k: re.search(r"^\s*%s:\s*(\S+)" % k, text, re.M).group(1)
    d = tempfile.mkdtemp()
    files = {}
    for k in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
        files[k] = os.path.join(d, k)
        with open(files[k], "wb") as f:
            f.write(base64.b64decode(field(k)))
    ctx = ssl.create_default_context(cafile=files["certificate-authority-data"])
    ctx.load_cert_chain(files["client-certificate-data"], files["client-key-data"])
    body = json.dumps({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}}).encode()
    # Real API servers share etcd; stand-ins do not. Behind a load balancer (round robin, a
    # new connection each time) the Node is registered several times, so that every stand-in
    # API server behind it has it.
    registered = 0
    while registered < 6:
        try:
            req = urllib.request.Request(field("server") + "/api/v1/nodes", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, context=ctx, timeout=5).read()
            print("kubelet: registered Node %s with %s" % (name, field("server")), flush=True)
            registered += 1
            time.sleep(0.2)
        except Exception as e:  # the API server is not up yet: retry, as the kubelet does
            print("kubelet: cannot register Node %s yet: %s" % (name, e), flush=True)
            time.sleep(1)


def serve(component, addr, port, tls=None):
    Handler.component = component
    srv = http.server.ThreadingHTTPServer((addr, port), Handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        if len(tls) > 2:
            ctx.load_verify_locations(tls[2])
            ctx.verify_mode = ssl.CERT_OPTIONAL
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("%s stand-in serving on %s:%d" % (component, addr, port), flush=True)
    srv.serve_forever()


def main():
    if globals().get("COMPONENT"):
        component, argv = COMPONENT, sys.argv[1:]
    else:
        component, argv = sys.argv[1], sys.argv[2:]
    if "--version" in argv:
        print("Kubernetes %s" % VERSION_TEXT)
        return
    f = flags(argv)
    os.makedirs(STATE, exist_ok=True)
    m = mode(component)
    print("%s stand-in (mode %s): %s" % (component, m, " ".join(argv)), flush=True)
    with open(os.path.join(STATE, "started-" + component), "a") as s:
        s.write("%d %f %s\n" % (os.getpid(), time.time(), VERSION_TEXT))
    if m == "crash":
        print("%s: fatal: stand-in told to crash" % component, flush=True)
        sys.exit(3)
    if m == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if m == "never-healthy":
        while True:
            print("%s: still starting..." % component, flush=True)
            time.sleep(1)
    pki = "/etc/kubernetes/pki"
    if component == "kube-apiserver":
        delay = f.get("shutdown-delay-duration", "")
        if delay and m != "ignore-term":
            shutdown_after(float(delay.rstrip("s")))
        serve(component, "0.0.0.0", int(f.get("secure-port", "6443")),
              (f["tls-cert-file"], f["tls-private-key-file"], f["client-ca-file"]))
    elif component in ("kube-controller-manager", "kube-scheduler"):
        if component == "kube-controller-manager" and m != "no-serviceaccounts":
            # Its serviceaccount controller makes every namespace's "default" account.
            open(os.path.join(STATE, "sa-default-default"), "w").close()
        # The real ones make a self-signed serving certificate; the apiserver's does here.
        port = 10257 if component == "kube-controller-manager" else 10259
        serve(component, f.get("bind-address", "127.0.0.1"), port,
              (pki + "/apiserver.crt", pki + "/apiserver.key"))
    elif component == "kubelet":
        name = f["hostname-override"]
        if not os.path.exists(node_file(name)):
            open(node_file(name), "w").close()
        print("kubelet: registered Node %s" % name, flush=True)
        if globals().get("COMPONENT") and f.get("kubeconfig"):
            register_node(f["kubeconfig"], name)
        while True:
            time.sleep(3600)
    elif component == "kube-proxy":
        serve(component, "0.0.0.0", 10256)
    else:
        sys.exit("unknown component " + component)


if __name__ == "__main__":
    main()
