// Usage by client, model, day or credential over a chosen period: a table and a chart.

import { LineChart } from "../chart.js";
import { h, seconds, table } from "../dom.js";
import { Feedback, field, panel } from "./common.js";

const GROUPS = ["client", "model", "day", "credential"];

function isoDay(offsetDays) {
  const day = new Date(Date.now() + offsetDays * 86400000);
  return day.toISOString().slice(0, 10);
}

export function mount({ session }) {
  const feedback = new Feedback();
  const since = h("input", { name: "since", type: "date", value: isoDay(-6) });
  const until = h("input", { name: "until", type: "date", value: isoDay(1) });
  const group = h("select", { name: "group_by" }, GROUPS.map((g) => h("option", { value: g }, g)));
  const client = h("input", { name: "client", placeholder: "any" });
  const model = h("input", { name: "model", placeholder: "any" });
  const result = h("div", {});
  const chartBox = h("div", {});

  const load = (event) => {
    if (event) event.preventDefault();
    return feedback.run(async () => {
      const query = { group_by: group.value, since: since.value ? `${since.value}T00:00:00Z` : undefined,
        until: until.value ? `${until.value}T00:00:00Z` : undefined, client: client.value.trim(),
        model: model.value.trim() };
      const answer = await session.get("/api/admin/usage", query);
      show(answer);
    });
  };

  const show = (answer) => {
    const key = answer.group_by;
    const columns = [
      { title: key, cell: (g) => g[key] ?? "" },
      { title: "Requests", num: true, cell: (g) => g.requests },
      { title: "Errors", num: true, cell: (g) => g.errors },
      { title: "Tokens in", num: true, cell: (g) => g.tokens_in },
      { title: "Tokens out", num: true, cell: (g) => g.tokens_out },
      { title: "Wait avg", num: true, cell: (g) => seconds(g.queue_wait_s.avg, 3) },
      { title: "Wait p95", num: true, cell: (g) => seconds(g.queue_wait_s.p95, 3) },
      { title: "Upstream avg", num: true, cell: (g) => seconds(g.upstream_s.avg, 3) },
      { title: "Upstream p95", num: true, cell: (g) => seconds(g.upstream_s.p95, 3) },
      { title: "First byte avg", num: true, cell: (g) => seconds(g.time_to_first_byte_s.avg, 3) },
    ];
    result.replaceChildren(table(columns, answer.groups, "no requests in this period"));
    const groups = answer.groups;
    const chart = new LineChart(`Requests and errors per ${key}`, [{ label: "requests" }, { label: "errors" }],
      { bars: true, format: (y) => y.toFixed(0), xFormat: (i) => String(groups[i]?.[key] ?? "") });
    chartBox.replaceChildren(chart.element);
    chart.set(groups.map((_, i) => i), [groups.map((g) => g.requests), groups.map((g) => g.errors)]);
  };

  const formEl = h("form", { class: "inline", onsubmit: load }, field("From (UTC day)", since),
    field("Until (exclusive)", until), field("Group by", group), field("Client", client), field("Model", model),
    h("button", { class: "primary", type: "submit" }, "Show"));
  const element = h("div", { class: "page-usage" }, panel("Usage", formEl), feedback.element,
    panel("Chart", chartBox), panel("Table", result));
  load();
  return { element };
}
