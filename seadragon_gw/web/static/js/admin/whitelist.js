// IP whitelist: addresses or CIDR ranges that need no credential, with a priority and label.

import { seg } from "../api.js";
import { h, table, when } from "../dom.js";
import { Feedback, field, optionalNumber, panel } from "./common.js";

export function mount({ session }) {
  const feedback = new Feedback();
  const list = h("div", {});
  const ip = h("input", { name: "ip", required: true, placeholder: "192.168.1.20 or 10.0.0.0/24" });
  const priority = h("input", { name: "priority", type: "number", placeholder: "1" });
  const label = h("input", { name: "label", placeholder: "cline on the build box" });

  const add = (event) => {
    event.preventDefault();
    return feedback.run(async () => {
      const entry = await session.post("/api/admin/whitelist",
        { ip: ip.value.trim(), priority: optionalNumber(priority), label: label.value || undefined });
      feedback.ok(`Whitelisted ${entry.ip} (priority ${entry.priority}).`);
      ip.value = label.value = "";
      await refresh();
    });
  };

  const remove = (entry) => feedback.run(async () => {
    await session.del(`/api/admin/whitelist/${seg(entry.ip)}`);
    feedback.ok(`Removed ${entry.ip} from the whitelist.`);
    await refresh();
  });

  const columns = [
    { title: "Address", cell: (e) => h("code", {}, e.ip) },
    { title: "Priority", num: true, cell: (e) => e.priority },
    { title: "Label", cell: (e) => e.label ?? "" },
    { title: "Added", cell: (e) => when(e.created_at) },
    { title: "", cell: (e) => h("button", { type: "button", class: "danger", "data-remove": e.ip,
      onclick: () => remove(e) }, "Remove") },
  ];

  const refresh = async () => {
    const answer = await session.get("/api/admin/whitelist");
    list.replaceChildren(table(columns, answer.whitelist, "nothing whitelisted"));
  };

  const formEl = h("form", { class: "inline", onsubmit: add }, field("Address or CIDR", ip),
    field("Priority", priority), field("Label", label), h("button", { class: "primary", type: "submit" }, "Add"));
  const element = h("div", { class: "page-whitelist" }, panel("Add to the whitelist", formEl), feedback.element,
    panel("Whitelist", list));
  feedback.run(refresh);
  return { element };
}
