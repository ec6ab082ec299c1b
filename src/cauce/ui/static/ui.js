// cauce ui: the project's own script (charts, live tables, log tails). Reading works without it.
"use strict";
(function () {
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2456b8", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#5d4037", "#ad1457"];

  function el(tag, attrs, text) {
    var node = tag.indexOf("svg:") === 0 ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
    for (var k in attrs || {}) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs, text) { return el("svg:" + tag, attrs, text); }
  function fmt(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v !== "number") return String(v);
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(2) : String(Math.round(v * 1e4) / 1e4);
  }
  function getJSON(url, done) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.onload = function () { if (xhr.status === 200) done(JSON.parse(xhr.responseText)); };
    xhr.send();
  }
  function data(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  // A line chart: series = [{name, points: [[x, y], ...]}]; one circle per point.
  function chart(figure, series, opts) {
    opts = opts || {};
    series = series.map(function (s) {  // a NaN or infinite value comes as null: not drawn
      return { name: s.name, color: s.color, points: s.points.filter(function (p) { return p[0] !== null && p[1] !== null; }) };
    });
    var old = figure.querySelector("svg"); if (old) old.remove();
    var W = opts.width || (figure.classList.contains("wide") ? 840 : 400), H = opts.height || 220;
    var L = 52, R = 10, T = 10, B = 34;
    var xs = [], ys = [];
    series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "plot" });
    if (!xs.length) { root.appendChild(svg("text", { x: L, y: H / 2 }, "no data")); figure.appendChild(root); return root; }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x0 === x1) { x0 -= 1; x1 += 1; } if (y0 === y1) { y0 -= 1; y1 += 1; }
    function sx(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function sy(y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); }
    root.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, "class": "axis" }));
    root.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, "class": "axis" }));
    [[x0, "start"], [x1, "end"]].forEach(function (t) { root.appendChild(svg("text", { x: sx(t[0]), y: H - B + 14, "text-anchor": t[1] }, fmt(t[0]))); });
    [y0, y1].forEach(function (y) { root.appendChild(svg("text", { x: L - 4, y: sy(y) + 4, "text-anchor": "end" }, fmt(y))); });
    root.appendChild(svg("text", { x: (L + W) / 2, y: H - 4, "text-anchor": "middle" }, opts.xlabel || "step"));
    var dots = xs.length <= (opts.maxDots || 2000);
    series.forEach(function (s, i) {
      var color = s.color || COLORS[i % COLORS.length];
      var g = svg("g", { "class": "series", "data-name": s.name });
      var pts = s.points.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); }).join(" ");
      g.appendChild(svg("polyline", { points: pts, "class": "line", stroke: color }));
      if (dots) s.points.forEach(function (p) {
        var c = svg("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 2.5, fill: color, "class": "pt" });
        c.appendChild(svg("title", {}, s.name + ": " + fmt(p[0]) + ", " + fmt(p[1])));
        g.appendChild(c);
      });
      root.appendChild(g);
    });
    if (series.length > 1 && series.length <= 8) series.forEach(function (s, i) {
      root.appendChild(svg("text", { x: W - R - 4, y: T + 12 + 13 * i, "text-anchor": "end", fill: s.color || COLORS[i % COLORS.length] }, s.name));
    });
    figure.appendChild(root);
    return root;
  }

  // Parallel coordinates: one axis per parameter and one for the value.
  function parallel(figure, d, direction) {
    var W = 840, H = 260, T = 24, B = 20, names = d.params.concat(["value"]);
    var root = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "plot" });
    var scales = names.map(function (n) {
      var vals = d.trials.map(function (t) { return n === "value" ? t.value : t.params[n]; });
      var nums = vals.every(function (v) { return typeof v === "number"; });
      if (nums) {
        var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
        if (lo === hi) { lo -= 1; hi += 1; }
        return { f: function (v) { return (v - lo) / (hi - lo); }, lo: lo, hi: hi };
      }
      var cats = Array.from(new Set(vals.map(String)));
      return { f: function (v) { return cats.length > 1 ? cats.indexOf(String(v)) / (cats.length - 1) : 0.5; }, lo: cats[0], hi: cats[cats.length - 1] };
    });
    var step = (W - 80) / Math.max(1, names.length - 1);
    function ax(i) { return 40 + i * step; }
    function ay(f) { return H - B - f * (H - T - B); }
    var vs = scales[names.length - 1];
    d.trials.forEach(function (t) {
      var good = vs.f(t.value); if (direction === "max") good = 1 - good;
      var pts = names.map(function (n, i) { return ax(i).toFixed(1) + "," + ay(scales[i].f(n === "value" ? t.value : t.params[n])).toFixed(1); });
      var shade = Math.round(40 + 180 * good);
      root.appendChild(svg("polyline", { points: pts.join(" "), "class": "line", stroke: "rgb(" + shade + "," + shade + ",230)", "stroke-width": 1 }));
    });
    names.forEach(function (n, i) {
      root.appendChild(svg("line", { x1: ax(i), y1: T, x2: ax(i), y2: H - B, "class": "axis" }));
      root.appendChild(svg("text", { x: ax(i), y: T - 8, "text-anchor": "middle" }, n));
      root.appendChild(svg("text", { x: ax(i) + 3, y: H - B + 12 }, fmt(scales[i].lo)));
      root.appendChild(svg("text", { x: ax(i) + 3, y: T + 10 }, fmt(scales[i].hi)));
    });
    figure.appendChild(root);
  }

  function badge(status) { return el("span", { "class": "st st-" + status, "data-status": status }, status); }
  function every(ms, fn) { var id = setInterval(function () { if (fn() === false) clearInterval(id); }, ms); }

  function jobsPage() {
    var body = document.getElementById("jobs"); if (!body) return;
    every(2000, function () {
      getJSON("/api/jobs" + location.search, function (d) {
        document.getElementById("count").textContent = d.total + " jobs";
        var rows = d.jobs.map(function (j) {
          var tr = el("tr"), a = el("a", { href: "/jobs/" + encodeURIComponent(j.id), title: j.id }, j.name);
          var cells = [a, badge(j.status), j.framework, j.cluster, new Date(j.started * 1000).toLocaleString("sv-SE"),
            j.duration === null ? "-" : (j.duration < 120 ? j.duration.toFixed(1) + " s" : (j.duration / 60).toFixed(1) + " min"), j.attempts, j.restarts];
          cells.forEach(function (c) { var td = el("td"); if (typeof c === "object") td.appendChild(c); else td.textContent = String(c); tr.appendChild(td); });
          return tr;
        });
        body.replaceChildren.apply(body, rows);
      });
    });
  }

  function jobPage() {
    var metrics = data("metrics-data") || {};
    document.querySelectorAll("figure[data-metric]").forEach(function (f) { chart(f, metrics[f.getAttribute("data-metric")] || []); });
    var holder = document.getElementById("job-status");
    var active = holder && ["pending", "waiting", "running", "restarting"].indexOf(holder.textContent.trim()) >= 0;
    if (!active) return;
    var id = decodeURIComponent(location.pathname.split("/")[2]);
    every(1500, function () {
      getJSON("/api/jobs/" + encodeURIComponent(id), function (d) {
        holder.replaceChildren(badge(d.status));
        if (!d.active) {
          active = false;
          if (d.root_cause && !document.getElementById("root-cause")) {
            var box = el("div", { "class": "cause", id: "root-cause" });
            box.appendChild(el("h2", {}, "Root cause")); box.appendChild(el("pre", {}, d.root_cause));
            document.querySelector("main h1").after(box);
          }
        }
      });
      return active;
    });
    document.querySelectorAll("pre.logtail").forEach(function (pre) {
      every(1500, function () {
        getJSON(pre.getAttribute("data-src") + "?offset=" + pre.getAttribute("data-offset"), function (d) {
          if (d.text) { pre.appendChild(document.createTextNode(d.text)); pre.scrollTop = pre.scrollHeight; }
          pre.setAttribute("data-offset", d.offset);
        });
        return active;
      });
    });
  }

  function studyPage() {
    var d = data("study-data"); if (!d) return;
    chart(document.getElementById("best-chart"), [
      { name: "value", points: d.best.map(function (r) { return [r[0], r[1]]; }), color: "#9fb4dc" },
      { name: "best", points: d.best.map(function (r) { return [r[0], r[2]]; }), color: "#c62828" }
    ], { xlabel: "trial" });
    getJSON(d.curves, function (s) { chart(document.getElementById("curves-chart"), s, { maxDots: 400 }); });
    getJSON(d.parallel, function (p) { parallel(document.getElementById("parallel-chart"), p, d.direction); });
    var button = document.getElementById("compare"), boxes = document.querySelectorAll("input.cmp");
    function picked() { return Array.prototype.filter.call(boxes, function (b) { return b.checked; }).map(function (b) { return b.value; }); }
    boxes.forEach(function (b) { b.addEventListener("change", function () { var n = picked().length; button.disabled = n < 2 || n > 4; }); });
    button.addEventListener("click", function () {
      getJSON(d.curves + "?trials=" + picked().join(","), function (s) {
        var fig = document.getElementById("compare-chart"); fig.hidden = false; chart(fig, s);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var which = document.body.getAttribute("data-page");
    if (which === "jobs") jobsPage(); else if (which === "job") jobPage(); else if (which === "study") studyPage();
  });
})();
