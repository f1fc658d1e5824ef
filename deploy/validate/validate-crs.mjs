// Validate custom resources in rendered manifests against their CRD schemas.
//   node validate-crs.mjs rendered.yaml [...]
// Exit status 1 if any resource is invalid, or of a custom kind this script does not know.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { KafkaTopic } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2/KafkaTopic";
import { KafkaUser } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2/KafkaUser";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "kafka.strimzi.io/v1beta2/KafkaTopic": KafkaTopic,
  "kafka.strimzi.io/v1beta2/KafkaUser": KafkaUser,
};

let failures = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const obj = doc.toJSON();
    if (!obj || !obj.apiVersion || !obj.apiVersion.includes(".")) continue; // core kinds: kubernetes-validate
    if (obj.apiVersion.endsWith(".k8s.io/v1") || obj.apiVersion.startsWith("apps/")) continue;
    const key = `${obj.apiVersion}/${obj.kind}`;
    const Model = models[key];
    const where = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    if (!Model) {
      console.error(`${where}: no schema known for ${key}`);
      failures++;
      continue;
    }
    try {
      new Model(obj).validate();
      checked++;
    } catch (err) {
      console.error(`${where}: ${err.message}`);
      failures++;
    }
  }
}
console.log(`custom resources valid: ${checked}, invalid or unknown: ${failures}`);
process.exit(failures ? 1 : 0);
