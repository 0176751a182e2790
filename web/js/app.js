// Entry point: hash routing (#/ study list, #/study/UID viewer), the study view's layout,
// toolbar and keyboard. Modules below it never touch the page outside their own elements.
import * as dw from './dicomweb.js';
import { T, str, num, personName, first, formatDate } from './dicomjson.js';
import { StudyList, el } from './studylist.js';
import { Series } from './stack.js';
import { Viewport, PRESETS } from './viewport.js';
import * as tools from './tools.js';
import { showTags } from './tags.js';

const $ = (s) => document.querySelector(s);
const coarse = matchMedia('(pointer: coarse)').matches;
const params = new URLSearchParams(location.search);

function lowBandwidthDefault() {
  if (params.has('low')) return params.get('low') !== '0';
  const saved = localStorage.getItem('lb.low');
  if (saved !== null) return saved === '1';
  // effectiveType comes from measured RTT/throughput ('3g' ≈ RTT ≥ 270 ms); downlink alone is a
  // coarse default before anything was measured, so it is not trusted on its own.
  const c = navigator.connection;
  return !!(c && (c.saveData || /^(slow-2g|2g|3g)$/.test(c.effectiveType || '')));
}

const TOOLS = [['wl', 'W/L', 'Window / level (drag)'], ['scroll', 'Scroll', 'Scroll the stack (drag)'],
  ['pan', 'Pan', 'Pan (drag)'], ['zoom', 'Zoom', 'Zoom (drag)'], ['length', 'Length', 'Measure a length'],
  ['angle', 'Angle', 'Measure an angle'], ['ellipse', 'Ellipse', 'Ellipse region: mean / SD'],
  ['rect', 'Rect', 'Rectangle region: mean / SD']];

class App {
  constructor() {
    this.main = $('#main');
    this.list = new StudyList(this.main);
    this.tool = coarse ? 'scroll' : 'wl';
    this.lowBandwidth = lowBandwidthDefault();
    this.viewports = [];
    this.active = null;
    this.perf = { routeStart: 0, firstImage: null };
    window.addEventListener('hashchange', () => this.route());
    document.addEventListener('keydown', (e) => this.key(e));
    this.route();
  }

  route() {
    const h = location.hash || '#/';
    const m = /^#\/study\/([^?/]+)/.exec(h);
    this.viewports.forEach((v) => v.destroy());
    this.viewports = [];
    this.active = null;
    document.body.classList.toggle('viewing', !!m);
    if (m) this.openStudy(decodeURIComponent(m[1]));
    else { document.title = 'Lightbox'; this.renderHeader(null); this.list.render(h); }
  }

  renderHeader(study) {
    const back = study ? el('a', { href: '#/', class: 'back', text: '‹ Studies' }) : null;
    const title = el('span', { class: 'title', text: study ? study : 'Lightbox' });
    $('#top').replaceChildren(el('div', { class: 'brand' }, back, title));
  }

  // ------------------------------------------------------------------ study view
  async openStudy(uid) {
    this.perf = { routeStart: performance.now(), firstImage: null };
    this.firstImageShown = false;
    this.studyUid = uid;
    this.headerText = null;
    this.renderHeader('Loading study…');
    this.strip = el('nav', { class: 'strip', 'aria-label': 'Series' });
    this.grid = el('div', { class: 'grid' });
    this.tagPanel = el('aside', { class: 'tags-panel', 'aria-label': 'Tags' });
    this.toolbar = this.buildToolbar();
    this.main.replaceChildren(el('div', { class: 'study' }, this.toolbar, el('div', { class: 'body' }, this.strip, this.grid, this.tagPanel)));
    const vp = this.addViewport();
    this.activate(vp);
    // Patient and study for the header and overlay before any instance metadata: from the
    // list when we came from it, else one small QIDO query alongside the series query.
    this.studyRow = this.list.rows.get(uid) || null;
    if (this.studyRow) this.showStudyTitle(this.studyRow);
    else dw.searchForStudies({ StudyInstanceUID: uid, includefield: '00081030' }).then((r) => {
      if (this.studyUid === uid && r[0]) { this.studyRow = r[0]; this.showStudyTitle(r[0]); this.viewports.forEach((v) => v.invalidate()); }
    }, () => {});
    let rows;
    try {
      rows = await dw.searchForSeries(uid, { includefield: '0008103E,00200011,00201209,00080021,00080031' });
    } catch (err) {
      vp.showError(err);
      this.renderHeader('Study');
      return;
    }
    if (!rows.length) { vp.showError(new Error('This study has no series.')); return; }
    this.series = rows.map((r) => new Series(uid, r))
      .sort((a, b) => (+a.number || 0) - (+b.number || 0));
    this.buildStrip();
    // Non-image series (reports, presentation states) are not a good first view.
    const firstImage = this.series.find((s) => !/^(SR|PR|KO|DOC|SEG|RTSTRUCT)$/.test(s.modality)) || this.series[0];
    this.load(vp, firstImage);
  }

  load(vp, series) {
    vp.setLowBandwidth(this.lowBandwidth);
    vp.setSeries(series);
    for (const b of this.strip.querySelectorAll('button')) b.classList.toggle('shown', this.viewports.some((v) => v.series?.uid === b.dataset.uid));
  }

  buildStrip() {
    const buttons = this.series.map((s) => {
      const img = el('img', { alt: '', width: 96, height: 96, 'data-src': dw.thumbnailUrl(this.studyUid, s.uid, 128) });
      img.addEventListener('error', () => img.replaceWith(el('span', { class: 'badge big', text: s.modality || '?' })));
      const b = el('button', { class: 'series', 'data-uid': s.uid, title: s.description || `Series ${s.number}` },
        img, el('span', { class: 'label', text: `${s.number ? '#' + s.number + ' ' : ''}${s.modality} ${s.description}`.trim() }),
        el('span', { class: 'count', text: s.count ? `${s.count} im` : '' }));
      b.addEventListener('click', () => this.load(this.active || this.viewports[0], s));
      b.draggable = true;
      b.addEventListener('dragstart', (e) => e.dataTransfer.setData('text/plain', s.uid));
      return b;
    });
    this.strip.replaceChildren(...buttons);
    // On a slow link the thumbnails wait for the first image: they share the same pipe.
    if (!this.lowBandwidth) this.loadThumbs();
  }
  loadThumbs() {
    for (const img of this.strip?.querySelectorAll('img[data-src]') || []) { img.src = img.dataset.src; img.removeAttribute('data-src'); }
  }

  addViewport() {
    const vp = new Viewport(this.grid, this);
    vp.el.addEventListener('dragover', (e) => e.preventDefault());
    vp.el.addEventListener('drop', (e) => {
      e.preventDefault();
      const s = this.series?.find((x) => x.uid === e.dataTransfer.getData('text/plain'));
      if (s) { this.activate(vp); this.load(vp, s); }
    });
    this.viewports.push(vp);
    this.grid.dataset.count = String(this.viewports.length);
    return vp;
  }

  activate(vp) {
    if (this.active === vp) return;
    this.active = vp;
    for (const v of this.viewports) v.el.classList.toggle('active', v === vp);
    this.syncToolbar();
  }

  onFirstImage() {
    this.firstImageShown = true;
    this.perf.firstImage = performance.now();
    if (this.lowBandwidth) { this.loadThumbs(); for (const v of this.viewports) v._load(); }
  }

  showStudyTitle(ds) {
    const name = personName(first(ds, T.PatientName));
    const t = [name, formatDate(str(ds, T.StudyDate)), str(ds, T.StudyDescription)].filter(Boolean).join(' · ');
    if (t && this.headerText !== t) { this.headerText = t; this.renderHeader(t); document.title = `${name || 'Study'} – Lightbox`; }
  }

  onViewportChange(vp) {
    if (vp !== this.active) return;
    const inst = vp.frame?.inst;
    if (inst && first(inst, T.PatientName) !== undefined) this.showStudyTitle(inst);
    this.syncToolbar();
    if (this.tagPanel?.classList.contains('open')) this.showTags();
  }

  showTags() {
    const vp = this.active, f = vp?.frame;
    // By object, not UID: the QIDO row is replaced by the full metadata when it arrives.
    if (this.tagsFor === f?.inst && this.tagPanel.childElementCount) return;
    this.tagsFor = f?.inst;
    showTags(this.tagPanel, f?.inst, f ? `Image ${vp.index + 1} tags` : 'Tags');
  }

  // ------------------------------------------------------------------ toolbar
  buildToolbar() {
    const bar = el('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Image tools' });
    const group = (...k) => el('div', { class: 'group' }, ...k);
    const btn = (text, title, fn, cls = '') => el('button', { type: 'button', text, title, 'aria-label': title, class: cls, onclick: fn });
    this.toolButtons = TOOLS.map(([id, text, title]) => {
      const b = btn(text, title, () => { this.tool = id; this.syncToolbar(); }, 'tool');
      b.dataset.tool = id;
      return b;
    });
    this.presetSelect = el('select', { 'aria-label': 'Window preset', title: 'Window preset' });
    this.presetSelect.addEventListener('change', () => {
      const v = this.presetSelect.value, vp = this.active;
      if (!vp) return;
      if (v === 'default') { vp.wc = vp.ww = null; vp.invalidate(); if (!vp.useRaw) vp._scheduleLoad(); }
      else if (v === 'range') { const r = vp.pixelRange(); if (r) vp.setWindow((r[0] + r[1]) / 2, Math.max(1, r[1] - r[0])); }
      else if (v) { const [c, w] = v.split(',').map(Number); vp.setWindow(c, w); }
      this.presetSelect.value = '';
    });
    this.fps = el('input', { type: 'number', min: 1, max: 60, value: 10, title: 'Cine frames per second', 'aria-label': 'Cine frames per second', class: 'fps' });
    this.fps.addEventListener('change', () => this.active?.cine.setFps(this.fps.value));
    this.playBtn = btn('▶', 'Play / pause cine (space)', () => { const c = this.active?.cine; if (c) { c.setFps(this.fps.value); c.toggle(); this.syncToolbar(); } });
    this.lowBtn = btn('Low bw', 'Low-bandwidth mode: server-rendered JPEG sized to the screen', () => {
      this.lowBandwidth = !this.lowBandwidth;
      localStorage.setItem('lb.low', this.lowBandwidth ? '1' : '0');
      for (const v of this.viewports) v.setLowBandwidth(this.lowBandwidth);
      this.loadThumbs();
      this.syncToolbar();
    }, 'toggle');
    this.layoutBtn = btn('1×2', 'Two series side by side', () => this.toggleLayout(), 'toggle desktop');
    this.tagsBtn = btn('Tags', 'Tag browser (t)', () => {
      this.tagPanel.classList.toggle('open');
      this.tagsFor = null;
      if (this.tagPanel.classList.contains('open')) this.showTags();
      this.syncToolbar();
    }, 'toggle');
    const a = (f) => () => { if (this.active) f(this.active); };
    bar.append(
      group(...this.toolButtons),
      group(this.presetSelect),
      group(btn('Fit', 'Fit to window (f)', a((v) => v.fit())), btn('1:1', 'One image pixel per screen pixel', a((v) => v.oneToOne())),
        btn('Reset', 'Reset view (r)', a((v) => v.resetView())), btn('Invert', 'Invert (i)', a((v) => v.toggleInvert())),
        btn('Rotate', 'Rotate 90°', a((v) => v.rotate())), btn('Flip H', 'Flip horizontally', a((v) => v.flip(true))),
        btn('Flip V', 'Flip vertically', a((v) => v.flip(false)))),
      group(this.playBtn, this.fps),
      group(btn('Clear', 'Delete this image\'s measurements', a((v) => tools.clear(v)))),
      group(this.layoutBtn, this.tagsBtn, this.lowBtn));
    return bar;
  }

  syncToolbar() {
    if (!this.toolButtons) return;
    for (const b of this.toolButtons) b.setAttribute('aria-pressed', String(b.dataset.tool === this.tool));
    this.lowBtn.setAttribute('aria-pressed', String(this.lowBandwidth));
    this.layoutBtn.setAttribute('aria-pressed', String(this.viewports.length > 1));
    this.tagsBtn.setAttribute('aria-pressed', String(this.tagPanel?.classList.contains('open')));
    const vp = this.active;
    this.playBtn.textContent = vp?.cine.playing ? '❚❚' : '▶';
    if (vp?.series && document.activeElement !== this.fps) this.fps.value = vp.cine.fps;
    const mod = vp?.series?.modality || '';
    const key = mod + (vp?.series?.uid || '');
    if (this.presetKey !== key) {
      this.presetKey = key;
      const opts = [el('option', { value: '', text: 'Presets' }), el('option', { value: 'default', text: 'Image default' }),
        el('option', { value: 'range', text: 'Full range' })];
      for (const [name, c, w] of PRESETS[mod] || PRESETS.DEFAULT) opts.push(el('option', { value: `${c},${w}`, text: `${name} (${c}/${w})` }));
      this.presetSelect.replaceChildren(...opts);
    }
  }

  toggleLayout() {
    if (this.viewports.length > 1) {
      const extra = this.viewports.pop();
      if (this.active === extra) this.activate(this.viewports[0]);
      extra.destroy();
      this.grid.dataset.count = '1';
    } else {
      const vp = this.addViewport();
      const shown = this.viewports[0].series;
      const next = this.series?.find((s) => s !== shown && !/^(SR|PR|KO)$/.test(s.modality)) || shown;
      if (next) this.load(vp, next);
      this.activate(vp);
    }
    for (const v of this.viewports) v.invalidate();
    this.syncToolbar();
  }

  key(e) {
    const vp = this.active;
    if (!vp || /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName) || e.ctrlKey || e.metaKey || e.altKey) return;
    // Space and Enter on a focused button press that button.
    if (e.target.tagName === 'BUTTON' && (e.key === ' ' || e.key === 'Enter')) return;
    const n = vp.series?.frames.length || 1;
    const map = {
      ArrowUp: () => vp.scrollBy(-1), ArrowLeft: () => vp.scrollBy(-1),
      ArrowDown: () => vp.scrollBy(1), ArrowRight: () => vp.scrollBy(1),
      PageUp: () => vp.scrollBy(-Math.max(1, Math.round(n / 10))), PageDown: () => vp.scrollBy(Math.max(1, Math.round(n / 10))),
      Home: () => vp.setIndex(0), End: () => vp.setIndex(n - 1),
      ' ': () => { vp.cine.setFps(this.fps.value); vp.cine.toggle(); this.syncToolbar(); },
      r: () => vp.resetView(), i: () => vp.toggleInvert(), f: () => vp.fit(),
      '+': () => vp.zoomAt(1.25, vp.canvas.width / 2, vp.canvas.height / 2),
      '-': () => vp.zoomAt(0.8, vp.canvas.width / 2, vp.canvas.height / 2),
      Delete: () => tools.removeLast(vp), Backspace: () => tools.removeLast(vp),
      Escape: () => { if (vp.pendingAngle) tools.removeLast(vp); },
      t: () => this.tagsBtn.click(),
    };
    const presets = PRESETS[vp.series?.modality] || [];
    if (/^[1-9]$/.test(e.key) && presets[+e.key - 1]) { const [, c, w] = presets[+e.key - 1]; vp.setWindow(c, w); e.preventDefault(); return; }
    if (map[e.key]) { map[e.key](); e.preventDefault(); }
  }
}

// Handy for tests and for measuring in the field: window.lightbox.app.perf.
window.lightbox = { app: new App() };
