// API keys: the list, a new key (name, priority, models, tier, rate limit, expiry; the key
// itself shown once with a copy button), revoking.

import { seg } from "../api.js";
import { badge, h, table, when } from "../dom.js";
import { check, Feedback, field, optionalNumber, panel, shownOnce } from "./common.js";

export function mount({ session }) {
  const feedback = new Feedback();
  const created = h("div", {});
  const list = h("div", {});

  const name = h("input", { name: "name", required: true, placeholder: "my-app" });
  const priority = h("input", { name: "priority", type: "number", value: "2" });
  const models = h("input", { name: "allowed_models", placeholder: "all (or: llama3, qwen2.5)" });
  const tier = h("input", { name: "tier", placeholder: "default" });
  const rate = h("input", { name: "rate_limit_per_min", type: "number", placeholder: "tier's" });
  const expires = h("input", { name: "expires_in_days", type: "number", step: "any", placeholder: "never" });
  const admin = h("input", { name: "is_admin", type: "checkbox" });

  const create = (event) => {
    event.preventDefault();
    return feedback.run(async () => {
      const body = { name: name.value, priority: optionalNumber(priority), tier: tier.value.trim() || undefined,
        rate_limit_per_min: optionalNumber(rate), expires_in_s: optionalNumber(expires, 86400),
        is_admin: admin.checked || undefined };
      const names = models.value.split(",").map((m) => m.trim()).filter(Boolean);
      if (names.length) body.allowed_models = names;
      const key = await session.post("/api/admin/apikeys", body);
      created.replaceChildren(shownOnce(`API key '${key.name}'`, key.key));
      name.value = "";
      await refresh();
    });
  };

  const revoke = (key) => feedback.run(async () => {
    await session.del(`/api/admin/apikeys/${seg(String(key.id))}`);
    feedback.ok(`Revoked API key '${key.name}' (${key.prefix}).`);
    await refresh();
  });

  const columns = [
    { title: "Id", num: true, cell: (k) => k.id },
    { title: "Name", cell: (k) => k.name },
    { title: "Prefix", cell: (k) => h("code", {}, k.prefix) },
    { title: "Priority", num: true, cell: (k) => k.priority },
    { title: "Models", cell: (k) => (k.allowed_models ? k.allowed_models.join(", ") : "all") },
    { title: "Tier", cell: (k) => k.tier ?? "" },
    { title: "Rate/min", num: true, cell: (k) => k.rate_limit_per_min ?? "" },
    { title: "Expires", cell: (k) => when(k.expires_at) || "never" },
    { title: "Last used", cell: (k) => when(k.last_used) },
    { title: "State", cell: (k) => [k.is_active ? badge("active", "ok") : badge("revoked", "bad"),
      k.is_admin ? badge("admin", "warn") : null] },
    { title: "", cell: (k) => (k.is_active ? h("button", { type: "button", class: "danger", "data-revoke": k.name,
      onclick: () => revoke(k) }, "Revoke") : "") },
  ];

  const refresh = async () => {
    const answer = await session.get("/api/admin/apikeys");
    list.replaceChildren(table(columns, answer.apikeys, "no API keys"));
  };

  const formEl = h("form", { class: "inline", onsubmit: create },
    field("Name", name), field("Priority", priority), field("Models (comma-separated)", models), field("Tier", tier),
    field("Rate limit / min", rate), field("Expires in (days)", expires), check("admin", admin),
    h("button", { class: "primary", type: "submit" }, "Create key"));
  const element = h("div", { class: "page-keys" }, panel("New API key", formEl, created), feedback.element,
    panel("API keys", list));
  feedback.run(refresh);
  return { element };
}
