#!/usr/bin/env python3
"""Checks of what deploy/ renders, beyond schema validation.

Renders each kustomize overlay (`kubectl kustomize`) and asserts what the
schemas cannot: every container has probes, limits and the security settings,
every Deployment a PodDisruptionBudget, the route sends each of the APIs' real
routes (read from their routers) to the right service, the network policies
let only Parley's pods out to PostgreSQL and Kafka, KEDA stops at the partition
count, the PrometheusRule matches alerts.yml; and of docker-compose.yml, that
every service is health-checked, waits for the migration and is scraped.

Each check is a function returning the problems it found. The `Mutations`
tests break a rendered object on purpose and expect the check to notice.

    python3 deploy/tests/test_manifests.py        # or: python3 -m pytest deploy/tests
"""

import copy
import json
import re
import subprocess
import sys
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
DRAIN_DEADLINE_S = 20
PARLEY_COMPONENTS = {"command-api", "read-api", "relay", "projector"}
# Rendered nowhere on purpose: prod's Secret comes from the secret store.
EXTERNAL = {"prod": {("Secret", "parley-secrets")}, "dev": set()}

_rendered = {}


def render(overlay):
    if overlay not in _rendered:
        out = subprocess.run(
            ["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
            check=True, capture_output=True, text=True,
        ).stdout
        _rendered[overlay] = [d for d in yaml.safe_load_all(out) if d]
    return copy.deepcopy(_rendered[overlay])


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found[0] if found else None


def workloads(docs):
    """(name, pod spec, pod labels, kind) of every Deployment and Job."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            tpl = d["spec"]["template"]
            yield d["metadata"]["name"], tpl["spec"], tpl["metadata"].get("labels", {}), d["kind"]


def selects(selector, labels):
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        has = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and (not has or value not in expr["values"]):
            return False
        if op == "NotIn" and has and value in expr["values"]:
            return False
        if op == "Exists" and not has:
            return False
        if op == "DoesNotExist" and has:
            return False
    return True


def config(docs):
    cms = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("parley-config")]
    return cms[0]["data"]


# ---------------------------------------------------------------- checks


def check_containers(docs):
    """Probes, resources and security settings of every container."""
    problems = []
    for name, pod, _, kind in workloads(docs):
        psc = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service account token")
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{kind} {name}, container {c['name']}"
            csc = c.get("securityContext", {})
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        problems.append(f"{where}: no {part}.{r}")
            if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                problems.append(f"{where}: runAsNonRoot is not true")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in csc.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities.drop lacks ALL")
            if csc.get("capabilities", {}).get("add"):
                problems.append(f"{where}: adds capabilities")
            seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
            if seccomp.get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            if csc.get("privileged"):
                problems.append(f"{where}: privileged")
            if kind != "Deployment":
                continue
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"),
                                ("readinessProbe", "/health/ready")):
                p = c.get(probe)
                if not p:
                    problems.append(f"{where}: no {probe}")
                    continue
                get = p.get("httpGet", {})
                if get.get("path") != path:
                    problems.append(f"{where}: {probe} asks {get.get('path')}, not {path}")
                if get.get("port") not in ports and get.get("port") not in ports.values():
                    problems.append(f"{where}: {probe} port {get.get('port')} is no container port")
            listen = {e["name"]: e.get("value") for e in c.get("env", [])}.get("PARLEY_LISTEN", "")
            if not listen.startswith("0.0.0.0:") or int(listen.rsplit(":", 1)[1]) not in ports.values():
                problems.append(f"{where}: PARLEY_LISTEN {listen!r} is not 0.0.0.0:<container port>")
            pre_stop = c.get("lifecycle", {}).get("preStop", {})
            if not pre_stop:
                problems.append(f"{where}: no preStop hook")
            grace = pod.get("terminationGracePeriodSeconds", 30)
            sleep = pre_stop.get("sleep", {}).get("seconds", 0)
            if grace <= DRAIN_DEADLINE_S + sleep:
                problems.append(f"{where}: terminationGracePeriodSeconds {grace} leaves no room "
                                f"for preStop {sleep}s + the {DRAIN_DEADLINE_S}s drain")
    return problems


def check_disruption_and_scaling(docs):
    problems = []
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for name, _, labels, kind in workloads(docs):
        if kind == "Deployment" and not any(selects(p["spec"]["selector"], labels) for p in pdbs):
            problems.append(f"Deployment {name}: no PodDisruptionBudget selects its pods")
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    if set(deployments) != PARLEY_COMPONENTS:
        problems.append(f"Deployments are {sorted(deployments)}, expected {sorted(PARLEY_COMPONENTS)}")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    for api in ("command-api", "read-api"):
        h = hpas.get(api)
        if not h:
            problems.append(f"no HorizontalPodAutoscaler for {api}")
        elif h["spec"]["minReplicas"] > h["spec"]["maxReplicas"]:
            problems.append(f"HPA {api}: minReplicas over maxReplicas")
    scaled_targets = set(hpas) | {o["spec"]["scaleTargetRef"]["name"] for o in of_kind(docs, "ScaledObject")}
    for name in scaled_targets & set(deployments):
        if "replicas" in deployments[name]["spec"]:
            problems.append(f"Deployment {name}: sets replicas, but an autoscaler owns the count "
                            "(each apply would reset it, shrinking a scaled-up Deployment mid-release)")
    cfg = config(docs)
    scaled = of_kind(docs, "ScaledObject")
    if len(scaled) != 1 or scaled[0]["spec"]["scaleTargetRef"]["name"] != "projector":
        problems.append("expected one ScaledObject, for the projector Deployment")
    else:
        spec = scaled[0]["spec"]
        partitions = int(cfg["PARLEY_KAFKA_PARTITIONS"])
        if spec["maxReplicaCount"] != partitions:
            problems.append(f"ScaledObject: maxReplicaCount {spec['maxReplicaCount']} is not the "
                            f"partition count {partitions}")
        if not 1 <= spec.get("minReplicaCount", 0) <= spec["maxReplicaCount"]:
            problems.append("ScaledObject: minReplicaCount out of range")
        kafka = [t for t in spec["triggers"] if t["type"] == "kafka"]
        if not kafka:
            problems.append("ScaledObject: no kafka trigger")
        for t in kafka:
            md = t["metadata"]
            if md.get("consumerGroup") != cfg["PARLEY_KAFKA_GROUP"]:
                problems.append(f"ScaledObject: consumer group {md.get('consumerGroup')} is not PARLEY_KAFKA_GROUP")
            if md.get("topic") != cfg["PARLEY_KAFKA_TOPIC"]:
                problems.append(f"ScaledObject: topic {md.get('topic')} is not PARLEY_KAFKA_TOPIC")
            if md.get("allowIdleConsumers") != "false":
                problems.append("ScaledObject: allowIdleConsumers must be false")
        ns = next(d for d in docs if d["kind"] == "Deployment")["metadata"]["namespace"]
        for t in spec["triggers"]:
            if t["type"] == "prometheus" and f'namespace="{ns}"' not in t["metadata"]["query"]:
                problems.append(f"ScaledObject: the prometheus query does not select namespace {ns}")
    jobs = [j for j in of_kind(docs, "Job") if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
    if not jobs:
        problems.append("no Job runs `parley migrate`")
    return problems


def check_references(docs, overlay):
    """Every ConfigMap, Secret, Service and ServiceAccount referred to exists."""
    problems = []
    have = {(d["kind"], d["metadata"]["name"]) for d in docs} | EXTERNAL[overlay]
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    if len(namespaces) != 1:
        problems.append(f"objects spread over namespaces {namespaces}")
    images = set()
    for name, pod, _, _ in workloads(docs):
        sa = pod.get("serviceAccountName")
        if sa and ("ServiceAccount", sa) not in have:
            problems.append(f"{name}: service account {sa} is not rendered")
        for c in pod["containers"]:
            images.add(c["image"])
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if key in ref and (kind, ref[key]["name"]) not in have:
                        problems.append(f"{name}: env {e['name']} refers to missing {kind} {ref[key]['name']}")
            for src in c.get("envFrom", []):
                for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if key in src and (kind, src[key]["name"]) not in have:
                        problems.append(f"{name}: envFrom refers to missing {kind} {src[key]['name']}")
    if len(images) != 1:
        problems.append(f"one image for every service expected, found {sorted(images)}")
    elif overlay == "prod" and not re.fullmatch(r".+:\d+\.\d+\.\d+-[0-9a-f]{7,40}", images.pop()):
        problems.append("prod image tag is not <semver>-<gitsha>")
    pods = [labels for _, _, labels, kind in workloads(docs) if kind == "Deployment"]
    for svc in of_kind(docs, "Service"):
        if not any(selects({"matchLabels": svc["spec"]["selector"]}, labels) for labels in pods):
            problems.append(f"Service {svc['metadata']['name']} selects no Deployment's pods")
    return problems


def env_value(container, name):
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def check_feed(docs):
    """The read API is told how the projectors are fed (PARLEY_FEED): with a
    Kafka feed, read-your-writes and /v1/stream must judge per aggregate."""
    feeds = {}
    for name in ("projector", "read-api"):
        container = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        feeds[name] = env_value(container, "PARLEY_FEED") or "log"
    if feeds["projector"] != feeds["read-api"]:
        return [f"projector feed {feeds['projector']!r} but read-api told {feeds['read-api']!r}"]
    return []


def axum_routes(path):
    """(method, path) of every `.route("...", get(..).post(..))` in a router file."""
    text = Path(path).read_text()
    routes = []
    for m in re.finditer(r'\.route\(\s*"([^"]+)",(.*?)\)\s*(?=\.route\(|\.merge\(|\.with_state|\.fallback|\.layer|$)',
                         text, re.S):
        for method in re.findall(r"(?:^|[\s.(])(get|post|put|patch|delete)\(", m.group(2)):
            routes.append((method.upper(), m.group(1)))
    return routes


def route_target(route, method, path):
    """The backend Gateway API picks for a request: the most specific match wins
    (exact path, then the longest prefix, then a method match), then rule order."""
    best = None
    for order, rule in enumerate(route["spec"]["rules"]):
        for m in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}]):
            p = m.get("path", {"type": "PathPrefix", "value": "/"})
            if p["type"] == "Exact":
                ok = path == p["value"]
            else:
                prefix = p["value"].rstrip("/")
                ok = path == prefix or path.startswith(prefix + "/") or prefix == ""
            if not ok or m.get("method", method) != method:
                continue
            key = (p["type"] == "Exact", len(p["value"]), "method" in m, -order)
            if best is None or key > best[0]:
                best = (key, rule["backendRefs"][0])
    return best[1] if best else None


def check_routing(docs):
    """Each real command route reaches the command API, each query the read API."""
    problems = []
    routes = of_kind(docs, "HTTPRoute")
    if len(routes) != 1:
        return [f"expected one HTTPRoute, found {len(routes)}"]
    route = routes[0]
    services = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in of_kind(docs, "Service")}
    for rule in route["spec"]["rules"]:
        for ref in rule["backendRefs"]:
            if ref["port"] not in services.get(ref["name"], set()):
                problems.append(f"HTTPRoute: backend {ref['name']}:{ref['port']} is no Service port")
    if not route["spec"].get("hostnames"):
        problems.append("HTTPRoute: no hostname")
    expected = [(m, p, "command-api") for m, p in axum_routes(ROOT / "command-api/src/lib.rs") if p.startswith("/v1")]
    expected += [(m, p, "read-api") for m, p in axum_routes(ROOT / "read-api/src/lib.rs") if p.startswith("/v1")]
    if len(expected) < 25:
        problems.append(f"found only {len(expected)} routes in the routers: has their layout changed?")
    for method, path, service in expected:
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        target = route_target(route, method, concrete)
        if not target or target["name"] != service:
            problems.append(f"HTTPRoute sends {method} {path} to {target and target['name']}, not {service}")
    for private in ("/health", "/health/ready", "/metrics"):
        if route_target(route, "GET", private):
            problems.append(f"HTTPRoute exposes {private}")
    return problems


def egress_allows(policy, port):
    return any(any(p.get("port") == port for p in rule.get("ports", [])) for rule in policy["spec"].get("egress", []))


def check_network(docs):
    problems = []
    policies = of_kind(docs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        problems.append("no default-deny NetworkPolicy")
    pods = {name: labels for name, _, labels, _ in workloads(docs)}
    needs = {"postgres": (5432, set(pods)), "kafka": (9092, {"relay", "projector"})}
    for what, (port, who) in needs.items():
        for name, labels in pods.items():
            allowed = any(selects(p["spec"]["podSelector"], labels) and egress_allows(p, port)
                          for p in policies if p["spec"]["podSelector"])
            if name in who and not allowed:
                problems.append(f"{name} cannot reach {what} (port {port})")
            if name not in who and allowed:
                problems.append(f"{name} may reach {what} (port {port}) but has no need to")
    for p in policies:
        for rule in p["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0":
                    problems.append(f"NetworkPolicy {p['metadata']['name']} opens egress to everywhere")
            if not rule.get("to") or not rule.get("ports"):
                problems.append(f"NetworkPolicy {p['metadata']['name']}: an egress rule without peers or ports")
    return problems


def check_monitoring(docs):
    problems = []
    monitors = of_kind(docs, "PodMonitor") + of_kind(docs, "ServiceMonitor")
    for name, pod, labels, kind in workloads(docs):
        if kind != "Deployment":
            continue
        ports = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
        scraped = [m for m in of_kind(docs, "PodMonitor") if selects(m["spec"]["selector"], labels)
                   and any(e.get("port") in ports and e.get("path") == "/metrics"
                           for e in m["spec"]["podMetricsEndpoints"])]
        if not scraped:
            problems.append(f"{name}: no PodMonitor scrapes its /metrics")
        annotations = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == name)[
            "spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            problems.append(f"{name}: no prometheus.io/scrape annotation")
    if not monitors:
        problems.append("no PodMonitor or ServiceMonitor")
    rules = of_kind(docs, "PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())["groups"]
    if len(rules) != 1 or rules[0]["spec"]["groups"] != alerts:
        problems.append("the PrometheusRule differs from deploy/monitoring/alerts.yml: run "
                        "deploy/monitoring/check_dashboard.py --write-prometheusrule")
    dash = [d for d in of_kind(docs, "ConfigMap") if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if not dash or json.loads(dash[0]["data"]["parley.json"]) != json.loads((DEPLOY / "monitoring" / "dashboard.json").read_text()):
        problems.append("no Grafana dashboard ConfigMap equal to deploy/monitoring/dashboard.json")
    return problems


def compose():
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def check_compose(doc):
    problems = []
    services = doc["services"]
    parley = {n: s for n, s in services.items() if "parley" in str(s.get("image", ""))}
    expected = {"migrate", "relay-1", "relay-2", "command-api", "projector-1", "projector-2", "read-api"}
    if set(parley) != expected:
        problems.append(f"Parley services are {sorted(parley)}, expected {sorted(expected)}")
    for infra in ("postgres", "kafka", "prometheus", "grafana"):
        if infra not in services:
            problems.append(f"no {infra} service")
        elif not services[infra].get("healthcheck"):
            problems.append(f"{infra}: no healthcheck")
    feeds = {n: str(parley[n].get("environment", {}).get("PARLEY_FEED", "log")) for n in ("projector-1", "read-api") if n in parley}
    if len(set(feeds.values())) > 1:
        problems.append(f"projector and read-api disagree on PARLEY_FEED: {feeds}")
    if services.get("kafka", {}).get("environment", {}).get("KAFKA_PROCESS_ROLES") != "broker,controller":
        problems.append("kafka: not a KRaft broker+controller")
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    for name, svc in parley.items():
        env = svc.get("environment", {})
        grace = re.fullmatch(r"(\d+)s", str(svc.get("stop_grace_period", "10s")))
        if not grace or int(grace.group(1)) <= DRAIN_DEADLINE_S:
            problems.append(f"{name}: stop_grace_period not over the {DRAIN_DEADLINE_S}s drain")
        if name == "migrate":
            if svc.get("command") != ["migrate"]:
                problems.append("migrate: does not run `parley migrate`")
            continue
        hc = svc.get("healthcheck", {})
        if hc.get("disable") or "healthcheck" not in " ".join(hc.get("test", [])):
            problems.append(f"{name}: no `parley healthcheck` health check")
        dep = svc.get("depends_on", {})
        if dep.get("migrate", {}).get("condition") != "service_completed_successfully":
            problems.append(f"{name}: does not wait for migrate to complete")
        listen = env.get("PARLEY_LISTEN", "")
        if not listen.startswith("0.0.0.0:"):
            problems.append(f"{name}: PARLEY_LISTEN {listen!r} is not 0.0.0.0:<port>")
        elif f"{name}:{listen.rsplit(':', 1)[1]}" not in targets:
            problems.append(f"{name}: Prometheus does not scrape {name}:{listen.rsplit(':', 1)[1]}")
        if not svc.get("read_only") or "ALL" not in svc.get("cap_drop", []):
            problems.append(f"{name}: not read-only with all capabilities dropped")
    for name in ("projector-1", "projector-2"):
        if "kafka" not in parley.get(name, {}).get("command", []):
            problems.append(f"{name}: not `projector --feed kafka`")
    problems += check_compose_exposure(doc)
    return problems


def check_compose_exposure(doc):
    """Security of the Compose stack (issue 21, item 14): ports on loopback unless
    asked, no remote lifecycle API on Prometheus, and a read side that cannot
    write the event log."""
    problems = []
    services = doc["services"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            if not str(port).startswith("${PARLEY_PUBLISH_ADDRESS:-127.0.0.1}:"):
                problems.append(f"{name}: port {port} is not published on 127.0.0.1 by default")
    if any("enable-lifecycle" in str(a) for a in services.get("prometheus", {}).get("command", [])):
        problems.append("prometheus: --web.enable-lifecycle lets anyone who reaches it shut it down")
    owner = "${POSTGRES_USER:-parley}"
    for name in ("read-api", "projector-1", "projector-2"):
        env = services.get(name, {}).get("environment", {})
        for key in ("PARLEY_DATABASE_URL", "PARLEY_READ_DATABASE_URL"):
            if owner in str(env.get(key, "")):
                problems.append(f"{name}: {key} connects as the event log's owner")
    if "PARLEY_READ_SIDE_ROLE" not in services.get("migrate", {}).get("environment", {}):
        problems.append("migrate: no PARLEY_READ_SIDE_ROLE, so the read side's role may not read the log")
    return problems


# ---------------------------------------------------------------- tests


class Overlays(unittest.TestCase):
    def each(self, check, *extra):
        for overlay in OVERLAYS:
            with self.subTest(overlay=overlay):
                problems = check(render(overlay), *[overlay for _ in extra])
                self.assertEqual(problems, [], "\n".join(problems))

    def test_containers_have_probes_limits_and_security_settings(self):
        self.each(check_containers)

    def test_disruption_budgets_autoscalers_and_the_migration_job(self):
        self.each(check_disruption_and_scaling)

    def test_references_resolve_and_one_image_serves_everything(self):
        self.each(check_references, "overlay")

    def test_the_route_sends_commands_and_queries_to_their_api(self):
        self.each(check_routing)

    def test_only_parleys_pods_reach_postgres_and_kafka(self):
        self.each(check_network)

    def test_everything_is_scraped_and_the_rules_match_alerts_yml(self):
        self.each(check_monitoring)

    def test_the_read_api_knows_how_the_projectors_are_fed(self):
        self.each(check_feed)

    def test_prod_runs_more_and_bigger_than_dev(self):
        dev, prod = render("dev"), render("prod")
        for api in ("command-api", "read-api"):
            self.assertEqual(named(dev, "HorizontalPodAutoscaler", api)["spec"]["minReplicas"], 1)
            self.assertGreaterEqual(named(prod, "HorizontalPodAutoscaler", api)["spec"]["minReplicas"], 2)
        self.assertEqual(named(dev, "ScaledObject", "projector")["spec"]["minReplicaCount"], 1)
        self.assertGreaterEqual(named(prod, "ScaledObject", "projector")["spec"]["minReplicaCount"], 2)
        self.assertEqual(named(dev, "Deployment", "relay")["spec"]["replicas"], 1)
        self.assertEqual(named(prod, "Deployment", "relay")["spec"]["replicas"], 2)

        def limit(docs, name):
            c = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
            return c["resources"]["limits"]["memory"]

        def mib(q):
            return int(q[:-2]) * (1024 if q.endswith("Gi") else 1)

        for name in PARLEY_COMPONENTS:
            self.assertLess(mib(limit(dev, name)), mib(limit(prod, name)), name)


class Compose(unittest.TestCase):
    def test_compose_services_are_health_checked_ordered_and_scraped(self):
        problems = check_compose(compose())
        self.assertEqual(problems, [], "\n".join(problems))


class Mutations(unittest.TestCase):
    """The checks above notice what they are meant to notice."""

    def container(self, docs, name):
        return named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]

    def assertNoticed(self, problems, text):
        self.assertTrue(any(text in p for p in problems), f"expected a problem with {text!r}, got {problems}")

    def test_a_read_api_not_told_of_the_kafka_feed_is_noticed(self):
        docs = copy.deepcopy(render("dev"))
        c = self.container(docs, "read-api")
        c["env"] = [e for e in c["env"] if e["name"] != "PARLEY_FEED"]
        self.assertNoticed(check_feed(docs), "read-api told 'log'")

    def test_a_missing_probe_limit_or_setting_is_noticed(self):
        for overlay in OVERLAYS:
            docs = render(overlay)
            del self.container(docs, "projector")["readinessProbe"]
            del self.container(docs, "read-api")["resources"]["limits"]["memory"]
            self.container(docs, "relay")["securityContext"]["readOnlyRootFilesystem"] = False
            named(docs, "Deployment", "command-api")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20
            problems = check_containers(docs)
            self.assertNoticed(problems, "projector, container projector: no readinessProbe")
            self.assertNoticed(problems, "read-api: no limits.memory")
            self.assertNoticed(problems, "relay: readOnlyRootFilesystem is not true")
            self.assertNoticed(problems, "terminationGracePeriodSeconds 20")

    def test_a_missing_budget_or_an_oversized_group_is_noticed(self):
        docs = [d for d in render("prod") if not (d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "relay")]
        of_kind(docs, "ScaledObject")[0]["spec"]["maxReplicaCount"] = 24
        named(docs, "Deployment", "read-api")["spec"]["replicas"] = 3
        problems = check_disruption_and_scaling(docs)
        self.assertNoticed(problems, "Deployment read-api: sets replicas")
        self.assertNoticed(problems, "Deployment relay: no PodDisruptionBudget")
        self.assertNoticed(problems, "maxReplicaCount 24")

    def test_a_route_to_the_wrong_api_is_noticed(self):
        docs = render("prod")
        route = of_kind(docs, "HTTPRoute")[0]
        for rule in route["spec"]["rules"]:
            for m in rule["matches"]:
                m.pop("method", None)
        self.assertNoticed(check_routing(docs), "POST /v1/rooms to read-api, not command-api")

    def test_kafka_reachable_from_an_api_is_noticed(self):
        docs = render("dev")
        kafka = named(docs, "NetworkPolicy", "parley-to-kafka")
        kafka["spec"]["podSelector"] = {"matchLabels": {"app.kubernetes.io/name": "parley"}}
        self.assertNoticed(check_network(docs), "command-api may reach kafka")

    def test_a_stale_prometheusrule_is_noticed(self):
        docs = render("dev")
        of_kind(docs, "PrometheusRule")[0]["spec"]["groups"][0]["rules"].pop()
        self.assertNoticed(check_monitoring(docs), "PrometheusRule differs")

    def test_a_compose_service_without_health_check_or_order_is_noticed(self):
        doc = compose()
        doc["services"]["read-api"]["healthcheck"] = {"disable": True}
        del doc["services"]["relay-2"]["depends_on"]["migrate"]
        problems = check_compose(doc)
        self.assertNoticed(problems, "read-api: no `parley healthcheck`")
        self.assertNoticed(problems, "relay-2: does not wait for migrate")

    def test_an_exposed_or_over_privileged_compose_service_is_noticed(self):
        doc = compose()
        doc["services"]["command-api"]["ports"] = ["8081:8081"]
        doc["services"]["prometheus"]["command"].append("--web.enable-lifecycle")
        doc["services"]["read-api"]["environment"]["PARLEY_DATABASE_URL"] = "postgres://${POSTGRES_USER:-parley}:x@postgres/parley"
        problems = check_compose_exposure(doc)
        self.assertNoticed(problems, "command-api: port 8081:8081")
        self.assertNoticed(problems, "prometheus: --web.enable-lifecycle")
        self.assertNoticed(problems, "read-api: PARLEY_DATABASE_URL connects as the event log's owner")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
