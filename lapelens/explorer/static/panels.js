// The neuron explorer, part 2: one function per panel (as lapelens.explorer.panels has one class),
// each drawing neuron f from its layer's data X (see lapelens.explorer.page.layer_json).
"use strict";

function neuronFacts(f, X) {
  const j = f % N;
  return {
    j,
    p: D.languages.map((_, k) => X.firing.count[j * K + k] / D.n[k]),
    mean: D.languages.map((_, k) => X.mean.mean[j * K + k]),
    entropy: X.selection.entropy[j],
    rank: X.selection.rank[j],
    loss: X.loss[j],
    detail: X.contexts[j],
    hist: X.histogram[j],
    logits: logitsOf(X.logits, j),
  };
}

// One neuron's direct logit effects from its layer's tables (null if it is not listed).
function logitsOf(lg, j) {
  const r = lg.row.get(j), T = lg.top;
  if (r === undefined) return null;
  const nb = lg.histCounts.length / lg.neurons.length;
  return { promoted: lg.promotedIds.slice(r * T, r * T + T), promotedValue: lg.promoted_value.slice(r * T, r * T + T),
           suppressed: lg.suppressedIds.slice(r * T, r * T + T), suppressedValue: lg.suppressed_value.slice(r * T, r * T + T),
           range: lg.hist_range.slice(2 * r, 2 * r + 2), hist: lg.histCounts.slice(r * nb, r * nb + nb) };
}

function notListed(f) {
  const S = D.settings;
  if (LIVE) return `<p class="note logits-missing">computing ${name(f)}'s direct logit effects\u2026</p>`;
  return `<p class="note logits-missing">Direct logit effects are on this page for the ${S.logit_neurons.toLocaleString("en")} neurons some method selected; ${name(f)} is not one of them. <code>lapelens explore --serve</code> computes any neuron's.</p>`;
}

function selectionPanel(f, X, F) {
  const S = D.selection;
  let s = `<h2>LAPE score and selections \u2013 ${name(f)}</h2>`;
  s += `<p>Entropy of the normalised firing probabilities: <b id="entropy-value">${F.entropy === null ? "\u2013" : F.entropy.toFixed(4)}</b>. `;
  s += F.rank < 0 ? `LAPE rank: <b id="rank-value">none</b> (no language fires above the filter threshold ${S.threshold.toFixed(4)}, so LAPE gives it H = \u221e).`
                  : `LAPE rank: <b id="rank-value">${F.rank}</b> of ${L * N} neurons (0 = lowest entropy among those passing the filter; LAPE keeps the first ${S.lape_total}).`;
  s += `</p><table class="grid" id="selection-table"><tr><th>method</th>${D.languages.map((l) => `<th>${esc(l)}</th>`).join("")}</tr>`;
  for (const m of METHODS) {
    const ks = membership[m].get(f) || [];
    s += `<tr><th>${esc(m)}</th>${D.languages.map((l, k) => `<td data-method="${m}" data-lang="${l}">${ks.includes(k) ? "\u2713" : ""}</td>`).join("")}</tr>`;
  }
  return s + "</table>";
}

function firingPanel(f, X, F) {
  const t = D.selection.threshold;
  return `<h2>Firing probability p<sub>k</sub> \u2013 ${name(f)}</h2>` +
    bars(D.languages, F.p, { fmt: (v) => v.toFixed(3), min: 0, max: Math.max(...F.p, t), ref: t, cls: "firing" }) +
    `<p class="note">Share of language-k tokens with hook_pre &gt; 0 (the run's statistics: ${D.languages.map((l, k) => `${l} ${D.n[k].toLocaleString("en")}`).join(", ")} tokens). Dashed: LAPE's filter threshold ${t.toFixed(4)}.</p>`;
}

function meanPanel(f, X, F) {
  return `<h2>Mean activation \u2013 ${name(f)}</h2>` +
    bars(D.languages, F.mean, { fmt: (x) => x.toFixed(4), color: (x) => x < 0 ? "#64b5f6" : "#8e24aa", cls: "mean" }) +
    `<p class="note">Mean of act_fn(hook_pre) per language (LAVE's score), from the statistics.</p>`;
}

function notTracked(f) {
  return `<p class="note">Contexts and histograms exist for the ${D.settings.detail_neurons.toLocaleString("en")} neurons that ${D.settings.detail_methods.join(", ")} selected (a pass over train text); ${name(f)} is not one of them.</p>`;
}

function histPanel(f, X, F) {
  let s = `<h2>Activation distribution per language \u2013 ${name(f)}</h2>`;
  if (!F.hist) return s + notTracked(f);
  const [lo, hi] = F.hist.range, counts = F.hist.counts, nb = counts[0].length, w = 150, h = 60;
  const shares = counts.map((row) => { const t = row.reduce((a, b) => a + b, 0) || 1; return row.map((c) => c / t); });
  const top = Math.sqrt(Math.max(...shares.flat(), 1e-12));
  D.languages.forEach((lang, k) => {
    s += `<div class="langblock"><b>${esc(lang)}</b><br><svg width="${w}" height="${h + 14}" class="hist" data-lang="${lang}">`;
    shares[k].forEach((v, b) => {
      const bh = h * Math.sqrt(v) / top, x = b * w / nb;
      s += `<rect x="${x}" y="${h - bh}" width="${w / nb - 0.5}" height="${bh}" fill="#00897b"><title>${(lo + (hi - lo) * b / nb).toFixed(3)} to ${(lo + (hi - lo) * (b + 1) / nb).toFixed(3)}: ${(100 * v).toFixed(2)}% (${counts[k][b]} tokens)</title></rect>`;
    });
    const z = w * (0 - lo) / (hi - lo);
    s += `<line x1="${z}" x2="${z}" y1="0" y2="${h}" stroke="#999" stroke-dasharray="2,2"></line>`;
    s += `<text x="0" y="${h + 12}">${lo.toFixed(2)}</text><text x="${w}" y="${h + 12}" text-anchor="end">${hi.toFixed(2)}</text></svg></div>`;
  });
  return s + `<p class="note">Share of tokens per bin of act_fn(hook_pre), square-root height scale, on ${D.settings.context_tokens_label}; dashed line at 0; the outer bins also hold everything beyond them. Hover a bar for its numbers.</p>`;
}

const chunkCache = new Map();
function chunkTokens(lang, c) {
  const key = `${lang}/${c}`;
  if (!chunkCache.has(key)) chunkCache.set(key, decodeInts(D.contexts.chunks[lang][c], D.id_width));
  return chunkCache.get(key);
}

// The window around pos, widened or narrowed so that no character split into byte pieces is cut.
function contextWindow(ids, runs, pos) {
  let a = Math.max(0, pos - D.contexts.before), b = Math.min(ids.length, pos + D.contexts.after + 1);
  for (const [s0, n] of runs) {
    const e0 = s0 + n, holds = s0 <= pos && pos < e0;
    if (s0 < a && e0 > a) a = holds ? s0 : e0;
    if (s0 < b && e0 > b) b = holds ? e0 : s0;
  }
  return [a, b];
}

function contextRows(ctxs, lang, scale) {
  const runsOf = D.contexts.runs[lang] || {};
  let s = "";
  for (const [group, value, c, pos, levels] of ctxs) {
    const ids = chunkTokens(lang, c), runs = runsOf[c] || [], [a, b] = contextWindow(ids, runs, pos);
    const first = pos - D.contexts.before, vals = [];
    for (let i = a; i < b; i++) {
      const v = i - first >= 0 && i - first < levels.length ? level(levels[i - first]) : null;
      vals.push(i === pos ? value : v === null ? null : v * scale / D.contexts.levels);
    }
    const inside = runs.filter(([s0, n]) => s0 >= a && s0 + n <= b).map(([s0, n, t]) => [s0 - a, n, t]);
    s += `<div class="ctx" data-group="${group}" data-value="${value}" data-chunk="${c}" data-pos="${pos}"><span class="val">${value.toFixed(3)}</span>` +
         shadedTokens(ids.slice(a, b), vals, inside, { vocab: VOCAB, max: scale, center: pos - a, approx: true }) + `</div>`;
  }
  return s;
}

function contextPanel(f, X, F) {
  let s = `<h2>Contexts per language \u2013 ${name(f)}</h2>`;
  if (!F.detail) return s + notTracked(f);
  const C = D.contexts, scale = F.detail.scale;
  F.detail.languages.forEach((block, k) => {
    const lang = D.languages[k];
    s += `<div class="ctx-lang" data-lang="${lang}"><h3>${esc(lang)}</h3>`;
    const top = block.contexts.filter((c) => c[0] < 0);
    s += `<div class="group-head">top ${top.length}: the highest activations, one per ${D.settings.context_seq_len}-token chunk</div>` + contextRows(top, lang, scale);
    C.groups.forEach(([qlo, qhi], g) => {
      const [lo, hi, share] = block.groups[g], rows = block.contexts.filter((c) => c[0] === g);
      const range = lo === null ? "" : `activation ${lo.toFixed(3)} to ${hi.toFixed(3)}, `;
      s += `<div class="group-head" data-group="${g}">${(100 * qlo).toFixed(0)}th to ${(100 * qhi).toFixed(0)}th percentile of ${esc(lang)} tokens (${range}${(100 * share).toFixed(1)}% of them): ${rows.length ? `${rows.length} at random` : "none"}</div>`;
      s += contextRows(rows, lang, scale);
    });
    s += `</div>`;
  });
  return s + `<p class="note">Windows of ${C.before} tokens before and ${C.after} after the token (bold, underlined; its activation on the left), cut at the chunk's edges; characters split into byte pieces are shown whole. From ${D.settings.context_tokens_label}. Orange = positive activation relative to this neuron's largest kept value, blue = negative; hover for each token's (approximate) value.</p>`;
}

function logitPanel(f, X, F) {
  const G = F.logits, head = `<h2>Direct effect on the logits \u2013 ${name(f)}</h2>`;
  if (!G) return head + notListed(f);
  const table = (ids, vals, cls) => `<table class="tokens ${cls}">` + ids.map((id, i) =>
    `<tr><td class="t" data-token-id="${id}">${esc(shown(VOCAB[id] ?? `#${id}`).replace(/ /g, "\u2423"))}</td><td>${vals[i].toFixed(3)}</td></tr>`).join("") + "</table>";
  return head +
    `<div class="langblock"><h3>promoted</h3>${table(G.promoted, G.promotedValue, "promoted")}</div>` +
    `<div class="langblock"><h3>suppressed</h3>${table(G.suppressed, G.suppressedValue, "suppressed")}</div>` +
    `<p class="note">W_out[layer][neuron] \u00b7 W_U: the logit change per unit of the neuron's output (hook_post), through the residual stream only (no final norm scale, no later layers). \u2423 is a space.</p>`;
}

function logitHistPanel(f, X, F) {
  const G = F.logits, head = `<h2>Logit effects over the vocabulary \u2013 ${name(f)}</h2>`;
  if (!G) return head + notListed(f);
  const counts = G.hist, nb = counts.length, [lo, hi] = G.range, w = 340, h = 90, total = counts.reduce((a, b) => a + b, 0);
  const top = Math.log10(1 + Math.max(...counts));
  let s = head + `<svg width="${w}" height="${h + 16}" class="logit-hist">`;
  counts.forEach((c, b) => {
    const a = lo + (hi - lo) * b / nb, z = lo + (hi - lo) * (b + 1) / nb, bh = h * Math.log10(1 + c) / (top || 1);
    s += `<rect x="${b * w / nb}" y="${h - bh}" width="${w / nb - 0.5}" height="${bh}" fill="${(a + z) / 2 >= 0 ? "#43a047" : "#e53935"}" data-count="${c}"><title>${a.toFixed(3)} to ${z.toFixed(3)}: ${c} tokens</title></rect>`;
  });
  if (lo < 0 && hi > 0) s += `<line x1="${w * -lo / (hi - lo)}" x2="${w * -lo / (hi - lo)}" y1="0" y2="${h}" stroke="#333" stroke-dasharray="2,2"></line>`;
  s += `<text x="0" y="${h + 13}">${lo.toFixed(2)}</text><text x="${w}" y="${h + 13}" text-anchor="end">${hi.toFixed(2)}</text></svg>`;
  return s + `<p class="note">How many of the ${total.toLocaleString("en")} vocabulary entries get each direct effect (log count scale); the range is the mean \u00b1 6 standard deviations, the outer bins hold the rest. Green promotes, red suppresses.</p>`;
}

function lossPanel(f, X, F) {
  const S = D.settings, LS = D.loss;
  let s = `<h2>Loss change when this neuron alone is deactivated \u2013 ${name(f)}</h2>`;
  const cover = `Computed for ${S.loss_neurons} of the ${S.primary_neurons} ${esc(S.primary)} neurons (${S.loss_neurons < S.primary_neurons ? `each language's ${S.loss_per_language} best by LAPE rank` : "all of them"}), on ${S.loss_tokens_label} of held-out (${S.loss_split}) text in ${S.loss_seq_len}-token chunks.`;
  if (!F.loss && !S.loss_neurons) return s + `<p class="note" id="loss-missing">This page has no loss changes (built with --loss-max-neurons 0, as --serve does unless told otherwise).</p>`;
  if (!F.loss) return s + `<p class="note" id="loss-missing">Not computed for ${name(f)}. ${cover}</p>`;
  const [amin, amax] = LS.axis, w = 900, left = 44, right = 340, rowH = 20, h = rowH * K + 24;
  const x = (v) => left + (w - left - right) * (v - amin) / ((amax - amin) || 1);
  s += `<svg width="${w}" height="${h}" class="loss">`;
  D.languages.forEach((lang, k) => {
    const d = F.loss.delta[k], lo = F.loss.low[k], hi = F.loss.high[k], y = 4 + k * rowH, none = lo <= 0 && hi >= 0;
    const color = none ? "#bdbdbd" : d > 0 ? "#e53935" : "#1e88e5";
    s += `<text x="${left - 6}" y="${y + 13}" text-anchor="end">${esc(lang)}</text>`;
    s += `<rect x="${Math.min(x(0), x(d))}" y="${y + 4}" width="${Math.max(Math.abs(x(d) - x(0)), 0.5)}" height="${rowH - 9}" fill="${color}"></rect>`;
    s += `<line x1="${x(lo)}" x2="${x(hi)}" y1="${y + 9}" y2="${y + 9}" stroke="#333"></line>`;
    s += `<line x1="${x(lo)}" x2="${x(lo)}" y1="${y + 5}" y2="${y + 13}" stroke="#333"></line><line x1="${x(hi)}" x2="${x(hi)}" y1="${y + 5}" y2="${y + 13}" stroke="#333"></line>`;
    const label = `${signed(d, 5)} [${signed(lo, 5)}, ${signed(hi, 5)}]` + (none ? " no detectable effect" : "");
    s += `<text class="value" data-label="${esc(lang)}" data-delta="${d}" data-low="${lo}" data-high="${hi}" x="${w - right + 6}" y="${y + 13}">${label}</text>`;
  });
  s += `<line x1="${x(0)}" x2="${x(0)}" y1="0" y2="${h - 18}" stroke="#333" stroke-dasharray="3,2"></line>`;
  s += `<text x="${left}" y="${h - 4}">${signed(amin, 4)}</text><text x="${w - right}" y="${h - 4}" text-anchor="end">${signed(amax, 4)} nats/token</text></svg>`;
  return s + `<p class="note">Change of the mean next-token loss (nats per token) with hook_post[..., neuron] = 0, and its bootstrap 95% interval (${LS.n_boot} resamples of the chunks, paired). One axis for every neuron of the page; grey: the interval spans 0, no detectable effect at this budget. Unperturbed loss ${D.languages.map((l, k) => `${l} ${LS.base[k] === null ? "\u2013" : LS.base[k].toFixed(3)}`).join(", ")}. ${cover}</p>`;
}

const PANELS = { "panel-selection": selectionPanel, "panel-firing": firingPanel, "panel-mean": meanPanel,
                 "panel-loss": lossPanel, "panel-logits": logitPanel, "panel-logit-hist": logitHistPanel,
                 "panel-hist": histPanel, "panel-contexts": contextPanel };
