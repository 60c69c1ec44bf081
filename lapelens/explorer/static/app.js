// The neuron explorer, part 3: overview, sortable list, search, the neuron view and its navigation.
"use strict";
const state = { method: D.selection.primary, layer: null, lang: null, neuron: null, list: [],
                sort: { key: "rank", dir: 1 } };

// ---- overview grid ------------------------------------------------------------------------------
function renderOverview() {
  const m = state.method;
  const counts = Array.from({length: L}, () => new Array(K).fill(0));
  D.languages.forEach((lang, k) => { for (const f of D.selection.selections[m][lang]) counts[Math.floor(f / N)][k]++; });
  const max = Math.max(1, ...counts.flat());
  const pickedLang = (k) => state.layer === null && state.lang === k ? " picked" : "";
  let s = `<table class="grid" id="grid"><tr><th>layer</th>${D.languages.map((l, k) => `<th class="lang-head${pickedLang(k)}" data-lang="${k}" title="all ${esc(l)} neurons">${esc(l)}</th>`).join("")}<th>all</th></tr>`;
  for (let i = 0; i < L; i++) {
    s += `<tr><th>${i}</th>`;
    for (let k = 0; k < K; k++) {
      const c = counts[i][k], a = (0.08 + 0.8 * c / max).toFixed(2), picked = state.layer === i && state.lang === k ? " picked" : "";
      s += `<td class="cell${picked}" data-layer="${i}" data-lang="${k}" style="background:rgba(255,143,0,${c ? a : 0})">${c}</td>`;
    }
    s += `<td>${counts[i].reduce((a, b) => a + b, 0)}</td></tr>`;
  }
  const tot = D.languages.map((_, k) => counts.reduce((a, r) => a + r[k], 0));
  s += `<tr><th>all</th>${tot.map((t) => `<td>${t}</td>`).join("")}<td>${membership[m].size} neurons</td></tr></table>`;
  $("grid-box").innerHTML = s;
  for (const td of document.querySelectorAll("#grid td.cell")) td.onclick = () => showList(state.method, +td.dataset.layer, +td.dataset.lang);
  for (const th of document.querySelectorAll("#grid th.lang-head")) th.onclick = () => showList(state.method, null, +th.dataset.lang);
}

// ---- the sortable list ----------------------------------------------------------------------------
function columns() {
  const r = (f) => rowOf.get(f);
  const cols = [
    { key: "neuron", label: "neuron", value: (f) => f, text: (f) => name(f) },
    { key: "langs", label: `languages (${state.method})`, value: (f) => (membership[state.method].get(f) || []).join(","),
      text: (f) => (membership[state.method].get(f) || []).map((k) => D.languages[k]).join(", "), cls: "langs" },
    { key: "rank", label: "LAPE rank", value: (f) => D.rows.rank[r(f)] < 0 ? Infinity : D.rows.rank[r(f)],
      text: (f) => D.rows.rank[r(f)] < 0 ? "\u2013" : D.rows.rank[r(f)] },
    { key: "entropy", label: "entropy", value: (f) => D.rows.entropy[r(f)] ?? Infinity, text: (f) => (D.rows.entropy[r(f)] ?? NaN).toFixed(3) },
  ];
  D.languages.forEach((l, k) => cols.push({ key: `p_${l}`, label: `p ${l}`, title: `firing probability on ${l}`,
    value: (f) => D.rows.p[r(f)][k], text: (f) => D.rows.p[r(f)][k].toFixed(3) }));
  cols.push({ key: "loss", label: "\u0394 loss, own", title: "largest mean loss change (nats/token) over the neuron's languages when it alone is deactivated",
    value: (f) => D.rows.loss[r(f)] === null ? -Infinity : ownLoss(f), text: (f) => D.rows.loss[r(f)] === null ? "" : signed(ownLoss(f), 5) });
  return cols;
}

function ownLoss(f) {
  const ks = membership[D.selection.primary].get(f) || D.languages.map((_, k) => k), d = D.rows.loss[rowOf.get(f)];
  return Math.max(...ks.map((k) => d[k]));
}

function showList(method, layer, lang) {
  Object.assign(state, { method, layer, lang });
  $("method-select").value = method;
  renderOverview();
  renderList();
}

function renderList() {
  const m = state.method, mem = membership[m];
  let items = [...mem.keys()], what = `all ${items.length} neurons that ${esc(m)} selected`;
  if (state.lang !== null) {
    items = items.filter((f) => mem.get(f).includes(state.lang) && (state.layer === null || Math.floor(f / N) === state.layer));
    what = `${items.length} ${esc(m)} neurons ${state.layer === null ? "" : `of layer ${state.layer} `}for ${esc(D.languages[state.lang])}`;
  } else if (state.layer !== null) {
    items = items.filter((f) => Math.floor(f / N) === state.layer);
    what = `${items.length} ${esc(m)} neurons of layer ${state.layer}`;
  }
  if (state.layer !== null || state.lang !== null) what += ` <button id="show-all">show all</button>`;
  const cols = columns(), col = cols.find((c) => c.key === state.sort.key) || cols[2], dir = state.sort.dir;
  items.sort((a, b) => { const x = col.value(a), y = col.value(b); return (x < y ? -1 : x > y ? 1 : 0) * dir || a - b; });
  state.list = items;
  let s = `<table id="neuron-table"><tr>${cols.map((c) => `<th data-sort="${c.key}" title="${esc(c.title || "sort")}" class="${c.cls || ""} ${c.key === col.key ? (dir > 0 ? "sorted-asc" : "sorted-desc") : ""}">${esc(c.label)}</th>`).join("")}</tr>`;
  for (const f of items) {
    s += `<tr class="neuron-row${f === state.neuron ? " current" : ""}" data-flat="${f}" data-layer="${Math.floor(f / N)}" data-neuron="${f % N}">` +
         cols.map((c) => `<td class="${c.cls || ""}">${esc(c.text(f))}</td>`).join("") + `</tr>`;
  }
  $("list-title").innerHTML = what;
  $("neuron-list").innerHTML = s + "</table>";
  if ($("show-all")) $("show-all").onclick = () => showList(state.method, null, null);
  for (const th of document.querySelectorAll("#neuron-table th")) {
    th.onclick = () => {
      const key = th.dataset.sort, first = key.startsWith("p_") || key === "loss" ? -1 : 1;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : first };
      renderList();
    };
  }
  for (const tr of document.querySelectorAll("#neuron-list tr.neuron-row")) tr.onclick = () => openNeuron(+tr.dataset.layer, +tr.dataset.neuron);
}

// ---- search ---------------------------------------------------------------------------------------
function parseNeuron(q) {
  const m = /^\s*L?\s*(\d+)\s*(?:[:,/]|\s+N?|N)\s*(\d+)\s*$/i.exec(q);
  return m ? [+m[1], +m[2]] : null;
}

async function search() {
  const q = $("search-input").value, kind = $("search-kind").value, t = q.trim();
  $("search-status").textContent = "";
  $("search-results").innerHTML = "";
  if (!t && kind !== "token") return;
  const neuron = parseNeuron(q), lang = D.languages.findIndex((l) => l.toLowerCase() === t.toLowerCase());
  const layer = /^\s*(?:L|layer\s*)(\d+)\s*$/i.exec(q) || (kind === "layer" ? /^\s*(\d+)\s*$/.exec(q) : null);
  if ((kind === "auto" || kind === "neuron") && neuron) return openNeuron(...neuron);
  if ((kind === "auto" || kind === "language") && lang >= 0) return showList(state.method, null, lang);
  if ((kind === "auto" || kind === "layer") && layer) {
    if (+layer[1] >= L) { $("search-status").textContent = `No layer ${layer[1]}: layers are 0-${L - 1}.`; return; }
    return showList(state.method, +layer[1], null);
  }
  if (kind !== "auto" && kind !== "token") { $("search-status").textContent = `Not a ${kind}: ${q}`; return; }
  $("search-status").textContent = "searching\u2026";
  try {
    const found = LIVE ? await searchLive(q) : await searchOffline(q);
    renderSearch(q, found);
  } catch (e) {
    $("search-status").textContent = String(e.message || e);
  }
}

async function searchOffline(q) {
  const variants = [...new Set([q, q.startsWith(" ") ? q : " " + q])], out = [];
  for (const v of variants) {
    const shard = await loadShard(fnv1a(v) % D.search.shards);
    for (const [id, neurons, codes] of shard[v] || []) {
      const values = decodeFixed({ s: D.search.step, d: codes });
      out.push({ token: v, id, neurons: decodeInts(neurons, D.search.width).map((f, i) => ({ f, effect: values[i] })) });
    }
  }
  return out;
}

function renderSearch(q, found) {
  if (!found.length) {
    $("search-status").textContent = `No token is exactly "${q}" or " ${q}"` + (LIVE ? "." :
      ` among the ${D.search.tokens.toLocaleString("en")} tokens of the page's text that the page indexes (not byte pieces of a character); lapelens explore --serve searches every token.`);
    return;
  }
  $("search-status").textContent = `${found.length} token(s); neurons whose direct logit effect promotes them most, among all neurons of the model` +
    (LIVE ? "" : ` (the top ${D.search.top}; the page indexes the ${D.search.tokens.toLocaleString("en")} tokens of its own text, the live server every token)`);
  let s = "";
  for (const t of found) {
    s += `<h3>token ${esc(JSON.stringify(t.token))} (id ${t.id})</h3><div class="list"><table class="search-table" data-token-id="${t.id}"><tr><th>neuron</th><th>effect</th><th>LAPE rank</th><th>languages (${esc(D.selection.primary)})</th></tr>`;
    for (const { f, effect } of t.neurons) {
      const r = rowOf.get(f), langs = (membership[D.selection.primary].get(f) || []).map((k) => D.languages[k]).join(", ");
      s += `<tr class="neuron-row" data-flat="${f}" data-layer="${Math.floor(f / N)}" data-neuron="${f % N}"><td>${name(f)}</td><td>${Number(effect).toFixed(3)}</td><td>${r === undefined || D.rows.rank[r] < 0 ? "" : D.rows.rank[r]}</td><td class="langs">${esc(langs)}</td></tr>`;
    }
    s += `</table></div>`;
  }
  $("search-results").innerHTML = s;
  for (const tr of document.querySelectorAll("#search-results tr.neuron-row")) tr.onclick = () => openNeuron(+tr.dataset.layer, +tr.dataset.neuron);
}

// ---- one neuron -----------------------------------------------------------------------------------
function summaryLine(f, X, F) {
  const t = D.selection.threshold, fires = D.languages.map((l, k) => [l, F.p[k]]).filter(([, p]) => p > t);
  const best = D.languages.map((l, k) => [l, F.p[k]]).sort((a, b) => b[1] - a[1])[0];
  const firing = fires.length ? `fires on ${fires.map(([l, p]) => `${l} ${p.toFixed(2)}`).join(", ")}` : `fires most on ${best[0]} ${best[1].toFixed(2)} (no language above LAPE's threshold ${t.toFixed(2)})`;
  const rank = F.rank < 0 ? "no LAPE rank" : `LAPE rank ${F.rank}`;
  let s = `${name(f)}: ${firing}; ${rank}`;
  if (F.logits) s += `; promotes ${F.logits.promoted.slice(0, 3).map((id) => `\u201c${shown(VOCAB[id] ?? `#${id}`)}\u201d`).join(", ")}`;
  if (F.loss) {
    const hits = D.languages.map((l, k) => [l, F.loss.delta[k], F.loss.low[k], F.loss.high[k]]).filter(([, , lo, hi]) => lo > 0 || hi < 0);
    const sig = (x) => (x >= 0 ? "+" : "\u2212") + Number(Math.abs(x).toPrecision(2));
    s += hits.length ? `; deactivating it changes the loss on ${hits.map(([l, d, lo, hi]) => `${l} by ${sig(d)} [${sig(lo)}, ${sig(hi)}]`).join(", ")} nats/token`
                     : "; deactivating it has no detectable effect on the loss";
  }
  return s + ".";
}

async function openNeuron(layer, neuron) {
  if (!Number.isInteger(layer) || !Number.isInteger(neuron) || layer < 0 || layer >= L || neuron < 0 || neuron >= N) {
    $("search-status").innerHTML = `<span class="err" id="pick-error">No such neuron: layers are 0-${L - 1}, neurons 0-${N - 1}.</span>`;
    return;
  }
  const f = layer * N + neuron;
  state.neuron = f;
  $("neuron-view").style.display = "";
  $("neuron-title").textContent = `Layer ${layer}, neuron ${neuron}`;
  $("neuron-summary").textContent = `loading layer ${layer}\u2026`;
  let X;
  try {
    X = await loadLayer(layer);
  } catch (e) {
    $("neuron-summary").innerHTML = `<span class="err">${esc(e.message)}</span>`;
    return;
  }
  if (state.neuron !== f) return;  // another neuron was opened meanwhile
  const F = neuronFacts(f, X);
  $("neuron-summary").textContent = summaryLine(f, X, F);
  for (const [id, fn] of Object.entries(PANELS)) {
    $(id).innerHTML = fn(f, X, F);
    $(id).dataset.neuron = `${layer}:${neuron}`;
  }
  if (LIVE) livePanel(f, X, F);
  if (LIVE && !F.logits) liveLogits(f, X, F);
  const at = state.list.indexOf(f);
  $("nav-position").textContent = at >= 0 ? `${at + 1} of ${state.list.length} in the list` : "not in the list: prev/next go by index";
  for (const tr of document.querySelectorAll("#neuron-list tr.neuron-row")) tr.classList.toggle("current", +tr.dataset.flat === f);
  try { history.replaceState(null, "", `#L${layer}N${neuron}`); } catch (e) { /* sandboxed iframe (notebook) */ }
  $("neuron-view").dataset.neuron = `${layer}:${neuron}`;
}

function step(by) {
  if (state.neuron === null) return;
  const at = state.list.indexOf(state.neuron);
  const f = at >= 0 ? state.list[(at + by + state.list.length) % state.list.length] : (state.neuron + by + L * N) % (L * N);
  openNeuron(Math.floor(f / N), f % N).then(() => $("neuron-view").scrollIntoView({ block: "start" }));
}

function lapelensStart() {
  const sel = $("method-select");
  sel.innerHTML = METHODS.map((m) => `<option value="${m}">${m} (${membership[m].size} neurons)</option>`).join("");
  sel.value = state.method;
  sel.onchange = () => showList(sel.value, state.layer, state.lang);
  $("search-button").onclick = search;
  $("search-input").onkeydown = (e) => { if (e.key === "Enter") search(); };
  $("prev-neuron").onclick = () => step(-1);
  $("next-neuron").onclick = () => step(1);
  document.addEventListener("keydown", (e) => {
    if (e.target.matches("input, textarea, select")) return;
    if (e.key === "[") step(-1);
    if (e.key === "]") step(1);
  });
  $("coverage-note").textContent = D.settings.coverage;
  showList(state.method, null, null);
  const m = /^#L(\d+)N(\d+)$/.exec(location.hash);
  if (m) openNeuron(+m[1], +m[2]);
}
