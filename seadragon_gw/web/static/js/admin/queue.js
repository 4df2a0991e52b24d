// Queue: every waiting request (who, client id, model, priority, effective priority,
// waited), live; clearing one model's queue (two clicks: the second confirms).

import { h, table } from "../dom.js";
import { Feedback, panel, poll } from "./common.js";

const COLUMNS = [
  { title: "Request", cell: (w) => w.request_id ?? "" },
  { title: "Who", cell: (w) => (w.credential ? `${w.credential.kind}:${w.credential.name}` : "") },
  { title: "Client id", cell: (w) => w.client_id ?? "" },
  { title: "Model", cell: (w) => w.model },
  { title: "Position", num: true, cell: (w) => w.position },
  { title: "Priority", num: true, cell: (w) => w.priority ?? "" },
  { title: "Effective", num: true, cell: (w) => (w.effective_priority ?? "") },
  { title: "Waited", num: true, cell: (w) => `${Number(w.waited_s).toFixed(1)} s` },
];

export function mount({ session, pollMs }) {
  const feedback = new Feedback();
  const polled = new Feedback();
  const waiting = h("div", { class: "waiting" });
  const models = h("div", { class: "queue-models" });
  const armed = new Set(); // models whose Clear was clicked once

  const clearButton = (model) => {
    if (!armed.has(model)) {
      return h("button", { type: "button", class: "danger", "data-clear": model,
        onclick: () => { armed.add(model); refresh(); } }, "Clear");
    }
    return h("span", {},
      h("button", { type: "button", class: "danger", "data-confirm-clear": model, onclick: () => clear(model) },
        `Yes, answer every waiting ${model} request with 503`), " ",
      h("button", { type: "button", onclick: () => { armed.delete(model); refresh(); } }, "Cancel"));
  };

  const clear = (model) => feedback.run(async () => {
    armed.delete(model);
    const answer = await session.post("/api/queue/clear", { model });
    feedback.ok(`Cleared ${answer.cleared} waiting request(s) for ${answer.model}.`);
    await refresh();
  });

  const modelColumns = [
    { title: "Model", cell: (m) => m.model },
    { title: "Waiting", num: true, cell: (m) => m.waiting },
    { title: "Processing", num: true, cell: (m) => m.processing },
    { title: "Slots", num: true, cell: (m) => m.max_concurrent },
    { title: "", cell: (m) => clearButton(m.model) },
  ];

  const refresh = async () => {
    let status;
    try {
      status = await session.get("/api/queue/status");
    } catch (error) {
      polled.error(error);
      return;
    }
    polled.clear();
    waiting.replaceChildren(table(COLUMNS, status.waiting, "nobody is waiting"));
    models.replaceChildren(table(modelColumns, status.models, "no models"));
  };
  const element = h("div", { class: "page-queue" }, feedback.element, polled.element,
    panel("Waiting requests", waiting), panel("Queues", models));
  return { element, stop: poll(refresh, pollMs) };
}
