// Webhooks: the tenant's endpoints (one page per tick); an endpoint's page lists its recent
// deliveries with the status code of each last attempt, and redelivers one on request.

import { api, query } from "./api.js";
import { errorText, h, replace, table, time } from "./dom.js";

const PAGE = 20;

export function webhooksView() {
  const body = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  const el = h("section", {}, h("h1", {}, "Webhooks"), body);

  async function refresh() {
    const page = await api(`/v1/webhooks${query({ limit: 100 })}`);
    replace(
      body,
      table(
        ["Endpoint", "URL", "Events", "Status", "Created"],
        page.data.map((w) =>
          h(
            "tr",
            { dataset: { webhook: w.id } },
            h("td", {}, h("a", { href: `#/webhooks/${w.id}` }, w.id), w.description ? h("div", { class: "sub" }, w.description) : null),
            h("td", { class: "output" }, w.url),
            h("td", {}, w.events.join(", ")),
            h("td", {}, h("span", { class: `badge s-${w.status}` }, w.status), w.disabled_reason ? h("div", { class: "sub" }, w.disabled_reason) : null),
            h("td", {}, time(w.created_at)),
          ),
        ),
        "No webhook endpoints.",
      ),
      page.has_more ? h("p", { class: "sub" }, "The first 100 endpoints are shown.") : null,
    );
  }
  return { el, refresh };
}

export function webhookView(endpointId) {
  const head = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  const note = h("p", { class: "note", role: "status" });
  const body = h("div");
  const el = h("section", {}, h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")), head, note, h("h2", {}, "Recent deliveries"), body);
  let endpoint = null;

  async function refresh() {
    try {
      if (!endpoint) {
        endpoint = await api(`/v1/webhooks/${encodeURIComponent(endpointId)}`);
        replace(
          head,
          h("h1", {}, "Webhook ", h("code", {}, endpoint.id)),
          h("p", {}, endpoint.url, " · ", endpoint.events.join(", "), " · ", endpoint.status),
        );
      }
      const page = await api(`/v1/webhooks/${encodeURIComponent(endpointId)}/deliveries${query({ limit: PAGE })}`);
      replace(body, table(["Delivery", "Event", "Status", "Attempts", "Last status code", "Last error", "Next attempt", ""], page.data.map(row), "No deliveries yet."));
    } catch (err) {
      if (err.status === 404 || err.status === 422) {
        replace(head, h("h1", {}, "Webhook not found"), h("p", { class: "empty" }, `No endpoint ${endpointId} is visible to this key.`));
        replace(body);
        return;
      }
      throw err;
    }
  }

  function row(d) {
    return h(
      "tr",
      { dataset: { delivery: d.id } },
      h("td", {}, h("code", {}, d.id), h("div", { class: "sub" }, time(d.created_at / 1000))),
      h("td", {}, d.event_type),
      h("td", {}, h("span", { class: `badge s-${d.status}` }, d.status)),
      h("td", {}, d.attempts),
      h("td", { dataset: { field: "code" } }, d.last_status_code ?? "—"),
      h("td", { class: "output" }, d.last_error || ""),
      h("td", {}, d.next_attempt_at ? time(d.next_attempt_at / 1000) : "—"),
      h("td", {}, h("button", { type: "button", class: "quiet", onclick: () => redeliver(d) }, "Redeliver")),
    );
  }

  async function redeliver(d) {
    try {
      await api(`/v1/webhooks/${encodeURIComponent(endpointId)}/deliveries/${encodeURIComponent(d.id)}/redeliver`, { method: "POST" });
      note.textContent = `Redelivery of ${d.id} queued.`;
    } catch (err) {
      note.textContent = `Not redelivered: ${errorText(err)}`;
    }
  }
  return { el, refresh };
}
