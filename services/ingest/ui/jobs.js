// Jobs: the tenant's jobs, newest first, one GET /v1/jobs page per tick (each job carries its
// per-model counts, so progress needs no further request), filtered by status, paged by cursor;
// and, while a job on the page is unfinished, one GET /v1/models, for whether the models its
// requests wait for can serve them (else it shows what it waits for instead of an ETA).
// A running job's ETA is the planner's (`estimated_completion_at`) once it has one, else the
// job's own pace; a job with a deadline shows it, and whether the plan (or, ended, the job) met it.

import { api, query } from "./api.js";
import { bar, badge, doneOf, duration, h, replace, table, time } from "./dom.js";

export const JOB_STATUSES = ["queued", "in_progress", "completed", "failed", "cancelling", "cancelled", "expiring", "expired"];
const FINAL = new Set(["completed", "failed", "cancelled", "expired"]);
const PAGE = 20;

export function jobsView(params) {
  const status = params.get("status") || "";
  const cursors = [null]; // the cursor of each page shown so far; the last is the current page's
  const filter = h(
    "select",
    { id: "status-filter", "aria-label": "Filter by status", onchange: (e) => (location.hash = `#/jobs${query({ status: e.target.value })}`) },
    h("option", { value: "" }, "every status"),
    JOB_STATUSES.map((s) => h("option", { value: s, selected: s === status }, s.replace("_", " "))),
  );
  const newer = h("button", { type: "button", class: "quiet", onclick: () => move(-1) }, "← Newer");
  const older = h("button", { type: "button", class: "quiet", onclick: () => move(1) }, "Older →");
  const info = h("span", { class: "sub" });
  const body = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  const el = h("section", {}, h("h1", {}, "Jobs"), h("div", { class: "toolbar" }, h("label", {}, "Status ", filter), newer, older, info), body);
  let next = null;
  let refreshNow = () => {};

  function move(step) {
    if (step > 0 && next) cursors.push(next);
    if (step < 0 && cursors.length > 1) cursors.pop();
    refreshNow();
  }

  async function refresh() {
    const after = cursors[cursors.length - 1];
    const page = await api(`/v1/jobs${query({ limit: PAGE, status, after })}`);
    const models = await modelsFor(page.data);
    next = page.has_more ? page.next_cursor : null;
    newer.disabled = cursors.length === 1;
    older.disabled = !next;
    info.textContent = `page ${cursors.length} · ${page.data.length} jobs${page.has_more ? " · more older" : ""}`;
    replace(
      body,
      table(["Job", "Status", "Created", "Progress per model", "ETA", "Deadline"], page.data.map((job) => row(job, models)), status ? `No ${status.replace("_", " ")} jobs on this page.` : "No jobs yet."),
    );
  }
  return { el, refresh, setRefreshNow: (fn) => (refreshNow = fn) };
}

function row(job, models) {
  return h(
    "tr",
    { dataset: { job: job.id } },
    h("td", {}, h("a", { href: `#/jobs/${job.id}` }, job.id), metadata(job.metadata)),
    h("td", { dataset: { field: "status" } }, badge(job.status)),
    h("td", {}, time(job.created_at)),
    h("td", { class: "bars" }, progress(job)),
    h("td", { dataset: { field: "eta" } }, waitingView(waiting(job, models)) ?? plannedEta(job) ?? eta(job)),
    h("td", { dataset: { field: "deadline" } }, job.deadline ? [time(job.deadline), " ", deadlineBadge(job)] : "—"),
  );
}

export function progress(job) {
  const models = Object.entries(job.models);
  if (models.length <= 1) return bar(doneOf(job.request_counts), job.request_counts.total, models[0]?.[0]);
  return models.map(([m, c]) => bar(doneOf(c), c.total, m));
}

// From the job's own pace so far: time since it started, over the share of requests finished.
export function eta(job) {
  if (FINAL.has(job.status)) return "done";
  const c = job.request_counts;
  const done = doneOf(c);
  if (!job.started_at || !done) return "—";
  const elapsed = Date.now() / 1000 - job.started_at;
  return duration((elapsed * (c.total - done)) / done);
}

// The planner's finish of an unfinished job: "12:03:04 (in 2m 05s)"; null before it has one.
export function plannedEta(job) {
  const at = job.estimated_completion_at;
  if (FINAL.has(job.status) || !at) return null;
  const left = at - Date.now() / 1000;
  return [time(at), left >= 1 ? ` (in ${countdown(left)})` : " (any moment)"];
}

// A job's deadline against its plan while it runs ("at risk" / "on track"; nothing before the
// plan has it), and once it ended whether it finished by it ("met" / "missed").
export function deadlineBadge(job) {
  if (!job.deadline) return null;
  if (job.status === "completed" && job.completed_at) {
    const met = job.completed_at <= job.deadline;
    return h("span", { class: `badge s-${met ? "met" : "missed"}`, dataset: { field: "risk" } }, met ? "met" : "missed");
  }
  if (FINAL.has(job.status) || job.deadline_at_risk === null || job.deadline_at_risk === undefined) return null;
  const risk = job.deadline_at_risk;
  return h("span", { class: `badge s-${risk ? "at_risk" : "on_track"}`, dataset: { field: "risk" } }, risk ? "at risk" : "on track");
}

// A time left or past, to the second: "45s", "2m 05s", "1h 02m".
export function countdown(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

// The models (by id) with their health, when one of `jobs` is unfinished (else null: no request).
export async function modelsFor(jobs) {
  if (jobs.every((j) => FINAL.has(j.status))) return null;
  try {
    return new Map((await api("/v1/models")).data.map((m) => [m.id, m]));
  } catch (err) {
    if ([0, 401, 502, 503, 504].includes(err.status)) throw err; // the banner says it
    return null; // without health, the ETA from the job's pace
  }
}

// The models that still have requests of the job and cannot serve them now: not serving, and,
// where it is unavailable (its waiting requests move down its fallback chain), no model of that
// chain serves either. Their requests do not move, so a pace-based ETA would be a guess.
export function waiting(job, models) {
  if (!models || FINAL.has(job.status)) return [];
  return Object.entries(job.models)
    .filter(([name, c]) => c.total > doneOf(c) && stuck(name, models, new Set()))
    .map(([name]) => ({ name, health: models.get(name).health }));
}

function stuck(name, models, seen) {
  const m = models.get(name);
  if (!m || m.health.state === "serving") return false;
  seen.add(name);
  if (m.health.state !== "unavailable") return true; // cold-starting, degraded: its requests wait there
  return m.fallback.every((f) => seen.has(f) || stuck(f, models, seen));
}

// "waiting for llama: unavailable since 12:03:04", one line per model; null when none waits.
export function waitingView(list) {
  if (!list.length) return null;
  return list.map(({ name, health }) => h("div", { class: "waiting" }, `waiting for ${name}: ${health.state} since `, time(health.since)));
}

function metadata(md) {
  const entries = Object.entries(md || {});
  if (!entries.length) return null;
  return h("div", { class: "sub" }, entries.map(([k, v]) => `${k}=${v}`).join(" "));
}

export { FINAL };
