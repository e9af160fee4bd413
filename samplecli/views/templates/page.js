"use strict";
// samplecli's page: draws the run held in #data (JSON) with textContent only; no request, no markup from the data.
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const COL = {};
  data.top_columns.forEach(function (name, i) { COL[name] = i; });
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }
  // whitespace and control characters made visible, as views/html.py's `visible` does
  function visible(text) {
    let out = "";
    for (const ch of text) {
      const c = ch.codePointAt(0);
      if (ch === " ") out += "\u00b7";
      else if (ch === "\n") out += "\u21b5";
      else if (ch === "\t") out += "\u2192";
      else if (c < 32 || c === 127 || (c >= 0xd800 && c <= 0xdfff))
        out += c < 256 ? "\\x" + c.toString(16).padStart(2, "0") : "\\u" + c.toString(16).padStart(4, "0");
      else out += ch;
    }
    return out;
  }
  function fmt(x, digits) { return x === null || x === undefined ? "\u2014" : Number(x).toFixed(digits); }
  // a probability's hue: red at 0.001 and below, green at 1, on a log scale
  function hue(p) {
    if (p === null || p === undefined || !(p > 0)) return 0;
    return Math.round(120 * Math.min(1, Math.max(0, (Math.log10(p) + 3) / 3)));
  }
  function bar(p, cls) {
    const box = svg("svg", { "class": "bar", width: 40, height: 10, viewBox: "0 0 40 10" });
    box.appendChild(svg("rect", { "class": "track", x: 0, y: 4, width: 40, height: 2 }));
    box.appendChild(svg("rect", { "class": cls, x: 0, y: 1, width: Math.max(p > 0 ? 1 : 0, 40 * (p || 0)).toFixed(1), height: 8 }));
    return box;
  }
  function headRow(names) {
    const tr = el("tr");
    names.forEach(function (n) { tr.appendChild(el("th", "", n)); });
    return tr;
  }

  // a token as an element: its text made visible, a newline also breaking the line; a token with no text of its own
  // (a byte of a character still being written) shows as an empty-set sign
  function tokenElement(text, step) {
    const span = el("span", "tok");
    span.tabIndex = -1;
    span.dataset.step = String(step);
    if (text === "") { span.textContent = "\u2205"; span.classList.add("empty"); return span; }
    text.split("\n").forEach(function (part, i) {
      if (i > 0) { span.appendChild(el("span", "ws", "\u21b5")); span.appendChild(el("br")); }
      if (part) span.appendChild(document.createTextNode(visible(part)));
    });
    return span;
  }

  // the step's numbers, as the panel beside the text shows them
  function showStep(panel, step, title) {
    panel.textContent = "";
    panel.appendChild(el("h2", "", title));
    const facts = el("table", "facts");
    const rank = step.rank !== undefined ? String(step.rank) : rankInTop(step);
    [["token", "\u201c" + visible(step.text !== undefined ? step.text : step.token) + "\u201d"],
      ["token id", String(step.token_id)],
      ["p model", fmt(step.prob, 4)], ["p strategy", fmt(step.sampled_prob, 4)], ["rank", rank],
      ["entropy model", fmt(step.entropy, 3) + " nats"], ["entropy strategy", fmt(step.sampled_entropy, 3) + " nats"],
      ["kept", step.kept === null ? "\u2014" : String(step.kept)], ["KL(strategy \u2016 model)", fmt(step.kl, 3)]
    ].forEach(function (pair) {
      const tr = el("tr");
      tr.appendChild(el("th", "", pair[0]));
      tr.appendChild(el("td", "num", pair[1]));
      facts.appendChild(tr);
    });
    panel.appendChild(facts);
    if (step.top && step.top.length) {
      const alts = el("table", "alternatives");
      alts.appendChild(headRow(["", "alternative", "p model", "p strategy"]));
      step.top.forEach(function (alt, i) {
        const tr = el("tr", alt[COL.token_id] === step.token_id ? "chosen" : "");
        tr.appendChild(el("td", "num", String(i + 1)));
        tr.appendChild(el("td", "mono", visible(alt[COL.token])));
        [["prob", "m"], ["sampled_prob", "s"]].forEach(function (pair) {
          const td = el("td", "num p", fmt(alt[COL[pair[0]]], 4) + " ");
          td.appendChild(bar(alt[COL[pair[0]]], pair[1]));
          tr.appendChild(td);
        });
        alts.appendChild(tr);
      });
      panel.appendChild(alts);
    }
  }
  function rankInTop(step) {
    const i = (step.top || []).findIndex(function (alt) { return alt[COL.token_id] === step.token_id; });
    return i >= 0 ? String(i + 1) : (step.top && step.top.length ? "> " + step.top.length : "\u2014");
  }

  // arrow keys, Home and End move the focus between tokens (in compare's grid, up and down stay in the column); the
  // focused token is the only one in the tab order
  function roving(container, onShow) {
    function tokens() { return Array.prototype.slice.call(container.querySelectorAll(".tok")); }
    function go(target) {
      if (!target) return;
      tokens().forEach(function (t) { t.tabIndex = -1; t.classList.remove("current"); });
      target.tabIndex = 0;
      target.classList.add("current");
      target.focus();
    }
    container.addEventListener("keydown", function (event) {
      const all = tokens();
      const i = all.indexOf(document.activeElement);
      if (i < 0) return;
      const column = all[i].dataset.column;
      if (column !== undefined && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
        event.preventDefault();
        const step = Number(all[i].dataset.step) + (event.key === "ArrowDown" ? 1 : -1);
        go(all.find(function (t) { return t.dataset.column === column && Number(t.dataset.step) === step; }));
        return;
      }
      const moves = { ArrowRight: i + 1, ArrowDown: i + 1, ArrowLeft: i - 1, ArrowUp: i - 1, Home: 0, End: all.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      go(all[Math.max(0, Math.min(all.length - 1, moves[event.key]))]);
    });
    container.addEventListener("focusin", function (event) {
      if (event.target.classList.contains("tok")) onShow(event.target);
    });
    container.addEventListener("mouseover", function (event) {
      const tok = event.target.closest ? event.target.closest(".tok") : null;
      if (tok) onShow(tok);
    });
    return { go: go, reset: function () { const first = tokens()[0]; if (first) first.tabIndex = 0; } };
  }

  // a line chart of values per step: one polyline per series, a cursor line
  function strip(box, series, count) {
    box.textContent = "";
    const top = Math.max(0.001, ...series.flatMap(function (s) { return s.values.filter(Number.isFinite); }));
    const x = function (i) { return count > 1 ? (800 * i) / (count - 1) : 400; };
    series.forEach(function (s) {
      const points = s.values.map(function (v, i) { return Number.isFinite(v) ? x(i).toFixed(1) + "," + (88 - 84 * v / top).toFixed(1) : null; })
        .filter(Boolean).join(" ");
      box.appendChild(svg("polyline", { "class": s.cls, points: points }));
    });
    const cursor = svg("line", { "class": "cursor", x1: 0, x2: 0, y1: 0, y2: 90 });
    cursor.style.display = "none";
    box.appendChild(cursor);
    return function (i) { cursor.setAttribute("x1", x(i)); cursor.setAttribute("x2", x(i)); cursor.style.display = ""; };
  }

  function generatePage() {
    const text = document.getElementById("text");
    const panel = document.getElementById("detail");
    const box = document.getElementById("strip");
    let sample = 0, key = "prob", moveCursor = null;
    const samples = data.samples;
    function paint() {
      text.querySelectorAll(".tok").forEach(function (span) {
        const step = samples[sample].steps[Number(span.dataset.step)];
        span.style.setProperty("--h", hue(step[key]));
      });
    }
    function show(span) {
      const i = Number(span.dataset.step);
      showStep(panel, samples[sample].steps[i], "step " + i + (samples.length > 1 ? " of " + document.getElementById("tab-" + sample).textContent : ""));
      if (moveCursor) moveCursor(i);
    }
    const keys = roving(text, show);
    function draw() {
      text.textContent = "";
      const steps = samples[sample] ? samples[sample].steps : [];
      steps.forEach(function (step, i) {
        const span = tokenElement(step.text, i);
        span.dataset.tokenId = String(step.token_id);
        span.dataset.prob = fmt(step.prob, 4);
        span.dataset.sampledProb = fmt(step.sampled_prob, 4);
        span.dataset.entropy = fmt(step.entropy, 3);
        span.setAttribute("aria-label", "step " + i + ", p " + fmt(step.prob, 4));
        text.appendChild(span);
      });
      keys.reset();
      paint();
      moveCursor = strip(box, [
        { cls: "model", values: steps.map(function (s) { return s.entropy; }) },
        { cls: "strategy", values: steps.map(function (s) { return s.sampled_entropy; }) }], steps.length);
      document.querySelectorAll("table.summary").forEach(function (t) { t.hidden = Number(t.dataset.sample) !== sample; });
    }
    box.addEventListener("click", function (event) {
      const steps = samples[sample].steps;
      const rect = box.getBoundingClientRect();
      const i = Math.round((event.clientX - rect.left) / rect.width * (steps.length - 1));
      keys.go(text.querySelectorAll(".tok")[Math.max(0, Math.min(steps.length - 1, i))]);
    });
    document.querySelectorAll("#tabs button").forEach(function (button) {
      button.addEventListener("click", function () {
        sample = Number(button.dataset.sample);
        document.querySelectorAll("#tabs button").forEach(function (b) { b.setAttribute("aria-selected", String(b === button)); });
        draw();
      });
    });
    document.querySelectorAll("#colour input").forEach(function (input) {
      input.addEventListener("change", function () { key = input.value; paint(); });
    });
    draw();
  }

  function comparePage() {
    const grid = document.getElementById("grid");
    const panel = document.getElementById("detail");
    const choice = document.getElementById("sample");
    const columns = data.strategies;
    function draw() {
      const sample = choice ? Number(choice.value) : 0;
      grid.textContent = "";
      const head = el("tr");
      head.appendChild(el("th", "num", "step"));
      columns.forEach(function (c) {
        const th = el("th", "", c.label);
        if (c.diverges_at !== null && sample === 0) th.appendChild(el("div", "diverge-note", "leaves the first column at step " + c.diverges_at));
        head.appendChild(th);
      });
      grid.appendChild(head);
      const length = Math.max(0, ...columns.map(function (c) { return (c.steps[sample] || []).length; }));
      for (let i = 0; i < length; i++) {
        const tr = el("tr");
        tr.appendChild(el("td", "num", String(i)));
        columns.forEach(function (c, j) {
          const td = el("td", "tokcell");
          const step = (c.steps[sample] || [])[i];
          if (step) {
            const span = tokenElement(step.text, i);
            span.dataset.column = String(j);
            span.dataset.prob = fmt(step.prob, 4);
            span.style.setProperty("--h", hue(step.prob));
            td.appendChild(span);
          }
          if (sample === 0 && c.diverges_at === i) { td.classList.add("diverge"); tr.classList.add("diverge"); }
          tr.appendChild(td);
        });
        grid.appendChild(tr);
      }
      keys.reset();
    }
    const keys = roving(grid, function (span) {
      const column = columns[Number(span.dataset.column)];
      const sample = choice ? Number(choice.value) : 0;
      showStep(panel, column.steps[sample][Number(span.dataset.step)], column.label + ", step " + span.dataset.step);
    });
    if (choice) choice.addEventListener("change", draw);
    draw();
  }

  function scorePage() {
    const text = document.getElementById("text");
    const panel = document.getElementById("detail");
    const tokens = data.per_token || [];
    // one model: a token's surprisal; two (score --against): KL(model || against) there
    const against = data.against !== undefined;
    const measure = function (t) { return against ? t.kl : t.nats; };
    const values = tokens.map(measure).filter(Number.isFinite);
    const top = against ? Math.max(1e-12, ...values) : Math.max(1, ...values);
    const keys = roving(text, function (span) {
      const t = tokens[Number(span.dataset.step)];
      panel.textContent = "";
      panel.appendChild(el("h2", "", "position " + t.position));
      const facts = el("table", "facts");
      const rows = against ?
        [["token", "\u201c" + visible(t.token) + "\u201d"], ["token id", String(t.token_id)], ["KL", t.kl === null ? "\u2014" : Number(t.kl).toPrecision(4) + " nats"],
          ["p model", fmt(t.prob, 4)], ["p against", fmt(t.prob_against, 4)],
          ["top model", "\u201c" + visible(t.top_token) + "\u201d"],
          ["top against", "\u201c" + visible(t.top_token_against) + "\u201d"]] :
        [["token", "\u201c" + visible(t.token) + "\u201d"], ["token id", String(t.token_id)], ["p model", fmt(t.prob, 4)],
          ["surprisal", fmt(t.nats, 3) + " nats"], ["rank", String(t.rank)],
          ["p strategy", t.strategy_prob === undefined ? "\u2014" : fmt(t.strategy_prob, 4)]];
      rows.forEach(function (pair) {
        const tr = el("tr");
        tr.appendChild(el("th", "", pair[0]));
        tr.appendChild(el("td", "num", pair[1]));
        facts.appendChild(tr);
      });
      panel.appendChild(facts);
    });
    tokens.forEach(function (t, i) {
      const span = tokenElement(t.token, i);
      span.dataset.prob = fmt(t.prob, 4);
      if (against) span.dataset.kl = String(t.kl); else span.dataset.nats = fmt(t.nats, 3);
      // 0 green, the text's largest red
      span.style.setProperty("--h", Math.round(120 * (1 - Math.min(1, measure(t) / top))));
      text.appendChild(span);
    });
    keys.reset();
    document.querySelectorAll("a.position").forEach(function (a) {
      a.addEventListener("click", function (event) {
        event.preventDefault();
        keys.go(text.querySelectorAll(".tok")[Number(a.dataset.step)]);
      });
    });
  }

  // entropy against temperature: the sweep's rows, a point each, and the curve where there is one
  function inspectPage() {
    const box = document.getElementById("sweep");
    if (!box || !data.temperatures) return;
    const rows = data.temperatures.rows || [];
    const curve = (data.temperatures.curve || []).map(function (p) { return Array.isArray(p) ? p : [p.temperature, p.entropy_nats]; });
    const points = curve.length ? curve : rows.map(function (r) { return [r.temperature, r.entropy_nats]; });
    if (!points.length) return;
    const tMax = Math.max(...points.map(function (p) { return p[0]; }), 0.001);
    const hMax = Math.max(data.temperatures.limits ? data.temperatures.limits.hot_entropy_nats : 0, ...points.map(function (p) { return p[1]; }), 0.001);
    const x = function (t) { return 40 + 740 * t / tMax; }, y = function (h) { return 200 - 180 * h / hMax; };
    box.appendChild(svg("line", { "class": "axis", x1: 40, x2: 780, y1: 200, y2: 200 }));
    box.appendChild(svg("line", { "class": "axis", x1: 40, x2: 40, y1: 20, y2: 200 }));
    [[0, 0], [tMax, 0]].forEach(function (p) { const t = svg("text", { x: x(p[0]), y: 215 }); t.textContent = "T " + p[0].toFixed(2); box.appendChild(t); });
    const label = svg("text", { x: 2, y: 24 }); label.textContent = hMax.toFixed(2) + " nats"; box.appendChild(label);
    box.appendChild(svg("polyline", { "class": "model", points: points.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" ") }));
    rows.forEach(function (r) { box.appendChild(svg("circle", { cx: x(r.temperature), cy: y(r.entropy_nats), r: 3 })); });
  }

  ({ generate: generatePage, compare: comparePage, score: scorePage, inspect: inspectPage })[data.kind]();
  document.body.dataset.ready = "true";
})();
