// Shared helpers of the edge-inspector pages: JSON fetch, class colours, SVG drawing, zoom and pan.
"use strict";
const EI = {};
EI.colors = {};
EI.json = async (url) => {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.text()).slice(0, 200)}`);
  return r.json();
};
EI.loadColors = async () => { EI.colors = (await EI.json("/api/classes")).colors; };
EI.classColor = (name) => {
  if (EI.colors[name]) return EI.colors[name];
  // the same fallback as edge_inspector/classes.py class_color: a stable colour from the name
  let h = 0n;
  for (let i = 0; i < name.length; i++) h += BigInt(name.charCodeAt(i)) * 31n ** BigInt(i);
  h &= 0xFFFFFFn;
  const b = Number(h & 0xFFn), g = Number((h >> 8n) & 0xFFn), r = Number((h >> 16n) & 0xFFn);
  return `rgb(${r},${g},${b})`;
};
EI.esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
EI.grade = (g) => `<span class="grade ${EI.esc(g)}">${EI.esc(g)}</span>`;
EI.fmt = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
EI.counts = (c) => Object.entries(c || {}).map(([k, n]) => `<span class="swatch" style="background:${EI.classColor(k)}"></span>${EI.esc(k)} ${n}`).join(" &nbsp;");
EI.NS = "http://www.w3.org/2000/svg";
EI.el = (name, attrs = {}, parent = null) => {
  const e = document.createElementNS(EI.NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
};
EI.points = (pts) => pts.map((p) => `${p[0]},${p[1]}`).join(" ");
// Hatch pattern for uninspected stretches (once per svg); returns the fill url.
EI.hatch = (svg, scale) => {
  const id = "hatch";
  if (!svg.querySelector("#" + id)) {
    const defs = EI.el("defs", {}, svg);
    const p = EI.el("pattern", { id, patternUnits: "userSpaceOnUse", width: 20 * scale, height: 20 * scale, patternTransform: "rotate(45)" }, defs);
    EI.el("rect", { width: 20 * scale, height: 20 * scale, fill: "rgba(140,140,140,0.25)" }, p);
    EI.el("line", { x1: 0, y1: 0, x2: 0, y2: 20 * scale, stroke: "#c8c8c8", "stroke-width": 6 * scale }, p);
  }
  return `url(#${id})`;
};
// Draw a hide in mm (x across, y along from its leading edge, y down as on the hide map).
EI.drawHide = (g, hide, scale, onDefect) => {
  if (hide.outline && hide.outline.length > 2)
    EI.el("polygon", { points: EI.points(hide.outline), fill: "#b29270", "fill-opacity": 0.55, stroke: "#fff", "stroke-width": 2 * scale }, g);
  const hatch = EI.hatch(g.ownerSVGElement || g, scale);
  for (const u of hide.uninspected || [])
    EI.el("rect", { x: u[0], y: u[1], width: u[2] - u[0], height: u[3] - u[1], fill: hatch, stroke: "#c8c8c8", "stroke-width": scale, class: "uninspected" }, g);
  for (const d of hide.defects || []) {
    const c = EI.classColor(d.class);
    const poly = EI.el("polygon", { points: EI.points(d.outline), fill: c, "fill-opacity": 0.45, stroke: c, "stroke-width": 3 * scale, "data-id": d.id, class: "defect" }, g);
    if (d.outline.length) { // small defects get a ring so they stay visible when zoomed out
      const xs = d.outline.map((p) => p[0]), ys = d.outline.map((p) => p[1]);
      EI.el("circle", { cx: (Math.min(...xs) + Math.max(...xs)) / 2, cy: (Math.min(...ys) + Math.max(...ys)) / 2, r: 14 * scale, fill: "none", stroke: c, "stroke-width": 2 * scale }, g);
    }
    if (onDefect) onDefect(d, poly);
  }
};
// Zoom (wheel, pinch via wheel, buttons) and pan (drag) of an svg's viewBox.
EI.zoomable = (svg, box) => {
  let vb = [...box];
  const set = () => svg.setAttribute("viewBox", vb.join(" "));
  const at = (ev) => { const r = svg.getBoundingClientRect(); return [vb[0] + (ev.clientX - r.left) / r.width * vb[2], vb[1] + (ev.clientY - r.top) / r.height * vb[3]]; };
  const zoom = (f, cx, cy) => { vb = [cx - (cx - vb[0]) * f, cy - (cy - vb[1]) * f, vb[2] * f, vb[3] * f]; set(); };
  svg.addEventListener("wheel", (ev) => { ev.preventDefault(); const [x, y] = at(ev); zoom(ev.deltaY > 0 ? 1.2 : 1 / 1.2, x, y); }, { passive: false });
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => { drag = [ev.clientX, ev.clientY, vb[0], vb[1]]; svg.setPointerCapture(ev.pointerId); });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return; const r = svg.getBoundingClientRect();
    vb[0] = drag[2] - (ev.clientX - drag[0]) / r.width * vb[2]; vb[1] = drag[3] - (ev.clientY - drag[1]) / r.height * vb[3]; set();
  });
  svg.addEventListener("pointerup", () => { drag = null; });
  svg.addEventListener("dblclick", () => { vb = [...box]; set(); });
  set();
  return { zoomIn: () => zoom(1 / 1.5, vb[0] + vb[2] / 2, vb[1] + vb[3] / 2), zoomOut: () => zoom(1.5, vb[0] + vb[2] / 2, vb[1] + vb[3] / 2),
           fit: () => { vb = [...box]; set(); }, show: (b) => { vb = b; set(); } };
};
EI.nav = (on) => {
  for (const a of document.querySelectorAll("header nav a")) if (a.dataset.page === on) a.classList.add("on");
};
