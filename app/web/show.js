// Small DOM helpers shared by the panels: elements, messages, predictions, timings, colours.

export function element(tag, { text, className } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined) {
    node.textContent = text;
  }
  if (className) {
    node.className = className;
  }
  node.append(...children);
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

/** Show `text` in the element `id` (hidden when text is empty). */
export function say(id, text) {
  const node = byId(id);
  node.textContent = text || "";
  node.hidden = !text;
}

/** Show an error as the server worded it, with its HTTP status when it has one. */
export function showError(id, error) {
  const node = byId(id);
  node.replaceChildren();
  if (error && error.status) {
    node.append(element("strong", { text: `${error.status} ` }));
  }
  node.append(element("span", { className: "message", text: error ? error.message : "" }));
  node.hidden = !error;
}

export function percent(value) {
  return `${(100 * value).toFixed(value > 0.999 || value < 0.001 ? 2 : 1)} %`;
}

/** Fill the list `id` with predictions [{label, probability}] as labelled bars. */
export function showPredictions(id, predictions) {
  const items = predictions.map((p) => {
    const bar = element("span", { className: "bar" });
    bar.style.width = `${Math.max(0.5, 100 * p.probability)}%`;
    return element("li", {}, [
      element("span", { className: "label", text: p.label }),
      element("span", { className: "track" }, [bar]),
      element("span", { className: "value", text: percent(p.probability) }),
    ]);
  });
  byId(id).replaceChildren(...items);
}

/** Fill the list `id` with regression values [{name, value}]. */
export function showValues(id, values) {
  const items = values.map((v) =>
    element("li", {}, [
      element("span", { className: "label", text: v.name }),
      element("span", { className: "value", text: v.value.toFixed(3) }),
    ]),
  );
  byId(id).replaceChildren(...items);
}

export function showTimings(id, timings, path) {
  const ms = (value) => `${value.toFixed(1)} ms`;
  say(
    id,
    `Server: ${ms(timings.total_ms)} in all, inference ${ms(timings.inference_ms)}, ` +
      `queue ${ms(timings.queue_ms)} (path ${path})`,
  );
}

export const POSITIVE = [214, 39, 40];
export const NEGATIVE = [33, 102, 191];

/** [r, g, b] of a contribution: red pushes the output up, blue down. */
export function contributionRgb(value) {
  return value >= 0 ? POSITIVE : NEGATIVE;
}

/** Fill a <select> with values (and optional labels), keeping the selection when it stays. */
export function fillSelect(select, values, labels = values) {
  const previous = select.value;
  select.replaceChildren(
    ...values.map((value, i) => {
      const option = element("option", { text: labels[i] });
      option.value = value;
      return option;
    }),
  );
  if (values.includes(previous)) {
    select.value = previous;
  }
}
