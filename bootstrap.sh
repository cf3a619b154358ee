#!/usr/bin/env bash
# Bootstrap raibid-ci on a cluster (the DGX Spark's k3s) from a config repository made by
# `raibid gitops init` and pushed to Gitea. Run once; safe to re-run (idempotent).
#
# Needs: kubectl pointing at the cluster, Flux's controllers (flux install) and KEDA installed.
# Reads:  RAIBID_GITEA_USER, RAIBID_GITEA_TOKEN  (read access for Flux, clone access for agents)
#         CONFIG_REPO (default: .)                (the config repository checkout)
# Creates the three Secrets that are never committed, then applies clusters/dgx-spark so
# Flux takes over. No secret value is printed.
set -euo pipefail

CONFIG_REPO="${CONFIG_REPO:-.}"
settings="$CONFIG_REPO/overlays/dgx-spark/settings.yaml"

die() { echo "bootstrap: $*" >&2; exit 2; }

[ -f "$settings" ] || die "$settings not found; set CONFIG_REPO to a config repository (raibid gitops init DIR)"
command -v kubectl >/dev/null || die "kubectl is not on PATH"
[ -n "${RAIBID_GITEA_TOKEN:-}" ] || die "RAIBID_GITEA_TOKEN is not set (a Gitea token with read access to the config repository)"
user="${RAIBID_GITEA_USER:-raibid}"

if command -v raibid >/dev/null; then
  raibid gitops verify "$CONFIG_REPO" || die "the config repository does not verify; fix it first"
  namespace="$(raibid gitops get cluster.namespace -C "$CONFIG_REPO")"
else
  namespace="$(sed -n 's/^  namespace: *//p' "$settings" | head -1)"
fi

kubectl get crd kustomizations.kustomize.toolkit.fluxcd.io >/dev/null 2>&1 || die "Flux is not installed (flux install)"
kubectl get crd scaledjobs.keda.sh >/dev/null 2>&1 || die "KEDA is not installed"

kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# Redis's password: generated once, kept on re-runs (regenerating would lock out the queue).
if ! kubectl -n "$namespace" get secret raibid-redis >/dev/null 2>&1; then
  kubectl -n "$namespace" create secret generic raibid-redis \
    --from-literal=password="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >/dev/null
  echo "created secret $namespace/raibid-redis" >&2
fi

# Agents clone with this token; Flux reads the config repository with it.
kubectl -n "$namespace" create secret generic raibid-gitea \
  --from-literal=token="$RAIBID_GITEA_TOKEN" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n flux-system create secret generic raibid-config-auth \
  --from-literal=username="$user" --from-literal=password="$RAIBID_GITEA_TOKEN" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "secrets raibid-gitea ($namespace) and raibid-config-auth (flux-system) are in place" >&2

kubectl apply -k "$CONFIG_REPO/clusters/dgx-spark"
echo "Flux now applies overlays/dgx-spark; follow it with: raibid gitops status --watch" >&2
