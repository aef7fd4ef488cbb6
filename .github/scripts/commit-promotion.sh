#!/usr/bin/env bash
# Commit an overlay's new image pins and push them to main: the GitOps release of that
# environment (Argo CD syncs the commit). Only the overlay's kustomization.yaml is committed.
# If main moved since the checkout, the commit is replayed on the new main (it touches one file
# the pipeline alone writes) and the push retried; main's history is never rewritten.
#   commit-promotion.sh OVERLAY MESSAGE
set -euo pipefail
overlay=$1 message=$2
file="k8s/overlays/${overlay}/kustomization.yaml"
git config user.name "portico-release[bot]"
git config user.email "portico-release[bot]@users.noreply.github.com"
git add -- "$file"
if git diff --cached --quiet; then
  echo "commit-promotion: $file already pins these digests"
  exit 0
fi
git commit --quiet -m "$message" -- "$file"
for attempt in 1 2 3 4 5; do
  if git push --quiet origin HEAD:main; then
    git log -1 --format='commit-promotion: pushed %h %s'
    exit 0
  fi
  echo "commit-promotion: main moved (attempt $attempt), replaying on the new main" >&2
  sleep $((attempt * 2))
  git fetch --quiet origin main
  git rebase --quiet origin/main
done
echo "commit-promotion: could not push after 5 attempts" >&2
exit 1
