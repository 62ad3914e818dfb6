// One job: its counts, usage and progress, a cancel button that asks first, and its result lines
// as they arrive (GET /v1/jobs/{id}/results one page per tick, continuing from the last cursor).
// While it is unfinished, one GET /v1/models per tick says whether the models its requests wait
// for can serve them: if one cannot, the page says what the job waits for instead of an ETA.
// Its ETA is the planner's finish (`estimated_completion_at`, remade each second) once it has one;
// a job with a deadline shows it, whether the plan makes it, and once ended whether the job did.

import { api, query } from "./api.js";
import { FINAL, countdown, deadlineBadge, eta, modelsFor, plannedEta, progress, waiting, waitingView } from "./jobs.js";
import { badge, confirmAction, errorText, h, ms, num, replace, time } from "./dom.js";

const PAGE = 500;
const SHOWN = 1000; // result rows kept in the page; the API has them all

export function jobView(jobId) {
  const head = h("div", { class: "job-head" }, h("p", { class: "empty" }, "Loading…"));
  const note = h("p", { class: "note", role: "status" });
  const rowsEl = h("tbody");
  const count = h("span", { class: "sub", dataset: { field: "results-count" } }, "0 results");
  const results = h(
    "section",
    { class: "results" },
    h("h2", {}, "Results ", count),
    h("table", {}, h("thead", {}, h("tr", {}, ["Custom id", "Model", "Status", "Output", "Tokens", "Latency"].map((t) => h("th", {}, t)))), rowsEl),
  );
  const el = h("section", {}, h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), head, note, results);
  let cursor = null;
  let received = 0;
  let complete = false;
  let job = null;

  async function refresh() {
    try {
      job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      if (err.status === 404 || err.status === 422) {
        replace(head, h("h1", {}, "Job not found"), h("p", { class: "empty" }, `No job ${jobId} is visible to this key.`));
        results.hidden = true;
        return;
      }
      throw err;
    }
    const models = await modelsFor([job]);
    replace(head, summary(job, cancel, models));
    if (!complete) await readResults();
  }

  async function readResults() {
    const resp = await api(`/v1/jobs/${encodeURIComponent(jobId)}/results${query({ limit: PAGE, after: cursor })}`, { raw: true });
    const lines = (await resp.text()).split("\n").filter(Boolean).map((l) => JSON.parse(l));
    cursor = resp.headers.get("Inferq-Next-Cursor") || cursor;
    for (const line of lines) {
      received += 1;
      if (rowsEl.childElementCount < SHOWN) rowsEl.append(resultRow(line));
    }
    count.textContent = `${num(received)} results${received > SHOWN ? ` (first ${num(SHOWN)} shown)` : ""}`;
    complete = FINAL.has(resp.headers.get("Inferq-Job-Status")) && lines.length < PAGE;
  }

  async function cancel() {
    const ok = await confirmAction(`Cancel job ${jobId}? Requests not finished yet end cancelled; finished results stay.`, "Cancel job");
    if (!ok) return;
    try {
      const after = await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
      note.textContent = `Cancel requested: the job is ${after.status.replace("_", " ")}.`;
    } catch (err) {
      note.textContent = `Not cancelled: ${errorText(err)}`;
    }
  }
  return { el, refresh };
}

function summary(job, cancel, models) {
  const c = job.request_counts;
  const running = job.status === "queued" || job.status === "in_progress";
  return h(
    "div",
    {},
    h("h1", {}, "Job ", h("code", {}, job.id), " ", badge(job.status)),
    h(
      "div",
      { class: "toolbar" },
      running ? h("button", { type: "button", class: "danger", onclick: cancel }, "Cancel job") : null,
      h("span", { class: "sub", dataset: { field: "eta" } }, waitingView(waiting(job, models)) ?? ["ETA ", plannedEta(job) ?? eta(job)]),
    ),
    deadline(job),
    h(
      "dl",
      { class: "facts" },
      fact("Total", c.total, "total"),
      fact("Queued", c.queued, "queued"),
      fact("Running", c.running, "running"),
      fact("Succeeded", c.succeeded, "succeeded"),
      fact("Failed", c.failed, "failed"),
      fact("Cancelled", c.cancelled, "cancelled"),
      fact("Expired", c.expired, "expired"),
      fact("Prompt tokens", job.usage.prompt_tokens, "prompt-tokens"),
      fact("Completion tokens", job.usage.completion_tokens, "completion-tokens"),
    ),
    h("div", { class: "bars wide" }, progress(job)),
    h(
      "p",
      { class: "sub" },
      "Priority ", job.priority, " · created ", time(job.created_at), " · started ", time(job.started_at),
      job.completed_at ? [" · completed ", time(job.completed_at)] : null,
      job.cancelled_at ? [" · cancelled ", time(job.cancelled_at)] : null,
      job.expired_at ? [" · expired ", time(job.expired_at)] : null,
      " · expires ", time(job.expires_at),
    ),
  );
}

// "Deadline 12:05:00 [on track] (in 4m 10s) · 3m 50s to spare · if late: best effort"; once ended,
// "Deadline 12:05:00 [met] · finished 3m 02s before the deadline".
function deadline(job) {
  if (!job.deadline) return null;
  const d = job.deadline;
  const parts = ["Deadline ", time(d), " ", deadlineBadge(job)];
  if (FINAL.has(job.status)) {
    const end = { completed: job.completed_at, cancelled: job.cancelled_at, expired: job.expired_at }[job.status];
    const verb = { completed: "finished", cancelled: "cancelled", expired: "expired" }[job.status];
    if (!end) parts.push(` · the job ${job.status.replace("_", " ")}`);
    else if (end === d) parts.push(` · ${verb} at the deadline`);
    else parts.push(` · ${verb} ${countdown(Math.abs(d - end))} ${end < d ? "before" : "after"} the deadline`);
  } else {
    const left = d - Date.now() / 1000;
    parts.push(left >= 0 ? ` (in ${countdown(left)})` : ` (passed ${countdown(-left)} ago)`);
    const at = job.estimated_completion_at;
    if (at && job.deadline_at_risk) parts.push(` · the plan finishes ${countdown(at - d)} late`);
    else if (at && job.deadline_at_risk === false) parts.push(` · ${countdown(d - at)} to spare`);
    if (job.on_deadline_risk) parts.push(` · if late: ${job.on_deadline_risk.replace("_", " ")}`);
  }
  return h("p", { class: "deadline", dataset: { field: "deadline" } }, parts);
}

function fact(label, value, field) {
  return h("div", { dataset: { field } }, h("dt", {}, label), h("dd", {}, num(value)));
}

function resultRow(line) {
  // a failure shows why first; an output that missed its response_format keeps its raw text after
  const why = line.error ? `${line.error.code}: ${line.error.message}` : "";
  const said = line.output ? line.output.text : "";
  const text = why && said ? `${why} · output: ${said}` : why || said;
  return h(
    "tr",
    { dataset: { custom: line.custom_id } },
    h("td", {}, line.custom_id),
    h("td", {}, line.model),
    h("td", {}, h("span", { class: `badge s-${line.status}` }, line.status)),
    h("td", { class: "output" }, text.length > 200 ? `${text.slice(0, 200)}…` : text),
    h("td", {}, `${line.usage.prompt_tokens} + ${line.usage.completion_tokens}`),
    h("td", {}, ms(line.timings.queued_ms + line.timings.inference_ms)),
  );
}
