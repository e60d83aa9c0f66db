/* daskmeta report: an offline slice viewer of a z map and a sortable table (no libraries). */
(function () {
  "use strict";
  var PX = 3; // screen pixels per voxel

  function decode(text, Type) {
    var bytes = Uint8Array.from(atob(text), function (c) { return c.charCodeAt(0); });
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer().then(function (buffer) { return new Type(buffer); });
  }

  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t));
    for (var n = 1; n < stops.length; n++) {
      if (t <= stops[n][0]) {
        var a = stops[n - 1], b = stops[n], f = (t - a[0]) / (b[0] - a[0] || 1);
        return [0, 1, 2].map(function (c) { return Math.round(a[1][c] + f * (b[1][c] - a[1][c])); });
      }
    }
    return stops[stops.length - 1][1];
  }
  var HOT = [[0, [120, 0, 0]], [0.45, [230, 40, 0]], [0.75, [255, 170, 0]], [1, [255, 255, 150]]];
  var COLD = [[0, [0, 0, 130]], [0.45, [0, 60, 240]], [0.75, [0, 180, 255]], [1, [160, 255, 255]]];
  function colour(z, vmax) { return z > 0 ? ramp(HOT, z / vmax) : ramp(COLD, -z / vmax); }

  function Viewer(data, volumes) {
    this.d = data; this.bg = volumes[0]; this.z = volumes[1]; this.labels = volumes[2];
    var s = data.shape; this.nx = s[0]; this.ny = s[1]; this.nz = s[2];
    this.mode = "thresholded"; this.floor = 0;
    this.cursor = [Math.floor(this.nx / 2), Math.floor(this.ny / 2), Math.floor(this.nz / 2)];
    this.views = {
      sagittal: { canvas: document.getElementById("view-sagittal"), w: this.ny, h: this.nz },
      coronal: { canvas: document.getElementById("view-coronal"), w: this.nx, h: this.nz },
      axial: { canvas: document.getElementById("view-axial"), w: this.nx, h: this.ny }
    };
    var self = this;
    Object.keys(this.views).forEach(function (name) {
      var v = self.views[name];
      v.canvas.width = v.w * PX; v.canvas.height = v.h * PX;
      v.buffer = document.createElement("canvas"); v.buffer.width = v.w; v.buffer.height = v.h;
      v.canvas.addEventListener("click", function (event) {
        var box = v.canvas.getBoundingClientRect();
        var col = Math.floor((event.clientX - box.left) / box.width * v.w);
        var row = Math.floor((event.clientY - box.top) / box.height * v.h);
        self.click(name, col, row);
      });
    });
  }
  Viewer.prototype.index = function (i, j, k) { return (i * this.ny + j) * this.nz + k; };
  Viewer.prototype.toMM = function (ijk) {
    var d = this.d; return [0, 1, 2].map(function (a) { return d.origin[a] + d.step[a] * ijk[a]; });
  };
  Viewer.prototype.toVoxel = function (xyz) {
    var d = this.d, n = [this.nx, this.ny, this.nz];
    return [0, 1, 2].map(function (a) {
      return Math.max(0, Math.min(n[a] - 1, Math.round((xyz[a] - d.origin[a]) / d.step[a])));
    });
  };
  // screen (col, row) of each view -> voxel (i, j, k); left hemisphere on the left (x < 0)
  Viewer.prototype.voxelOf = function (name, col, row) {
    var c = this.cursor.slice();
    if (name === "sagittal") { c[1] = col; c[2] = this.nz - 1 - row; }
    if (name === "coronal") { c[0] = this.nx - 1 - col; c[2] = this.nz - 1 - row; }
    if (name === "axial") { c[0] = this.nx - 1 - col; c[1] = this.ny - 1 - row; }
    return c;
  };
  Viewer.prototype.shown = function (n) {
    var raw = this.z[n];
    if (raw === this.d.outside || raw === 0) return null;
    var z = raw / this.d.scale;
    if (this.mode === "thresholded" && this.labels[n] === 0) return null;
    if (Math.abs(z) < this.floor) return null;
    return z;
  };
  Viewer.prototype.drawView = function (name) {
    var v = this.views[name], ctx = v.buffer.getContext("2d");
    var image = ctx.createImageData(v.w, v.h), px = image.data;
    for (var row = 0; row < v.h; row++) {
      for (var col = 0; col < v.w; col++) {
        var c = this.voxelOf(name, col, row), n = this.index(c[0], c[1], c[2]);
        var z = this.shown(n), o = (row * v.w + col) * 4, rgb;
        if (z === null) { var g = this.bg[n]; rgb = [g, g, g]; } else { rgb = colour(z, this.d.vmax); }
        px[o] = rgb[0]; px[o + 1] = rgb[1]; px[o + 2] = rgb[2]; px[o + 3] = 255;
      }
    }
    ctx.putImageData(image, 0, 0);
    var out = v.canvas.getContext("2d");
    out.imageSmoothingEnabled = false;
    out.drawImage(v.buffer, 0, 0, v.w * PX, v.h * PX);
    var cur = this.cursor, x, y;
    if (name === "sagittal") { x = cur[1]; y = this.nz - 1 - cur[2]; }
    if (name === "coronal") { x = this.nx - 1 - cur[0]; y = this.nz - 1 - cur[2]; }
    if (name === "axial") { x = this.nx - 1 - cur[0]; y = this.ny - 1 - cur[1]; }
    out.strokeStyle = "rgba(0, 255, 0, 0.8)"; out.lineWidth = 1;
    out.beginPath();
    out.moveTo((x + 0.5) * PX, 0); out.lineTo((x + 0.5) * PX, v.h * PX);
    out.moveTo(0, (y + 0.5) * PX); out.lineTo(v.w * PX, (y + 0.5) * PX);
    out.stroke();
    out.fillStyle = "white"; out.font = "13px sans-serif";
    if (name === "sagittal") { out.fillText("P", 4, 16); out.fillText("A", v.w * PX - 14, 16); }
    else { out.fillText("L", 4, 16); out.fillText("R", v.w * PX - 14, 16); }
  };
  Viewer.prototype.drawColorbar = function () {
    var canvas = document.getElementById("view-colorbar"), ctx = canvas.getContext("2d");
    var top = 10, height = canvas.height - 20, vmax = this.d.vmax;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (var r = 0; r < height; r++) {
      var z = vmax - 2 * vmax * r / (height - 1), rgb = Math.abs(z) < 1e-9 ? [128, 128, 128] : colour(z, vmax);
      ctx.fillStyle = "rgb(" + rgb.join(",") + ")"; ctx.fillRect(0, top + r, 16, 1);
    }
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif";
    ctx.fillText(vmax.toFixed(2), 20, top + 8); ctx.fillText("0", 20, top + height / 2 + 4);
    ctx.fillText((-vmax).toFixed(2), 20, top + height);
  };
  Viewer.prototype.draw = function () {
    var self = this;
    Object.keys(this.views).forEach(function (name) { self.drawView(name); });
    this.drawColorbar();
    this.describe();
  };
  Viewer.prototype.describe = function () {
    var n = this.index(this.cursor[0], this.cursor[1], this.cursor[2]), mm = this.toMM(this.cursor);
    var raw = this.z[n], label = this.labels[n];
    var text = "MNI (" + mm.map(function (v) { return v.toFixed(0); }).join(", ") + ")";
    text += raw === this.d.outside ? ": outside the mask" : ": SDM-Z = " + (raw / this.d.scale).toFixed(2);
    var info = document.getElementById("viewer-info");
    info.textContent = text;
    highlight(Math.abs(label));
    if (label !== 0 && !document.getElementById("cluster-" + Math.abs(label))) {
      info.appendChild(document.createTextNode(" \u2014 in cluster " + Math.abs(label)));
    } else if (label !== 0) {
      var link = document.createElement("a");
      link.href = "#cluster-" + Math.abs(label);
      info.appendChild(document.createTextNode(" \u2014 "));
      link.textContent = "in cluster " + Math.abs(label) + (label > 0 ? " (positive)" : " (negative)") +
        ": its plots and tables";
      info.appendChild(link);
    }
  };
  Viewer.prototype.click = function (name, col, row) { this.cursor = this.voxelOf(name, col, row); this.draw(); };
  Viewer.prototype.goto = function (xyz) { this.cursor = this.toVoxel(xyz); this.draw(); };

  function highlight(cluster) {
    document.querySelectorAll("tr[data-cluster]").forEach(function (tr) {
      tr.classList.toggle("current", cluster > 0 && tr.getAttribute("data-cluster") === String(cluster));
    });
  }

  function sortable(table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, column) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        function key(row) {
          var cell = row.cells[column], text = cell.getAttribute("data-sort") || cell.textContent.trim();
          var number = parseFloat(text);
          return isNaN(number) || !/^[-+.\d]/.test(text) ? text.toLowerCase() : number;
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b), order;
          if (typeof x === "number" && typeof y === "number") order = x - y;
          else order = String(x).localeCompare(String(y));
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  function start() {
    document.querySelectorAll("table.sortable").forEach(sortable);
    var node = document.getElementById("viewer-data");
    if (!node) { document.body.setAttribute("data-ready", "1"); return; }
    var data = JSON.parse(node.textContent);
    Promise.all([decode(data.background, Uint8Array), decode(data.z, Int16Array),
                 decode(data.labels, Int16Array)]).then(function (volumes) {
      var viewer = new Viewer(data, volumes);
      window.daskmetaViewer = viewer;
      document.querySelectorAll("input[name=mode]").forEach(function (input) {
        input.addEventListener("change", function () { viewer.mode = input.value; viewer.draw(); });
      });
      var floor = document.getElementById("floor"), shown = document.getElementById("floor-value");
      floor.addEventListener("input", function () {
        viewer.floor = parseFloat(floor.value); shown.textContent = viewer.floor.toFixed(1); viewer.draw();
      });
      var buttons = document.getElementById("cluster-buttons");
      data.peaks.filter(function (p) { return p.peak_type === "cluster"; }).forEach(function (p) {
        var b = document.createElement("button");
        b.type = "button"; b.textContent = p.cluster + (p.direction === "positive" ? "+" : "\u2212");
        b.title = "cluster " + p.cluster + " peak (" + [p.x, p.y, p.z].join(", ") + ") " + (p.region || "");
        b.addEventListener("click", function () { viewer.goto([p.x, p.y, p.z]); });
        buttons.appendChild(b);
      });
      document.querySelectorAll("a.goto").forEach(function (a) {
        a.addEventListener("click", function (event) {
          event.preventDefault();
          viewer.goto(a.getAttribute("data-xyz").split(",").map(Number));
          document.getElementById("viewer").scrollIntoView({ behavior: "smooth" });
        });
      });
      var first = data.peaks[0];
      if (first) viewer.goto([first.x, first.y, first.z]); else viewer.draw();
      document.body.setAttribute("data-ready", "1");
    }).catch(function (error) {
      document.getElementById("viewer-info").textContent =
        "This browser cannot show the viewer (" + error + "); the NIfTI maps beside this file open in any viewer.";
      throw error;
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
