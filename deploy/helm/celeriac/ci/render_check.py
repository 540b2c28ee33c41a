#!/usr/bin/env python3
"""Render the celeriac chart without helm and check what it produces.

helm is not installable here (no Debian package), so this renders the chart's
templates with a small interpreter of exactly the Go-template subset they use
(define/include, if/else/with/end, and/eq, quote, nindent, toYaml, default,
join, lower, add; `{{-`/`-}}` trimming) and then checks the manifests: every
document parses as YAML, the scaler's Role is least-privilege, the worker's
grace period covers its shutdown grace, probes and security contexts are set,
the KEDA ScaledObject appears only in keda mode. It also checks
deploy/kubernetes/scaler.yaml. Exit status 0 = all good; prints one line per
rendered variant.
"""
import copy
import json
import pathlib
import re
import sys

import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent
ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


def tokenize(src):
    out, pos = [], 0
    for m in ACTION.finditer(src):
        text = src[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2), bool(m.group(3))))
        pos = m.end()
    out.append(("text", src[pos:]))
    # Right-trim markers eat the whitespace after the action.
    for i, tok in enumerate(out):
        if tok[0] == "action" and tok[2] and i + 1 < len(out):
            out[i + 1] = ("text", out[i + 1][1].lstrip())
    return out


def parse(tokens, i=0, stop=("end",)):
    """Nodes: ('text', s) ('expr', e) ('if', e, body, else) ('with', e, body, else) ('define', name, body)."""
    nodes = []
    while i < len(tokens):
        tok = tokens[i]
        if tok[0] == "text":
            nodes.append(tok)
            i += 1
            continue
        action = tok[1]
        word = action.split()[0] if action else ""
        if word in stop or word == "else":
            return nodes, i
        if word in ("if", "with"):
            body, i = parse(tokens, i + 1, stop)
            other = []
            if tokens[i][1].split()[0] == "else":
                other, i = parse(tokens, i + 1, stop)
            nodes.append((word, action[len(word):].strip(), body, other))
            i += 1
        elif word == "define":
            body, i = parse(tokens, i + 1, stop)
            nodes.append(("define", action.split('"')[1], body))
            i += 1
        elif action.startswith("/*"):
            i += 1
        else:
            nodes.append(("expr", action))
            i += 1
    return nodes, i


def split_args(s):
    args, depth, cur, quote = [], 0, "", False
    for ch in s:
        if ch == '"':
            quote = not quote
        if not quote and ch == "(":
            depth += 1
        if not quote and ch == ")":
            depth -= 1
        if ch == " " and depth == 0 and not quote:
            if cur:
                args.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        args.append(cur)
    return args


class Renderer:
    def __init__(self, values, namespace="airflow", release="prod"):
        self.defines = {}
        self.root = {
            "Values": values,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        }

    def term(self, t, dot):
        if t.startswith('"'):
            return t[1:-1]
        if t.startswith("("):
            return self.pipeline(t[1:-1], dot)
        if re.fullmatch(r"-?\d+", t):
            return int(t)
        if t == ".":
            return dot
        if t.startswith("."):
            cur = self.root if t.split(".")[1] in ("Values", "Release") else dot
            for part in t.split(".")[1:]:
                cur = cur.get(part) if isinstance(cur, dict) else None
            return cur
        return self.call(t, [])

    def call(self, fn, args):
        if fn == "include":
            return self.run(self.defines[args[0]], args[1]).strip()
        funcs = {
            "quote": lambda v: '"%s"' % v,
            "nindent": lambda n, v: "\n" + self.indent(n, v),
            "indent": lambda n, v: self.indent(n, v),
            "toYaml": lambda v: yaml.safe_dump(v, default_flow_style=False, sort_keys=False).rstrip(),
            "default": lambda d, v: v if v else d,
            "join": lambda sep, v: sep.join(str(x) for x in v),
            "lower": lambda v: str(v).lower(),
            "add": lambda a, b: a + b,
            "eq": lambda a, b: a == b,
            "and": lambda *a: all(a),
            "or": lambda *a: next((x for x in a if x), a[-1]),
            "not": lambda v: not v,
        }
        return funcs[fn](*args)

    @staticmethod
    def indent(n, v):
        return "\n".join(" " * n + line if line else line for line in str(v).split("\n"))

    def command(self, cmd, dot, piped=None):
        parts = split_args(cmd.strip())
        args = [self.term(p, dot) for p in parts[1:]]
        if piped is not None:
            args.append(piped)
        if parts[0].startswith((".", '"', "(")) or re.fullmatch(r"-?\d+", parts[0]):
            return self.term(parts[0], dot)
        if parts[0] == "include":
            return self.call("include", [parts[1][1:-1], self.term(parts[2], dot)])
        return self.call(parts[0], args)

    def pipeline(self, expr, dot):
        value = None
        for i, cmd in enumerate(re.split(r"\s\|\s", expr)):
            value = self.command(cmd, dot, None if i == 0 else value)
        return value

    def run(self, nodes, dot):
        out = []
        for node in nodes:
            kind = node[0]
            if kind == "text":
                out.append(node[1])
            elif kind == "expr":
                v = self.pipeline(node[1], dot)
                out.append("" if v is None else ("true" if v is True else "false" if v is False else str(v)))
            elif kind == "define":
                self.defines[node[1]] = node[2]
            else:
                v = self.pipeline(node[1], dot)
                body = node[2] if v else node[3]
                out.append(self.run(body, v if kind == "with" and v else dot))
        return "".join(out)


def render(values):
    r = Renderer(values)
    for path in sorted((CHART / "templates").glob("*.tpl")):
        r.run(parse(tokenize(path.read_text()))[0], r.root)
    docs = []
    for path in sorted((CHART / "templates").glob("*.yaml")):
        text = r.run(parse(tokenize(path.read_text()))[0], r.root)
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def merged(*overrides):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for o in overrides:
        stack = [(values, o)]
        while stack:
            dst, src = stack.pop()
            for k, v in src.items():
                if isinstance(v, dict) and isinstance(dst.get(k), dict):
                    stack.append((dst[k], v))
                else:
                    dst[k] = copy.deepcopy(v)
    return values


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def check_role(role, resource, name, verbs=("get", "patch")):
    rules = role["rules"]
    assert rules[0] == {"apiGroups": ["apps"], "resources": [resource],
                        "resourceNames": [name], "verbs": list(verbs)}, rules
    assert rules[1] == {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]}, rules
    assert len(rules) == 2, rules


def check_containers(pod_spec):
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    for c in pod_spec["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert not sc["allowPrivilegeEscalation"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["resources"]["requests"], c["name"]


def check_default():
    docs = render(merged())
    worker = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "prod-celeriac-worker"][0]
    spec = worker["spec"]["template"]["spec"]
    check_containers(spec)
    args = spec["containers"][0]["args"]
    assert "--shutdown-grace=600s" in args and "--concurrency=4" in args, args
    assert spec["terminationGracePeriodSeconds"] >= 600
    assert {e["name"] for e in spec["containers"][0]["env"]} == {"CELERIAC_BROKER_URL", "CELERIAC_RESULT_BACKEND"}
    scaler = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "prod-celeriac-scaler"][0]
    sspec = scaler["spec"]["template"]["spec"]
    check_containers(sspec)
    sargs = sspec["containers"][0]["args"]
    assert "--target=kubernetes" in sargs and "--deployment=prod-celeriac-worker" in sargs, sargs
    assert "--namespace=airflow" in sargs
    check_role(by_kind(docs, "Role")[0], "deployments/scale", "prod-celeriac-worker")
    binding = by_kind(docs, "RoleBinding")[0]
    assert binding["subjects"][0]["name"] == sspec["serviceAccountName"]
    assert not by_kind(docs, "ScaledObject")
    return docs


def check_keda():
    bare = render(merged({"scaler": {"mode": "keda"}, "keda": {"deletionCosts": False}}))
    assert not by_kind(bare, "Role") and not by_kind(bare, "RoleBinding"), "no API access needed"
    docs = render(merged({"scaler": {"mode": "keda"}, "keda": {"scaledObject": True}}))
    check_role(by_kind(docs, "Role")[0], "deployments/scale", "prod-celeriac-worker", ("get",))
    so = by_kind(docs, "ScaledObject")[0]
    trigger = so["spec"]["triggers"][0]
    assert trigger == {"type": "external", "metadata": {"scalerAddress": "prod-celeriac-scaler.airflow.svc:9090"}}, trigger
    assert so["spec"]["scaleTargetRef"]["name"] == "prod-celeriac-worker"
    scaler = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "prod-celeriac-scaler"][0]
    args = scaler["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--keda-grpc-addr=0.0.0.0:9090" in args and "--target=kubernetes" in args, args
    return docs


def check_airflow():
    docs = render(merged(yaml.safe_load((CHART / "values-airflow.yaml").read_text())))
    assert [d["metadata"]["name"] for d in by_kind(docs, "Deployment")] == ["prod-celeriac-scaler"]
    check_role(by_kind(docs, "Role")[0], "statefulsets/scale", "airflow-worker")
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--statefulset=airflow-worker" in args and "--concurrency=16" in args, args
    return docs


def check_plain_manifest():
    path = CHART.parent.parent / "kubernetes" / "scaler.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    check_role(by_kind(docs, "Role")[0], "deployments/scale", "celeriac-worker")
    check_containers(by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"])
    return docs


def scaler_args():
    """Each variant's scaler container args (checked against the real CLI by
    scaler/tests/kubernetes_chart.rs)."""
    out = {}
    for name, docs in [("default", render(merged())),
                       ("keda", render(merged({"scaler": {"mode": "keda"}}))),
                       ("airflow", render(merged(yaml.safe_load((CHART / "values-airflow.yaml").read_text())))),
                       ("deploy/kubernetes/scaler.yaml", check_plain_manifest())]:
        scaler = [d for d in by_kind(docs, "Deployment") if "scaler" in d["metadata"]["name"]][0]
        out[name] = scaler["spec"]["template"]["spec"]["containers"][0]["args"]
    return out


def main():
    if sys.argv[1:] == ["--scaler-args"]:
        print(json.dumps(scaler_args()))
        return 0
    for name, check in [("default", check_default), ("keda", check_keda),
                        ("airflow", check_airflow), ("deploy/kubernetes/scaler.yaml", check_plain_manifest)]:
        docs = check()
        print(f"{name}: {len(docs)} documents ok: " + ", ".join(d["kind"] for d in docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
