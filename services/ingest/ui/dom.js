// Building the page from data: elements are created, never parsed from strings, so no text from
// the API can become markup. Plus the small formatters every view shares.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export function table(headers, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows),
  );
}

export function badge(status) {
  return h("span", { class: `badge s-${status}` }, status.replace("_", " "));
}

export function bar(done, total, label) {
  const pct = total ? Math.floor((100 * done) / total) : 0;
  const fill = h("span", { class: "fill" });
  fill.style.width = `${pct}%`;
  return h(
    "div",
    { class: "progress", title: `${done} of ${total}` },
    label ? h("span", { class: "label" }, label) : null,
    h("span", { class: "track" }, fill),
    h("span", { class: "pct" }, `${pct}%`),
    h("span", { class: "count" }, `${done}/${total}`),
  );
}

export function doneOf(counts) {
  return counts.succeeded + counts.failed + counts.cancelled + counts.expired;
}

export function time(unixSeconds) {
  if (!unixSeconds) return "—";
  const d = new Date(unixSeconds * 1000);
  const today = d.toDateString() === new Date().toDateString();
  const text = today ? d.toLocaleTimeString() : `${d.toLocaleDateString()} ${d.toLocaleTimeString()}`;
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, text);
}

export function ago(unixSeconds) {
  if (!unixSeconds) return "—";
  return `${duration(Date.now() / 1000 - unixSeconds)} ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function num(n, digits = 0) {
  if (n === null || n === undefined) return "—";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function ms(n) {
  if (n === null || n === undefined) return "—";
  return n >= 1000 ? `${num(n / 1000, 2)} s` : `${num(n, 1)} ms`;
}

// Asks in the page's own dialog; resolves true only on the confirming button.
export function confirmAction(text, yesLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yesLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// The message of a failed call, for a line in the page.
export function errorText(err) {
  return err?.status ? `${err.message} (HTTP ${err.status})` : String(err?.message || err);
}

// "1 worker", "2 workers", "0 workers".
export function plural(n, one, many) {
  return `${num(n)} ${n === 1 ? one : many}`;
}
