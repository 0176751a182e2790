// One image viewport: a canvas, its view state, and the paint. State changes only mark
// the view dirty; one requestAnimationFrame callback paints every dirty viewport, so a
// burst of pointer events costs one paint per display frame.
import { cache, loadRaw, loadRendered, scheduler, CACHE_BUDGET } from './stack.js';
import { T, num, str, personName, formatDate, first } from './dicomjson.js';
import * as tools from './tools.js';
import { Cine } from './cine.js';

const live = new Set();
let scheduled = false;
function schedule() {
  if (!scheduled) { scheduled = true; requestAnimationFrame(tick); }
}
function tick(now) {
  scheduled = false;
  for (const vp of live) {
    vp.cine.tick(now);
    if (vp.dirty) vp.paint();
  }
  for (const vp of live) if (vp.cine.playing) schedule();
}

/** Abort prefetches no viewport wants any more (the union over all viewports). */
function cancelStale() {
  const wanted = new Set();
  for (const vp of live) for (const k of vp.wantedKeys()) wanted.add(k);
  scheduler.cancel((job) => wanted.has(job.split(':')[1]));
}

// ---- window LUT: stored value → packed RGBA, cached by every input that changes it.
const luts = new Map();
export function lutFor(d, wc, ww, invert) {
  const key = `${d.bitsAllocated}|${d.bitsStored}|${d.pixelRep}|${d.slope}|${d.intercept}|${wc}|${ww}|${invert}`;
  let lut = luts.get(key);
  if (lut) { luts.delete(key); luts.set(key, lut); return lut; }
  const size = d.bitsAllocated === 8 ? 256 : 65536;
  const bits = Math.min(d.bitsStored, d.bitsAllocated);
  const mask = 2 ** bits - 1, sign = d.pixelRep ? 2 ** (bits - 1) : 0;
  // PS3.3 C.11.2.1.2.1 linear VOI, the same formula the server's /rendered uses.
  const w = Math.max(1, ww), lo = wc - 0.5 - (w - 1) / 2, hi = wc - 0.5 + (w - 1) / 2;
  const k = 255 / Math.max(w - 1, 1e-9), c0 = wc - 0.5;
  lut = new Uint32Array(size);
  for (let raw = 0; raw < size; raw++) {
    let v = raw & mask;
    if (v & sign) v -= mask + 1;
    const x = v * d.slope + d.intercept;
    // ((x - c0) / (w - 1) + 0.5) · 255, rounded half up
    let g = x <= lo ? 0 : x > hi ? 255 : ((x - c0) * k + 128) | 0;
    if (g < 0) g = 0; else if (g > 255) g = 255;
    if (invert) g = 255 - g;
    lut[raw] = 0xff000000 | (g << 16) | (g << 8) | g;
  }
  luts.set(key, lut);
  if (luts.size > 16) luts.delete(luts.keys().next().value);
  return lut;
}

export const PRESETS = {
  CT: [['Soft tissue', 40, 400], ['Lung', -600, 1500], ['Bone', 480, 2500], ['Brain', 40, 80],
    ['Liver', 60, 160], ['Mediastinum', 50, 350]],
  PT: [['SUV 0–5', 2.5, 5], ['SUV 0–10', 5, 10]],
  DEFAULT: [],
};

// Preview of a new window on a server-rendered JPEG while the re-rendered one is on its
// way: grey' = slope·grey + intercept, an SVG transfer function the canvas can use as filter.
let wlFuncs = null;
function wlFilter(slope, intercept) {
  if (!wlFuncs) {
    const ns = 'http://www.w3.org/2000/svg', mk = (t) => document.createElementNS(ns, t);
    const svg = mk('svg'), filter = mk('filter'), ct = mk('feComponentTransfer');
    svg.setAttribute('class', 'sr-only');
    svg.setAttribute('aria-hidden', 'true');
    filter.id = 'lb-wl';
    filter.setAttribute('color-interpolation-filters', 'sRGB');
    wlFuncs = ['feFuncR', 'feFuncG', 'feFuncB'].map((t) => { const f = mk(t); f.setAttribute('type', 'linear'); ct.append(f); return f; });
    filter.append(ct); svg.append(filter); document.body.append(svg);
  }
  for (const f of wlFuncs) { f.setAttribute('slope', String(slope)); f.setAttribute('intercept', String(intercept)); }
  return 'url(#lb-wl)';
}

const fmt = (v, d = 0) => (v === null || v === undefined || !Number.isFinite(v) ? '' : v.toFixed(d));

export class Viewport {
  constructor(host, app) {
    this.app = app;
    this.el = document.createElement('div');
    this.el.className = 'viewport';
    this.el.dataset.state = 'empty';
    this.canvas = document.createElement('canvas');
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'Image');
    this.ctx = this.canvas.getContext('2d');
    this.off = document.createElement('canvas');
    this.offCtx = this.off.getContext('2d');
    this.ov = {};
    this.el.append(this.canvas);
    for (const c of ['tl', 'tr', 'bl', 'br']) {
      const d = document.createElement('div');
      d.className = 'ov ' + c;
      this.el.append(d);
      this.ov[c] = d;
    }
    this.msg = document.createElement('div');
    this.msg.className = 'vp-msg';
    this.msg.setAttribute('role', 'status');
    this.el.append(this.msg);
    host.append(this.el);
    this.series = null;
    this.index = 0;
    this.annotations = new Map();  // frame key → [annotation]
    this.cine = new Cine(this);
    this.lowBandwidth = false;
    this.resetView();
    // The observer hands over the size, so painting never forces a synchronous layout.
    this.size = null;
    this.ro = new ResizeObserver(([entry]) => {
      // contentRect, not devicePixelContentBoxSize: the latter ignores emulated device scale.
      const dpr = window.devicePixelRatio || 1, r = entry.contentRect;
      this.size = [Math.floor(r.width * dpr), Math.floor(r.height * dpr), dpr];
      this.invalidate();
      this._scheduleLoad();
    });
    this.ro.observe(this.el);
    this._bindInput();
    live.add(this);
  }

  destroy() {
    this.setupCtrl?.abort();
    this.ro.disconnect();
    this.cine.stop();
    live.delete(this);
    this.el.remove();
    cancelStale();
  }

  invalidate() { this.dirty = true; schedule(); }

  resetView() {
    this.wc = null; this.ww = null;  // null = the image's own window
    this.scale = null;               // device px per image px; null = fit
    this.panX = 0; this.panY = 0; this.rotation = 0;
    this.flipH = false; this.flipV = false; this.invert = false;
    this.invalidate();
  }

  get frame() { return this.series?.frames[this.index]; }
  get desc() { return this.frame?.desc; }

  // ---------------------------------------------------------------- series & loading
  async setSeries(series) {
    this.setupCtrl?.abort();
    const ctrl = (this.setupCtrl = new AbortController());
    this.cine.stop();
    this.series = series; this.index = 0; this.error = null; this.lastImg = null;
    this.resetView();
    this.el.dataset.state = 'loading'; this.el.dataset.source = '';
    this.app?.onViewportChange?.(this);
    try {
      let md;
      if (!series.hasMetadata) {
        // The instance list is small; the series metadata may be megabytes on a slow link.
        // Paint the first slice from a server-rendered JPEG while the metadata arrives; on a
        // slow link ask for the metadata only once that image is in, so they do not share the pipe.
        const list = series.loadInstanceList(ctrl.signal);
        if (this.lowBandwidth) {
          await list.catch(() => {});
          if (ctrl.signal.aborted) return;
          if (series.frames.length) { this._load(); await this._drawn(4000); }
          md = series.loadMetadata();
        } else {
          md = series.loadMetadata();
          await Promise.race([md, list.catch(() => md)]);
          if (ctrl.signal.aborted) return;
          this._load();
        }
      }
      await (md || series.loadMetadata());
      if (ctrl.signal.aborted) return;
      this.index = Math.min(this.index, series.frames.length - 1);
      this.cine.fps = series.cineFps;
      this.app?.onViewportChange?.(this);
      this._load();
      this.invalidate();
    } catch (err) {
      if (err.name !== 'AbortError') this.showError(err);
    }
  }

  /** Resolves when an image is on the canvas (or after `ms`, whichever comes first). */
  _drawn(ms) {
    return new Promise((resolve) => {
      this.onDrawn = resolve;
      setTimeout(resolve, ms);
    });
  }

  showError(err) {
    this.error = err.message || String(err);
    // State and message change together, in the next paint.
    this.invalidate();
  }

  setIndex(i) {
    if (!this.series) return;
    const n = this.series.frames.length;
    i = Math.max(0, Math.min(n - 1, i));
    if (i === this.index) return;
    this.index = i;
    this.error = null;
    this.scrolledAt = performance.now();
    this._load();
    this.invalidate();
    this.app?.onViewportChange?.(this);
  }
  scrollBy(d) { this.setIndex(this.index + d); }

  _scheduleLoad() {
    clearTimeout(this.loadTimer);
    this.loadTimer = setTimeout(() => this._load(), 120);
  }

  get useRaw() { return !this.lowBandwidth && this.series?.hasMetadata && this.series.rawCapable === true; }

  /** Image size on screen in device px, capped at the native size: what /rendered should return. */
  renderSize(frame) {
    const cols = frame.desc?.cols || num(frame.inst, T.Columns, 0) || 1024;
    const rows = frame.desc?.rows || num(frame.inst, T.Rows, 0) || 1024;
    const s = Math.min(1, this.scale ?? this.fitScale(cols, rows));
    return [Math.max(16, Math.ceil(cols * s)), Math.max(16, Math.ceil(rows * s))];
  }

  /** Keys of frames this viewport wants in memory: the current slice and its neighbours. */
  wantedKeys() {
    const f = this.series?.frames;
    if (!f) return [];
    const r = this.reach();
    const out = [];
    for (let i = Math.max(0, this.index - r); i <= Math.min(f.length - 1, this.index + r); i++) out.push(f[i].key);
    return out;
  }

  /**
   * How many slices either side to prefetch: the whole series when its pixels fit in half
   * the cache (so a CT can be paged through at display rate), else a window around the slice.
   */
  reach() {
    if (this.lowBandwidth) return 2;
    const f = this.series.frames, d = f[0]?.desc;
    const bytes = d ? f.length * d.rows * d.cols * (d.bitsAllocated / 8) : Infinity;
    return bytes < CACHE_BUDGET / 2 ? f.length : 12;
  }

  _load() {
    const s = this.series, f = this.frame;
    if (!f) return;
    cancelStale();
    const entry = cache.get(f.key);
    const order = [];  // neighbours, nearest first, forward before backward
    for (let d = 1, r = this.reach(); d <= r; d++) order.push(this.index + d, this.index - d);
    const neighbours = order.filter((i) => i >= 0 && i < s.frames.length).map((i) => s.frames[i]);
    if (this.useRaw) {
      if (!entry?.raw) {
        // The JPEG is only a head start; if it fails, the raw frame still decides.
        if (!entry?.rendered && !this.lastImg) this._loadRendered(f, 90, 200, true);
        loadRaw(s, f, 300).then(() => this._loaded(f), (e) => this._rawFailed(e, f));
      }
      neighbours.forEach((nf, k) => loadRaw(s, nf, 100 - k / neighbours.length).catch(() => {}));
      return;
    }
    // Rendered path: a cheap JPEG while the stack is moving, a good one once it stops.
    // The very first image on a slow link is a cheap one too: seeing something beats detail.
    const moving = this.lowBandwidth && (performance.now() - (this.scrolledAt || 0) < 250 || !this.app?.firstImageShown);
    const q = moving ? 50 : 90;
    this._loadRendered(f, q, 300);
    clearTimeout(this.sharpTimer);
    if (moving) this.sharpTimer = setTimeout(() => this._load(), 300);
    else if (s.hasMetadata && (!this.lowBandwidth || this.app?.firstImageShown)) {
      neighbours.slice(0, 24).forEach((nf, k) => this._loadRendered(nf, this.lowBandwidth ? 50 : 90, 100 - k / 24));
    }
  }

  _loaded(f) {
    if (f === this.frame) this.error = null;
    this.invalidate();
  }

  _loadRendered(f, quality, priority, quiet = false) {
    const e = cache.get(f.key)?.rendered;
    const win = this.wc !== null ? [this.wc, this.ww] : null;
    const wkey = win ? win.map((v) => v.toFixed(2)).join(',') : '';
    const size = this.renderSize(f);
    if (e && e.quality >= quality && e.wkey === wkey && e.w >= size[0] - 1 && e.h >= size[1] - 1) return;
    loadRendered(this.series, f, { quality, viewport: size, window: win }, priority).then(
      () => this._loaded(f),
      (err) => { if (!quiet && err.name !== 'AbortError' && f === this.frame) this.showError(err); });
  }

  _rawFailed(err, f) {
    if (err.name === 'AbortError') return;
    if (err.kind === 'undecodable' || err.kind === 'format' || err.kind === 'notfound') {
      // The server will not send this series uncompressed: render it server-side instead.
      this.series.rawCapable = false;
      this._load();
    } else if (f === this.frame) this.showError(err);
  }

  // ---------------------------------------------------------------- geometry
  dims() {
    const f = this.frame;
    const d = f?.desc;
    if (d) return [d.cols, d.rows, d.aspect || 1];
    const c = num(f?.inst, T.Columns), r = num(f?.inst, T.Rows);
    if (c && r) return [c, r, 1];
    return this.lastImg ? [this.lastImg.cols, this.lastImg.rows, 1] : [512, 512, 1];
  }

  fitScale(cols, rows, aspect = 1) {
    const cw = this.canvas.width, ch = this.canvas.height;
    const rot = this.rotation % 180 !== 0;
    const w = rot ? rows * aspect : cols, h = rot ? cols : rows * aspect;
    return Math.min(cw / w, ch / h) || 1;
  }

  /** Image → canvas (device px) transform. */
  matrix() {
    const [cols, rows, aspect] = this.dims();
    const s = this.scale ?? this.fitScale(cols, rows, aspect);
    // Whole-pixel centre keeps a 1:1 view an exact copy of the image.
    const cx = Math.round(this.canvas.width / 2 + this.panX), cy = Math.round(this.canvas.height / 2 + this.panY);
    return new DOMMatrix()
      .translate(cx, cy).rotate(this.rotation)
      .scale(s * (this.flipH ? -1 : 1), s * aspect * (this.flipV ? -1 : 1))
      .translate(-cols / 2, -rows / 2);
  }
  toImage(x, y) { const p = this.matrix().inverse().transformPoint({ x, y }); return [p.x, p.y]; }
  toScreen(x, y) { const p = this.matrix().transformPoint({ x, y }); return [p.x, p.y]; }
  get effectiveScale() { const [c, r, a] = this.dims(); return this.scale ?? this.fitScale(c, r, a); }

  zoomAt(factor, x, y) {
    const s0 = this.effectiveScale;
    const s1 = Math.max(0.05, Math.min(40, s0 * factor));
    // Keep the point under the cursor fixed.
    const cx = this.canvas.width / 2 + this.panX, cy = this.canvas.height / 2 + this.panY;
    this.panX += (x - cx) * (1 - s1 / s0);
    this.panY += (y - cy) * (1 - s1 / s0);
    this.scale = s1;
    this.invalidate();
    this._scheduleLoad();
  }

  // ---------------------------------------------------------------- window
  /** The window in force: the user's, else the file's, else the frame's range. */
  window() {
    if (this.wc !== null) return [this.wc, this.ww];
    const d = this.desc;
    if (d && d.wc !== null && d.ww > 0) return [d.wc, d.ww];
    const e = this.frame && cache.get(this.frame.key);
    if (e?.raw) return [(e.min + e.max) / 2, Math.max(1, e.max - e.min)];
    return null;
  }
  /** Min/max modality value of the current frame, once its raw pixels are in. */
  pixelRange() {
    const e = this.frame && cache.get(this.frame.key);
    return e?.raw ? [e.min, e.max] : null;
  }

  setWindow(wc, ww) {
    this.wc = wc; this.ww = Math.max(1, ww);
    this.invalidate();
    if (!this.useRaw) this._scheduleLoad();
  }

  // ---------------------------------------------------------------- paint
  _resize() {
    if (!this.size) return;
    const [sw, sh, dpr] = this.size;
    const w = Math.max(1, sw), h = Math.max(1, sh);
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w; this.canvas.height = h;
      // CSS size = backing size exactly: a stretched canvas would make "1:1" and lengths lie.
      this.canvas.style.width = w / dpr + 'px';
      this.canvas.style.height = h / dpr + 'px';
    }
  }

  /** What to draw for the current frame: raw pixels through the LUT, else a rendered JPEG. */
  _image() {
    const f = this.frame;
    if (!f) return null;
    const e = cache.get(f.key);
    const d = f.desc;
    if (e?.raw && d && !this.lowBandwidth) {
      const [wc, ww] = this.window();
      const inv = (d.photometric === 'MONOCHROME1') !== this.invert;
      const lut = lutFor(d, wc, ww, inv);
      const key = f.key + '|' + wc + '|' + ww + '|' + inv;
      if (this.offKey !== key) {
        if (this.off.width !== d.cols || this.off.height !== d.rows) {
          this.off.width = d.cols; this.off.height = d.rows;
          this.imageData = null;
        }
        this.imageData ??= this.offCtx.createImageData(d.cols, d.rows);
        const out = new Uint32Array(this.imageData.data.buffer);
        const src = e.raw;
        for (let i = 0, n = out.length; i < n; i++) out[i] = lut[src[i]];
        this.offCtx.putImageData(this.imageData, 0, 0);
        this.offKey = key;
      }
      this.source = 'raw';
      return { img: this.off, cols: d.cols, rows: d.rows, key: f.key };
    }
    if (e?.rendered) {
      this.source = 'rendered';
      const [cols, rows] = this.dims();
      // A rendered frame lacks the user's invert when it came back before the request
      // carried it; inversion of a rendered JPEG is done with a canvas filter instead.
      return { img: e.rendered.bmp, cols, rows, key: f.key, rendered: true, preview: this._preview(e.rendered) };
    }
    return null;
  }

  /** Linear map from the window a JPEG was rendered with to the window now asked for. */
  _preview(r) {
    if (this.wc === null) return null;
    const d = this.desc;
    const base = r.wkey ? r.wkey.split(',').map(Number) : d && d.wc !== null ? [d.wc, d.ww] : null;
    if (!base || (Math.abs(base[0] - this.wc) < 0.01 && Math.abs(base[1] - this.ww) < 0.01)) return null;
    const slope = base[1] / this.ww;
    return [slope, ((base[0] - base[1] / 2) - (this.wc - this.ww / 2)) / this.ww];
  }

  paint() {
    this.dirty = false;
    this._resize();
    const ctx = this.ctx, cw = this.canvas.width, ch = this.canvas.height;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, cw, ch);
    let im = null;
    try { im = this.series && this._image(); } catch (err) { this.showError(err); }
    const stale = !im && this.lastImg && this.lastImg.series === this.series;
    if (im) { im.series = this.series; this.lastImg = im; }
    const draw = im || (stale ? this.lastImg : null);
    if (draw) {
      const [cols, rows] = this.dims();
      ctx.setTransform(this.matrix());
      ctx.imageSmoothingEnabled = this.effectiveScale < 3;
      const filters = [];
      if (draw.rendered && draw.preview) filters.push(wlFilter(...draw.preview));
      if (draw.rendered && this.invert) filters.push('invert(1)');
      ctx.filter = filters.join(' ') || 'none';
      ctx.drawImage(draw.img, 0, 0, cols, rows);
      ctx.filter = 'none';
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      tools.draw(this, ctx);
    }
    const state = this.error ? 'error' : im ? 'ready' : this.series ? 'loading' : 'empty';
    this.el.dataset.state = state;
    this.el.dataset.source = im ? this.source : '';
    this.el.dataset.index = String(this.index);
    if (im && !this.app?.firstImageShown && this.app) this.app.onFirstImage?.(this);
    if (im && this.onDrawn) { this.onDrawn(); this.onDrawn = null; }
    this._overlay(state);
  }

  _text(el, lines) {
    const t = lines.filter(Boolean).join('\n');
    if (el.textContent !== t) el.textContent = t;
  }

  _overlay(state) {
    const f = this.frame, inst = f?.inst || {}, s = this.series;
    const msg = state === 'error' ? this.error : state === 'loading' ? 'Loading…' : '';
    this._text(this.msg, [msg]);
    this.msg.classList.toggle('error', state === 'error');
    if (!s) { for (const k in this.ov) this._text(this.ov[k], []); return; }
    const label = `${s.modality || ''} image ${this.index + 1} of ${s.frames.length || s.count || '?'}`;
    if (this.canvas.getAttribute('aria-label') !== label) this.canvas.setAttribute('aria-label', label);
    // Instance metadata when it is in; until then the study's QIDO row.
    const st = inst[T.PatientName] || !this.app?.studyRow ? inst : this.app.studyRow;
    this._text(this.ov.tl, [
      personName(first(st, T.PatientName)), str(st, T.PatientID),
      [formatDate(str(st, T.StudyDate)), str(st, T.StudyDescription)].filter(Boolean).join(' '),
    ]);
    this._text(this.ov.tr, [
      [s.modality, s.number && `Se ${s.number}`].filter(Boolean).join(' '), s.description,
      f && f.n > 1 || num(inst, T.NumberOfFrames, 1) > 1 ? `Frame ${f.n}` : '',
    ]);
    const d = this.desc;
    const loc = d?.sliceLocation;
    const win = this.window();
    this._text(this.ov.bl, [
      `Im ${this.index + 1}/${s.frames.length || s.count || '?'}` + (f ? ` (#${num(inst, T.InstanceNumber, '')})` : ''),
      loc !== null && loc !== undefined ? `Loc ${fmt(loc, 1)} mm` : '',
      ...tools.labels(this),
    ]);
    this._text(this.ov.br, [
      this.cine.playing ? `Cine ${this.cine.fps} fps` : '',
      win ? `W ${fmt(win[1])} L ${fmt(win[0])}` : 'W/L auto',
      `Zoom ${fmt(this.effectiveScale * 100)}%` + (this.rotation ? ` ↻${this.rotation}°` : '') +
        (this.flipH ? ' ⇆' : '') + (this.flipV ? ' ⇅' : '') + (this.invert ? ' inv' : ''),
      this.lowBandwidth ? 'Low bandwidth' : '',
    ]);
  }

  // ---------------------------------------------------------------- input
  _bindInput() {
    const c = this.canvas;
    const pointers = new Map();
    let gesture = null;   // {kind, ...} for the one-pointer drag in progress
    let pinch = null;
    const pos = (e) => {
      const r = c.getBoundingClientRect(), dpr = c.width / (r.width || 1);
      return [(e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr];
    };
    c.addEventListener('contextmenu', (e) => e.preventDefault());
    c.addEventListener('pointerdown', (e) => {
      this.app?.activate?.(this);
      c.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, pos(e));
      if (pointers.size === 2) {
        // A second finger turns any one-finger action into pinch-zoom + pan.
        gesture?.cancel?.();
        gesture = null;
        const [a, b] = [...pointers.values()];
        pinch = { d: Math.hypot(a[0] - b[0], a[1] - b[1]), m: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2] };
        return;
      }
      if (pointers.size > 2) return;
      const p = pos(e);
      let tool = this.app?.tool || 'wl';
      if (e.pointerType === 'mouse') {
        if (e.button === 1) tool = 'pan';
        else if (e.button === 2) tool = 'zoom';
        else if (e.shiftKey) tool = 'pan';
        else if (e.ctrlKey) tool = 'zoom';
      }
      gesture = this._startGesture(tool, p, e);
      e.preventDefault();
    });
    c.addEventListener('pointermove', (e) => {
      if (!pointers.has(e.pointerId)) { tools.hover(this, pos(e)); return; }
      pointers.set(e.pointerId, pos(e));
      if (pinch && pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        const d = Math.hypot(a[0] - b[0], a[1] - b[1]), m = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
        this.panX += m[0] - pinch.m[0]; this.panY += m[1] - pinch.m[1];
        if (pinch.d > 10) this.zoomAt(d / pinch.d, m[0], m[1]);
        pinch = { d, m };
        this.invalidate();
        return;
      }
      gesture?.move(pos(e), e);
    });
    const end = (e) => {
      if (!pointers.has(e.pointerId)) return;
      pointers.delete(e.pointerId);
      if (pinch) { if (pointers.size < 2) pinch = null; return; }
      if (e.type === 'pointercancel') gesture?.cancel?.(); else gesture?.end?.(pos(e), e);
      gesture = null;
      // Finger lifted: full-quality image now rather than after the idle timer.
      if (this.lowBandwidth) { this.scrolledAt = 0; this._load(); }
    };
    c.addEventListener('pointerup', end);
    c.addEventListener('pointercancel', end);
    let wheelAcc = 0;
    c.addEventListener('wheel', (e) => {
      e.preventDefault();
      const [x, y] = pos(e);
      if (e.ctrlKey || e.metaKey || this.app?.tool === 'zoom') {
        // Trackpad pinch arrives as ctrl+wheel.
        this.zoomAt(Math.exp(-e.deltaY * (e.deltaMode ? 0.05 : 0.002)), x, y);
        return;
      }
      // A mouse notch (deltaY ≈ 100-120, or deltaMode lines) is one slice; a trackpad's
      // small deltas add up to one.
      const dy = e.deltaMode ? e.deltaY * 40 : e.deltaY;
      if (Math.abs(dy) >= 50) { wheelAcc = 0; this.scrollBy(Math.sign(dy)); return; }
      wheelAcc += dy;
      if (Math.abs(wheelAcc) >= 50) { this.scrollBy(Math.sign(wheelAcc)); wheelAcc = 0; }
    }, { passive: false });
    c.addEventListener('dblclick', () => { this.scale = null; this.panX = this.panY = 0; this.invalidate(); });
  }

  _startGesture(tool, p0) {
    const measure = tools.start(this, tool, p0);
    if (measure) return measure;
    let last = p0;
    if (tool === 'wl') {
      const w0 = this.window() || [128, 256];
      let [wc, ww] = w0;
      return {
        move: (p) => {
          // Sensitivity follows the window width so soft-tissue and bone windows both feel right.
          const k = Math.max(ww, 10) / 300;
          ww = Math.max(1, ww + (p[0] - last[0]) * k);
          wc = wc + (p[1] - last[1]) * k;
          last = p;
          this.setWindow(wc, ww);
        },
      };
    }
    if (tool === 'pan') return { move: (p) => { this.panX += p[0] - last[0]; this.panY += p[1] - last[1]; last = p; this.invalidate(); } };
    if (tool === 'zoom') return { move: (p) => { this.zoomAt(Math.exp((last[1] - p[1]) * 0.01), p0[0], p0[1]); last = p; } };
    if (tool === 'scroll') {
      let acc = 0;
      const n = this.series?.frames.length || 1;
      // One slice per few pixels, so a thumb's travel covers a short stack.
      const step = Math.max(6, Math.min(24, this.canvas.height / n / 2));
      return {
        move: (p) => {
          acc += p[1] - last[1]; last = p;
          const k = Math.trunc(acc / step);
          if (k) { acc -= k * step; this.scrollBy(k); }
        },
      };
    }
    return null;
  }

  // ---------------------------------------------------------------- commands
  fit() { this.scale = null; this.panX = this.panY = 0; this.invalidate(); this._scheduleLoad(); }
  oneToOne() { this.scale = 1; this.panX = this.panY = 0; this.invalidate(); this._scheduleLoad(); }
  rotate() { this.rotation = (this.rotation + 90) % 360; this.invalidate(); }
  flip(h) { if (h) this.flipH = !this.flipH; else this.flipV = !this.flipV; this.invalidate(); }
  toggleInvert() { this.invert = !this.invert; this.invalidate(); }
  setLowBandwidth(on) { this.lowBandwidth = on; this.offKey = null; this._load(); this.invalidate(); }

  /** Paint synchronously n times with a changing window; returns updates per second. */
  benchmarkWindow(n = 60) {
    const w0 = this.window() || [40, 400];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) { this.wc = w0[0] + i; this.ww = w0[1] + i; this.paint(); }
    const dt = performance.now() - t0;
    this.setWindow(w0[0], w0[1]);
    return n / (dt / 1000);
  }
}
