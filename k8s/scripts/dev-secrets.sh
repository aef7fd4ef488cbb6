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
  # One password per ACL user (docs/data-stores.md); hex: URL-safe, each component puts its
  # own into redis://<component>:<password>@valkey:6379/0.
  kubectl -n "$ns" create secret generic valkey \
    --from-literal=admin="$(openssl rand -hex 24)" \
    --from-literal=exporter="$(openssl rand -hex 24)" \
    --from-literal=gateway="$(openssl rand -hex 24)" \
    --from-literal=users="$(openssl rand -hex 24)" \
    --from-literal=auth="$(openssl rand -hex 24)" \
    --from-literal=audit="$(openssl rand -hex 24)"
fi
if ! exists auth-signing-key; then
  key=$(mktemp); trap 'rm -f "$key"' EXIT
  openssl genpkey -algorithm ed25519 -out "$key"  # PEM, PKCS#8: what AUTH_SIGNING_KEY_FILES reads
  kubectl -n "$ns" create secret generic auth-signing-key --from-file=signing-key.pem="$key"
fi
if ! exists gateway-forwarder-key; then
  # The gateway's proof to auth (SECURITY.md, "Who names the client address"): the key it sends,
  # and the keys auth accepts (one, the same, until a rotation).
  forwarder=$(openssl rand -hex 32)
  kubectl -n "$ns" create secret generic gateway-forwarder-key \
    --from-literal=gateway="$forwarder" --from-literal=auth="$forwarder"
fi
# Each service's PostgreSQL login: CloudNativePG sets the managed role's password from it
# (basic-auth; labelled so it reloads); hex: the Deployment puts it into a postgresql:// URL.
role_secret() {  # role_secret <secret> <role>
  exists "$1" && return
  kubectl -n "$ns" create secret generic "$1" --type=kubernetes.io/basic-auth \
    --from-literal=username="$2" --from-literal=password="$(openssl rand -hex 24)"
  kubectl -n "$ns" label secret "$1" cnpg.io/reload=true
}
role_secret postgres-users portico_users_app
role_secret postgres-auth portico_auth_app
role_secret postgres-audit portico_audit_app
echo "secrets ready in namespace $ns: valkey, auth-signing-key, gateway-forwarder-key, postgres-users/-auth/-audit (postgres-app comes from CloudNativePG)"
