// Validate ExternalSecret, ServiceMonitor and PodMonitor objects with the schemas of the npm
// @kubernetes-models packages (ajv; they check types, enums and required fields, but do NOT reject
// unknown fields). Input: the *.crs.json files validate_crs.py writes. Run by `make k8s-check`.
import { readFileSync } from "node:fs";
import { ExternalSecret } from "@kubernetes-models/external-secrets/external-secrets.io/v1/ExternalSecret";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";

const models = { ExternalSecret, ServiceMonitor, PodMonitor };
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
    try {
      new Model(doc).validate();
    } catch (error) {
      console.error(`${label}: ${error.message}`);
      failures++;
    }
  }
  console.log(`${path}: ${docs.length} custom resources checked with @kubernetes-models`);
}
process.exit(failures ? 1 : 0);
