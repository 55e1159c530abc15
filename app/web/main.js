// The page's entry point: the API key prompt, the models table and the two panels.

import { setKeyPrompt } from "./api.js";
import { setUpImagePanel } from "./image.js";
import { setUpMoleculePanel } from "./molecule.js";
import { loadModels } from "./models.js";
import { byId, say } from "./show.js";

/** Resolves to the key the user types, or null when the dialog is cancelled. */
function askForKey(message) {
  const dialog = byId("key-dialog");
  const input = byId("key-input");
  say("key-reason", message);
  input.value = "";
  return new Promise((resolve) => {
    const finish = (key) => {
      byId("key-form").removeEventListener("submit", onSubmit);
      byId("key-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      resolve(key);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      finish(input.value.trim() || null);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    byId("key-form").addEventListener("submit", onSubmit);
    byId("key-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
}

async function start() {
  setKeyPrompt(askForKey);
  const models = await loadModels();
  setUpImagePanel(models);
  setUpMoleculePanel(models);
  if (models.length && !models.some((m) => m.ready)) {
    say("models-status", "The models are still loading: reload the page in a moment.");
  }
  document.body.dataset.ready = "yes";
}

start();
