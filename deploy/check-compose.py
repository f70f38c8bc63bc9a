#!/usr/bin/env python3
"""Static checks of deploy/compose.yaml and deploy/sextant.compose.toml (no Docker needed).

    python3 deploy/check-compose.py      exit 0: fine, 1: a problem, 77: PyYAML missing (skip)

No Docker engine runs on the machines this was written on, so `docker compose config` cannot
be used. This checks what can be checked without it: the YAML parses (anchors and merge keys
resolved), every service has an image, depends_on names existing services with valid
conditions, a service_healthy dependency has a healthcheck, bind-mounted files and the
Dockerfile exist, the sextant containers' commands use known subcommands and roles, and the
mounted TOML parses and uses the distributed-mode keys (bus.kind=jetstream, storage.kind=scylla).
"""
import os
import sys

try:
    import yaml
except ImportError:
    print("check-compose: PyYAML is not installed; skipped", file=sys.stderr)
    sys.exit(77)
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROLES = {"ingest", "projector", "feedback", "datasets", "evaluator", "prompts"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
errors = []

with open(os.path.join(HERE, "compose.yaml")) as f:
    compose = yaml.safe_load(f)
services = compose.get("services") or {}
if not services:
    errors.append("no services")
for name, svc in services.items():
    if "image" not in svc and "build" not in svc:
        errors.append(f"{name}: neither image nor build")
    build = svc.get("build")
    if isinstance(build, dict):
        ctx = os.path.normpath(os.path.join(HERE, build.get("context", ".")))
        dockerfile = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            errors.append(f"{name}: Dockerfile {dockerfile} not found")
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        deps = {d: {"condition": "service_started"} for d in deps}
    for dep, spec in deps.items():
        if dep not in services:
            errors.append(f"{name}: depends_on unknown service {dep}")
            continue
        cond = (spec or {}).get("condition", "service_started")
        if cond not in CONDITIONS:
            errors.append(f"{name}: depends_on {dep}: unknown condition {cond}")
        hc = services[dep].get("healthcheck") or {}
        if cond == "service_healthy" and (not hc or hc.get("disable")):
            errors.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    for vol in svc.get("volumes") or []:
        src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
        if src.startswith((".", "/")) and not os.path.exists(os.path.join(HERE, src)):
            errors.append(f"{name}: bind mount source {src} does not exist")
    cmd = svc.get("command") or []
    if "sextant" in str(svc.get("image", "")) or svc.get("build"):
        if not cmd or cmd[0] not in ("serve", "migrate"):
            errors.append(f"{name}: command must start with serve or migrate, got {cmd}")
        if "--roles" in cmd:
            roles = cmd[cmd.index("--roles") + 1].split(",")
            unknown = set(roles) - ROLES
            if unknown:
                errors.append(f"{name}: unknown roles {unknown}")
        grace = str(svc.get("stop_grace_period", "10s"))
        if grace.endswith("s") and grace[:-1].isdigit() and int(grace[:-1]) <= 20:
            errors.append(f"{name}: stop_grace_period {grace} must exceed shutdown_grace_secs (20)")
for name in ("nats", "scylla", "migrate", "ingest", "projector"):
    if name not in services:
        errors.append(f"missing service {name}")

with open(os.path.join(HERE, "sextant.compose.toml"), "rb") as f:
    cfg = tomllib.load(f)
if cfg.get("bus", {}).get("kind") != "jetstream":
    errors.append("sextant.compose.toml: bus.kind must be jetstream")
if cfg.get("storage", {}).get("kind") != "scylla":
    errors.append("sextant.compose.toml: storage.kind must be scylla")
dcs = cfg.get("storage", {}).get("replication", {}).get("datacenters", {})
if cfg.get("storage", {}).get("local_datacenter") not in dcs:
    errors.append("sextant.compose.toml: local_datacenter is not in storage.replication.datacenters")

for e in errors:
    print(f"check-compose: {e}", file=sys.stderr)
print(f"check-compose: {len(services)} services, {'FAILED' if errors else 'ok'}")
sys.exit(1 if errors else 0)
