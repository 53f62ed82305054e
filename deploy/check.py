#!/usr/bin/env python3
"""Checks that the files under deploy/ agree with each other and with the platform.

Schema checks (compose spec, Kubernetes, Prometheus) are run by deploy/check.sh; this script checks
what no schema knows: the same nodes named in the dispatcher list, Prometheus and compose; drain
times longer than the configured grace; the dashboard's datasource provisioned; every node
configuration accepted by `callcenter check-config` with the environment its container sets.

Usage: check.py CALLCENTER_BINARY   (prints each problem; exits 1 if there is any)
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def seconds(value):
    """'330s', '5m', 330 -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(value).strip())
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


def dispatcher_nodes(text):
    """host:port of every set-1 destination of a dispatcher list."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "1" and fields[1].startswith("sip:"):
            nodes.append(fields[1][len("sip:"):])
    return nodes


def check_config(binary, path, env, where):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    environment.update(env)
    run = subprocess.run([binary, "check-config", str(path)], env=environment, capture_output=True, text=True)
    if run.returncode != 0:
        problem(where, f"callcenter check-config failed: {run.stdout}{run.stderr}".strip())


def check_compose(binary):
    where = "compose/compose.yaml"
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())
    services = compose["services"]
    node_toml_path = DEPLOY / "compose" / compose["configs"]["callcenter"]["file"]
    node_toml = tomllib.loads(node_toml_path.read_text())
    grace = node_toml["node"]["shutdown_grace_secs"]
    http_port = node_toml["http"]["listen"].rsplit(":", 1)[1]
    sip_port = node_toml["sip"]["listen"].rsplit(":", 1)[1]
    nodes = sorted(name for name in services if name.startswith("cc-node-"))
    if len(nodes) != 3:
        problem(where, f"a three-node cluster, found {nodes}")
    kamailio_ip = services["kamailio"]["networks"]["cc"]["ipv4_address"]
    if kamailio_ip not in node_toml["sip"]["limits"]["trusted_sources"]:
        problem(node_toml_path.name, f"Kamailio ({kamailio_ip}) must be in sip.limits.trusted_sources")
    for name in nodes:
        node = services[name]
        if seconds(node.get("stop_grace_period", "10s")) <= grace:
            problem(where, f"{name}: stop_grace_period must exceed shutdown_grace_secs ({grace})")
        if node.get("stop_signal", "SIGTERM") != "SIGTERM":
            problem(where, f"{name}: the drain needs SIGTERM")
        ip = node["networks"]["cc"]["ipv4_address"]
        env = {k: str(v) for k, v in node["environment"].items()}
        if env.get("CALLCENTER_SIP__ADVERTISED_ADDRESS") != f"{ip}:{sip_port}":
            problem(where, f"{name}: CALLCENTER_SIP__ADVERTISED_ADDRESS must be its own address {ip}:{sip_port}")
        if env.get("CALLCENTER_RTP__BIND_IP") != ip:
            problem(where, f"{name}: CALLCENTER_RTP__BIND_IP must be its own address {ip} (the SDP carries it)")
        if env.get("CALLCENTER_NODE__NAME") != name:
            problem(where, f"{name}: CALLCENTER_NODE__NAME must be {name}")
        env["CALLCENTER_CRM__DATABASE_URL"] = "postgres://callcenter:secret@postgres/callcenter"
        check_config(binary, node_toml_path, env, f"{where} {name}")
    # The dispatcher list and Prometheus name exactly these nodes.
    listed = dispatcher_nodes((DEPLOY / "kamailio/dispatcher.list").read_text())
    expected = [f"{n}:{sip_port}" for n in nodes]
    if sorted(listed) != expected:
        problem("kamailio/dispatcher.list", f"set 1 is {listed}, compose's nodes are {expected}")
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = sorted(t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"])
    if targets != [f"{n}:{http_port}" for n in nodes]:
        problem("prometheus/prometheus.yml", f"targets {targets} are not every node's HTTP address")
    # Files the services take must exist.
    for name, config in compose["configs"].items():
        if not (DEPLOY / "compose" / config["file"]).is_file():
            problem(where, f"config {name}: no file {config['file']}")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (DEPLOY / "compose" / source).exists():
                problem(where, f"{name}: no {source} to mount")
    command = " ".join(services["kamailio"]["command"])
    nodes_target = next(c["target"] for c in services["kamailio"]["configs"] if c["source"] == "kamailio-nodes")
    if f'DS_LIST="{nodes_target}"' not in command:
        problem(where, f"kamailio: DS_LIST must name the mounted list {nodes_target}")
    if "--appendonly" not in services["redis"]["command"]:
        problem(where, "redis: run with --appendonly yes")
    return services


def check_grafana(services):
    where = "grafana"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    for d in datasources["datasources"]:
        host = re.match(r"https?://([^:/]+)", d["url"]).group(1)
        if host not in services:
            problem(where, f"datasource {d['name']} points at {host}, not a compose service")
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/callcenter.yaml").read_text())
    mounts = {v.split(":")[1] for v in services["grafana"]["volumes"] if v.startswith("../grafana/dashboards:")}
    for p in providers["providers"]:
        if p["options"]["path"] not in mounts:
            problem(where, f"provider {p['name']} reads {p['options']['path']}, compose mounts the dashboards at {mounts}")
    for path in sorted((DEPLOY / "grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        ids = set()

        def walk(panels):
            for panel in panels:
                if panel["id"] in ids:
                    problem(path.name, f"panel id {panel['id']} twice")
                ids.add(panel["id"])
                grid = panel["gridPos"]
                if grid["x"] + grid["w"] > 24:
                    problem(path.name, f"panel {panel['title']!r} is wider than the grid")
                for item in [panel] + panel.get("targets", []):
                    uid = item.get("datasource", {}).get("uid")
                    if uid is not None and uid not in uids:
                        problem(path.name, f"panel {panel['title']!r} uses datasource {uid}, provisioned: {uids}")
                if panel["type"] != "row" and not panel.get("targets"):
                    problem(path.name, f"panel {panel['title']!r} has no query")
                walk(panel.get("panels", []))

        walk(dashboard["panels"])


def check_systemd():
    where = "systemd/callcenter.service"
    unit = {}
    for line in (DEPLOY / "systemd/callcenter.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            unit.setdefault(key.strip(), []).append(value.strip())
    example = tomllib.loads((DEPLOY.parent / "config/production.example.toml").read_text())
    grace = example["node"]["shutdown_grace_secs"]
    if seconds(unit["TimeoutStopSec"][-1]) <= grace:
        problem(where, f"TimeoutStopSec must exceed the production example's shutdown_grace_secs ({grace})")
    if unit.get("KillSignal") != ["SIGTERM"]:
        problem(where, "KillSignal must be SIGTERM (the drain)")
    if int(unit["LimitNOFILE"][-1]) < 2 * (example["rtp"]["port_max"] - example["rtp"]["port_min"] + 1):
        problem(where, "LimitNOFILE must leave room beyond one socket per RTP port")
    for key in ["NoNewPrivileges", "ProtectSystem", "ReadWritePaths"]:
        if key not in unit:
            problem(where, f"{key} missing")


def check_kubernetes(binary):
    where = "kubernetes"
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    namespaces = set(by_kind.get("Namespace", {}))
    for d in docs:
        ns = d["metadata"].get("namespace")
        if d["kind"] != "Namespace" and ns not in namespaces:
            problem(where, f"{d['kind']}/{d['metadata']['name']} is in namespace {ns}, not created here")
    sts = by_kind["StatefulSet"]["cc"]
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    toml_text = by_kind["ConfigMap"]["callcenter-config"]["data"]["callcenter.toml"]
    node = tomllib.loads(toml_text)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(pre_stop[1]) if pre_stop[0] == "sleep" else 0
    if pod["terminationGracePeriodSeconds"] <= pause + node["node"]["shutdown_grace_secs"]:
        problem(where, "terminationGracePeriodSeconds must exceed the preStop pause plus shutdown_grace_secs")
    if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
        problem(where, "readiness is /readyz (503 while draining)")
    if container["livenessProbe"]["httpGet"]["path"] != "/healthz":
        problem(where, "liveness is /healthz")
    if not pod.get("hostNetwork"):
        problem(where, "the nodes need host networking (SDP carries the RTP address)")
    service = by_kind["Service"][sts["spec"]["serviceName"]]
    if not service["spec"].get("publishNotReadyAddresses"):
        problem(where, "the headless Service must keep draining nodes' names (publishNotReadyAddresses)")
    namespace = sts["metadata"]["namespace"]
    expected = [
        f"{sts['metadata']['name']}-{i}.{sts['spec']['serviceName']}.{namespace}.svc.cluster.local:5060"
        for i in range(sts["spec"]["replicas"])
    ]
    listed = dispatcher_nodes(by_kind["ConfigMap"]["kamailio-nodes"]["data"]["dispatcher.list"])
    if listed != expected:
        problem(where, f"kamailio-nodes lists {listed}, the StatefulSet's pods are {expected}")
    # The shared configuration with what each pod sets.
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"].replace("$(POD_IP)", "192.0.2.20")
    env["CALLCENTER_NODE__NAME"] = "cc-0"
    env["CALLCENTER_CRM__DATABASE_URL"] = "postgres://callcenter:secret@postgres/callcenter"
    env["CALLCENTER_STATE__REDIS_URL"] = "redis://:secret@redis:6379/"
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml_text)
    try:
        check_config(binary, f.name, env, f"{where} callcenter-config")
    finally:
        os.unlink(f.name)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    services = check_compose(binary)
    check_grafana(services)
    check_systemd()
    check_kubernetes(binary)
    for p in problems:
        print(f"deploy/{p}")
    if problems:
        sys.exit(1)
    print("deploy/: files agree with each other and with the platform")


if __name__ == "__main__":
    main()
