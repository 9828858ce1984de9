#!/usr/bin/env bash
# charts/check.sh — checks the Helm chart: `helm lint --strict` and
# `helm template` with every charts/rowcast/ci/*-values.yaml, then the Go
# test of charts/rowcast/test, which renders the chart again and decodes
# every manifest strictly into the Kubernetes types. .ci/run runs it; it
# runs from the repository root wherever it is called from.
#
# It needs only Go: helm is built from the Go module proxy with `go install`
# into a cache directory outside the repository (ROWCAST_HELM_DIR, default
# beside Go's build cache), once per version; later runs reuse the binary.
# A cold build takes about 3.5 minutes on two cores.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# helm is pinned, like every other tool and package here: a newer helm may
# lint more strictly or render differently, and CI must not change under a
# commit that did not ask for it. Bump it in a commit of its own.
helm_version=v3.21.4
# The Kubernetes version the chart is rendered and linted for: that of the
# k8s.io/api types charts/rowcast/test decodes into (keep both in step). A
# helm built by `go install` lacks the release build's flags and would
# assume 1.20, below the chart's kubeVersion.
kube_version=1.36.0

helm_dir="${ROWCAST_HELM_DIR:-$(go env GOCACHE)/../rowcast-helm}/$helm_version"
HELM="$helm_dir/helm"
if [ ! -x "$HELM" ]; then
	echo "--- building helm $helm_version into $helm_dir"
	mkdir -p "$helm_dir"
	GOBIN="$helm_dir" go install "helm.sh/helm/v3/cmd/helm@$helm_version"
fi
export HELM

chart=charts/rowcast
shopt -s nullglob
values=("$chart"/ci/*-values.yaml)
if [ "${#values[@]}" -eq 0 ]; then
	echo "no $chart/ci/*-values.yaml" >&2
	exit 1
fi
for v in "${values[@]}"; do
	echo "--- helm lint --strict --values $v"
	"$HELM" lint --strict --kube-version "$kube_version" "$chart" --values "$v"
	echo "--- helm template --values $v"
	"$HELM" template rowcast "$chart" --kube-version "$kube_version" --values "$v" >/dev/null
done

# A module of its own (the relay's module never depends on the Kubernetes
# types), so the root's go test ./... does not reach it.
echo "--- go test (charts/rowcast/test, HELM=$HELM)"
(cd "$chart/test" && go vet ./... && go test -count=1 ./...)
