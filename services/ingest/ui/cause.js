// Messages from the server (a model's health reason, a worker's last error) may hold anything a
// failing process wrote: a Python traceback, a JSON log record, real newlines or escaped "\n"
// sequences, cut short anywhere. The page shows one line, the cause, and the whole text on click,
// its lines as lines.

import { h } from "./dom.js";

const MAX = 200; // characters of the one-line cause; the rest is in the detail

// The text with JSON escapes (\n, \", \\, \uXXXX) resolved, where it holds escaped newlines.
export function fullText(text) {
  let t = String(text ?? "");
  if (/\\[nr]/.test(t)) {
    const escapes = { n: "\n", r: "", t: "  ", b: "", f: "" };
    t = t.replace(/\\(?:u([0-9a-fA-F]{4})|(.))/g, (_, hex, c) => (hex ? String.fromCharCode(parseInt(hex, 16)) : (escapes[c] ?? c)));
  }
  return t.replace(/\r\n?/g, "\n").trim();
}

// One line that says what went wrong: for a traceback, its exception line (the first line after
// the last frame), after what the message said before the traceback began ("its last 3 worker
// starts failed"); for a JSON log record, its message; else the text's first line.
export function causeOf(text) {
  const raw = String(text ?? "");
  const record = logRecord(raw);
  if (record) {
    const inner = causeOf(record.message);
    return clip(record.lead ? `${record.lead}: ${inner}` : inner);
  }
  const lines = fullText(raw).split("\n").filter((l) => l.trim());
  if (!lines.length) return "";
  if (!lines.some((l) => /^\s/.test(l) || /^Traceback \(most recent call last\)/.test(l))) return clip(lines[0]);
  const lead = leadOf(lines[0]);
  const exc = exceptionLine(lines);
  if (exc) return clip(lead ? `${lead}: ${exc}` : exc);
  return clip(lead ? `${lead} (the error is cut short: see the detail)` : "an error whose message was cut short: see the detail");
}

// A JSON log record in the text (whole, or cut short after its message): its `msg`/`message`,
// and what the text said before it.
function logRecord(raw) {
  const at = raw.indexOf("{");
  if (at < 0) return null;
  const lead = raw.slice(0, at).replace(/[\s:]+$/, "").trim();
  try {
    const doc = JSON.parse(raw.slice(at));
    const message = doc && (doc.msg ?? doc.message ?? doc.error);
    if (typeof message === "string") return { lead, message };
  } catch {
    const m = raw.slice(at).match(/"(?:msg|message)"\s*:\s*"((?:[^"\\]|\\.)*)"/);
    if (m) {
      try {
        return { lead, message: JSON.parse(`"${m[1]}"`) };
      } catch {
        return null;
      }
    }
  }
  return null;
}

// The words before the first ": " of a line, when they are words ("its last 3 worker starts
// failed"), not an exception's name ("OSError") or the traceback's own header.
function leadOf(line) {
  const m = line.match(/^([^:]*\s[^:]*?):\s/);
  if (!m || /^\s|^Traceback\b|^During handling\b|^The above exception\b/.test(m[1])) return "";
  return m[1].trim();
}

// After the last indented line (a frame of the traceback, or its source line), the first that is
// not indented: the exception and its message.
function exceptionLine(lines) {
  let last = -1;
  lines.forEach((l, i) => {
    if (/^\s/.test(l)) last = i;
  });
  const exc = lines.slice(last + 1).find((l) => !/^\s/.test(l));
  return exc ? exc.trim() : null;
}

// One line, at most MAX characters (cut at a word), with the chain of leads a message gathers on
// its way up said once: "its last 3 worker starts failed: the worker failed: OSError: …" reads
// "its last 3 worker starts failed: OSError: …" (the first lead says what failed, the exception why).
function clip(line) {
  let one = line.replace(/\s+/g, " ").trim();
  const first = leadOf(one);
  if (first) {
    let rest = after(one, first);
    for (let next = leadOf(rest); next && /^[\w.]+: /.test(after(rest, next)); next = leadOf(rest)) rest = after(rest, next);
    one = `${first}: ${rest}`;
  }
  if (one.length <= MAX) return one;
  const cut = one.slice(0, MAX);
  return `${cut.slice(0, Math.max(cut.lastIndexOf(" "), MAX / 2))} …`;
}

function after(text, lead) {
  return text.slice(lead.length).replace(/^:\s*/, "");
}

// The cause on one line and, where the text has more to it (or `more` adds facts), the whole text
// on click. `open` keeps which of these the user opened across the page's refreshes (by `key`).
export function causeView(text, { key, open, more = [], cls = "" } = {}) {
  const line = causeOf(text);
  const full = fullText(text);
  const extra = more.filter(Boolean);
  if (line === full && !extra.length) return h("div", { class: `sub cause ${cls}`, dataset: { field: "cause" } }, line);
  return h(
    "details",
    {
      class: `sub cause ${cls}`,
      dataset: { field: "cause" },
      open: open?.has(key),
      ontoggle: (e) => (e.target.open ? open?.add(key) : open?.delete(key)),
    },
    h("summary", { title: "Click for the whole message" }, line),
    h("div", { class: "detail", dataset: { field: "detail" } }, full, extra.map((x) => h("div", { class: "fact" }, x))),
  );
}
