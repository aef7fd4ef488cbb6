#!/usr/bin/env bash
# Local-dev alternative to External Secrets: create, in the dev namespace, the Secrets the
# workloads read, with random values generated here (nothing is written to git or to disk).
#   k8s/scripts/dev-secrets.sh [namespace]     (default portico-dev; needs kubectl and openssl)
# Re-running keeps existing Secrets (passwords must not change under a running Valkey).
# postgres-app is not created here: CloudNativePG generates it for the database owner.
set -euo pipefail
ns=${1:-portico-dev}
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"

exists() { kubectl -n "$ns" get secret "$1" >/dev/null 2>&1; }

if ! exists valkey; then
  # hex: URL-safe, users, auth, audit and the gateway put it into redis://:<password>@valkey:6379/0
  kubectl -n "$ns" create secret generic valkey --from-literal=password="$(openssl rand -hex 24)"
fi
if ! exists auth-signing-key; then
  key=$(mktemp); trap 'rm -f "$key"' EXIT
  openssl genpkey -algorithm ed25519 -out "$key"  # PEM, PKCS#8: what AUTH_SIGNING_KEY_FILES reads
  kubectl -n "$ns" create secret generic auth-signing-key --from-file=signing-key.pem="$key"
fi
echo "secrets ready in namespace $ns: valkey, auth-signing-key (postgres-app comes from CloudNativePG)"
