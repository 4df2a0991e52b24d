// What the admin pages share: panels, a feedback area for API errors, polling, form fields.

import { copyText, errorBox, h } from "../dom.js";

export function panel(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

/** Where a page shows what its last action did: the API's error as written, or a notice. */
export class Feedback {
  constructor() {
    this.element = h("div", { class: "feedback", "aria-live": "polite" });
  }

  error(error) { this.element.replaceChildren(errorBox(error)); }
  ok(...text) { this.element.replaceChildren(h("div", { class: "notice" }, ...text)); }
  clear() { this.element.replaceChildren(); }

  /** Runs `fn`, showing any error it throws; returns its result (undefined on error). */
  async run(fn) {
    this.clear();
    try {
      return await fn();
    } catch (error) {
      this.error(error);
      return undefined;
    }
  }
}

/** Calls `fn` now and every `ms` while the tab is visible, until the returned stop(). */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try { await fn(); } catch { /* the page shows its own errors */ }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export function field(label, input) {
  return h("label", {}, label, input);
}

export function check(label, input) {
  return h("label", { class: "check" }, input, label);
}

/** An optional number from an input: undefined when empty (the API's default). */
export function optionalNumber(input, scale = 1) {
  const text = input.value.trim();
  return text === "" ? undefined : Number(text) * scale;
}

/** A secret shown once, with a copy button; the lists never show it again. */
export function shownOnce(what, secret) {
  const input = h("input", { class: "secret", readonly: true, value: secret, size: Math.min(secret.length, 60),
    "data-secret": what });
  const copied = h("span", { class: "muted" });
  const copy = h("button", {
    type: "button",
    onclick: async () => {
      const ok = await copyText(secret, input);
      copied.textContent = ok ? " copied" : " select it and copy";
    },
  }, "Copy");
  const box = h("div", { class: "notice shown-once" },
    h("strong", {}, `The new ${what} (shown only this once): `), input, " ", copy, copied,
    " ", h("button", { type: "button", onclick: () => box.remove() }, "Done"));
  return box;
}
