// Managed models: the processes the gateway runs (start, stop gracefully or at once,
// switch profile) and the recent lines of each one's log.

import { seg } from "../api.js";
import { h, stateBadge, table } from "../dom.js";
import { check, Feedback, panel, poll } from "./common.js";

export function mount({ session, pollMs }) {
  const feedback = new Feedback();
  const polled = new Feedback();
  const list = h("div", {});
  const logBox = h("div", {});
  const choices = new Map(); // backend -> chosen profile, kept across refreshes
  const force = new Map();

  const path = (m, action) => `/api/admin/models/${seg(m.name)}/${action}`;
  const act = (m, what, call) => feedback.run(async () => {
    feedback.ok(`${m.name}: ${what}…`);
    await call();
    feedback.ok(`${m.name}: ${what} done.`);
    await refresh();
  });
  const profileOf = (m) => choices.get(m.name) || m.profile || undefined;
  const start = (m) => act(m, "start", () => session.post(path(m, "start"), undefined, { profile: profileOf(m) }));
  const stop = (m) => act(m, force.get(m.name) ? "stop (force)" : "stop",
    () => session.post(path(m, "stop"), undefined, { graceful: force.get(m.name) ? "false" : "true" }));
  const switchProfile = (m) => act(m, `switch to ${profileOf(m)}`, () => session.post(path(m, "profile"), undefined,
    { profile: profileOf(m), graceful: force.get(m.name) ? "false" : "true" }));
  const showLog = (m) => feedback.run(async () => {
    const answer = await session.get(`/api/admin/models/${seg(m.name)}/logs`, { lines: 200 });
    logBox.replaceChildren(panel(`Log of ${m.name}`, h("pre", { "data-log-text": m.name }, answer.lines.join("\n") || "(empty)")));
  });

  const controls = (m) => {
    const profiles = m.profiles || [];
    const select = profiles.length
      ? h("select", { "aria-label": "profile", onchange: (e) => choices.set(m.name, e.target.value) },
        profiles.map((p) => h("option", { value: p, selected: p === profileOf(m) }, p)))
      : null;
    const forceBox = h("input", { type: "checkbox", checked: Boolean(force.get(m.name)),
      onchange: (e) => force.set(m.name, e.target.checked) });
    return h("span", {},
      h("button", { type: "button", "data-start": m.name, onclick: () => start(m) }, "Start"), " ",
      h("button", { type: "button", class: "danger", "data-stop": m.name, onclick: () => stop(m) }, "Stop"), " ",
      check("force", forceBox), " ", select,
      select ? h("button", { type: "button", "data-switch": m.name, onclick: () => switchProfile(m) }, "Switch") : null,
      " ", h("button", { type: "button", "data-log": m.name, onclick: () => showLog(m) }, "Log"));
  };

  const columns = [
    { title: "Backend", cell: (m) => m.name },
    { title: "Models", cell: (m) => (Array.isArray(m.models) ? m.models.join(", ") : "") },
    { title: "Status", cell: (m) => stateBadge(m.status ?? m.state) },
    { title: "Profile", cell: (m) => m.profile ?? "" },
    { title: "Pid", num: true, cell: (m) => m.pid ?? "" },
    { title: "Up for", num: true, cell: (m) => (m.uptime_seconds == null ? "" : `${Math.round(m.uptime_seconds)} s`) },
    { title: "In flight", num: true, cell: (m) => m.active_requests ?? "" },
    { title: "Waiting", num: true, cell: (m) => m.waiting ?? "" },
    { title: "Restarts", num: true, cell: (m) => m.restarts ?? "" },
    { title: "Error", cell: (m) => m.last_error ?? "" },
    { title: "", cell: controls },
  ];

  const refresh = async () => {
    let answer;
    try {
      answer = await session.get("/api/admin/models");
    } catch (error) {
      polled.error(error);
      return;
    }
    polled.clear();
    const focused = document.activeElement;
    if (focused && focused.tagName === "SELECT" && list.contains(focused)) return; // do not close an open select
    list.replaceChildren(table(columns, answer.models, "no managed backends (a backend with a managed: block)"));
  };
  const element = h("div", { class: "page-models" }, feedback.element, polled.element,
    panel("Managed backends", list), logBox);
  return { element, stop: poll(refresh, pollMs) };
}
