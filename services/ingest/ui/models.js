// Models: per model, where its requests wait, its replicas and the autoscaler's last word, and
// its throughput, latency and backlog over the last minutes. One GET /v1/models per tick; the
// bucketed history (GET /v1/model-stats) changes every few seconds, so it is read every 5th tick.
// Under each model's name, how wrong the quotes of its recent finished jobs were.

import { api } from "./api.js";
import { causeView, fullText } from "./cause.js";
import { backlogChart } from "./chart.js";
import { ago, h, ms, num, plural, replace, table, time } from "./dom.js";

const STATS_EVERY = 5;

export function modelsView() {
  const body = h("div", { class: "models" }, h("p", { class: "empty" }, "Loading…"));
  const el = h("section", {}, h("h1", {}, "Models"), body);
  let tick = 0;
  let stats = new Map();
  const open = new Set(); // the messages the user opened, kept open across refreshes

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
        models.data.map((m) => row(m, stats.get(m.id), open)),
        "No models are configured.",
      ),
    );
  }
  return { el, refresh };
}

function row(m, s, open) {
  const q = m.queue;
  const sc = m.scaling;
  const lanes = ["interactive", "batch"].map((l) => q.lanes[l]?.queued ?? 0).join(" / ");
  return h(
    "tr",
    { dataset: { model: m.id } },
    h("td", {}, h("strong", {}, m.id), h("div", { class: "sub" }, `${m.engine} · ${sc.backend}`), quotes(m.quote_error)),
    h("td", { dataset: { field: "health" } }, health(m, open)),
    h("td", { dataset: { field: "queued" } }, lanes),
    h("td", { dataset: { field: "routed" } }, num(q.routed_unread)),
    h("td", { dataset: { field: "inflight" } }, num(q.pending)),
    h(
      "td",
      { dataset: { field: "backlog" } },
      num(q.unfinished),
      q.flow === "paused" ? h("div", { class: "sub warn" }, "batch lane paused") : null,
    ),
    h("td", { dataset: { field: "replicas" } }, replicas(m)),
    h("td", { dataset: { field: "scaling" } }, decision(m, open)),
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

// Whether the model serves now (and why not: one line, the whole message on click), where its
// waiting requests would go, and what it cost today.
function health(m, open) {
  const hl = m.health;
  const serving = hl.state === "serving";
  const parts = [h("div", { class: serving ? "" : "warn" }, hl.state, serving ? null : h("span", { class: "sub" }, " since ", time(hl.since)))];
  // How many workers read is the replicas column's to say, from the live figures: a serving
  // model's "N workers reading" (judged a second ago; an autoscaler's replica count may contradict
  // it while a stopped worker's name is not yet dropped) is not repeated here, nor its "no worker
  // reading" once one reads.
  const readers = /^\d+ workers? reading$/.test(hl.reason) || (/\bno worker reading\b/.test(hl.reason) && m.queue.consumers > 0);
  if (!(serving && readers)) {
    parts.push(causeView(hl.reason, { key: `${m.id}:health`, open, more: serving ? [] : whyNot(m), cls: serving ? "" : "warn" }));
  }
  if (m.fallback.length) parts.push(h("div", { class: "sub" }, `falls back to ${m.fallback.join(", ")}`));
  if (m.spend.day_usd > 0) parts.push(h("div", { class: "sub" }, `$${num(m.spend.day_usd, 2)} today`));
  for (const lim of m.spend.limits.filter((l) => l.reached)) {
    parts.push(h("div", { class: "sub warn" }, `limit reached: ${lim.name}`));
  }
  return parts;
}

// What else is known of why a model does not serve, for the detail under its health's cause.
function whyNot(m) {
  const hl = m.health;
  const f = m.scaling.failures;
  const facts = [[`${hl.state} since `, time(hl.since)]];
  if (f) {
    facts.push([
      `worker starts failed in a row: ${num(f.count)}`,
      f.last_exit_status === null ? null : `, the last with exit status ${f.last_exit_status}`,
      f.next_attempt_at ? [", next try ", time(f.next_attempt_at)] : null,
    ]);
    if (f.last_error && !fullText(hl.reason).includes(fullText(f.last_error))) facts.push(`the last start's error: ${fullText(f.last_error)}`);
  }
  return facts;
}

// "quotes: 12 jobs, finish p50 +4.0% (p90 ±9.0%), cost p50 +0.8%": actual over quoted, less 1,
// so + is a job that took longer (cost more) than quoted. The newest jobs' figures in its title.
function quotes(q) {
  const attrs = { class: "sub", dataset: { field: "quotes" } };
  if (!q) return h("div", attrs, "no finished quotes yet");
  const parts = [`quotes: ${plural(q.jobs, "job", "jobs")}`];
  if (q.finish_error_p50 !== null) {
    parts.push(`finish p50 ${signed(q.finish_error_p50)}${q.finish_error_p90 === null ? "" : ` (p90 ±${percent(q.finish_error_p90)})`}`);
  }
  if (q.cost_error_p50 !== null) parts.push(`cost p50 ${signed(q.cost_error_p50)}`);
  const latest = q.latest.map(
    (s) => `${new Date(s.at * 1000).toLocaleTimeString()}: quoted ${num(s.quoted_s, 1)} s, took ${num(s.actual_s, 1)} s; quoted $${num(s.quoted_cost, 4)}, cost $${num(s.actual_cost, 4)}`,
  );
  return h("div", { ...attrs, title: latest.length ? `the newest jobs:\n${latest.join("\n")}` : null }, parts.join(", "));
}

function percent(x) {
  return `${num(100 * Math.abs(x), 1)}%`;
}

function signed(x) {
  return `${x < 0 ? "−" : "+"}${percent(x)}`;
}

// An autoscaled model: the replicas its backend runs, and how many it wants within its bounds. A
// model without an autoscaler's count (static, or no decision yet): the workers reading its queue.
function replicas(m) {
  const sc = m.scaling;
  if (sc.current === null) return `${plural(m.queue.consumers, "worker", "workers")} reading`;
  return [plural(sc.current, "replica", "replicas"), h("div", { class: "sub" }, `${sc.desired} wanted · ${sc.min_replicas}–${sc.max_replicas} allowed`)];
}

function decision(m, open) {
  const sc = m.scaling;
  if (sc.backend === "static") return h("span", { class: "sub" }, "not autoscaled");
  const parts = [];
  if (sc.reason) parts.push(h("div", {}, sc.reason, h("span", { class: "sub" }, ` · ${ago(sc.decided_at)}`)));
  if (sc.last_change) {
    const c = sc.last_change;
    parts.push(h("div", { class: "sub" }, `last change ${c.from_replicas} → ${c.to_replicas}: ${c.reason}, ${ago(c.at)}`));
  }
  if (sc.failures) parts.push(failures(sc.failures, `${m.id}:failures`, open));
  return parts.length ? parts : "no decision yet";
}

function failures(f, key, open) {
  const head = h("div", { class: "sub warn" }, `${plural(f.count, "failing start", "failing starts")}`, f.last_exit_status === null ? null : ` (exit status ${f.last_exit_status})`);
  if (!f.last_error) return head;
  const more = [["last failed ", time(f.last_at)], f.next_attempt_at ? ["next try ", time(f.next_attempt_at)] : null];
  return [head, causeView(f.last_error, { key, open, more, cls: "warn" })];
}

// The recorded history, and the live figures as its newest point.
function points(m, s) {
  const history = s ? s.samples.map((p) => ({ at: p.at, backlog: p.backlog, replicas: p.replicas })) : [];
  const live = m.scaling.current === null ? m.queue.consumers : m.scaling.current;
  history.push({ at: Date.now() / 1000, backlog: m.queue.unfinished, replicas: live });
  return history;
}
