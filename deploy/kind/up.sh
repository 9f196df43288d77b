#!/usr/bin/env bash
# A local cluster with the operator and the seed's relay, on a machine with Docker:
#   npm run kind            # create (or reuse) the kind cluster, build + load the image, deploy
#   npm run kind -- down    # delete the cluster
# Needs docker, kind and kubectl. Relays get the operator's image (email-relay:dev) and
# imagePullPolicy comes from the EmailRelay (samples leave it to Kubernetes: :dev is not pulled
# when present). kind's default CNI only enforces NetworkPolicy in recent kind releases.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=email-relay
IMAGE=email-relay:dev

if [ "${1:-up}" = down ]; then
  kind delete cluster --name "$CLUSTER"
  exit 0
fi
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config deploy/kind/cluster.yaml
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

# CRDs first, so the samples' kinds exist when they are applied.
kubectl apply --server-side -k crds
kubectl wait --for=condition=Established crd --all --timeout=60s
kubectl apply --server-side -k deploy/kind
kubectl -n email-relay-system rollout status deployment/email-relay-operator --timeout=180s
kubectl apply --server-side -k deploy/samples
echo
echo "kubectl get emailrelays -A           # READY / REPLICAS / ENDPOINT"
echo "kubectl describe emailrelay -n email-server-prod postfix-relay"
