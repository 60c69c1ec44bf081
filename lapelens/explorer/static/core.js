// The neuron explorer, part 1: the page's data, per-layer loading, and small helpers.
// No libraries; works from file:// (layer data comes as <script> files beside the page) and,
// in live mode, from the lapelens server (same files, plus its JSON API).
"use strict";
const D = JSON.parse(document.getElementById("explorer-data").textContent);
const K = D.languages.length, L = D.n_layers, N = D.d_mlp;
const LIVE = document.querySelector('meta[name="lapelens-mode"]').content === "live";
const METHODS = Object.keys(D.selection.selections);
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const name = (f) => `L${Math.floor(f / N)} N${f % N}`;
const shown = (s) => s.replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5");
const signed = (x, d) => (x >= 0 ? "+" : "\u2212") + Math.abs(x).toFixed(d);

// ---- compact integers (lapelens.explorer.text.encode_ints) ---------------------------------
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const DIGIT = new Map([...ALPHABET].map((c, i) => [c, i]));
function decodeInts(text, width) {
  const out = [];
  for (let s = 0; s < text.length; s += width) {
    let v = 0;
    for (let i = s; i < s + width; i++) v = v * 64 + DIGIT.get(text[i]);
    out.push(v);
  }
  return out;
}

// Fixed-point floats (lapelens.explorer.text.encode_fixed): code 0 is "none".
function decodeFixed(packed) {
  return decodeInts(packed.d, 3).map((c) => c === 0 ? null : (c - 131072) * packed.s);
}

// 32-bit FNV-1a of the UTF-8 bytes (lapelens.explorer.text.fnv1a): a token's search shard.
function fnv1a(text) {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(text)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h;
}

// ---- per-layer data, search shards and token texts, loaded on demand ---------------------------
const layers = new Map(), shards = new Map(), waiting = new Map();
let VOCAB = null;  // token id -> the text shown for it (every token any layer or context shows)
window.lapelensLayer = (i, data) => { layers.set(i, decodeLayer(data)); };
window.lapelensSearch = (s, data) => { shards.set(`s${s}`, data); };
window.lapelensVocab = (_, data) => { VOCAB = data; };

function decodeLayer(x) {
  const lg = x.logits;
  x.selection.entropy = decodeFixed(x.selection.entropy);
  x.selection.rank = decodeInts(x.selection.rank, x.selection.rank_width).map((r) => r - 1);  // -1: none
  x.firing.count = decodeInts(x.firing.count, x.firing.width);
  x.mean.mean = decodeFixed(x.mean.mean);
  lg.promotedIds = decodeInts(lg.promoted, D.id_width);
  lg.suppressedIds = decodeInts(lg.suppressed, D.id_width);
  lg.promoted_value = decodeFixed(lg.promoted_value);
  lg.suppressed_value = decodeFixed(lg.suppressed_value);
  lg.hist_range = decodeFixed(lg.hist_range);
  lg.histCounts = decodeInts(lg.hist, lg.hist_width);
  lg.row = new Map(lg.neurons.map((j, r) => [j, r]));  // only the listed neurons have logit tables
  for (const j of Object.keys(x.contexts)) x.contexts[j] = decodeContexts(x.contexts[j]);
  return x;
}

// One neuron's contexts (lapelens.explorer.panels.ContextPanel.layer_json): per language, records of
// group + 1, chunk, position, value code, shading levels -> [group, value, chunk, pos, levels];
// and per quantile group [low, high, share].
function decodeContexts(n) {
  const C = D.contexts, cw = C.chunk_width, pw = C.pos_width, R = 1 + cw + pw + 3 + C.window;
  const fixed = (code) => decodeFixed({ s: n.step, d: code })[0];
  return { scale: n.scale, languages: n.languages.map(({ c, g }) => {
    const contexts = [], groups = [];
    for (let i = 0; i < c.length; i += R) {
      const at = [i, i + 1, i + 1 + cw, i + 1 + cw + pw, i + 4 + cw + pw, i + R];
      contexts.push([DIGIT.get(c[at[0]]) - 1, fixed(c.slice(at[3], at[4])), decodeInts(c.slice(at[1], at[2]), cw)[0],
                     decodeInts(c.slice(at[2], at[3]), pw)[0], c.slice(at[4], at[5])]);
    }
    for (let i = 0; i < g.length; i += 9) {
      groups.push([fixed(g.slice(i, i + 3)), fixed(g.slice(i + 3, i + 6)), decodeInts(g.slice(i + 6, i + 9), 3)[0] / C.share_scale]);
    }
    return { contexts, groups };
  }) };
}

function loadScript(key, file, have) {
  if (have()) return Promise.resolve(have());
  if (waiting.has(key)) return waiting.get(key);
  const p = new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = `${D.files}/${file}`;
    s.onload = () => have() ? resolve(have()) : reject(new Error(`${file} held no data`));
    s.onerror = () => reject(new Error(`cannot load ${D.files}/${file} (keep the folder beside the page)`));
    document.head.appendChild(s);
  });
  waiting.set(key, p);
  p.catch(() => waiting.delete(key));
  return p;
}
const loadVocab = () => loadScript("vocab", "vocab.js", () => VOCAB);
const loadLayer = (i) => Promise.all([loadScript(`l${i}`, `layer_${String(i).padStart(3, "0")}.js`, () => layers.get(i)),
                                      loadVocab()]).then(([x]) => x);
const loadShard = (s) => loadScript(`s${s}`, `search_${String(s).padStart(3, "0")}.js`, () => shards.get(`s${s}`));

// ---- neuron facts available without a layer file (the listed neurons) ---------------------------
const rowOf = new Map(D.rows.index.map((f, i) => [f, i]));
const membership = {};  // method -> flat -> [language indices]
for (const m of METHODS) {
  const mem = new Map();
  D.languages.forEach((lang, k) => { for (const f of D.selection.selections[m][lang]) { if (!mem.has(f)) mem.set(f, []); mem.get(f).push(k); } });
  membership[m] = mem;
}

// ---- small SVG charts --------------------------------------------------------------------------
function bars(labels, values, opts) {
  // Horizontal bars with the value written beside each; opts: {fmt, max, min, color, ref, cls}
  const w = 360, rowH = 18, left = 44, right = 70, h = rowH * labels.length + 6;
  const min = Math.min(0, opts.min ?? Math.min(...values)), max = Math.max(opts.max ?? Math.max(...values), 1e-12);
  const x = (v) => left + (w - left - right) * (v - min) / (max - min || 1);
  let s = `<svg width="${w}" height="${h}" class="${opts.cls || ""}">`;
  labels.forEach((lab, i) => {
    const v = values[i], y = 3 + i * rowH, x0 = x(0), x1 = x(v);
    const color = typeof opts.color === "function" ? opts.color(v) : (opts.color || "#ff8f00");
    s += `<text x="${left - 6}" y="${y + 12}" text-anchor="end">${esc(lab)}</text>`;
    s += `<rect x="${Math.min(x0, x1)}" y="${y + 2}" width="${Math.max(Math.abs(x1 - x0), 0.5)}" height="${rowH - 5}" fill="${color}"></rect>`;
    s += `<text class="value" data-label="${esc(lab)}" x="${w - right + 4}" y="${y + 12}">${opts.fmt(v)}</text>`;
  });
  if (opts.ref != null && opts.ref >= min && opts.ref <= max) {
    s += `<line x1="${x(opts.ref)}" x2="${x(opts.ref)}" y1="0" y2="${h}" stroke="#333" stroke-dasharray="3,2"></line>`;
  }
  return s + "</svg>";
}

function shade(a, max) {
  if (a >= 0) return `rgba(255,111,0,${Math.min(1, a / (max || 1)).toFixed(2)})`;
  return `rgba(66,165,245,${Math.min(1, -a / (max || 1) * 4).toFixed(2)})`;
}

function level(c) {
  // One character per token: "0"-"9", "a"-"z" = 0..35 levels, "A"-"Z" = -1..-26, "." = outside.
  if (c === ".") return null;
  const code = c.charCodeAt(0);
  return code >= 65 && code <= 90 ? -(code - 64) : parseInt(c, 36);
}

// Tokens shaded by activation, byte pieces merged: ids, values (null: not shown), runs [[start, n, text]];
// a token's text from opts.texts (one per position) or opts.vocab (by id).
function shadedTokens(ids, values, runs, opts) {
  const vocab = opts.vocab || {}, max = opts.max, center = opts.center ?? -1, start = new Map(runs.map((r) => [r[0], r]));
  const text = (j) => opts.texts ? opts.texts[j] : (vocab[ids[j]] ?? `#${ids[j]}`);
  let s = "";
  for (let i = 0; i < ids.length;) {
    const run = start.get(i), n = run ? run[1] : 1, idx = [...Array(n).keys()].map((j) => i + j);
    const vals = idx.map((j) => values[j]).filter((v) => v !== null && v !== undefined);
    const a = vals.length ? vals.reduce((p, v) => Math.abs(v) > Math.abs(p) ? v : p, 0) : 0;
    const label = run ? run[2] : text(i);
    const piece = !run && (label.includes("\ufffd") || (label.startsWith("\u2039") && label.endsWith("\u203a")));
    const tip = idx.map((j) => `${text(j)}: ${values[j] === null ? "?" : (opts.approx && j !== center ? "\u2248" : "") + Number(values[j]).toFixed(3)}`).join("\n");
    const cls = ["tok", piece ? "piece" : "", idx.includes(center) ? "center" : ""].filter(Boolean).join(" ");
    s += `<span class="${cls}" data-pos="${i}" data-n="${n}" data-token-id="${ids[i]}" data-value="${a}" style="background:${shade(a, max)}" title="${esc(tip)}">${esc(shown(label))}</span>`;
    i += n;
  }
  return s;
}
