// Sinks: the event sinks of the models file this key may see (GET /v1/sinks, one call per tick):
// what each sends where, how far it has got, and why it fails when it does.

import { api } from "./api.js";
import { ago, h, num, replace, table, time } from "./dom.js";

export function sinksView() {
  const body = h("div", {}, h("p", { class: "empty" }, "Loading…"));
  const el = h("section", {}, h("h1", {}, "Sinks"), body);

  async function refresh() {
    const list = await api("/v1/sinks");
    replace(
      body,
      table(
        ["Sink", "Target", "Delivered", "Lag", "Lost", "Rejected", "Delivering", "Last error"],
        list.data.map(row),
        ["No event sinks for this key. ", h("code", {}, "[sinks.NAME]"), " tables in the models file add them; a sink scoped to tenants shows to their keys."],
      ),
    );
  }
  return { el, refresh };
}

function row(s) {
  return h(
    "tr",
    { dataset: { sink: s.name }, class: s.last_error ? "failing" : null },
    h("td", {}, h("strong", {}, s.name), h("div", { class: "sub" }, s.kind)),
    h(
      "td",
      { class: "output", dataset: { field: "target" } },
      s.target,
      h("div", { class: "sub" }, s.kind === "http" ? `${s.mode} mode` : `subject ${s.subject}`),
    ),
    h(
      "td",
      { dataset: { field: "delivered" } },
      num(s.delivered),
      s.last_delivered_at ? h("div", { class: "sub" }, `last ${ago(s.last_delivered_at)}`) : null,
    ),
    h("td", { dataset: { field: "lag" } }, num(s.lag)),
    h("td", { dataset: { field: "lost" }, class: s.lost ? "warn" : null }, num(s.lost)),
    h("td", { dataset: { field: "rejected" }, class: s.rejected ? "warn" : null }, num(s.rejected)),
    h("td", { dataset: { field: "delivering" } }, s.delivering ? "yes" : h("span", { class: "warn" }, "no")),
    h("td", { class: "output", dataset: { field: "error" } }, s.last_error ? lastError(s) : "—"),
  );
}

function lastError(s) {
  return [
    h("div", { class: "bad" }, s.last_error),
    s.failing_since
      ? h("div", { class: "sub" }, "failing since ", time(s.failing_since))
      : h("div", { class: "sub" }, "at ", time(s.last_error_at)),
  ];
}
