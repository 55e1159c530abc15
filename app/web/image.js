// The image panel: drop, pick or draw an image; classify it (top classes and the server's
// timings) and explain it (the contribution of every patch, drawn over the image).

import { modelUrl, postImage } from "./api.js";
import {
  byId,
  contributionRgb,
  fillSelect,
  say,
  showError,
  showPredictions,
  showTimings,
} from "./show.js";

const VIEW_SIZE = 384;
const MAX_ALPHA = 0.75;
const IMAGE_ALPHA_UNDER_OVERLAY = 0.45;

let models = [];
let current = null; // {blob, filename}
let shown = null; // {bitmap, explanation}
let generation = 0; // a newer request replaces the answer of an older one

/** Up to five classes; classify refuses more than the model has. */
function topK(model) {
  return Math.max(1, Math.min(5, model.labels.length));
}

function selectedModel() {
  return models.find((m) => m.name === byId("image-model").value);
}

function onModelChange() {
  const model = selectedModel();
  if (model) {
    fillSelect(byId("image-path"), ["auto", ...model.paths]);
  }
}

/** Where patch (row, column) of the model input lies on the uploaded image, in its pixels. */
function patchScale(explanation) {
  const { image_size: fed, original_size: original, patch_size: patch } = explanation;
  if (explanation.resize === "model") {
    return [(patch * original.height) / fed.height, (patch * original.width) / fed.width];
  }
  return [patch, patch];
}

function drawView() {
  const canvas = byId("image-view");
  const { bitmap, explanation } = shown;
  const scale = Math.min(VIEW_SIZE / bitmap.width, VIEW_SIZE / bitmap.height);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = scale < 1;
  const overlay = explanation && byId("overlay-toggle").checked;
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  // under the colours the image is faded, so that they show on dark strokes too
  context.globalAlpha = overlay ? IMAGE_ALPHA_UNDER_OVERLAY : 1;
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  context.globalAlpha = 1;
  if (!overlay) {
    return;
  }
  const values = explanation.contributions.flat();
  const largest = Math.max(...values.map(Math.abs));
  if (!(largest > 0)) {
    return;
  }
  const [cellHeight, cellWidth] = patchScale(explanation).map((size) => size * scale);
  explanation.contributions.forEach((row, i) => {
    row.forEach((value, j) => {
      if (value === 0) {
        return;
      }
      const [r, g, b] = contributionRgb(value);
      context.fillStyle = `rgba(${r}, ${g}, ${b}, ${(MAX_ALPHA * Math.abs(value)) / largest})`;
      context.fillRect(j * cellWidth, i * cellHeight, cellWidth, cellHeight);
    });
  });
}

function caption(explanation) {
  const { target } = explanation;
  const total = explanation.contributions.flat().reduce((a, b) => a + b, 0);
  const method =
    explanation.method === "gradient_x_input"
      ? "gradient × input"
      : `integrated gradients, ${explanation.steps} steps`;
  return (
    `What each ${explanation.patch_size}×${explanation.patch_size} patch contributes to ` +
    `"${target.label}" (${method}): red pushes towards it, blue away. Logit ` +
    `${target.output.toFixed(2)}, ${target.baseline_output.toFixed(2)} for a blank image; ` +
    `the patches add up to ${total.toFixed(2)}.`
  );
}

async function run(blob, filename) {
  const model = selectedModel();
  if (!model) {
    return;
  }
  const mine = ++generation;
  current = { blob, filename };
  const path = byId("image-path").value || "auto";
  const resize = byId("image-resize").value;
  const steps = byId("image-steps").value;
  say("image-status", `Asking ${model.name}…`);
  showError("image-error", null);
  delete byId("image-view").dataset.overlay;
  const bitmapPromise = createImageBitmap(blob);
  const [classified, explained, bitmap] = await Promise.allSettled([
    postImage(modelUrl(model.name, "classify", { path, resize, top_k: topK(model) }), blob, filename),
    postImage(
      modelUrl(model.name, "explain", { path: path === "onnx" ? "auto" : path, resize, steps }),
      blob,
      filename,
    ),
    bitmapPromise,
  ]);
  if (mine !== generation) {
    return;
  }
  say("image-status", "");
  if (classified.status === "rejected") {
    byId("image-result").hidden = true;
    showError("image-error", classified.reason);
    return;
  }
  const answer = classified.value;
  showPredictions("image-predictions", answer.predictions);
  showTimings("image-timings", answer.timings, answer.path);
  const explanation = explained.status === "fulfilled" ? explained.value : null;
  showError("explain-error", explained.status === "rejected" ? explained.reason : null);
  say("overlay-caption", explanation ? caption(explanation) : "");
  byId("image-result").hidden = false;
  if (bitmap.status === "fulfilled") {
    shown = { bitmap: bitmap.value, explanation };
    drawView();
  }
  byId("image-view").dataset.overlay = explanation ? "drawn" : "none";
}

function rerun() {
  if (current) {
    run(current.blob, current.filename);
  }
}

function setUpDropZone() {
  const zone = byId("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) {
      run(file, file.name);
    }
  });
  byId("image-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) {
      run(file, file.name);
    }
  });
}

function setUpSketch() {
  const canvas = byId("sketch");
  const context = canvas.getContext("2d");
  const clear = () => {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  context.lineWidth = 9;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.strokeStyle = "#000";
  let drawing = false;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) * canvas.width) / box.width,
      ((event.clientY - box.top) * canvas.height) / box.height,
    ];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...point(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (drawing) {
      context.lineTo(...point(event));
      context.stroke();
    }
  });
  const stop = () => {
    drawing = false;
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  byId("sketch-clear").addEventListener("click", clear);
  byId("sketch-classify").addEventListener("click", () => {
    canvas.toBlob((blob) => run(blob, "drawing.png"), "image/png");
  });
}

/** Show the panel for the image models among `all` (hidden when there are none). */
export function setUpImagePanel(all) {
  models = all.filter((m) => m.kind === "image" && m.ready);
  byId("image-panel").hidden = models.length === 0;
  if (!models.length) {
    return;
  }
  fillSelect(
    byId("image-model"),
    models.map((m) => m.name),
  );
  onModelChange();
  byId("image-model").addEventListener("change", () => {
    onModelChange();
    rerun();
  });
  for (const id of ["image-path", "image-resize", "image-steps"]) {
    byId(id).addEventListener("change", rerun);
  }
  byId("overlay-toggle").addEventListener("change", () => {
    if (shown) {
      drawView();
    }
  });
  setUpDropZone();
  setUpSketch();
}
