// Registration tokens: one-time tokens with which a person registers a web chat account.

import { badge, h, table, when } from "../dom.js";
import { check, Feedback, field, optionalNumber, panel, shownOnce } from "./common.js";

export function mount({ session }) {
  const feedback = new Feedback();
  const created = h("div", {});
  const list = h("div", {});
  const note = h("input", { name: "note", placeholder: "for whom" });
  const expires = h("input", { name: "expires_in_hours", type: "number", step: "any", placeholder: "never" });
  const admin = h("input", { name: "is_admin", type: "checkbox" });

  const create = (event) => {
    event.preventDefault();
    return feedback.run(async () => {
      const token = await session.post("/api/admin/tokens", { note: note.value || undefined,
        expires_in_s: optionalNumber(expires, 3600), is_admin: admin.checked || undefined });
      created.replaceChildren(shownOnce("registration token", token.token));
      note.value = "";
      await refresh();
    });
  };

  const columns = [
    { title: "Id", num: true, cell: (t) => t.id },
    { title: "Prefix", cell: (t) => h("code", {}, t.prefix) },
    { title: "Note", cell: (t) => t.note ?? "" },
    { title: "Admin", cell: (t) => (t.is_admin ? badge("admin", "warn") : "") },
    { title: "Created", cell: (t) => when(t.created_at) },
    { title: "Expires", cell: (t) => when(t.expires_at) || "never" },
    { title: "Used", cell: (t) => (t.used_at ? `${when(t.used_at)} by ${t.used_by ?? "?"}` : badge("unused")) },
  ];

  const refresh = async () => {
    const answer = await session.get("/api/admin/tokens");
    list.replaceChildren(table(columns, answer.tokens, "no registration tokens"));
  };

  const formEl = h("form", { class: "inline", onsubmit: create }, field("Note", note),
    field("Expires in (hours)", expires), check("registers an admin", admin),
    h("button", { class: "primary", type: "submit" }, "Create token"));
  const element = h("div", { class: "page-tokens" }, panel("New registration token", formEl, created),
    feedback.element, panel("Registration tokens", list));
  feedback.run(refresh);
  return { element };
}
