// Validate the custom resources of the rendered overlays with the schemas of the npm
// @kubernetes-models packages (ajv, compiled from each project's CRDs): types, enums, formats and
// required fields. Input: the *.crs.json files validate_crs.py writes. Run by `make k8s-check`.
//
// The schemas do not reject unknown fields (CRD schemas rarely say additionalProperties: false,
// and the API server prunes what they do not list), so a misspelt field would pass silently and
// then be dropped by the cluster. unknownFields() finds them with the validator itself: a field
// the schema knows has a type (or an enum, a map's value schema, ...), so giving it a value of
// another type fails at that field's path; a field the schema does not know accepts anything.
// A field whose schema accepts any value (x-kubernetes-preserve-unknown-fields) would be reported
// too: list such paths in OPEN if a resource ever needs one.
import { readFileSync } from "node:fs";
import { ExternalSecret } from "@kubernetes-models/external-secrets/external-secrets.io/v1/ExternalSecret";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { AuthorizationPolicy } from "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy";
import { PeerAuthentication } from "@kubernetes-models/istio/security.istio.io/v1/PeerAuthentication";
import { RequestAuthentication } from "@kubernetes-models/istio/security.istio.io/v1/RequestAuthentication";
import { DestinationRule } from "@kubernetes-models/istio/networking.istio.io/v1/DestinationRule";
import { Gateway } from "@kubernetes-models/istio/networking.istio.io/v1/Gateway";
import { VirtualService } from "@kubernetes-models/istio/networking.istio.io/v1/VirtualService";
import { Telemetry } from "@kubernetes-models/istio/telemetry.istio.io/v1/Telemetry";
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";
import { Issuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer";
import { ClusterIssuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1/ClusterIssuer";
import { ClusterSecretStore } from "@kubernetes-models/external-secrets/external-secrets.io/v1/ClusterSecretStore";
import { Application } from "@kubernetes-models/argo-cd/argoproj.io/v1alpha1/Application";
import { AppProject } from "@kubernetes-models/argo-cd/argoproj.io/v1alpha1/AppProject";
import { ApplicationSet } from "@kubernetes-models/argo-cd/argoproj.io/v1alpha1/ApplicationSet";

const models = {
  ExternalSecret,
  ServiceMonitor,
  PodMonitor,
  PrometheusRule,
  AuthorizationPolicy,
  PeerAuthentication,
  RequestAuthentication,
  DestinationRule,
  Gateway,
  VirtualService,
  Telemetry,
  Rollout,
  AnalysisTemplate,
  Certificate,
  Issuer,
  // Cluster prerequisites (k8s/cluster)
  ClusterIssuer,
  ClusterSecretStore,
  // Argo CD (argocd/)
  Application,
  AppProject,
  ApplicationSet,
};
// "<kind> /json/pointer" of fields whose schema accepts any value.
const OPEN = new Set([
  // Helm values of the operator Applications (argocd/operators): free-form by design.
  "Application /spec/source/helm/valuesObject",
]);

function errorsOf(Model, doc) {
  try {
    new Model(doc).validate();
    return [];
  } catch (error) {
    if (!Array.isArray(error.errors)) throw error;
    return error.errors;
  }
}

const pointer = (path) => path.map((p) => "/" + String(p).replaceAll("~", "~0").replaceAll("/", "~1")).join("");

// Values of every JSON type but the original's: one of them breaks any typed field.
function probesFor(value) {
  const all = ["\u0000probe", 7.5, true, ["\u0000probe"], { "\u0000probe": true }];
  return all.filter((probe) => typeof probe !== typeof value || Array.isArray(probe) !== Array.isArray(value));
}

function known(Model, doc, path) {
  const at = pointer(path);
  for (const probe of probesFor(path.reduce((node, key) => node[key], doc))) {
    const copy = structuredClone(doc);
    const parent = path.slice(0, -1).reduce((node, key) => node[key], copy);
    parent[path[path.length - 1]] = probe;
    if (errorsOf(Model, copy).some((e) => e.instancePath === at || e.instancePath.startsWith(at + "/"))) {
      return true;
    }
  }
  return false;
}

function unknownFields(Model, doc) {
  const found = [];
  const walk = (node, path) => {
    if (Array.isArray(node)) {
      node.forEach((item, index) => walk(item, [...path, index]));
    } else if (node !== null && typeof node === "object") {
      for (const key of Object.keys(node)) {
        const here = [...path, key];
        if (OPEN.has(`${doc.kind} ${pointer(here)}`)) continue;
        if (known(Model, doc, here)) walk(node[key], here);
        else found.push(pointer(here));
      }
    }
  };
  walk(doc, []);
  return found;
}

let failures = 0;
for (const path of process.argv.slice(2)) {
  const docs = JSON.parse(readFileSync(path, "utf8"));
  for (const doc of docs) {
    const Model = models[doc.kind];
    const label = `${path}: ${doc.apiVersion} ${doc.kind}/${doc.metadata.name}`;
    if (!Model || doc.apiVersion !== Model.apiVersion) {
      console.error(`${label}: no model`);
      failures++;
      continue;
    }
    const errors = errorsOf(Model, doc);
    if (errors.length) {
      console.error(`${label}: ${errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join(", ")}`);
      failures++;
      continue;
    }
    const unknown = unknownFields(Model, doc);
    if (unknown.length) {
      console.error(`${label}: unknown field(s) ${unknown.join(", ")}`);
      failures++;
    }
  }
  console.log(`${path}: ${docs.length} custom resources checked with @kubernetes-models (schema, unknown fields)`);
}
process.exit(failures ? 1 : 0);
