// Users (web chat accounts): activate, deactivate, make admin, rate-limit tier.

import { seg } from "../api.js";
import { badge, h, table, when } from "../dom.js";
import { Feedback, panel } from "./common.js";

export function mount({ session }) {
  const feedback = new Feedback();
  const list = h("div", {});

  const act = (user, what, call) => feedback.run(async () => {
    const changed = await call();
    feedback.ok(`${changed.username}: ${what}.`);
    await refresh();
  });
  const path = (user) => `/api/admin/users/${seg(user.username)}`;
  const setActive = (user, active) => act(user, active ? "activated" : "deactivated",
    () => session.post(`${path(user)}/${active ? "activate" : "deactivate"}`));
  const makeAdmin = (user, admin) => act(user, admin ? "now an admin" : "no longer an admin",
    () => session.patch(path(user), { is_admin: admin }));
  const setTier = (user, input) => act(user, `tier ${input.value.trim() || "default"}`,
    () => session.patch(path(user), { tier: input.value.trim() || null }));

  const actions = (user) => {
    const tier = h("input", { size: 8, value: user.tier ?? "", placeholder: "default", "aria-label": "tier" });
    return h("span", {},
      user.is_active
        ? h("button", { type: "button", class: "danger", "data-deactivate": user.username,
          onclick: () => setActive(user, false) }, "Deactivate")
        : h("button", { type: "button", "data-activate": user.username, onclick: () => setActive(user, true) },
          "Activate"), " ",
      h("button", { type: "button", "data-admin": user.username, onclick: () => makeAdmin(user, !user.is_admin) },
        user.is_admin ? "Remove admin" : "Make admin"), " ",
      tier, h("button", { type: "button", onclick: () => setTier(user, tier) }, "Set tier"));
  };

  const columns = [
    { title: "User", cell: (u) => u.username },
    { title: "State", cell: (u) => [u.is_active ? badge("active", "ok") : badge("inactive", "bad"),
      u.is_admin ? badge("admin", "warn") : null] },
    { title: "Tier", cell: (u) => u.tier ?? "default" },
    { title: "Created", cell: (u) => when(u.created_at) },
    { title: "Last login", cell: (u) => when(u.last_login) },
    { title: "", cell: actions },
  ];

  const refresh = async () => {
    const answer = await session.get("/api/admin/users");
    list.replaceChildren(table(columns, answer.users, "no users"));
  };
  const element = h("div", { class: "page-users" }, feedback.element, panel("Users", list));
  feedback.run(refresh);
  return { element };
}
