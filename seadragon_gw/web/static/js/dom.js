// Building DOM nodes from data without ever parsing it as HTML: every value from the API
// becomes a text node or an attribute value, never markup (the pages also forbid inline
// scripts by their Content-Security-Policy).

/** h("tag", {attr: value, onclick: fn}, ...children): an element; strings become text. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value" || name === "checked" || name === "disabled") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A table: columns are {title, cell(row) -> node|string, num?}; `empty` when no rows. */
export function table(columns, rows, empty = "none") {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title)));
  const body = rows.length
    ? rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(row)))))
    : [h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty))];
  return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

/** The state of a backend or model as a coloured badge. */
export function stateBadge(state) {
  const kind = { up: "ok", ready: "ok", running: "ok", healthy: "ok", starting: "warn", draining: "warn",
    degraded: "warn", stopping: "warn", stopped: "", down: "bad", crashed: "bad", unhealthy: "bad" }[state];
  return badge(state ?? "?", kind ?? "");
}

export function when(ts) {
  if (ts === null || ts === undefined || ts === "") return "";
  const date = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  return Number.isNaN(date.getTime()) ? String(ts) : date.toLocaleString();
}

export function seconds(value, digits = 2) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)} s`;
}

/** An error box showing the API's status and message exactly as it wrote them. */
export function errorBox(error) {
  const status = error && error.status ? `${error.status}: ` : "";
  return h("div", { class: "error", role: "alert" }, status + (error?.message ?? String(error)));
}

/** Copies `text`; falls back to selecting `input` (clipboard needs a secure context). */
export async function copyText(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (input) {
      input.select();
      return document.execCommand && document.execCommand("copy");
    }
    return false;
  }
}
