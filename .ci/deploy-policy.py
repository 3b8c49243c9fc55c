"""What the deployment must keep, beyond what the Kubernetes and Compose
schemas can say: run by .ci/deploy-check.sh on each rendered overlay and on
deploy/compose.yaml.

  deploy-policy.py kubernetes OVERLAY_NAME RENDERED.yaml
  deploy-policy.py compose deploy/compose.yaml

Prints the number of checks that held; exits 1 naming every one that did
not. Needs PyYAML (yamllint brings it).
"""

import os
import re
import sys

import yaml

TIERS = ("gateway", "experience", "process", "system")
# The store URLs each pod needs from the Secret (README "Configuration").
DATABASE_ENV = {
    "gateway": {"ERP_CONNECT__GATEWAY__DATABASE_URL"},
    "process": {"ERP_CONNECT__PROCESS__DATABASE_URL"},
    "system": {
        "ERP_CONNECT__ERP__DATABASE_URL",
        "ERP_CONNECT__PAYMENTS__DATABASE_URL",
        "ERP_CONNECT__CRM__DATABASE_URL",
    },
    "migrate": {
        "ERP_CONNECT__GATEWAY__DATABASE_URL",
        "ERP_CONNECT__PROCESS__DATABASE_URL",
        "ERP_CONNECT__ERP__DATABASE_URL",
        "ERP_CONNECT__PAYMENTS__DATABASE_URL",
        "ERP_CONNECT__CRM__DATABASE_URL",
    },
}


class Checks:
    def __init__(self, where):
        self.where = where
        self.held = 0
        self.failed = []

    def check(self, ok, what):
        if ok:
            self.held += 1
        else:
            self.failed.append(what)

    def finish(self):
        for what in self.failed:
            print(f"{self.where}: {what}", file=sys.stderr)
        print(self.held)
        return 1 if self.failed else 0


def seconds(duration):
    """A humantime duration as the config writes it ("25s", "1m")."""
    match = re.fullmatch(r"\s*(\d+)\s*(ms|s|m)\s*", duration)
    if not match:
        raise ValueError(f"cannot read duration {duration!r}")
    value, unit = int(match[1]), match[2]
    return value / 1000 if unit == "ms" else value * (60 if unit == "m" else 1)


def grace_of(toml):
    found = re.search(r'^shutdown_grace\s*=\s*"([^"]+)"', toml, re.M)
    return seconds(found[1]) if found else 30.0  # the default


def shutdown_grace(objects):
    for obj in objects:
        if obj["kind"] == "ConfigMap" and "erp-connect.toml" in obj.get("data", {}):
            return grace_of(obj["data"]["erp-connect.toml"])
    return None


def pod_checks(c, name, pod, tier):
    sc = pod.get("securityContext", {})
    c.check(sc.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot")
    c.check(sc.get("runAsUser") == 10001, f"{name}: pod runAsUser 10001")
    c.check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp RuntimeDefault")
    c.check(pod.get("automountServiceAccountToken") is False, f"{name}: no Kubernetes API token mounted")
    for volume in pod.get("volumes", []):
        c.check("persistentVolumeClaim" not in volume, f"{name}: no PersistentVolumeClaim ({volume['name']})")
    for container in pod["containers"]:
        csc = container.get("securityContext", {})
        cname = f"{name}/{container['name']}"
        c.check(csc.get("readOnlyRootFilesystem") is True, f"{cname}: readOnlyRootFilesystem")
        c.check(csc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation false")
        c.check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{cname}: capabilities drop ALL")
        res = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                c.check(resource in res.get(kind, {}), f"{cname}: {kind}.{resource} set")
        env = {e["name"] for e in container.get("env", [])}
        for var in DATABASE_ENV.get(tier, ()):
            c.check(var in env, f"{cname}: {var} from the Secret")


def kubernetes(overlay, path):
    c = Checks(f"kubernetes {overlay}")
    with open(path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    grace = shutdown_grace(objects)
    c.check(grace is not None, "a ConfigMap holds erp-connect.toml")
    production = overlay == "production"

    for tier in TIERS:
        name = f"erp-connect-{tier}"
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"):
            c.check(name in by_kind.get(kind, {}), f"{kind} {name} exists")
        deployment = by_kind.get("Deployment", {}).get(name)
        if not deployment:
            continue
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        c.check("replicas" not in spec, f"{name}: replicas left to the HorizontalPodAutoscaler")
        c.check(spec.get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate", f"{name}: rolling update")
        c.check(
            spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0,
            f"{name}: maxUnavailable 0",
        )
        container = pod["containers"][0]
        pause = (container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}) or {}).get("seconds", 0)
        if grace is not None:
            c.check(
                pod.get("terminationGracePeriodSeconds", 30) > pause + grace,
                f"{name}: terminationGracePeriodSeconds above preStop ({pause}s) + shutdown_grace ({grace:g}s)",
            )
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            c.check(probe in container, f"{name}: {probe}")
        if tier in ("gateway", "experience"):
            c.check(container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{name}: /readyz")
            c.check(container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{name}: /healthz")
        else:
            c.check("grpc" in container.get("readinessProbe", {}), f"{name}: gRPC health readiness")
        annotations = spec["template"]["metadata"].get("annotations", {})
        ports = {p["containerPort"] for p in container.get("ports", [])}
        c.check(
            annotations.get("prometheus.io/scrape") == "true" and int(annotations.get("prometheus.io/port", 0)) in ports,
            f"{name}: Prometheus scrapes the tier's port",
        )
        image = container["image"]
        if production:
            c.check(
                "@sha256:" in image or (":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")),
                f"{name}: image pinned ({image})",
            )
        pod_checks(c, name, pod, tier)

        hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(name)
        if hpa:
            c.check(hpa["apiVersion"] == "autoscaling/v2", f"{name}: HPA autoscaling/v2")
            c.check(hpa["spec"]["scaleTargetRef"]["name"] == name, f"{name}: HPA targets its Deployment")
            if production:
                c.check(hpa["spec"].get("minReplicas", 1) >= 2, f"{name}: HPA minReplicas >= 2")
            else:
                c.check(hpa["spec"].get("minReplicas", 1) == 1, f"{name}: one replica in {overlay}")
        pdb = by_kind.get("PodDisruptionBudget", {}).get(name)
        if pdb and production:
            c.check(pdb["spec"].get("minAvailable", 0) >= 1, f"{name}: PDB minAvailable >= 1")

    job = by_kind.get("Job", {}).get("erp-connect-migrate")
    c.check(job is not None, "Job erp-connect-migrate exists")
    if job:
        pod = job["spec"]["template"]["spec"]
        c.check(pod["containers"][0].get("args", [])[:1] == ["migrate"], "the Job runs `erp-connect migrate`")
        pod_checks(c, "erp-connect-migrate", pod, "migrate")

    # Every tier isolated in both directions; the chain is the only way in.
    policies = by_kind.get("NetworkPolicy", {})
    for tier, caller in (("experience", "gateway"), ("process", "experience"), ("system", "process")):
        policy = policies.get(f"erp-connect-{tier}")
        if not policy:
            continue
        spec = policy["spec"]
        c.check(sorted(spec.get("policyTypes", [])) == ["Egress", "Ingress"], f"NetworkPolicy {tier}: both directions")
        peers = [p for rule in spec.get("ingress", []) for p in rule.get("from", [])]
        c.check(all(rule.get("from") for rule in spec.get("ingress", [])), f"NetworkPolicy {tier}: no open ingress")
        c.check(
            any(p.get("podSelector", {}).get("matchLabels", {}).get("tier") == caller for p in peers),
            f"NetworkPolicy {tier}: admits the {caller} tier",
        )
        others = [t for t in TIERS if t not in (caller, tier)]
        c.check(
            not any(p.get("podSelector", {}).get("matchLabels", {}).get("tier") in others for p in peers),
            f"NetworkPolicy {tier}: admits no other tier",
        )
    return c.finish()


def compose(path):
    c = Checks("compose")
    with open(path) as f:
        doc = yaml.safe_load(f)
    services = doc.get("services", {})
    for tier in TIERS:
        c.check(tier in services, f"service {tier} exists")
    c.check("migrate" in services, "service migrate exists")
    for backend in ("postgres", "nats", "redis", "otel-collector"):
        c.check(backend in services, f"service {backend} exists")
    nats = services.get("nats", {})
    c.check(any(a in ("-js", "--jetstream") for a in nats.get("command", [])), "NATS runs JetStream")
    for name, service in services.items():
        c.check(service.get("read_only") is True, f"{name}: read_only")
        c.check(service.get("cap_drop") == ["ALL"], f"{name}: cap_drop ALL")
        if name in TIERS:
            c.check(service.get("user") == "10001:10001", f"{name}: runs as 10001")
            c.check("healthcheck" in service, f"{name}: healthcheck")
            config = [v.split(":")[0] for v in service.get("volumes", []) if ":/etc/erp-connect/erp-connect.toml" in v]
            c.check(len(config) == 1, f"{name}: mounts its erp-connect.toml")
            if len(config) == 1:
                with open(os.path.join(os.path.dirname(path), config[0])) as f:
                    grace = grace_of(f.read())
                c.check(
                    seconds(service.get("stop_grace_period", "10s")) > grace,
                    f"{name}: stop_grace_period above shutdown_grace ({grace:g}s)",
                )
        if name in TIERS and name != "experience":
            c.check(
                service.get("depends_on", {}).get("migrate", {}).get("condition") == "service_completed_successfully",
                f"{name}: starts after migrate succeeded",
            )
    return c.finish()


def main(argv):
    if len(argv) == 4 and argv[1] == "kubernetes":
        return kubernetes(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "compose":
        return compose(argv[2])
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
