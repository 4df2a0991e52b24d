// The crash log: backend failures and the gateway's own internal errors, newest first.

import { h, table, when } from "../dom.js";
import { Feedback, panel } from "./common.js";

const COLUMNS = [
  { title: "When", cell: (c) => when(c.timestamp) },
  { title: "Kind", cell: (c) => c.kind ?? "" },
  { title: "Backend", cell: (c) => c.backend ?? "" },
  { title: "Model", cell: (c) => c.model ?? "" },
  { title: "Route", cell: (c) => c.route ?? "" },
  { title: "Status", num: true, cell: (c) => c.status ?? "" },
  { title: "Request", cell: (c) => c.request_id ?? "" },
  { title: "Error", cell: (c) => [c.error ?? "", c.stack_trace
    ? h("details", {}, h("summary", {}, "stack trace"), h("pre", {}, c.stack_trace)) : null] },
];

export function mount({ session }) {
  const feedback = new Feedback();
  const list = h("div", {});
  const refresh = () => feedback.run(async () => {
    const answer = await session.get("/api/admin/crashes", { limit: 200 });
    list.replaceChildren(table(COLUMNS, answer.crashes, "no crashes logged"));
  });
  const element = h("div", { class: "page-crashes" }, feedback.element,
    panel("Crash log", h("button", { type: "button", onclick: refresh }, "Refresh"), list));
  refresh();
  return { element };
}
