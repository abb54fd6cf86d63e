(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
  var COLORS = { compute: "#1d3557", reuse: "#dbe6f2", skip: "#b0b0b0", none: "#ffffff", front: "#d62828" };
  var SEED_SHAPES = D.markers;  // the PNG plots' seed markers, from Python
  var byKey = {}, frontRank = {}, elems = {}, selected = null;
  D.points.forEach(function (p) { byKey[p.k] = p; });
  D.frontier.forEach(function (k, i) { frontRank[k] = i; });
  var maxGen = Math.max.apply(null, [1].concat(D.points.map(function (p) { return p.g; })));

  // ------------------------------------------------------------ helpers
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function hex2rgb(h) { return [parseInt(h.substr(1, 2), 16), parseInt(h.substr(3, 2), 16), parseInt(h.substr(5, 2), 16)]; }
  function genColor(g) {
    var t = Math.max(0, Math.min(1, g / maxGen)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    var a = hex2rgb(VIRIDIS[i]), b = hex2rgb(VIRIDIS[i + 1]);
    return "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + (b[j] - a[j]) * f); }).join(",") + ")";
  }
  function fmtQ(v) { return typeof v !== "number" ? (v === null || v === undefined ? "—" : String(v)) : (Math.abs(v) >= 100 ? v.toFixed(2) : Math.abs(v) >= 10 ? v.toFixed(3) : v.toFixed(4)); }
  function fmtPct(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%"; }
  function fmtCost(v) { return D.run.cost === "latency" ? (v === null ? "—" : v.toFixed(3) + "× latency") : fmtPct(v) + " MACs"; }
  function fmtX(sp) { return typeof sp === "number" && isFinite(sp) ? sp.toFixed(2) + "×" : "—"; }
  function kindName(p) {
    var stopped = p.u ? " (stopped by racing: estimate)" : "";
    if (p.t === "no_caching") return "no caching";
    if (p.t === "seed") return "heuristic seed" + stopped;
    if (p.t === "random") return "random initial" + stopped;
    return "evolved" + stopped;
  }
  function labelOf(p) { return D.labels[p.l] || "—"; }
  function ticks(lo, hi, n) {
    var span = hi - lo; if (!(span > 0)) return [lo];
    var raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), e = raw / mag;
    var step = (e >= 7.5 ? 10 : e >= 3.5 ? 5 : e >= 1.5 ? 2 : 1) * mag, out = [];
    for (var v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(12));
    out.step = step; return out;
  }
  function tickFmt(step) { var d = Math.max(0, -Math.floor(Math.log10(step) + 1e-9)); return function (v) { return v.toFixed(d); }; }

  // ------------------------------------------------------------ symbols
  function shapePath(shape, x, y, r) {
    var k;
    switch (shape) {
      case "square": k = r * 0.9; return "M" + (x - k) + "," + (y - k) + "h" + 2 * k + "v" + 2 * k + "h" + (-2 * k) + "Z";
      case "diamond": k = r * 1.25; return "M" + x + "," + (y - k) + "L" + (x + k) + "," + y + "L" + x + "," + (y + k) + "L" + (x - k) + "," + y + "Z";
      case "triangle": k = r * 1.3; return "M" + x + "," + (y - k) + "L" + (x + k) + "," + (y + k * 0.75) + "L" + (x - k) + "," + (y + k * 0.75) + "Z";
      case "tri-down": k = r * 1.3; return "M" + x + "," + (y + k) + "L" + (x + k) + "," + (y - k * 0.75) + "L" + (x - k) + "," + (y - k * 0.75) + "Z";
      case "plus": k = r * 1.2; var w = k * 0.4;
        return "M" + (x - w) + "," + (y - k) + "h" + 2 * w + "v" + (k - w) + "h" + (k - w) + "v" + 2 * w + "h" + (w - k) + "v" + (k - w) + "h" + (-2 * w) + "v" + (w - k) + "h" + (w - k) + "v" + (-2 * w) + "h" + (k - w) + "Z";
      case "star": var s = "", i; for (i = 0; i < 10; i++) { var a = Math.PI / 5 * i - Math.PI / 2, rr = i % 2 ? r * 0.45 : r;
        s += (i ? "L" : "M") + (x + rr * Math.cos(a)).toFixed(2) + "," + (y + rr * Math.sin(a)).toFixed(2); } return s + "Z";
      default: return "M" + (x - r) + "," + y + "a" + r + "," + r + " 0 1,0 " + 2 * r + ",0a" + r + "," + r + " 0 1,0 " + (-2 * r) + ",0Z";
    }
  }
  function shapeOf(p) { return p.t === "no_caching" ? "star" : p.t === "seed" ? (SEED_SHAPES[p.f] || "diamond") : "circle"; }
  function legendIcon(shape, fill, stroke, sw) {
    var s = sv("svg", { viewBox: "0 0 16 16" });
    s.appendChild(sv("path", { d: shapePath(shape, 8, 8, shape === "star" ? 7.5 : 5), fill: fill, stroke: stroke, "stroke-width": sw || 1 }));
    return s;
  }

  // ------------------------------------------------------------ schedule -> heatmap
  // Python decodes each schedule into cell codes (0 reuse, 1 compute, 2 step not run, 3 no such
  // component), four per byte; the page only unpacks and draws them.
  function cellsOf(b64) {
    var raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return function (i) { return (bytes[i >> 2] >> (6 - 2 * (i & 3))) & 3; };
  }
  function heatmap(sched, maxW) {
    var L = D.layout, box = el("div", { "class": "heat" });
    if (!L || !sched) { box.appendChild(el("div", { "class": "muted" }, "schedule not available (search space not found)")); return box; }
    var S = sched.steps, B = L.blocks, C = L.comps, cell = cellsOf(sched.cells);
    var FILL = [COLORS.reuse, COLORS.compute, COLORS.skip, COLORS.none];
    var stacked = B > 36, gap = 14, padL = 22, titleH = 15, cw;
    if (stacked) cw = Math.max(2, Math.min(8, Math.floor((maxW - padL) / B)));
    else cw = Math.max(2, Math.min(maxW > 400 ? 20 : 14, Math.floor((maxW - padL - gap * (C - 1)) / (C * B))));
    var ch = Math.max(2, Math.min(cw, stacked ? 5 : 16, Math.floor(260 / S)));
    var pw = B * cw, ph = S * ch;
    var W = stacked ? padL + pw : padL + C * pw + (C - 1) * gap, H = stacked ? C * (titleH + ph + 8) : titleH + ph + 4;
    var dpr = window.devicePixelRatio || 1, cv = el("canvas");
    cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr); cv.style.width = W + "px"; cv.style.height = H + "px";
    var ctx = cv.getContext("2d"); ctx.scale(dpr, dpr);
    ctx.font = "10.5px -apple-system, Segoe UI, Roboto, Arial, sans-serif"; ctx.textBaseline = "alphabetic";
    var bounds = [], acc = 0; L.groups.forEach(function (g, i) { acc += g.blocks; if (i < L.groups.length - 1) bounds.push(acc); });
    for (var c = 0; c < C; c++) {
      var x0 = stacked ? padL : padL + c * (pw + gap), y0 = stacked ? c * (titleH + ph + 8) + titleH : titleH;
      ctx.fillStyle = "#3d4856";
      if (stacked && L.groups.length > 1) {
        // wide panels (FLUX): each group's component named over its own span, so no two names meet
        var start = 0;
        L.groups.forEach(function (g) {
          var span = g.blocks * cw - 6, name = g.components[c] || "\u2014", full = g.short + ": " + name;
          var text = ctx.measureText(full).width <= span ? full : name;
          if (span > 8) ctx.fillText(text, x0 + start * cw + (start ? 4 : 0), y0 - 4, span);
          start += g.blocks;
        });
      } else {
        var names = L.groups.map(function (g) { return g.components[c] || "\u2014"; }).join(" | ");
        ctx.fillText(names, x0, y0 - 4, stacked ? pw : pw + gap - 2);
      }
      for (var s = 0; s < S; s++) for (var b = 0; b < B; b++) {
        ctx.fillStyle = FILL[cell((s * B + b) * C + c)];
        ctx.fillRect(x0 + b * cw, y0 + s * ch, cw, ch);
      }
      ctx.strokeStyle = "#9aa5b1"; ctx.lineWidth = 0.75; ctx.strokeRect(x0 + 0.5, y0 + 0.5, pw - 1, ph - 1);
      ctx.strokeStyle = COLORS.front; ctx.lineWidth = 1.5;
      bounds.forEach(function (bd) { ctx.beginPath(); ctx.moveTo(x0 + bd * cw, y0 - 1); ctx.lineTo(x0 + bd * cw, y0 + ph + 1); ctx.stroke(); });
      if (c === 0 || stacked) {
        ctx.save(); ctx.fillStyle = "#6b7785"; ctx.translate(padL - 8, y0 + ph / 2); ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "center"; ctx.fillText("step", 0, 0); ctx.restore();
      }
    }
    box.appendChild(cv);
    var lg = el("div", { "class": "heat-legend" });
    [["compute", COLORS.compute], ["reuse", COLORS.reuse]].concat(sched.run < S ? [["step not run", COLORS.skip]] : [])
      .forEach(function (it) { var sp = el("span"); var w = el("span", { "class": "sw" }); w.style.background = it[1]; sp.appendChild(w); sp.appendChild(document.createTextNode(it[0])); lg.appendChild(sp); });
    lg.appendChild(el("span", null, (100 * sched.computed).toFixed(1) + "% of components computed" + (sched.run < S ? " · " + sched.run + "/" + S + " steps run" : "") +
      " · rows: steps, columns: blocks" + (L.groups.length > 1 ? " (" + L.groups.map(function (g) { return g.short + " " + g.blocks; }).join(" | ") + ")" : "")));
    box.appendChild(lg);
    return box;
  }

  // ------------------------------------------------------------ facts table
  function facts(p, cls) {
    var t = el("table", { "class": cls }), tb = el("tbody");
    function row(a, b) { var tr = el("tr"); tr.appendChild(el(cls === "facts" ? "th" : "td", null, a)); tr.appendChild(el("td", null, b)); tb.appendChild(tr); }
    row(D.run.metric, fmtQ(p.q));
    row(D.run.cost === "latency" ? "relative latency" : "MACs", D.run.cost === "latency" ? p.c.toFixed(3) : fmtPct(p.c));
    row("est. speedup", fmtX(p.sp));
    if (D.run.cost === "latency" && p.m !== null) row("MACs", fmtPct(p.m));
    row("label", labelOf(p) + " (" + kindName(p) + ")");
    row("generation", p.g);
    if (p.k in frontRank) row("frontier rank", frontRank[p.k] + " of " + D.frontier.length);
    if (cls === "facts") {
      Object.keys(p.x || {}).forEach(function (k) { if (p.x[k] !== null) row(k, fmtQ(p.x[k])); });
      if (typeof p.ms === "number") row("ms / image", p.ms.toFixed(1));
      if (D.files[p.k]) row("schedule file", "frontier/" + D.files[p.k]);
    }
    row("key", p.k);
    t.appendChild(tb); return t;
  }

  // ------------------------------------------------------------ tooltip
  var tip = document.getElementById("tip");
  function showTip(p, ev) {
    tip.textContent = "";
    var h = el("h3", null, labelOf(p));
    if (p.k in frontRank) h.appendChild(el("span", { "class": "badge front" }, "frontier #" + frontRank[p.k]));
    else h.appendChild(el("span", { "class": "badge" }, kindName(p)));
    tip.appendChild(h);
    tip.appendChild(facts(p, "tipfacts"));
    tip.appendChild(heatmap(p.s, 330));
    tip.hidden = false;
    moveTip(ev);
  }
  function moveTip(ev) {
    var w = tip.offsetWidth, h = tip.offsetHeight, x = ev.clientX + 16, y = ev.clientY + 16;
    if (x + w > window.innerWidth - 8) x = ev.clientX - w - 16;
    if (y + h > window.innerHeight - 8) y = Math.max(8, window.innerHeight - h - 8);
    tip.style.left = Math.max(8, x) + "px"; tip.style.top = y + "px";
  }
  function hideTip() { tip.hidden = true; }

  // ------------------------------------------------------------ scatter
  function drawScatter() {
    var W = 780, H = 500, m = { l: 66, r: 18, t: 46, b: 52 };
    var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, id: "frontier-svg", role: "img", "aria-label": "quality versus cost of every candidate" });
    var pts = D.points;
    var cmax = Math.max.apply(null, [1].concat(pts.map(function (p) { return p.c; })));
    var qs = pts.map(function (p) { return p.q; });
    var qlo = qs.length ? Math.min.apply(null, qs) : 0, qhi = qs.length ? Math.max.apply(null, qs) : 1;
    var qpad = (qhi - qlo) * 0.07 || Math.max(Math.abs(qhi) * 0.05, 0.01);
    var x0 = 0, x1 = cmax * 1.05, y0 = qlo - qpad, y1 = qhi + qpad;
    function X(v) { return m.l + (v - x0) / (x1 - x0) * (W - m.l - m.r); }
    function Y(v) { return H - m.b - (v - y0) / (y1 - y0) * (H - m.t - m.b); }
    var g = sv("g");
    var xt = ticks(x0, x1, 8), yt = ticks(y0, y1, 7), xf = tickFmt(xt.step || 0.1), yf = tickFmt(yt.step || 0.1);
    xt.forEach(function (v) { g.appendChild(sv("line", { "class": "gridline", x1: X(v), x2: X(v), y1: m.t, y2: H - m.b }));
      g.appendChild(sv("text", { "class": "tick", x: X(v), y: H - m.b + 16, "text-anchor": "middle" }, D.run.cost === "macs" ? Math.round(v * 100) + "%" : xf(v))); });
    yt.forEach(function (v) { g.appendChild(sv("line", { "class": "gridline", x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }));
      g.appendChild(sv("text", { "class": "tick", x: m.l - 8, y: Y(v) + 4, "text-anchor": "end" }, yf(v))); });
    var lastX = -1e9;
    [1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 20].forEach(function (s) { var v = 1 / s; if (v < x0 || v > x1 || Math.abs(X(v) - lastX) < 30) return;
      lastX = X(v);
      g.appendChild(sv("line", { "class": "axis", x1: X(v), x2: X(v), y1: m.t, y2: m.t - 4 }));
      g.appendChild(sv("text", { "class": "tick", x: X(v), y: m.t - 8, "text-anchor": "middle" }, s + "×")); });
    g.appendChild(sv("line", { "class": "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    g.appendChild(sv("line", { "class": "axis", x1: m.l, x2: W - m.r, y1: m.t, y2: m.t }));
    g.appendChild(sv("line", { "class": "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    g.appendChild(sv("text", { "class": "axis-label", x: (m.l + W - m.r) / 2, y: H - 12, "text-anchor": "middle" },
      "cost: " + D.run.costLabel + " — lower is better"));
    g.appendChild(sv("text", { "class": "axis-label", x: (m.l + W - m.r) / 2, y: 14, "text-anchor": "middle" }, "estimated speedup (1 / cost)"));
    g.appendChild(sv("text", { "class": "axis-label", transform: "translate(18," + (m.t + H - m.b) / 2 + ") rotate(-90)", "text-anchor": "middle" },
      "quality: " + D.run.qualityLabel));
    svg.appendChild(g);
    if (!pts.length) svg.appendChild(sv("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "class": "axis-label" }, "no feasible candidates yet"));
    if (D.frontier.length > 1) {
      var d = D.frontier.map(function (k, i) { return (i ? "L" : "M") + X(byKey[k].c).toFixed(1) + "," + Y(byKey[k].q).toFixed(1); }).join("");
      svg.appendChild(sv("path", { "class": "front-line", d: d }));
    }
    var layer = sv("g", { id: "points" });
    var order = pts.slice().sort(function (a, b) {
      function z(p) { return p.t === "no_caching" ? 3 : (p.k in frontRank) ? 2 : p.t === "seed" ? 1 : 0; }
      return z(a) - z(b) || a.g - b.g;
    });
    order.forEach(function (p) {
      var front = p.k in frontRank, shape = shapeOf(p), r = p.t === "no_caching" ? 11 : front ? 6.5 : p.t === "seed" ? 5.5 : 4.2;
      var cls = "pt" + (front ? " front" : "") + (p.t === "seed" ? " seed" : "") + (p.t === "no_caching" ? " base" : "");
      // a stopped race is hollow, ringed in its generation's colour (inline: the .pt rule sets a white stroke)
      var look = p.u ? { fill: "none", style: "stroke:" + genColor(p.g) + ";stroke-width:1.4px" } : { fill: p.t === "no_caching" ? "#ffb703" : genColor(p.g) };
      var e = sv("path", Object.assign({ "class": cls + (p.u ? " stopped" : ""), d: shapePath(shape, X(p.c), Y(p.q), r), "data-key": p.k }, look));
      e.addEventListener("mouseenter", function (ev) { showTip(p, ev); highlightRow(p.k, true); });
      e.addEventListener("mousemove", moveTip);
      e.addEventListener("mouseleave", function () { hideTip(); highlightRow(p.k, false); });
      e.addEventListener("click", function () { select(p.k); });
      elems[p.k] = e; layer.appendChild(e);
    });
    svg.appendChild(layer);
    var base = pts.filter(function (p) { return p.t === "no_caching"; })[0];
    if (base) svg.appendChild(sv("text", { "class": "tick", x: X(base.c), y: Y(base.q) + (D.run.higher ? 26 : -16), "text-anchor": "middle" }, "no caching"));
    document.getElementById("plot").appendChild(svg);
  }

  function drawLegend() {
    var lg = document.getElementById("legend");
    function item(icon, text) { var s = el("span", { "class": "item" }); s.appendChild(icon); s.appendChild(document.createTextNode(text)); lg.appendChild(s); }
    var cb = el("span", { "class": "cbar" }), bar = el("span", { "class": "bar" });
    bar.style.background = "linear-gradient(90deg," + VIRIDIS.join(",") + ")";
    cb.appendChild(document.createTextNode("generation 0")); cb.appendChild(bar); cb.appendChild(document.createTextNode(String(maxGen)));
    lg.appendChild(cb);
    item(legendIcon("circle", "#8a94a3", "#fff"), "searched");
    var stopped = D.points.filter(function (p) { return p.u; }).length;
    if (stopped) item(legendIcon("circle", "none", "#8a94a3", 1.4), "stopped by racing (" + stopped + "): estimate on part of the images");
    var fams = {}; D.points.forEach(function (p) { if (p.t === "seed") fams[p.f] = (fams[p.f] || 0) + 1; });
    Object.keys(fams).sort().forEach(function (f) { item(legendIcon(SEED_SHAPES[f] || "diamond", "#fff", "#111"), "seed: " + f + " (" + fams[f] + ")"); });
    item(legendIcon("circle", "#fff", COLORS.front, 2), "Pareto frontier (" + D.frontier.length + ")");
    if (D.points.some(function (p) { return p.t === "no_caching"; })) item(legendIcon("star", "#ffb703", "#111"), "no caching");
  }

  // ------------------------------------------------------------ frontier table
  function drawTable() {
    var t = document.getElementById("front-table"), th = el("thead"), tr = el("tr");
    var cols = [["#", "num"], [D.run.metric, "num"], [D.run.cost === "latency" ? "latency" : "MACs", "num"], ["est. speedup", "num"],
      ["label", ""], ["gen", "num"], ["schedule file", ""], ["key", ""]];
    cols.forEach(function (c) { tr.appendChild(el("th", { "class": c[1] }, c[0])); });
    th.appendChild(tr); t.appendChild(th);
    var tb = el("tbody");
    D.frontier.forEach(function (k, i) {
      var p = byKey[k], r = el("tr", { "data-key": k, tabindex: "0", "aria-label": "select frontier schedule #" + i });
      [[i, "num"], [fmtQ(p.q), "num"], [D.run.cost === "latency" ? p.c.toFixed(3) : fmtPct(p.c), "num"], [fmtX(p.sp), "num"],
        [labelOf(p), ""], [p.g, "num"], [D.files[k] || "(not written yet)", ""], [k, ""]].forEach(function (c) { r.appendChild(el("td", { "class": c[1] }, c[0])); });
      function pick() { select(k); document.getElementById("plot-card").scrollIntoView({ behavior: "smooth" }); }
      r.addEventListener("click", pick);
      r.addEventListener("keydown", function (ev) {  // a focused row: Enter or Space selects it as a click does
        if (ev.target !== r || ev.altKey || ev.ctrlKey || ev.metaKey) return;
        if (ev.key === "Enter" || ev.key === " " || ev.key === "Spacebar") { ev.preventDefault(); pick(); }
      });
      r.addEventListener("mouseenter", function () { if (elems[k]) elems[k].classList.add("hover"); });
      r.addEventListener("mouseleave", function () { if (elems[k]) elems[k].classList.remove("hover"); });
      tb.appendChild(r);
    });
    if (!D.frontier.length) { var r0 = el("tr"), td = el("td", { colspan: "8", "class": "muted" }, "no frontier yet"); r0.appendChild(td); tb.appendChild(r0); }
    t.appendChild(tb);
  }
  function highlightRow(k, on) {
    var r = document.querySelector('#front-table tr[data-key="' + k + '"]');
    if (r) r.style.background = on ? "#f5f8fc" : "";
  }

  // ------------------------------------------------------------ selection
  function select(k) {
    var p = byKey[k]; if (!p) return;
    if (selected && elems[selected]) elems[selected].classList.remove("selected");
    selected = k; if (elems[k]) { elems[k].classList.add("selected"); elems[k].parentNode.appendChild(elems[k]); }
    document.querySelectorAll("#front-table tbody tr").forEach(function (r) { r.classList.toggle("selected", r.getAttribute("data-key") === k); });
    var body = document.getElementById("details-body"); body.textContent = "";
    var h = el("h3", null, labelOf(p));
    h.appendChild(el("span", { "class": "badge" + (k in frontRank ? " front" : "") }, k in frontRank ? "frontier #" + frontRank[k] : kindName(p)));
    body.appendChild(h); body.appendChild(facts(p, "facts")); body.appendChild(usage(p)); body.appendChild(heatmap(p.s, 420));
    drawSamples(p);
  }
  // the copy-ready command line and Python call of a frontier schedule file (Python writes both)
  function copyText(text, btn) {
    function done(ok) { btn.textContent = ok ? "copied" : "select + copy"; setTimeout(function () { btn.textContent = "copy"; }, 1500); }
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(fallbackCopy(text)); });
    } else done(fallbackCopy(text));
  }
  function fallbackCopy(text) {
    var ta = el("textarea"); ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select(); var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(ta); return ok;
  }
  function codeBlock(title, text, cls) {
    var box = el("div", { "class": "cmd " + cls }), head = el("div", { "class": "cmd-head" });
    head.appendChild(el("span", null, title));
    var btn = el("button", { type: "button", "class": "copy", "aria-label": "copy " + title }, "copy");
    btn.addEventListener("click", function () { copyText(text, btn); });
    head.appendChild(btn); box.appendChild(head);
    var pre = el("pre"); pre.appendChild(el("code", null, text)); box.appendChild(pre);
    return box;
  }
  function usage(p) {
    var box = el("div", { "class": "usage", id: "usage" }), c = D.cmds[p.k];
    if (!c) {
      box.appendChild(el("p", { "class": "muted" }, p.k in frontRank ?
        "Its schedule file is written to frontier/ when the search finishes." :
        "Not on the frontier: only frontier schedules are saved as files."));
      return box;
    }
    box.appendChild(codeBlock("generate with it", c.shell, "shell"));
    box.appendChild(codeBlock("apply it in Python", c.python, "python"));
    if (c.path.charAt(0) !== "/" && !/^[A-Za-z]:[\\/]/.test(c.path))
      box.appendChild(el("div", { "class": "hint" }, "paths are relative to the folder this report is in"));
    return box;
  }
  function drawSamples(p) {
    var sec = document.getElementById("samples"), body = document.getElementById("samples-body");
    body.textContent = ""; sec.hidden = false;
    document.getElementById("samples-title").textContent = "Samples — " + labelOf(p) + (p.k in frontRank ? " (frontier #" + frontRank[p.k] + ")" : "");
    var S = D.samples, imgs = S && S.schedules ? S.schedules[p.k] : null;
    document.getElementById("samples-hint").textContent = S ? "no caching vs this schedule, same seed" + (S.seed !== null && S.seed !== undefined ? " (" + S.seed + ")" : "") : "";
    if (!S || !imgs) {
      var n = el("div", { "class": "note" });
      n.appendChild(document.createTextNode(S ? "No sample images were rendered for this schedule (samples cover " +
        Object.keys(S.schedules || {}).length + " schedules: the frontier when the report was written). To render them:" :
        "This report has no sample images. Render the first prompts without caching and with every frontier schedule, then rebuild the report:"));
      D.howto.forEach(function (c) { n.appendChild(el("code", null, c)); });
      body.appendChild(n); return;
    }
    var grid = el("div", { "class": "samples-grid" });
    S.prompts.forEach(function (prompt, i) {
      var card = el("div", { "class": "sample" });
      card.appendChild(el("div", { "class": "prompt" }, "“" + prompt + "”"));
      var pair = el("div", { "class": "pair" });
      [["no caching", S.uncached[i]], [fmtX(p.sp) + " est. speedup · " + labelOf(p), imgs[i]]].forEach(function (it) {
        var f = el("figure"), im = el("img", { alt: it[0] + ": " + prompt });
        im.addEventListener("load", function () { if (im.naturalWidth < 160) im.classList.add("pixel"); });
        if (it[1]) im.src = it[1];
        f.appendChild(im); f.appendChild(el("figcaption", null, it[0])); pair.appendChild(f);
      });
      card.appendChild(pair); grid.appendChild(card);
    });
    body.appendChild(grid);
  }

  // ------------------------------------------------------------ hypervolume
  function drawHV() {
    var W = 620, H = 300, m = { l: 66, r: 20, t: 16, b: 44 }, hv = D.hv, box = document.getElementById("hv");
    if (!hv.length) { box.appendChild(el("p", { "class": "muted" }, "no generation recorded yet")); return; }
    var svg = sv("svg", { viewBox: "0 0 " + W + " " + H, id: "hv-svg" });
    var g0 = hv[0][0], g1 = Math.max(hv[hv.length - 1][0], g0 + 1), vs = hv.map(function (r) { return r[1]; });
    var lo = Math.min.apply(null, vs), hi = Math.max.apply(null, vs), pad = (hi - lo) * 0.15 || Math.max(Math.abs(hi) * 0.05, 1e-3);
    lo -= pad; hi += pad;
    function X(v) { return m.l + (v - g0) / (g1 - g0) * (W - m.l - m.r); }
    function Y(v) { return H - m.b - (v - lo) / (hi - lo) * (H - m.t - m.b); }
    var xt = ticks(g0, g1, Math.min(10, g1 - g0)).filter(function (v) { return Math.abs(v - Math.round(v)) < 1e-9; }), yt = ticks(lo, hi, 5), yf = tickFmt(yt.step || 0.1);
    xt.forEach(function (v) { svg.appendChild(sv("line", { "class": "gridline", x1: X(v), x2: X(v), y1: m.t, y2: H - m.b }));
      svg.appendChild(sv("text", { "class": "tick", x: X(v), y: H - m.b + 16, "text-anchor": "middle" }, v)); });
    yt.forEach(function (v) { svg.appendChild(sv("line", { "class": "gridline", x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }));
      svg.appendChild(sv("text", { "class": "tick", x: m.l - 8, y: Y(v) + 4, "text-anchor": "end" }, yf(v))); });
    svg.appendChild(sv("line", { "class": "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    svg.appendChild(sv("line", { "class": "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    svg.appendChild(sv("path", { d: hv.map(function (r, i) { return (i ? "L" : "M") + X(r[0]).toFixed(1) + "," + Y(r[1]).toFixed(1); }).join(""),
      fill: "none", stroke: COLORS.compute, "stroke-width": 2.2 }));
    hv.forEach(function (r) { var c = sv("circle", { cx: X(r[0]), cy: Y(r[1]), r: 4.5, fill: "#fff", stroke: COLORS.compute, "stroke-width": 2 });
      c.appendChild(sv("title", null, "generation " + r[0] + ": hypervolume " + r[1].toFixed(5) + ", " + r[2] + " new evaluations")); svg.appendChild(c); });
    svg.appendChild(sv("text", { "class": "axis-label", x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle" }, "generation"));
    svg.appendChild(sv("text", { "class": "axis-label", transform: "translate(16," + (m.t + H - m.b) / 2 + ") rotate(-90)", "text-anchor": "middle" }, "hypervolume"));
    box.appendChild(svg);
  }

  drawScatter(); drawLegend(); drawTable(); drawHV();
})();
