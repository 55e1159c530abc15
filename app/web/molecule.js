// The molecule panel: a SMILES (typed or an example), drawn by the server (RDKit SVG), the
// model's prediction with the server's timings, and the contribution of every atom, coloured
// on the drawing and listed.

import { modelUrl, postJson } from "./api.js";
import {
  byId,
  contributionRgb,
  element,
  fillSelect,
  say,
  showError,
  showPredictions,
  showTimings,
  showValues,
} from "./show.js";

let models = [];
let drawingUrl = null;
let generation = 0;

function selectedModel() {
  return models.find((m) => m.name === byId("molecule-model").value);
}

function onModelChange() {
  const model = selectedModel();
  if (model) {
    fillSelect(byId("molecule-path"), ["auto", ...model.paths.filter((p) => p !== "onnx")]);
  }
}

function showDrawing(svg) {
  const url = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
  const image = byId("molecule-drawing");
  image.src = url;
  if (drawingUrl !== null) {
    URL.revokeObjectURL(drawingUrl);
  }
  drawingUrl = url;
}

function showAtoms(explanation) {
  const largest = Math.max(...explanation.atoms.map((a) => Math.abs(a.contribution)));
  const items = explanation.atoms.map((atom) => {
    const [r, g, b] = contributionRgb(atom.contribution);
    const alpha = largest > 0 ? Math.abs(atom.contribution) / largest : 0;
    const swatch = element("span", { className: "swatch" });
    swatch.style.backgroundColor = `rgba(${r}, ${g}, ${b}, ${alpha})`;
    const item = element("li", {}, [
      swatch,
      element("span", { className: "label", text: `${atom.element}${atom.index}` }),
      element("span", { className: "value", text: atom.contribution.toFixed(3) }),
    ]);
    item.dataset.contribution = String(atom.contribution);
    return item;
  });
  byId("atom-list").replaceChildren(...items);
  const { target } = explanation;
  say(
    "atoms-caption",
    `What each atom contributes to "${target.label}": red pushes towards it, blue away ` +
      `(output ${target.output.toFixed(2)}, ${target.baseline_output.toFixed(2)} for ` +
      `featureless atoms).`,
  );
}

async function predict(smiles) {
  const model = selectedModel();
  if (!model || !smiles) {
    return;
  }
  const mine = ++generation;
  const path = byId("molecule-path").value || "auto";
  say("molecule-status", `Asking ${model.name}…`);
  showError("molecule-error", null);
  delete byId("molecule-drawing").dataset.coloured;
  const [predicted, explained] = await Promise.allSettled([
    postJson(modelUrl(model.name, "predict", { path }), { graphs: [{ smiles }] }).then((r) =>
      r.json(),
    ),
    postJson(modelUrl(model.name, "explain", { path }), { smiles }).then((r) => r.json()),
  ]);
  // without an explanation (e.g. a refused one) the molecule is still drawn, uncoloured
  const drawn =
    predicted.status === "fulfilled" && explained.status === "rejected"
      ? await Promise.allSettled([
          postJson("v1/molecules/draw", { smiles }).then((response) => response.text()),
        ]).then(([outcome]) => outcome)
      : null;
  if (mine !== generation) {
    return;
  }
  say("molecule-status", "");
  if (predicted.status === "rejected") {
    byId("molecule-result").hidden = true;
    showError("molecule-error", predicted.reason);
    return;
  }
  const answer = predicted.value;
  const result = answer.results[0];
  if (result.predictions) {
    showPredictions("molecule-predictions", result.predictions);
  } else {
    showValues("molecule-predictions", result.values);
  }
  showTimings("molecule-timings", answer.timings, answer.path);
  showError("atoms-error", explained.status === "rejected" ? explained.reason : null);
  if (explained.status === "fulfilled") {
    showDrawing(explained.value.svg);
    showAtoms(explained.value);
  } else {
    byId("atom-list").replaceChildren();
    say("atoms-caption", "");
    if (drawn.status === "fulfilled") {
      showDrawing(drawn.value);
    }
  }
  byId("molecule-result").hidden = false;
  byId("molecule-drawing").dataset.coloured = explained.status === "fulfilled" ? "yes" : "no";
}

/** Show the panel for the molecule models among `all` (hidden when there are none). */
export function setUpMoleculePanel(all) {
  models = all.filter((m) => m.kind === "graph" && m.ready);
  byId("molecule-panel").hidden = models.length === 0;
  if (!models.length) {
    return;
  }
  fillSelect(
    byId("molecule-model"),
    models.map((m) => m.name),
  );
  onModelChange();
  byId("molecule-model").addEventListener("change", onModelChange);
  byId("molecule-form").addEventListener("submit", (event) => {
    event.preventDefault();
    predict(byId("smiles").value.trim());
  });
  for (const button of document.querySelectorAll("button.example")) {
    button.addEventListener("click", () => {
      byId("smiles").value = button.dataset.smiles;
      predict(button.dataset.smiles);
    });
  }
}
