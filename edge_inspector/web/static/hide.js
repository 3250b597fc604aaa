// Hide page: /api/runs/{run}/hides/{id} drawn in hide mm (x across, y along from the leading edge).
"use strict";
EI.nav("history");
const P = new URLSearchParams(location.search);
const run = P.get("run") || "latest", hideId = P.get("hide");

function uninspected(rec) {  // the same rectangles as edge_inspector/cutting.py uninspected_rects
  const o = rec.outline_hide_mm; if (!o.length) return [];
  const xs = o.map((p) => p[0]), ys = o.map((p) => p[1]);
  const along0 = (rec.origin_belt_mm || [0, 0])[1], len = Math.max(...ys);
  return (rec.uninspected || []).map((u) => [Math.min(...xs), Math.max(0, u.along_belt_mm[0] - along0), Math.max(...xs), Math.min(len, u.along_belt_mm[1] - along0)])
    .filter((r) => r[3] > r[1]);
}

(async () => {
  await EI.loadColors();
  const rec = await EI.json(`/api/runs/${encodeURIComponent(run)}/hides/${encodeURIComponent(hideId)}`);
  document.title = `edge-inspector · run ${rec.run_id} hide ${rec.hide_id}`;
  document.getElementById("title").innerHTML = `run ${rec.run_id} · hide ${rec.hide_id} ${EI.grade(rec.grade)}`;
  const facts = [["grade", EI.grade(rec.grade)], ["area", `${EI.fmt(rec.area_m2, 4)} m²`], ["inspected", `${EI.fmt(100 * rec.inspected_fraction, 1)} %`],
    ["defects", `${rec.defects.length} &nbsp; ${EI.counts(rec.defect_counts)}`], ["uninspected stretches", rec.uninspected.length],
    ["camera lines", `${EI.fmt(rec.first_line)} – ${EI.fmt(rec.last_line)}`], ["station", EI.esc(rec.station)], ["written (UTC)", EI.esc(rec.written_utc)]];
  document.getElementById("facts").innerHTML = facts.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("");
  document.getElementById("downloads").innerHTML = `<a href="${rec.links.dxf}">DXF for the cutting room</a> · <a href="/api/runs/${rec.run_id}/grading.csv">grading report (CSV)</a> · <a href="/api/runs/${rec.run_id}/hides/${rec.hide_id}">JSON</a>`;
  if (rec.map_available) { document.getElementById("thumb").src = rec.links.thumb + "?w=480"; document.getElementById("map-link").href = rec.links.map; }
  else document.getElementById("no-map").hidden = false;

  const svg = document.getElementById("map");
  const o = rec.outline_hide_mm, xs = o.map((p) => p[0]), ys = o.map((p) => p[1]);
  const box = xs.length ? [Math.min(...xs) - 50, Math.min(...ys) - 50, Math.max(...xs) - Math.min(...xs) + 100, Math.max(...ys) - Math.min(...ys) + 100] : [0, 0, 1000, 1000];
  const k = box[2] / 1000;
  const defects = rec.defects.map((d) => ({ ...d, outline: d.outline_hide_mm.length > 2 ? d.outline_hide_mm :
    [[d.bbox_hide_mm[0], d.bbox_hide_mm[1]], [d.bbox_hide_mm[2], d.bbox_hide_mm[1]], [d.bbox_hide_mm[2], d.bbox_hide_mm[3]], [d.bbox_hide_mm[0], d.bbox_hide_mm[3]]] }));
  const polys = {};
  EI.drawHide(EI.el("g", {}, svg), { outline: o, uninspected: uninspected(rec), defects }, k, (d, poly) => { polys[d.id] = poly; });
  const view = EI.zoomable(svg, box);
  document.getElementById("zin").onclick = view.zoomIn; document.getElementById("zout").onclick = view.zoomOut; document.getElementById("fit").onclick = view.fit;

  const tbody = document.querySelector("#defects tbody");
  tbody.innerHTML = defects.map((d) => { const b = d.bbox_hide_mm; return `<tr class="link defect-row" data-id="${d.id}">
    <td class="num">${d.id}</td><td><span class="swatch" style="background:${EI.classColor(d.class)}"></span>${EI.esc(d.class)}</td>
    <td class="num">${EI.fmt(d.score, 2)}</td><td class="num">${EI.fmt(d.area_mm2, 0)}</td><td class="num">${EI.fmt((b[0] + b[2]) / 2, 0)}</td>
    <td class="num">${EI.fmt((b[1] + b[3]) / 2, 0)}</td><td class="num">${EI.fmt(b[2] - b[0], 0)} × ${EI.fmt(b[3] - b[1], 0)}</td>
    <td class="num">${EI.fmt(d.lines[0])} – ${EI.fmt(d.lines[1])}</td><td class="num">${d.n_tiles}</td></tr>`; }).join("")
    || `<tr><td colspan="9" class="dim">no defects</td></tr>`;
  for (const tr of tbody.querySelectorAll("tr.defect-row")) {
    const d = defects.find((x) => String(x.id) === tr.dataset.id), poly = polys[d.id];
    tr.onmouseenter = () => { tr.classList.add("hi"); poly.setAttribute("fill-opacity", 0.9); };
    tr.onmouseleave = () => { tr.classList.remove("hi"); poly.setAttribute("fill-opacity", 0.45); };
    tr.onclick = () => { const b = d.bbox_hide_mm, m = 150; view.show([b[0] - m, b[1] - m, b[2] - b[0] + 2 * m, b[3] - b[1] + 2 * m]); };
  }
})().catch((e) => { document.getElementById("title").textContent = String(e); });
