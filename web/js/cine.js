// Cine: advances the stack from the shared animation frame, never from a timer of its
// own, so playback and painting stay in step. A frame not yet loaded holds the clip
// (briefly) rather than flashing an empty canvas.
import { cache } from './stack.js';

export class Cine {
  constructor(vp) { this.vp = vp; this.fps = 10; this.playing = false; this.due = 0; this.held = 0; }

  play() {
    if (!this.vp.series || this.vp.series.frames.length < 2) return;
    this.playing = true;
    this.due = performance.now();
    this.vp.invalidate();
  }
  stop() { if (this.playing) { this.playing = false; this.vp.invalidate(); } }
  toggle() { this.playing ? this.stop() : this.play(); }
  setFps(fps) { this.fps = Math.max(1, Math.min(60, Math.round(+fps) || 10)); this.vp.invalidate(); }

  tick(now) {
    if (!this.playing || now < this.due) return;
    const vp = this.vp, frames = vp.series.frames;
    const next = (vp.index + 1) % frames.length;
    const e = cache.get(frames[next].key);
    const ready = e && (e.raw || e.rendered);
    // Wait up to one second for a slow frame, then move on regardless.
    if (!ready && now - this.due < 1000) return;
    this.due = Math.max(this.due + 1000 / this.fps, now - 1000 / this.fps);
    vp.setIndex(next);
  }
}
