// History page: /api/runs and /api/hides (edge_inspector/web/history.py), filters in the query string.
"use strict";
EI.nav("history");
const form = document.getElementById("filters");

async function loadRuns() {
  const { runs } = await EI.json("/api/runs");
  const sel = form.elements.run;
  for (const r of runs) sel.add(new Option(`${r.run_id} · ${r.station} · ${r.started_utc.slice(0, 16)}`, r.run_id));
  document.querySelector("#runs tbody").innerHTML = runs.map((r) => `<tr><td class="num">${r.run_id}</td><td>${EI.esc(r.station)}</td>
    <td>${EI.esc(r.started_utc.replace("T", " ").slice(0, 19))}</td><td>${EI.esc(r.status)}</td><td class="num">${r.n_hides}</td>
    <td class="num">${r.n_defects}</td><td>${Object.entries(r.grades).map(([g, n]) => `${EI.grade(g)} ${n}`).join(" ")}</td>
    <td><a href="/api/runs/${r.run_id}/grading.csv">CSV</a> · <a href="/api/runs/${r.run_id}/grading.json">JSON</a></td></tr>`).join("");
}

async function loadHides() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v) q.set(k, v);
  history.replaceState(null, "", "?" + q.toString());
  const res = await EI.json("/api/hides?" + q.toString());
  const cls = form.elements.class;
  if (cls.options.length === 1) for (const c of res.classes) cls.add(new Option(c, c));
  document.getElementById("hide-count").textContent = `${res.total} hides`;
  const grades = {};
  for (const h of res.hides) grades[h.grade] = (grades[h.grade] || 0) + 1;
  document.getElementById("hide-summary").innerHTML = res.total > res.hides.length ? `(showing the newest ${res.hides.length})` :
    Object.entries(grades).sort().map(([g, n]) => `${EI.grade(g)} ${n}`).join(" ");
  document.querySelector("#hides tbody").innerHTML = res.hides.map((h) => `<tr class="link" data-href="/hide?run=${h.run_id}&hide=${h.hide_id}">
    <td>${EI.esc((h.written_utc || "").replace("T", " ").slice(0, 19))}</td><td class="num">${h.run_id}</td><td class="num">${h.hide_id}</td>
    <td>${EI.grade(h.grade)}</td><td class="num">${EI.fmt(h.area_m2, 3)}</td><td class="num">${EI.fmt(100 * h.inspected_fraction, 1)} %</td>
    <td class="num">${h.n_defects}</td><td>${EI.counts(h.defect_counts)}</td></tr>`).join("");
  for (const tr of document.querySelectorAll("#hides tr.link")) tr.onclick = () => { location.href = tr.dataset.href; };
}

form.onsubmit = (ev) => { ev.preventDefault(); loadHides().catch(showError); };
form.onreset = () => setTimeout(() => loadHides().catch(showError), 0);
function showError(e) { document.getElementById("hide-summary").textContent = String(e); }

(async () => {
  await EI.loadColors();
  const info = await EI.json("/api");
  document.getElementById("folder").textContent = info.run_dir;
  if (!info.live) document.querySelector('nav a[data-page="live"]').remove();
  await loadRuns();
  for (const [k, v] of new URLSearchParams(location.search)) if (form.elements[k]) form.elements[k].value = v;
  await loadHides();
})().catch(showError);
