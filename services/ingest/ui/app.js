// The dashboard shell: hash routes to views, one refresh loop (at most once a second, never two
// calls of a view at once), the key form, and the banner that says when the API is unreachable or
// refuses the key.

import { apiKey, onHealth } from "./api.js";
import { deadLetterView, deadLettersView } from "./dead_letters.js";
import { errorText, h, replace } from "./dom.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { modelsView } from "./models.js";
import { sinksView } from "./sinks.js";
import { webhookView, webhooksView } from "./webhooks.js";

const TICK_MS = 1000;

const ROUTES = [
  [/^models$/, () => modelsView(), "models"],
  [/^jobs$/, (_, params) => jobsView(params), "jobs"],
  [/^jobs\/([^/]+)$/, (m) => jobView(decodeURIComponent(m[1])), "jobs"],
  [/^dead-letters$/, () => deadLettersView(), "dead-letters"],
  [/^dead-letters\/([^/]+)$/, (m) => deadLetterView(decodeURIComponent(m[1])), "dead-letters"],
  [/^webhooks$/, () => webhooksView(), "webhooks"],
  [/^webhooks\/([^/]+)$/, (m) => webhookView(decodeURIComponent(m[1])), "webhooks"],
  [/^sinks$/, () => sinksView(), "sinks"],
];

const viewEl = document.getElementById("view");
const banner = document.getElementById("banner");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const live = document.getElementById("live");
const forget = document.getElementById("forget-key");

let current = null; // the view shown
let timer = null;
let running = false;
let again = false;
let lastUpdate = null;

function route() {
  const raw = location.hash.replace(/^#\/?/, "") || "models";
  const [path, search] = raw.split("?");
  for (const [pattern, make, nav] of ROUTES) {
    const m = path.match(pattern);
    if (m) return { view: make(m, new URLSearchParams(search || "")), nav };
  }
  return { view: notFound(path), nav: null };
}

function notFound(path) {
  return { el: h("section", {}, h("h1", {}, "Page not found"), h("p", {}, `Nothing at #/${path}. `, h("a", { href: "#/models" }, "Models"))), refresh: async () => {} };
}

function show() {
  const { view, nav } = route();
  current = view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === nav);
  replace(viewEl, view.el);
  view.setRefreshNow?.(() => current === view && tick());
  tick();
}

// One refresh of the current view at a time; asked while one runs, it runs again right after.
async function tick() {
  if (running) {
    again = true;
    return;
  }
  running = true;
  clearTimeout(timer);
  try {
    await current.refresh();
    lastUpdate = new Date().toLocaleTimeString();
    live.textContent = `Live · updated ${lastUpdate}`;
    live.classList.remove("stale");
  } catch (err) {
    live.classList.add("stale");
    live.textContent = lastUpdate ? `Not live · last updated ${lastUpdate}` : "Not live";
    const banner = err?.status === 0 || err?.status === 401 || err?.status >= 500; // the banner says it
    if (!banner) live.textContent = `Error: ${errorText(err)}`;
  } finally {
    running = false;
  }
  if (again) {
    again = false;
    tick();
  } else {
    timer = setTimeout(tick, TICK_MS);
  }
}

onHealth((state, detail) => {
  banner.classList.remove("refused", "unreachable");
  if (state === "ok") {
    banner.hidden = true;
    keyForm.hidden = true;
    return;
  }
  banner.hidden = false;
  banner.classList.add(state);
  if (state === "unreachable") {
    banner.textContent = "The API is unreachable. Retrying every second; what is shown may be out of date.";
    return;
  }
  banner.textContent = detail?.hadKey
    ? "The API refused this key (401 Unauthorized). Enter a valid API key."
    : "This API needs an API key (401 Unauthorized). Enter your key.";
  keyForm.hidden = false;
  keyInput.focus();
});

keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = keyInput.value.trim();
  if (!key) return;
  apiKey.set(key);
  keyInput.value = "";
  forget.hidden = false;
  show();
});

forget.addEventListener("click", () => {
  apiKey.clear();
  forget.hidden = true;
  show();
});

forget.hidden = !apiKey.get();
window.addEventListener("hashchange", show);
show();
