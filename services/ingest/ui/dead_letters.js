// Dead letters: what no consumer could process, oldest first, one page per tick; a dead letter's
// own page shows why and, for a request, puts it back in its queue.

import { api, query } from "./api.js";
import { confirmAction, errorText, h, replace, table, time } from "./dom.js";

const PAGE = 20;

export function deadLettersView() {
  const cursors = [null];
  let next = null;
  let refreshNow = () => {};
  const first = h("button", { type: "button", class: "quiet", onclick: () => (cursors.splice(1), refreshNow()) }, "← First");
  const more = h("button", { type: "button", class: "quiet", onclick: () => (next && cursors.push(next), refreshNow()) }, "Next →");
  const body = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  const el = h("section", {}, h("h1", {}, "Dead letters"), h("div", { class: "toolbar" }, first, more), body);

  async function refresh() {
    const page = await api(`/v1/dead-letters${query({ limit: PAGE, after: cursors[cursors.length - 1] })}`);
    next = page.has_more ? page.next_cursor : null;
    first.disabled = cursors.length === 1;
    more.disabled = !next;
    replace(
      body,
      table(
        ["Dead letter", "Reason", "Error", "Job / endpoint", "Model", "Attempts", "When"],
        page.data.map((d) =>
          h(
            "tr",
            { dataset: { dead: d.id } },
            h("td", {}, h("a", { href: `#/dead-letters/${d.id}` }, d.id)),
            h("td", {}, d.reason),
            h("td", { class: "output" }, d.error || ""),
            h("td", {}, owner(d)),
            h("td", {}, d.model || "—"),
            h("td", {}, d.attempts ?? 0),
            h("td", {}, time(d.at)),
          ),
        ),
        "No dead letters.",
      ),
    );
  }
  return { el, refresh, setRefreshNow: (fn) => (refreshNow = fn) };
}

function owner(d) {
  if (d.job_id) return h("a", { href: `#/jobs/${d.job_id}` }, d.job_id);
  if (d.webhook_id) return h("a", { href: `#/webhooks/${d.webhook_id}` }, d.webhook_id);
  return "—";
}

export function deadLetterView(deadId) {
  const body = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  const note = h("p", { class: "note", role: "status" });
  const el = h("section", {}, h("p", {}, h("a", { href: "#/dead-letters" }, "← Dead letters")), body, note);
  let requeued = null;

  async function refresh() {
    if (requeued) return; // its entry is gone from the stream: the note says where it went
    let d;
    try {
      d = await api(`/v1/dead-letters/${encodeURIComponent(deadId)}`);
    } catch (err) {
      if (err.status === 404 || err.status === 422) {
        replace(body, h("h1", {}, "Dead letter not found"), h("p", { class: "empty" }, `No dead letter ${deadId} is visible to this key.`));
        return;
      }
      throw err;
    }
    replace(
      body,
      h("h1", {}, "Dead letter ", h("code", {}, d.id)),
      h(
        "dl",
        { class: "facts wide" },
        [
          ["Reason", d.reason],
          ["Error", d.error || "—"],
          ["Attempts", d.attempts ?? 0],
          ["Source", d.source],
          ["Job", d.job_id ? h("a", { href: `#/jobs/${d.job_id}` }, d.job_id) : "—"],
          ["Request", d.custom_id ? `${d.custom_id} (${d.request_id})` : d.request_id || "—"],
          ["Model and lane", d.model ? `${d.model}, ${d.lane}` : "—"],
          ["Webhook delivery", d.delivery_id ? h("a", { href: `#/webhooks/${d.webhook_id}` }, d.delivery_id) : "—"],
          ["When", time(d.at)],
        ].map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))),
      ),
      d.requeueable
        ? h("button", { type: "button", onclick: () => requeue(d) }, "Requeue")
        : h("p", { class: "sub" }, d.delivery_id ? "Redeliver it from its webhook's page." : "This dead letter cannot be requeued."),
    );
  }

  async function requeue(d) {
    if (!(await confirmAction(`Requeue request ${d.custom_id || d.request_id} of job ${d.job_id}? It runs again and its job reopens.`, "Requeue"))) return;
    try {
      const job = await api(`/v1/dead-letters/${encodeURIComponent(d.id)}/requeue`, { method: "POST" });
      requeued = job;
      replace(body, h("h1", {}, "Requeued"));
      replace(note, `Requeued: request ${d.custom_id || d.request_id} runs again; job `, h("a", { href: `#/jobs/${job.id}` }, job.id), ` is ${job.status.replace("_", " ")}.`);
    } catch (err) {
      note.textContent = `Not requeued: ${errorText(err)}`;
    }
  }
  return { el, refresh };
}
