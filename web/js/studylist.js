// Study list: QIDO-RS search form, results newest first, paging. The filters live in the
// URL hash so Back returns to the same list.
import * as dw from './dicomweb.js';
import { T, str, num, personName, first, formatDate, formatTime, values } from './dicomjson.js';

export const PAGE = 25;
const MODALITIES = ['', 'CT', 'MR', 'CR', 'DX', 'US', 'XA', 'RF', 'MG', 'NM', 'PT', 'OT', 'SR', 'SEG'];
// Asked for explicitly: a server's default study attributes need not include them (PS3.18 §10.6.3.3.1).
const INCLUDE = ['00081030', '00080061', '00201206', '00201208', '00100030', '00080050'].join(',');

function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...kids.filter((k) => k !== null && k !== undefined));
  return e;
}
export { el };

/** Hash query ("#/?name=x&page=2") → filter object. */
export function filtersFromHash(hash) {
  const q = new URLSearchParams(hash.split('?')[1] || '');
  return Object.fromEntries(['name', 'pid', 'acc', 'mod', 'from', 'to', 'page', 'size'].map((k) => [k, q.get(k) || '']));
}

const pageSize = (f) => Math.max(1, Math.min(200, +f.size || PAGE));
const wild = (v) => (v.includes('*') || v.includes('?') ? v : `*${v}*`);
const da = (d) => d.replaceAll('-', '');

/** Filter object → QIDO query parameters. */
export function qidoParams(f) {
  const size = pageSize(f);
  // One more than a page: its presence says whether there is a next page.
  const p = { includefield: INCLUDE, limit: size + 1, offset: (Math.max(1, +f.page || 1) - 1) * size };
  if (f.name) { p.PatientName = wild(f.name); p.fuzzymatching = 'true'; }
  if (f.pid) p.PatientID = f.pid;
  if (f.acc) p.AccessionNumber = f.acc;
  if (f.mod) p.ModalitiesInStudy = f.mod;
  if (f.from || f.to) p.StudyDate = f.from === f.to ? da(f.from) : `${da(f.from)}-${da(f.to)}`;
  return p;
}

export class StudyList {
  constructor(root) {
    this.root = root;
    this.showThumbs = localStorage.getItem('lb.thumbs') === '1';
    this.rows = new Map();  // StudyInstanceUID → QIDO row, so the viewer can title a study at once
  }

  render(hash) {
    const f = filtersFromHash(hash);
    this.ctrl?.abort();
    const input = (name, label, type = 'search') =>
      el('label', {}, el('span', { text: label }), el('input', { name, type, value: f[name], autocomplete: 'off' }));
    const mod = el('select', { name: 'mod' }, ...MODALITIES.map((m) => el('option', { value: m, text: m || 'Any', selected: f.mod === m })));
    const thumbs = el('input', { type: 'checkbox', checked: this.showThumbs });
    const form = el('form', { class: 'search', role: 'search' },
      input('name', 'Patient name'), input('pid', 'Patient ID'), input('acc', 'Accession'),
      el('label', {}, el('span', { text: 'Modality' }), mod),
      input('from', 'From', 'date'), input('to', 'To', 'date'),
      el('div', { class: 'actions' },
        el('button', { type: 'submit', class: 'primary', text: 'Search' }),
        el('button', { type: 'reset', text: 'Clear' }),
        el('label', { class: 'inline' }, thumbs, el('span', { text: 'Thumbnails' }))));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const fd = new FormData(form);
      const q = new URLSearchParams();
      for (const [k, v] of fd) if (v) q.set(k, v);
      const h = '#/' + (q.toString() ? '?' + q : '');
      if (location.hash === h) this.render(h); else location.hash = h;
    });
    form.addEventListener('reset', () => setTimeout(() => { location.hash = '#/'; }));
    thumbs.addEventListener('change', () => {
      this.showThumbs = thumbs.checked;
      localStorage.setItem('lb.thumbs', thumbs.checked ? '1' : '0');
      this.render(location.hash);
    });
    this.status = el('div', { class: 'status', role: 'status' });
    this.results = el('div', { class: 'results' });
    this.pager = el('nav', { class: 'pager', 'aria-label': 'Pages' });
    this.root.replaceChildren(el('h1', { class: 'sr-only', text: 'Studies' }), form, this.status, this.results, this.pager);
    this.search(f);
  }

  async search(f) {
    const ctrl = (this.ctrl = new AbortController());
    this.status.className = 'status';
    this.status.textContent = 'Searching…';
    this.results.replaceChildren();
    this.pager.replaceChildren();
    let rows;
    try {
      rows = await dw.searchForStudies(qidoParams(f), ctrl.signal);
    } catch (err) {
      if (err.name === 'AbortError') return;
      this.status.className = 'status error';
      this.status.textContent = err.message;
      this.status.append(' ', el('button', { text: 'Retry', onclick: () => this.search(f) }));
      return;
    }
    for (const r of rows) this.rows.set(str(r, T.StudyInstanceUID), r);
    const page = Math.max(1, +f.page || 1), size = pageSize(f);
    const more = rows.length > size;
    rows = rows.slice(0, size);
    // QIDO has no sort parameter; order the page newest first ourselves.
    const when = (r) => str(r, T.StudyDate) + str(r, T.StudyTime).padEnd(6, '0');
    rows.sort((a, b) => when(b).localeCompare(when(a)));
    if (!rows.length) {
      this.status.className = 'status empty';
      this.status.textContent = page > 1 ? 'No more studies.' : 'No studies match these filters.';
    } else {
      const start = (page - 1) * size + 1;
      this.status.textContent = `Studies ${start}–${start + rows.length - 1}${more ? '' : ` (end of list)`}`;
      this.results.append(this.table(rows));
    }
    const go = (p) => () => {
      const q = new URLSearchParams(location.hash.split('?')[1] || '');
      q.set('page', p);
      location.hash = '#/?' + q;
    };
    if (page > 1) this.pager.append(el('button', { text: '‹ Previous', onclick: go(page - 1) }));
    if (more) this.pager.append(el('button', { text: 'Next ›', onclick: go(page + 1) }));
  }

  table(rows) {
    const th = (t, cls) => el('th', { text: t, class: cls });
    const head = el('tr', {}, this.showThumbs ? th('', 'thumb') : null, th('Patient'), th('ID', 'opt'), th('Date'),
      th('Modality'), th('Description', 'opt'), th('Accession', 'opt'), th('Images', 'opt'));
    const body = el('tbody');
    for (const r of rows) {
      const uid = str(r, T.StudyInstanceUID);
      const href = '#/study/' + encodeURIComponent(uid);
      const mods = values(r, T.ModalitiesInStudy);
      const badges = el('span', { class: 'badges' }, ...mods.map((m) => el('span', { class: 'badge', text: m })));
      let thumb = null;
      if (this.showThumbs) {
        const img = el('img', { alt: '', loading: 'lazy', width: 64, height: 64, src: dw.thumbnailUrl(uid, null, 64) });
        // No thumbnail from this server: the modality badge stands in.
        img.addEventListener('error', () => img.replaceWith(el('span', { class: 'badge big', text: mods[0] || '?' })));
        thumb = el('td', { class: 'thumb' }, img);
      }
      const series = num(r, T.NumberOfStudyRelatedSeries), inst = num(r, T.NumberOfStudyRelatedInstances);
      const tr = el('tr', { 'data-uid': uid },
        thumb,
        el('td', {}, el('a', { href, text: personName(first(r, T.PatientName)) || '(no name)' })),
        el('td', { class: 'opt', text: str(r, T.PatientID) }),
        el('td', { text: `${formatDate(str(r, T.StudyDate))} ${formatTime(str(r, T.StudyTime))}`.trim() }),
        el('td', {}, badges),
        el('td', { class: 'opt', text: str(r, T.StudyDescription) }),
        el('td', { class: 'opt', text: str(r, T.AccessionNumber) }),
        el('td', { class: 'opt', text: [series && `${series} se`, inst && `${inst} im`].filter(Boolean).join(' / ') }));
      tr.addEventListener('click', (e) => { if (e.target.tagName !== 'A') location.hash = href; });
      body.append(tr);
    }
    return el('table', { class: 'studies' }, el('thead', {}, head), body);
  }
}
