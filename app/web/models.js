// The models table: GET v1/models → name, state, version, input, architecture, labels and
// the evaluation metrics recorded in each checkpoint.

import { getJson } from "./api.js";
import { byId, element, say, showError } from "./show.js";

const METRIC_NAMES = ["accuracy", "acc", "auroc", "f1", "mae", "rmse", "r2", "loss"];

function metricText(split, record) {
  const parts = METRIC_NAMES.filter((name) => typeof record[name] === "number").map(
    (name) => `${name} ${record[name].toFixed(3)}`,
  );
  const details = [];
  if (typeof record.num_samples === "number") {
    details.push(`${record.num_samples} samples`);
  }
  if (typeof record.resolution === "number") {
    details.push(`${record.resolution} px`);
  }
  const suffix = details.length ? ` (${details.join(", ")})` : "";
  return `${split}: ${parts.join(", ") || "no metrics"}${suffix}`;
}

function evaluation(metrics) {
  const entries = Object.entries(metrics || {}).filter(
    ([, record]) => record && typeof record === "object",
  );
  if (!entries.length) {
    return element("span", { text: "none recorded" });
  }
  return element(
    "ul",
    { className: "metrics" },
    entries.map(([split, record]) => element("li", { text: metricText(split, record) })),
  );
}

function inputText(model) {
  if (model.kind === "image" && model.input) {
    const { height, width, patch_size: patch } = model.input;
    return `image ${height}×${width}, patches ${patch}×${patch}`;
  }
  return model.kind === "graph" ? "molecule (SMILES)" : model.kind;
}

function row(model) {
  const state = element("span", {
    className: model.ready ? "state ready" : "state waiting",
    text: model.ready ? "ready" : "not ready",
  });
  const versions =
    model.versions.length > 1 ? `${model.version} (of ${model.versions.join(", ")})` : model.version;
  const cells = [
    element("th", { text: model.name }),
    element("td", {}, [state]),
    element("td", { text: versions }),
    element("td", { text: inputText(model) }),
    element("td", { text: model.architecture }),
    element("td", { text: model.labels.join(", ") }),
    element("td", {}, [evaluation(model.metrics)]),
  ];
  cells[0].scope = "row";
  const tr = element("tr", {}, cells);
  tr.dataset.model = model.name;
  return tr;
}

/** Load and show the models; resolves to their summaries ([] after an error). */
export async function loadModels() {
  try {
    const { models } = await getJson("v1/models");
    byId("models-table").tBodies[0].replaceChildren(...models.map(row));
    byId("models-table").hidden = models.length === 0;
    say("models-status", models.length ? "" : "The server has no models loaded.");
    showError("models-error", null);
    return models;
  } catch (error) {
    say("models-status", "");
    showError("models-error", error);
    return [];
  }
}
