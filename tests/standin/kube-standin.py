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
no-serviceaccounts (a controller manager whose controllers make no ServiceAccount).
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
STATE = os.path.join(HERE, "state")


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
        if p in ("/healthz", "/readyz", "/livez"):
            return self.reply(200, "ok", "text/plain")
        if self.component != "kube-apiserver":
            return self.reply(404, {"kind": "Status", "code": 404})
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
                return self.reply(404, {"kind": "Status", "code": 404})
            return self.reply(200, {
                "kind": "Node",
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr} if cidr else {},
                "status": {"conditions": [{"type": "Ready", "status": "True", "message": "stand-in"}]},
            })
        return self.reply(404, {"kind": "Status", "code": 404})

    def body(self):
        n = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(n) or b"{}")

    def do_POST(self):
        if self.path == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings":
            b = self.body()
            with open(os.path.join(STATE, "crb-" + b["metadata"]["name"]), "w") as f:
                json.dump(b, f)
            return self.reply(201, b)
        return self.reply(404, {"kind": "Status", "code": 404})

    def do_PATCH(self):
        if self.path.startswith("/api/v1/nodes/"):
            name = self.path.rsplit("/", 1)[1]
            b = self.body()
            with open(node_file(name), "w") as f:
                f.write(b["spec"]["podCIDR"])
            with open(os.path.join(STATE, "patch-" + name), "w") as f:
                f.write(self.headers.get("Content-Type", "") + "\n" + json.dumps(b))
            return self.reply(200, b)
        return self.reply(404, {"kind": "Status", "code": 404})


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
    component, argv = sys.argv[1], sys.argv[2:]
    f = flags(argv)
    os.makedirs(STATE, exist_ok=True)
    m = mode(component)
    print("%s stand-in (mode %s): %s" % (component, m, " ".join(argv)), flush=True)
    with open(os.path.join(STATE, "started-" + component), "a") as s:
        s.write("%d %f\n" % (os.getpid(), time.time()))
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
        while True:
            time.sleep(3600)
    elif component == "kube-proxy":
        serve(component, "0.0.0.0", 10256)
    else:
        sys.exit("unknown component " + component)


if __name__ == "__main__":
    main()
