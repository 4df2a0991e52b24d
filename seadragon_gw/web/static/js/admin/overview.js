// Overview, live: health and backends, the load per model, refusal counts, and charts of
// requests per minute and queue-wait percentiles per priority class over the last hour.
// The history is kept in this page (from polling /api/admin/overview), so it starts empty.

import { LineChart } from "../chart.js";
import { h, seconds, stateBadge, table } from "../dom.js";
import { Feedback, panel, poll } from "./common.js";

const HOUR_MS = 3600 * 1000;
const CLASSES = ["high", "normal", "low"];

function newHistory() {
  return { at: [], rpm: [], p50: CLASSES.map(() => []), p95: CLASSES.map(() => []) };
}

const history = newHistory(); // survives switching pages, not a reload

function remember(data) {
  const now = Date.now();
  history.at.push(now);
  history.rpm.push(data.stats.requests_per_minute);
  CLASSES.forEach((c, i) => {
    const waits = data.stats.wait_seconds[c] || {};
    history.p50[i].push(waits.p50 ?? null);
    history.p95[i].push(waits.p95 ?? null);
  });
  let drop = 0;
  while (drop < history.at.length && history.at[drop] < now - HOUR_MS) drop += 1;
  if (drop) {
    history.at.splice(0, drop);
    history.rpm.splice(0, drop);
    for (const series of [...history.p50, ...history.p95]) series.splice(0, drop);
  }
}

function card(label, value, id) {
  return h("div", { class: "card", "data-card": id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
}

function utilization(processing, slots) {
  const share = slots ? Math.min(1, processing / slots) : 0;
  const bar = h("span", {});
  bar.style.width = `${Math.round(share * 100)}%`;
  return h("span", {}, h("span", { class: "utilbar", title: `${Math.round(share * 100)}%` }, bar),
    ` ${processing}/${slots}`);
}

const BACKEND_COLUMNS = [
  { title: "Backend", cell: (b) => b.name },
  { title: "Kind", cell: (b) => b.kind },
  { title: "State", cell: (b) => stateBadge(b.state) },
  { title: "Health", cell: (b) => stateBadge(b.healthy ? "healthy" : "unhealthy") },
  { title: "Profile", cell: (b) => b.profile ?? "" },
  { title: "In flight", cell: (b) => utilization(b.active, b.max_concurrent) },
  { title: "Models", num: true, cell: (b) => b.models },
  { title: "Error", cell: (b) => b.error ?? "" },
];

const MODEL_COLUMNS = [
  { title: "Model", cell: (m) => m.model },
  { title: "Waiting", num: true, cell: (m) => m.waiting },
  { title: "Processing / slots", cell: (m) => utilization(m.processing, m.max_concurrent) },
  { title: "Processed", num: true, cell: (m) => m.processed },
  { title: "Failed", num: true, cell: (m) => m.failed },
  { title: "Timed out", num: true, cell: (m) => m.timed_out },
];

export function mount({ session, pollMs }) {
  const feedback = new Feedback();
  const cards = h("div", { class: "cards" });
  const backends = h("div", {});
  const models = h("div", {});
  const fmt = (y) => `${y.toFixed(y < 1 ? 3 : 1)} s`;
  const rpm = new LineChart("Requests per minute", [{ label: "requests/min" }], { format: (y) => y.toFixed(1) });
  const p50 = new LineChart("Queue wait p50 per priority class", CLASSES.map((c) => ({ label: c })), { format: fmt });
  const p95 = new LineChart("Queue wait p95 per priority class", CLASSES.map((c) => ({ label: c })), { format: fmt });
  const element = h("div", { class: "page-overview" }, feedback.element, cards,
    panel("Backends", backends), panel("Queues per model", models),
    panel("Last hour", h("div", { class: "charts" }, rpm.element, p50.element, p95.element)));

  const refresh = async () => {
    let data;
    try {
      data = await session.get("/api/admin/overview");
    } catch (error) {
      feedback.error(error);
      return;
    }
    feedback.clear();
    remember(data);
    const counts = data.counts;
    const rejected = counts ? Object.values(counts.rejected).reduce((a, b) => a + b, 0) : null;
    cards.replaceChildren(
      card("Health", stateBadge(data.health.status), "health"),
      card("Waiting", data.stats.queue_length, "waiting"),
      card("Active", data.stats.active_requests, "active"),
      card("Requests / min", data.stats.requests_per_minute.toFixed(1), "rpm"),
      card("Average wait", seconds(data.stats.average_wait_time, 3), "wait"),
      card("Rate limited", counts ? counts.rate_limited : "metrics off", "rate-limited"),
      card("Failed upstream", data.failed, "failed"),
      card("Timed out / refused", `${data.timed_out} / ${rejected ?? "–"}`, "refused"),
      card("Database", data.health.database.writable ? "ok" : (data.health.database.error || "not writable"), "db"),
    );
    backends.replaceChildren(table(BACKEND_COLUMNS, data.health.backends, "no backends configured"));
    models.replaceChildren(table(MODEL_COLUMNS, data.models, "no models"));
    rpm.set(history.at, [history.rpm]);
    p50.set(history.at, history.p50);
    p95.set(history.at, history.p95);
  };
  const stop = poll(refresh, pollMs);
  return { element, stop };
}

