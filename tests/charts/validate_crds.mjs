// Validates prometheus-operator objects against the operator's CRD schemas, as compiled
// by @kubernetes-models/prometheus-operator. Reads a JSON list of objects on stdin and
// prints a JSON list of [kind, name, errors] (errors empty when the object is valid).
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { PodMonitor, ServiceMonitor, PrometheusRule };
let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((object) => {
  const model = models[object.kind];
  if (!model) return [object.kind, object.metadata?.name, [`no schema for kind ${object.kind}`]];
  try {
    new model(object).validate();
    return [object.kind, object.metadata.name, []];
  } catch (error) {
    const details = (error.details || []).map((d) => `${d.instancePath} ${d.message}`);
    return [object.kind, object.metadata?.name, details.length ? details : [String(error.message)]];
  }
});
process.stdout.write(JSON.stringify(results));
