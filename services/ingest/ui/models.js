// Models: per model, where its requests wait, its replicas and the autoscaler's last word, and
// its throughput, latency and backlog over the last minutes. One GET /v1/models per tick; the
// bucketed history (GET /v1/model-stats) changes every few seconds, so it is read every 5th tick.

import { api } from "./api.js";
import { backlogChart } from "./chart.js";
import { ago, h, ms, num, replace, table } from "./dom.js";

const STATS_EVERY = 5;

export function modelsView() {
  const body = h("div", { class: "models" }, h("p", { class: "empty" }, "Loading…"));
  const el = h("section", {}, h("h1", {}, "Models"), body);
  let tick = 0;
  let stats = new Map();

  async function refresh() {
    const models = await api("/v1/models");
    if (tick++ % STATS_EVERY === 0) {
      const list = await api("/v1/model-stats");
      stats = new Map(list.data.map((s) => [s.id, s]));
    }
    replace(
      body,
      table(
        ["Model", "Health", "Queued (interactive / batch)", "Routed", "In flight", "Backlog", "Replicas", "Last scaling", "Throughput", "Latency", "Backlog and replicas"],
        models.data.map((m) => row(m, stats.get(m.id))),
        "No models are configured.",
      ),
    );
  }
  return { el, refresh };
}

function row(m, s) {
  const q = m.queue;
  const sc = m.scaling;
  const lanes = ["interactive", "batch"].map((l) => q.lanes[l]?.queued ?? 0).join(" / ");
  const replicas = sc.current === null ? `${q.consumers}` : `${sc.current} / ${sc.desired}`;
  return h(
    "tr",
    { dataset: { model: m.id } },
    h("td", {}, h("strong", {}, m.id), h("div", { class: "sub" }, `${m.engine} · ${sc.backend}`)),
    h("td", { dataset: { field: "health" } }, health(m)),
    h("td", { dataset: { field: "queued" } }, lanes),
    h("td", { dataset: { field: "routed" } }, num(q.routed_unread)),
    h("td", { dataset: { field: "inflight" } }, num(q.pending)),
    h(
      "td",
      { dataset: { field: "backlog" } },
      num(q.unfinished),
      q.flow === "paused" ? h("div", { class: "sub warn" }, "batch lane paused") : null,
    ),
    h(
      "td",
      { dataset: { field: "replicas" } },
      replicas,
      h("div", { class: "sub" }, sc.current === null ? "workers reading" : `current / desired (${sc.min_replicas}–${sc.max_replicas})`),
    ),
    h("td", { dataset: { field: "scaling" } }, decision(sc)),
    h("td", { dataset: { field: "throughput" } }, s ? `${num(s.throughput_per_s, 1)}/s` : "—"),
    h(
      "td",
      { dataset: { field: "latency" } },
      s ? ms(s.latency_ms) : "—",
      s && s.inference_ms !== null ? h("div", { class: "sub" }, `engine ${ms(s.inference_ms)}`) : null,
    ),
    h("td", {}, backlogChart(points(m, s))),
  );
}

// Whether the model serves now, where its waiting requests would go, and what it cost today.
function health(m) {
  const hl = m.health;
  const parts = [
    h("div", { class: hl.state === "serving" ? "" : "warn" }, hl.state),
    h("div", { class: "sub" }, hl.reason),
  ];
  if (m.fallback.length) parts.push(h("div", { class: "sub" }, `falls back to ${m.fallback.join(", ")}`));
  if (m.spend.day_usd > 0) parts.push(h("div", { class: "sub" }, `$${num(m.spend.day_usd, 2)} today`));
  for (const lim of m.spend.limits.filter((l) => l.reached)) {
    parts.push(h("div", { class: "sub warn" }, `limit reached: ${lim.name}`));
  }
  return parts;
}

function decision(sc) {
  if (sc.backend === "static") return h("span", { class: "sub" }, "not autoscaled");
  const parts = [];
  if (sc.reason) parts.push(h("div", {}, sc.reason, h("span", { class: "sub" }, ` · ${ago(sc.decided_at)}`)));
  if (sc.last_change) {
    const c = sc.last_change;
    parts.push(h("div", { class: "sub" }, `last change ${c.from_replicas} → ${c.to_replicas}: ${c.reason}, ${ago(c.at)}`));
  }
  if (sc.failures) parts.push(h("div", { class: "sub warn" }, `${sc.failures.count} failing starts: ${sc.failures.last_error || "?"}`));
  return parts.length ? parts : "no decision yet";
}

// The recorded history, and the live figures as its newest point.
function points(m, s) {
  const history = s ? s.samples.map((p) => ({ at: p.at, backlog: p.backlog, replicas: p.replicas })) : [];
  const live = m.scaling.current === null ? m.queue.consumers : m.scaling.current;
  history.push({ at: Date.now() / 1000, backlog: m.queue.unfinished, replicas: live });
  return history;
}
