// Measurements in image coordinates: length (mm from PixelSpacing), angle, and region
// statistics in modality units. Points are stored in image pixels so they follow zoom,
// pan, rotation and flips without being touched.
import { cache, loadRaw } from './stack.js';

const MEASURE = new Set(['length', 'angle', 'ellipse', 'rect']);
const COLOR = '#ffd200', ACTIVE = '#4fc3f7';

function list(vp) {
  const k = vp.frame?.key;
  if (!k) return null;
  if (!vp.annotations.has(k)) vp.annotations.set(k, []);
  return vp.annotations.get(k);
}

/** Physical (mm) vector for an image-pixel vector, or null when uncalibrated. */
function mm(d, dx, dy) {
  if (!d?.spacing) return null;
  return [dx * d.spacing[1], dy * d.spacing[0]];   // PixelSpacing = row spacing \ column spacing
}

export function lengthLabel(d, a, b) {
  const v = mm(d, b[0] - a[0], b[1] - a[1]);
  if (!v) return `${Math.hypot(b[0] - a[0], b[1] - a[1]).toFixed(1)} (uncalibrated, px)`;
  const len = Math.hypot(v[0], v[1]);
  // ImagerPixelSpacing is measured at the detector: magnification is not corrected.
  return `${len.toFixed(1)} mm` + (d.spacingKind === 'ImagerPixelSpacing' ? ' (at detector)' : '');
}

function angleLabel(d, [a, b, c]) {
  const u = mm(d, a[0] - b[0], a[1] - b[1]) || [a[0] - b[0], a[1] - b[1]];
  const v = mm(d, c[0] - b[0], c[1] - b[1]) || [c[0] - b[0], c[1] - b[1]];
  const cos = (u[0] * v[0] + u[1] * v[1]) / (Math.hypot(...u) * Math.hypot(...v) || 1);
  return `${(Math.acos(Math.max(-1, Math.min(1, cos))) * 180 / Math.PI).toFixed(1)}°`;
}

/** Mean / SD / area of a rect or ellipse in modality units (after rescale). */
function regionStats(vp, ann) {
  const f = vp.frame, d = f?.desc;
  if (!d) return null;
  const e = cache.get(f.key);
  if (!e?.raw) {
    // Stats need the original values, not a rendered JPEG: fetch them once for this frame.
    if (vp.series.rawCapable !== false && !ann.fetching) {
      ann.fetching = true;
      loadRaw(vp.series, f, 400).then(() => vp.invalidate(), () => { ann.noRaw = true; vp.invalidate(); });
    }
    return ann.noRaw || vp.series.rawCapable === false ? { error: 'mean/SD unavailable (no original pixels)' } : { error: 'measuring…' };
  }
  if (ann.stats && ann.statsFor === e.raw) return ann.stats;
  const [p, q] = ann.pts;
  const x0 = Math.max(0, Math.floor(Math.min(p[0], q[0]))), x1 = Math.min(d.cols - 1, Math.ceil(Math.max(p[0], q[0])));
  const y0 = Math.max(0, Math.floor(Math.min(p[1], q[1]))), y1 = Math.min(d.rows - 1, Math.ceil(Math.max(p[1], q[1])));
  const cx = (p[0] + q[0]) / 2, cy = (p[1] + q[1]) / 2;
  const rx = Math.abs(q[0] - p[0]) / 2 || 0.5, ry = Math.abs(q[1] - p[1]) / 2 || 0.5;
  const bits = Math.min(d.bitsStored, d.bitsAllocated), mask = 2 ** bits - 1, sign = d.pixelRep ? 2 ** (bits - 1) : 0;
  let n = 0, sum = 0, sum2 = 0;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      // Pixel centres inside the shape count.
      if (ann.type === 'ellipse') {
        const ex = (x + 0.5 - cx) / rx, ey = (y + 0.5 - cy) / ry;
        if (ex * ex + ey * ey > 1) continue;
      } else if (x + 0.5 < Math.min(p[0], q[0]) || x + 0.5 > Math.max(p[0], q[0]) ||
        y + 0.5 < Math.min(p[1], q[1]) || y + 0.5 > Math.max(p[1], q[1])) continue;
      let v = e.raw[y * d.cols + x] & mask;
      if (v & sign) v -= mask + 1;
      v = v * d.slope + d.intercept;
      n++; sum += v; sum2 += v * v;
    }
  }
  if (!n) return { error: 'empty region' };
  const mean = sum / n, sd = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
  const unit = d.modality === 'CT' ? 'HU' : (d.rescaleType && d.rescaleType !== 'US' ? d.rescaleType : '');
  const area = d.spacing ? `${(n * d.spacing[0] * d.spacing[1] / 100).toFixed(2)} cm²` : `${n} px²`;
  ann.statsFor = e.raw;
  return (ann.stats = { mean, sd, n, unit, area });
}

function label(vp, ann) {
  const d = vp.desc;
  if (ann.type === 'length') return lengthLabel(d, ...ann.pts);
  if (ann.type === 'angle') return ann.stage === 1 ? '' : angleLabel(d, ann.pts);
  const s = regionStats(vp, ann);
  if (!s) return '';
  if (s.error) return s.error;
  const u = s.unit ? ' ' + s.unit : '';
  return `mean ${s.mean.toFixed(1)}${u} SD ${s.sd.toFixed(1)}${u} (${s.area})`;
}

const PREFIX = { length: 'L', angle: 'A', ellipse: 'E', rect: 'R' };

/** Text lines for the overlay: the same numbers drawn on the image, readable by tests and screen readers. */
export function labels(vp) {
  const anns = vp.frame && vp.annotations.get(vp.frame.key);
  if (!anns) return [];
  const count = {};
  return anns.map((a) => {
    count[a.type] = (count[a.type] || 0) + 1;
    a.text = label(vp, a);
    return `${PREFIX[a.type]}${count[a.type]} ${a.text}`;
  });
}

export function start(vp, tool, p0) {
  if (!MEASURE.has(tool) || !vp.frame) return null;
  const anns = list(vp);
  const ip = vp.toImage(...p0);
  if (tool === 'angle' && vp.pendingAngle && anns.includes(vp.pendingAngle)) {
    const a = vp.pendingAngle;
    a.pts[2] = ip;
    vp.invalidate();
    return {
      move: (p) => { a.pts[2] = vp.toImage(...p); vp.invalidate(); },
      end: (p) => { a.pts[2] = vp.toImage(...p); a.stage = 2; vp.pendingAngle = null; vp.invalidate(); },
      cancel: () => { anns.splice(anns.indexOf(a), 1); vp.pendingAngle = null; vp.invalidate(); },
    };
  }
  const ann = { type: tool, pts: tool === 'angle' ? [ip, ip, ip] : [ip, ip], stage: 1, live: true };
  anns.push(ann);
  vp.invalidate();
  const remove = () => { anns.splice(anns.indexOf(ann), 1); vp.invalidate(); };
  return {
    move: (p) => {
      const q = vp.toImage(...p);
      ann.pts[1] = q;
      if (tool === 'angle') ann.pts[2] = q;
      ann.stats = null;
      vp.invalidate();
    },
    end: (p) => {
      const [sx, sy] = vp.toScreen(...ann.pts[0]);
      // A tap without travel is not a measurement.
      if (Math.hypot(p[0] - sx, p[1] - sy) < 4) { remove(); return; }
      ann.live = false;
      if (tool === 'angle') vp.pendingAngle = ann; else ann.stage = 2;
      vp.invalidate();
    },
    cancel: remove,
  };
}

/** Mouse hover moves the third arm of an angle being drawn. */
export function hover(vp, p) {
  const a = vp.pendingAngle;
  if (a && vp.annotations.get(vp.frame?.key)?.includes(a)) { a.pts[2] = vp.toImage(...p); vp.invalidate(); }
}

export function clear(vp) {
  if (vp.frame) vp.annotations.delete(vp.frame.key);
  vp.pendingAngle = null;
  vp.invalidate();
}
export function removeLast(vp) {
  const anns = vp.frame && vp.annotations.get(vp.frame.key);
  if (anns?.length) anns.pop();
  vp.pendingAngle = null;
  vp.invalidate();
}

export function draw(vp, ctx) {
  const anns = vp.frame && vp.annotations.get(vp.frame.key);
  if (!anns?.length) return;
  const dpr = window.devicePixelRatio || 1;
  ctx.save();
  ctx.lineWidth = 1.5 * dpr;
  ctx.font = `${13 * dpr}px system-ui, sans-serif`;
  ctx.textBaseline = 'bottom';
  for (const a of anns) {
    const pts = a.pts.map((p) => vp.toScreen(...p));
    ctx.strokeStyle = a.live || a.stage === 1 ? ACTIVE : COLOR;
    ctx.beginPath();
    if (a.type === 'length' || a.type === 'angle') {
      ctx.moveTo(...pts[0]);
      for (const p of pts.slice(1)) ctx.lineTo(...p);
    } else {
      // Regions are defined in image space; draw through the image matrix so rotation follows.
      const [p, q] = a.pts;
      ctx.save();
      ctx.setTransform(vp.matrix());
      const m = vp.matrix(), lw = 1.5 * dpr / Math.sqrt(Math.abs(m.a * m.d - m.b * m.c));
      ctx.lineWidth = lw;
      if (a.type === 'rect') ctx.rect(Math.min(p[0], q[0]), Math.min(p[1], q[1]), Math.abs(q[0] - p[0]), Math.abs(q[1] - p[1]));
      else ctx.ellipse((p[0] + q[0]) / 2, (p[1] + q[1]) / 2, Math.abs(q[0] - p[0]) / 2, Math.abs(q[1] - p[1]) / 2, 0, 0, Math.PI * 2);
      ctx.stroke();
      ctx.restore();
      ctx.beginPath();
    }
    ctx.stroke();
    for (const p of pts) { ctx.fillStyle = ctx.strokeStyle; ctx.fillRect(p[0] - 2 * dpr, p[1] - 2 * dpr, 4 * dpr, 4 * dpr); }
    const text = a.text ?? label(vp, a);
    if (text) {
      const at = a.type === 'angle' ? pts[1] : pts.reduce((m, p) => (p[0] > m[0] ? p : m));
      const w = ctx.measureText(text).width;
      ctx.fillStyle = 'rgba(0,0,0,0.6)';
      ctx.fillRect(at[0] + 6 * dpr, at[1] - 18 * dpr, w + 6 * dpr, 17 * dpr);
      ctx.fillStyle = COLOR;
      ctx.fillText(text, at[0] + 9 * dpr, at[1] - 3 * dpr);
    }
  }
  ctx.restore();
}
