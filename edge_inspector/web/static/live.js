// Live page: one EventSource on /api/live/events (edge_inspector/web/live.py says what arrives).
"use strict";
EI.nav("live");
const L = { width: 3000, scanning: null, head: null, status: null, last: null };
const $ = (id) => document.getElementById(id);

function text(id, v) { $(id).textContent = v; }

function showStatus(s) {
  L.status = s; L.head = s.head_mm;
  text("lines", EI.fmt(s.lines)); text("line-rate", EI.fmt(s.lines_per_s)); text("tiles-per-s", EI.fmt(s.tiles_per_s, 1));
  text("lines-lost", EI.fmt(s.lines_lost)); text("strips-dropped", EI.fmt(s.strips_dropped));
  text("q-tiles", `${s.queue_tiles ?? "–"} / ${s.queue_tiles_max ?? "–"}`);
  text("q-dets", `${s.queue_detections ?? "–"} / ${s.queue_detections_max ?? "–"}`);
  text("ring", EI.fmt(s.ring_free_slots)); text("infer-ms", EI.fmt(s.infer_ms_last, 1)); text("provider", s.provider || "–");
  const p = s.plc;
  text("plc", p ? `${p.connected ? "connected" : "NOT CONNECTED"} ${p.plc || ""}` : "no PLC (marks logged only)");
  text("plc-acks", p ? `${EI.fmt(p.marks_acked)} / ${EI.fmt(p.pending)}` : "–");
  text("marks", Object.entries(s.marks.planned || {}).map(([k, n]) => `${k} ${n}`).join(", ") || "none");
  text("late", EI.fmt(s.marks.late));
  const e = s.events || {};
  text("events", `received ${EI.fmt(e.received)} · lost on the way ${EI.fmt(e.lost)} · station sent ${EI.fmt(e.sent)}, dropped ${EI.fmt(e.dropped)} · not delivered to this page ${EI.fmt(e.to_browsers_dropped)}`);
  if (s.station) text("station", s.station);
  text("hide-count", EI.fmt(s.hides)); text("defect-count", EI.fmt(s.defects));
  drawScanning();
}

function showHealth(h) {
  const st = $("state"); st.className = `state ${h.state}`; st.textContent = h.state;
  $("alarms").innerHTML = (h.alarms || []).map((a) => `<div class="alarm ${EI.esc(a.severity)}">${EI.esc(a.code)}: ${EI.esc(a.message)}</div>`).join("") || "none";
}

function onMark(m) {
  if (m.action === "hide_start") { L.scanning = { hide_id: m.hide_id, start_mm: m.belt_mm, marks: [] }; }
  else if (L.scanning && ["ink", "uninspected_start", "uninspected_end"].includes(m.action)) L.scanning.marks.push(m);
  drawScanning();
}

function drawScanning() {
  const svg = $("scan"); svg.replaceChildren();
  const s = L.scanning;
  if (!s) { text("scan-caption", "waiting for a hide"); return; }
  const len = Math.max(500, L.head !== null ? L.head - s.start_mm : 0);
  const k = L.width / 1000;  // stroke scale: 1 px-ish per mm at a 1 m view
  svg.setAttribute("viewBox", `0 -50 ${L.width} ${Math.max(len, 3000) + 100}`);
  EI.el("rect", { x: 0, y: 0, width: L.width, height: len, fill: "#b29270", "fill-opacity": 0.25 }, svg);
  let open = null;
  for (const m of s.marks) {
    const y = m.belt_mm - s.start_mm;
    if (m.action === "ink") {
      const c = EI.classColor(m.class);
      EI.el("circle", { cx: m.across_mm, cy: y, r: 18 * k, fill: c, "fill-opacity": 0.5, stroke: c, "stroke-width": 3 * k, class: "ink" }, svg);
    } else if (m.action === "uninspected_start") open = y;
    else if (m.action === "uninspected_end" && open !== null) {
      EI.el("rect", { x: 0, y: open, width: L.width, height: y - open, fill: EI.hatch(svg, k), class: "uninspected" }, svg);
      open = null;
    }
  }
  EI.el("line", { x1: 0, x2: L.width, y1: len, y2: len, stroke: "#5fb3ff", "stroke-width": 6 * k }, svg);
  const inks = s.marks.filter((m) => m.action === "ink").length;
  text("scan-caption", `hide ${s.hide_id}: leading edge ${(len / 1000).toFixed(2)} m past the camera, ${inks} ink marks so far`);
}

function onHide(h) {
  if (L.scanning && L.scanning.hide_id === h.hide_id) { L.scanning = null; drawScanning(); }
  showLast(h); addCard(h);
}

function showLast(h) {
  L.last = h;
  const svg = $("last"); svg.replaceChildren();
  const xs = h.outline.map((p) => p[0]), ys = h.outline.map((p) => p[1]);
  if (!xs.length) return;
  const box = [Math.min(...xs) - 50, Math.min(...ys) - 50, Math.max(...xs) - Math.min(...xs) + 100, Math.max(...ys) - Math.min(...ys) + 100];
  svg.setAttribute("viewBox", box.join(" "));
  EI.drawHide(EI.el("g", {}, svg), h, box[2] / 1000);
  $("last-caption").innerHTML = `hide ${h.hide_id} ${EI.grade(h.grade)} ${EI.fmt(h.area_m2, 3)} m² · ${(h.defects || []).length} defects · inspected ${EI.fmt(100 * h.inspected_fraction, 1)} % &nbsp; ${EI.counts(h.defect_counts)}`;
  $("last-thumb").src = h.thumb + "?w=360";
  $("last-link").href = `/hide?run=latest&hide=${h.hide_id}`;
}

function addCard(h) {
  const a = document.createElement("a");
  a.className = "card"; a.href = `/hide?run=latest&hide=${h.hide_id}`;
  a.innerHTML = `<img src="${h.thumb}?w=140" alt="hide ${h.hide_id}" loading="lazy">hide ${h.hide_id} ${EI.grade(h.grade)}<br><span class="dim">${EI.fmt(h.area_m2, 2)} m² · ${(h.defects || []).length} defects</span>`;
  $("recent").prepend(a);
  while ($("recent").children.length > 12) $("recent").lastChild.remove();
}

function onMessage(msg) {
  if (msg.type === "snapshot") {
    L.width = msg.belt_width_mm || L.width;
    if (msg.station) text("station", msg.station);
    L.scanning = msg.scanning;
    if (msg.health) showHealth(msg.health);
    if (msg.status) showStatus(msg.status);
    $("recent").replaceChildren();
    for (const h of [...(msg.recent || [])].reverse()) { addCard(h); showLast(h); }
    drawScanning();
  } else if (msg.type === "status") showStatus(msg);
  else if (msg.type === "health") showHealth(msg);
  else if (msg.type === "mark") onMark(msg);
  else if (msg.type === "hide") onHide(msg);
}

(async () => {
  await EI.loadColors();
  const es = new EventSource("/api/live/events");
  es.onopen = () => text("conn", "");
  es.onerror = () => { text("conn", "connection lost, retrying…"); };
  es.onmessage = (ev) => onMessage(JSON.parse(ev.data));
})();
