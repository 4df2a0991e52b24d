// Missing models: requests for models no backend serves, per model and client.

import { h, table, when } from "../dom.js";
import { Feedback, panel } from "./common.js";

const COLUMNS = [
  { title: "Model", cell: (m) => m.model_name },
  { title: "Client", cell: (m) => m.client_id ?? "" },
  { title: "Requests", num: true, cell: (m) => m.count },
  { title: "First seen", cell: (m) => when(m.first_seen) },
  { title: "Last seen", cell: (m) => when(m.last_seen) },
];

export function mount({ session }) {
  const feedback = new Feedback();
  const list = h("div", {});
  const refresh = () => feedback.run(async () => {
    const answer = await session.get("/api/admin/missing-models", { limit: 200 });
    list.replaceChildren(table(COLUMNS, answer.missing_models, "no requests for missing models"));
  });
  const element = h("div", { class: "page-missing" }, feedback.element,
    panel("Missing models", h("button", { type: "button", onclick: refresh }, "Refresh"), list));
  refresh();
  return { element };
}
