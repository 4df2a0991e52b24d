// A small canvas line chart for the overview and usage pages (no library): a few series
// over a shared x axis, min/max labels, a legend. Redrawn whole on each update; cheap at
// the page's sizes (an hour of 2 s samples is 1800 points a series).

import { h } from "./dom.js";

const COLORS = ["#1f6feb", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#cf222e"];

export class LineChart {
  /** `series`: [{label}]; `format(y)` labels the y axis; `bars`: draw bars, not lines. */
  constructor(title, series, { format = (y) => String(y), bars = false, xFormat = null } = {}) {
    this.series = series;
    this.format = format;
    this.bars = bars;
    this.xFormat = xFormat || ((x) => new Date(x).toLocaleTimeString());
    this.canvas = h("canvas", { role: "img", "aria-label": title });
    const legend = h("div", { class: "legend" }, series.map((s, i) => h("span", {},
      h("span", { class: `swatch s${i % COLORS.length}` }), s.label)));
    this.element = h("div", { class: "chart" }, h("h3", { class: "muted" }, title), this.canvas, legend);
    this.xs = [];
    this.ys = series.map(() => []);
  }

  /** Replace the data: xs (numbers), ys[i] the values of series i (null for a gap). */
  set(xs, ys) {
    this.xs = xs;
    this.ys = ys;
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 400;
    const height = canvas.clientHeight || 160;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const pad = { left: 56, right: 8, top: 8, bottom: 20 };
    const values = this.ys.flat().filter((v) => v !== null && v !== undefined && Number.isFinite(v));
    const top = Math.max(values.length ? Math.max(...values) : 0, 1e-9) * 1.1;
    const xs = this.xs;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#677085";
    ctx.strokeStyle = "#dde1e8";
    ctx.beginPath();
    ctx.moveTo(pad.left, pad.top);
    ctx.lineTo(pad.left, height - pad.bottom);
    ctx.lineTo(width - pad.right, height - pad.bottom);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(this.format(top), pad.left - 4, pad.top + 8);
    ctx.fillText(this.format(0), pad.left - 4, height - pad.bottom);
    if (!xs.length) {
      ctx.textAlign = "center";
      ctx.fillText("no data yet", (pad.left + width) / 2, height / 2);
      return;
    }
    const x0 = xs[0];
    const span = Math.max(xs[xs.length - 1] - x0, 1e-9);
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const px = (x) => pad.left + (xs.length === 1 ? plotW / 2 : ((x - x0) / span) * plotW);
    const py = (y) => pad.top + plotH - (y / top) * plotH;
    ctx.textAlign = "left";
    ctx.fillText(this.xFormat(x0), pad.left, height - 4);
    ctx.textAlign = "right";
    ctx.fillText(this.xFormat(xs[xs.length - 1]), width - pad.right, height - 4);
    this.ys.forEach((ys, i) => this._series(ctx, xs, ys, i, px, py, plotW));
  }

  _series(ctx, xs, ys, index, px, py, plotW) {
    ctx.strokeStyle = ctx.fillStyle = COLORS[index % COLORS.length];
    if (this.bars) {
      const slot = plotW / Math.max(xs.length, 1) / (this.ys.length + 1);
      xs.forEach((x, j) => {
        const y = ys[j];
        if (y === null || y === undefined) return;
        const left = px(x) - (slot * this.ys.length) / 2 + index * slot;
        ctx.fillRect(left, py(y), Math.max(slot - 1, 1), py(0) - py(y));
      });
      return;
    }
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let drawing = false;
    xs.forEach((x, j) => {
      const y = ys[j];
      if (y === null || y === undefined || !Number.isFinite(y)) {
        drawing = false;
        return;
      }
      if (drawing) ctx.lineTo(px(x), py(y));
      else ctx.moveTo(px(x), py(y));
      drawing = true;
    });
    ctx.stroke();
  }
}
