// A small hand-drawn SVG chart of a model's backlog (area) and replicas (step line) over time,
// each scaled to its own maximum.

const NS = "http://www.w3.org/2000/svg";
const W = 180;
const H = 44;
const PAD = 2;

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

// all: [{at, backlog, replicas}] oldest first; nulls are gaps in the sampling.
export function backlogChart(all) {
  // from the first sample on, so a short history fills the chart
  const start = all.findIndex((p) => p.backlog !== null || p.replicas !== null);
  const points = start < 0 ? [] : all.slice(start);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart", role: "img" });
  const known = points.filter((p) => p.backlog !== null || p.replicas !== null);
  const maxBacklog = Math.max(1, ...known.map((p) => p.backlog || 0));
  const maxReplicas = Math.max(1, ...known.map((p) => p.replicas || 0));
  root.setAttribute(
    "aria-label",
    `backlog up to ${maxBacklog}, replicas up to ${maxReplicas} over the last ${points.length} samples`,
  );
  if (points.length < 2) return root;
  const t0 = points[0].at;
  const span = Math.max(1, points[points.length - 1].at - t0);
  const x = (at) => PAD + ((W - 2 * PAD) * (at - t0)) / span;
  const y = (v, max) => H - PAD - ((H - 2 * PAD) * v) / max;

  const area = [];
  for (const p of points) if (p.backlog !== null) area.push(`${x(p.at).toFixed(1)},${y(p.backlog, maxBacklog).toFixed(1)}`);
  if (area.length > 1) {
    const first = area[0].split(",")[0];
    const last = area[area.length - 1].split(",")[0];
    root.append(svg("polygon", { points: `${first},${H - PAD} ${area.join(" ")} ${last},${H - PAD}`, class: "backlog" }));
  }
  const steps = [];
  let prev = null;
  for (const p of points) {
    if (p.replicas === null) continue;
    const py = y(p.replicas, maxReplicas).toFixed(1);
    if (prev !== null) steps.push(`${x(p.at).toFixed(1)},${prev}`);
    steps.push(`${x(p.at).toFixed(1)},${py}`);
    prev = py;
  }
  if (steps.length > 1) root.append(svg("polyline", { points: steps.join(" "), class: "replicas" }));
  const title = svg("title", {});
  title.textContent = root.getAttribute("aria-label");
  root.prepend(title);
  return root;
}
