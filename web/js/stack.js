// A series as an ordered stack of frames, and the loader that fills a shared frame cache.
// Rendered JPEGs give a fast first paint; raw uncompressed frames then replace them so
// window/level happens locally without a round trip.
import * as dw from './dicomweb.js';
import { T, first, num, nums, str, values, frameAttr } from './dicomjson.js';

const UNCOMPRESSED = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1']);
const narrowScreen = matchMedia('(max-width: 700px)').matches;
// Bytes of decoded pixels kept in memory: a 512² CT slice is 0.5 MB.
export const CACHE_BUDGET = (narrowScreen ? 96 : 384) * 1024 * 1024;

/** Pixel description of one frame, everything the LUT and the tools need. */
function describe(ds, frameIndex, modality) {
  const voi = frameAttr(ds, frameIndex, T.FrameVOILUTSequence, T.WindowCenter);
  const voiW = frameAttr(ds, frameIndex, T.FrameVOILUTSequence, T.WindowWidth);
  const slope = +(frameAttr(ds, frameIndex, T.PixelValueTransformationSequence, T.RescaleSlope)[0] ?? 1);
  const intercept = +(frameAttr(ds, frameIndex, T.PixelValueTransformationSequence, T.RescaleIntercept)[0] ?? 0);
  let spacing = frameAttr(ds, frameIndex, T.PixelMeasuresSequence, T.PixelSpacing).map(Number);
  let spacingKind = 'PixelSpacing';
  if (!(spacing.length === 2 && spacing.every((v) => v > 0))) {
    spacing = nums(ds, T.ImagerPixelSpacing);
    spacingKind = 'ImagerPixelSpacing';
    if (!(spacing.length === 2 && spacing.every((v) => v > 0))) { spacing = null; spacingKind = null; }
  }
  const pos = frameAttr(ds, frameIndex, T.PlanePositionSequence, T.ImagePositionPatient).map(Number);
  const sliceLoc = num(ds, T.SliceLocation);
  const aspect = nums(ds, T.PixelAspectRatio);
  return {
    rows: num(ds, T.Rows, 0), cols: num(ds, T.Columns, 0),
    bitsAllocated: num(ds, T.BitsAllocated, 16), bitsStored: num(ds, T.BitsStored, num(ds, T.BitsAllocated, 16)),
    pixelRep: num(ds, T.PixelRepresentation, 0), spp: num(ds, T.SamplesPerPixel, 1),
    photometric: str(ds, T.PhotometricInterpretation) || 'MONOCHROME2',
    slope: Number.isFinite(slope) && slope !== 0 ? slope : 1, intercept: Number.isFinite(intercept) ? intercept : 0,
    rescaleType: str(ds, T.RescaleType),
    wc: voi.length ? +voi[0] : null, ww: voiW.length ? +voiW[0] : null,
    spacing, spacingKind,
    // row spacing / column spacing: non-square pixels are stretched on screen.
    aspect: spacing ? spacing[0] / spacing[1] : (aspect.length === 2 && aspect[1] ? aspect[0] / aspect[1] : 1),
    position: pos.length === 3 ? pos : null,
    sliceLocation: Number.isFinite(sliceLoc) ? sliceLoc : (pos.length === 3 ? pos[2] : null),
    modality,
  };
}

/** One series: QIDO row + (later) metadata, flattened to frames. */
export class Series {
  constructor(studyUid, row) {
    this.studyUid = studyUid;
    this.row = row;
    this.uid = str(row, T.SeriesInstanceUID);
    this.modality = str(row, T.Modality);
    this.number = str(row, T.SeriesNumber);
    this.description = str(row, T.SeriesDescription);
    this.count = num(row, T.NumberOfSeriesRelatedInstances, 0);
    this.frames = [];
    this.instances = [];
    this.hasMetadata = false;
    this.rawCapable = null; // unknown until metadata or a failed raw fetch says otherwise
  }

  _setFrames(instances) {
    const frames = [];
    for (const inst of instances) {
      const sop = str(inst, T.SOPInstanceUID);
      const nf = Math.max(1, num(inst, T.NumberOfFrames, 1));
      for (let n = 1; n <= nf; n++) frames.push({ sop, n, inst, key: `${sop}/${n}`, desc: null });
    }
    const prevKeys = this.frames.map((f) => f.key);
    this.frames = frames;
    return prevKeys;
  }

  _sort(instances) {
    // InstanceNumber is what technologists and reports refer to; position breaks ties.
    return instances.slice().sort((a, b) =>
      (num(a, T.InstanceNumber, 0) - num(b, T.InstanceNumber, 0)) ||
      ((nums(b, T.ImagePositionPatient)[2] ?? 0) - (nums(a, T.ImagePositionPatient)[2] ?? 0)));
  }

  /** Cheap frame list from QIDO instances, enough for the first rendered image. */
  async loadInstanceList(signal) {
    if (this.frames.length) return;
    const rows = await dw.searchForInstances(this.studyUid, this.uid, {}, signal);
    if (!this.hasMetadata) this._setFrames(this._sort(rows));
  }

  /** Shared by every viewport showing this series: one download, not one each. */
  loadMetadata() {
    if (this.hasMetadata) return Promise.resolve();
    this._md ??= this._loadMetadata().catch((err) => { this._md = null; throw err; });
    return this._md;
  }

  async _loadMetadata() {
    const md = await dw.retrieveSeriesMetadata(this.studyUid, this.uid);
    if (!md.length) throw new dw.DicomWebError('notfound', 'Series has no instances');
    this.instances = this._sort(md);
    this._setFrames(this.instances);
    const perInst = new Map();
    this.frames.forEach((f) => {
      f.desc = describe(f.inst, f.n - 1, this.modality || str(f.inst, T.Modality));
      perInst.set(f.sop, f);
    });
    const d = this.frames[0].desc;
    // Metadata rarely carries group 0002; when it does and says compressed, skip the raw attempt.
    const ts = str(this.instances[0], T.TransferSyntaxUID);
    // Colour, palette, 1-bit and float images are left to the server's renderer.
    this.rawCapable = d.spp === 1 && /^MONOCHROME[12]$/.test(d.photometric) &&
      (d.bitsAllocated === 8 || d.bitsAllocated === 16) && (!ts || UNCOMPRESSED.has(ts));
    this.hasMetadata = true;
  }

  /** Frames per second for cine, from the series' own timing when it has one. */
  get cineFps() {
    const inst = this.instances[0] || {};
    const ft = num(inst, T.FrameTime);
    return Math.round(ft > 0 ? 1000 / ft : num(inst, T.RecommendedDisplayFrameRate) || num(inst, T.CineRate) || 10);
  }
}

/** LRU of decoded frames: key → {raw, min, max, rendered: {bmp, quality, wkey, w, h}, bytes}. */
class FrameCache {
  constructor(budget) { this.map = new Map(); this.bytes = 0; this.budget = budget; }
  get(key) {
    const e = this.map.get(key);
    if (e) { this.map.delete(key); this.map.set(key, e); }
    return e;
  }
  entry(key) {
    let e = this.get(key);
    if (!e) { e = { raw: null, rendered: null, bytes: 0 }; this.map.set(key, e); }
    return e;
  }
  account(e, delta) {
    e.bytes += delta; this.bytes += delta;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.budget) break;
      if (v === e) continue;
      this.bytes -= v.bytes;
      v.rendered?.bmp.close?.();
      this.map.delete(k);
    }
  }
}
export const cache = new FrameCache(CACHE_BUDGET);

/**
 * Request scheduler: a few requests in flight, highest priority first, each abortable.
 * Stale prefetches are aborted so a fast scroll does not queue behind slices already passed.
 */
class Scheduler {
  constructor(limit) { this.limit = limit; this.active = 0; this.running = new Map(); this.queue = new Map(); }
  has(key) { return this.running.has(key) || this.queue.has(key); }
  run(key, priority, fn) {
    const existing = this.running.get(key) || this.queue.get(key);
    // An aborted job still winding down must not be handed out again: it will only reject.
    if (existing && !existing.ctrl.signal.aborted) {
      existing.priority = Math.max(existing.priority, priority);
      return existing.promise;
    }
    const job = { key, priority, fn, ctrl: new AbortController() };
    job.promise = new Promise((res, rej) => { job.resolve = res; job.reject = rej; });
    this.queue.set(key, job);
    this._pump();
    return job.promise;
  }
  _pump() {
    while (this.active < this.limit && this.queue.size) {
      let best = null;
      for (const j of this.queue.values()) if (!best || j.priority > best.priority) best = j;
      this.queue.delete(best.key);
      this.running.set(best.key, best);
      this.active++;
      best.fn(best.ctrl.signal).then(best.resolve, best.reject).finally(() => {
        this.active--;
        if (this.running.get(best.key) === best) this.running.delete(best.key);
        this._pump();
      });
    }
  }
  /** Abort every job whose key fails keep(key). */
  cancel(keep) {
    for (const [k, j] of this.queue) if (!keep(k)) { this.queue.delete(k); j.reject(new DOMException('stale', 'AbortError')); }
    for (const [k, j] of this.running) if (!keep(k)) j.ctrl.abort();
  }
}
export const scheduler = new Scheduler(6);

function typedPixels(body, d) {
  const bpp = d.bitsAllocated / 8;
  const n = d.rows * d.cols;
  if (body.byteLength < n * bpp) throw new dw.DicomWebError('undecodable', `Frame: ${body.byteLength} bytes, expected ${n * bpp}`);
  if (bpp === 1) return body.subarray(0, n);
  // Typed arrays need an aligned offset into their buffer.
  const b = body.byteOffset % 2 ? body.slice(0, n * 2) : body;
  return new Uint16Array(b.buffer, b.byteOffset, n);
}

/** Min/max modality value of a frame: the VOI fallback when the file has no window. */
function range(raw, d) {
  const mask = (1 << d.bitsStored) - 1, sign = d.pixelRep ? 1 << (d.bitsStored - 1) : 0;
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < raw.length; i++) {
    let v = raw[i] & mask;
    if (v & sign) v -= mask + 1;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const a = lo * d.slope + d.intercept, b = hi * d.slope + d.intercept;
  return [Math.min(a, b), Math.max(a, b)];
}

export function loadRaw(series, frame, priority) {
  const key = 'raw:' + frame.key;
  const e = cache.get(frame.key);
  if (e?.raw) return Promise.resolve(e);
  return scheduler.run(key, priority, async (signal) => {
    const body = await dw.retrieveFrame(series.studyUid, series.uid, frame.sop, frame.n, signal);
    const raw = typedPixels(body, frame.desc);
    const entry = cache.entry(frame.key);
    entry.raw = raw;
    [entry.min, entry.max] = range(raw, frame.desc);
    cache.account(entry, raw.byteLength);
    return entry;
  });
}

/** opts: {quality, viewport:[w,h], window:[c,w]|null} */
export function loadRendered(series, frame, opts, priority) {
  const wkey = opts.window ? opts.window.map((v) => v.toFixed(2)).join(',') : '';
  const key = `jpg:${frame.key}:${opts.quality}:${wkey}:${opts.viewport}`;
  return scheduler.run(key, priority, async (signal) => {
    const bmp = await dw.retrieveRenderedFrame(series.studyUid, series.uid, frame.sop, frame.n, opts, signal);
    const entry = cache.entry(frame.key);
    const old = entry.rendered;
    entry.rendered = { bmp, quality: opts.quality, wkey, w: bmp.width, h: bmp.height };
    cache.account(entry, bmp.width * bmp.height * 4 - (old ? old.w * old.h * 4 : 0));
    if (old && old.bmp !== bmp) old.bmp.close?.();
    return entry;
  });
}

export { first, values };
