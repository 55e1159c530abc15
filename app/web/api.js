// Requests to the model server: relative URLs (the page works under any path prefix, e.g.
// behind the compose stack's proxy), errors as the server words them ({"error": ...}), and
// the API key asked for once the server answers 401 (kept in sessionStorage, sent as
// "Authorization: Bearer <key>").

const KEY_STORAGE = "plstm-api-key";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let promptForKey = null;
let pendingPrompt = null;

/** `ask(message)` resolves to a key, or null when the user gives none. */
export function setKeyPrompt(ask) {
  promptForKey = ask;
}

function askOnce(message) {
  // concurrent 401s share one prompt
  if (pendingPrompt === null) {
    pendingPrompt = promptForKey(message).finally(() => {
      pendingPrompt = null;
    });
  }
  return pendingPrompt;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") {
      return body.error;
    }
  } catch {
    // not JSON: fall back to the status line
  }
  return `${response.status} ${response.statusText}`.trim();
}

function withKey(headers) {
  const all = new Headers(headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) {
    all.set("Authorization", `Bearer ${key}`);
  }
  return all;
}

/** fetch(path) with the API key; a non-2xx answer throws ApiError(status, server's words). */
export async function request(path, options = {}) {
  for (;;) {
    const response = await fetch(path, { ...options, headers: withKey(options.headers) });
    if (response.ok) {
      return response;
    }
    const message = await errorMessage(response);
    if (response.status === 401 && promptForKey !== null) {
      const key = await askOnce(message);
      if (key) {
        sessionStorage.setItem(KEY_STORAGE, key);
        continue;
      }
    }
    throw new ApiError(response.status, message);
  }
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path, body) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return response;
}

export async function postImage(path, blob, filename) {
  const form = new FormData();
  form.append("image", blob, filename);
  return (await request(path, { method: "POST", body: form })).json();
}

/** "v1/models/<name>/<action>?key=value..." with every part encoded. */
export function modelUrl(name, action, query = {}) {
  const params = new URLSearchParams(query);
  const suffix = params.toString() ? `?${params}` : "";
  return `v1/models/${encodeURIComponent(name)}/${action}${suffix}`;
}
