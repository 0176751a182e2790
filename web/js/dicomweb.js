// DICOMweb client (PS3.18). Every URL is relative to the page ("./dicomweb/..."), so the
// viewer works unchanged behind a reverse proxy at a path prefix and against any
// DICOMweb origin that serves it.
import { boundaryOf, parseMultipart, param } from './multipart.js';

export const ROOT = './dicomweb';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const IMPLICIT_LE = '1.2.840.10008.1.2';
// Uncompressed little endian only: the client LUT reads raw bytes and nothing else.
export const FRAME_ACCEPT = `multipart/related; type="application/octet-stream"; transfer-syntax=${EXPLICIT_LE}`;

const token = new URLSearchParams(location.search).get('token');

export class DicomWebError extends Error {
  constructor(kind, message, status = 0) {
    super(message);
    this.kind = kind;      // 'unreachable' | 'unauthorized' | 'notfound' | 'undecodable' | 'server' | 'format'
    this.status = status;
  }
}

function errorFor(status, what) {
  if (status === 401 || status === 403) return new DicomWebError('unauthorized', 'Not authorized', status);
  if (status === 404) return new DicomWebError('notfound', `${what}: not found (404)`, status);
  if (status === 406 || status === 415 || status === 501 || status === 400 || status === 422)
    return new DicomWebError('undecodable', `${what}: image not decodable by the server (${status})`, status);
  if (status === 502 || status === 503 || status === 504)
    return new DicomWebError('unreachable', `Server unreachable (${status})`, status);
  return new DicomWebError('server', `${what}: server error (${status})`, status);
}

/** fetch() with the bearer token, mapping failures onto DicomWebError. AbortError passes through. */
export async function request(url, { accept, signal, what = 'Request' } = {}) {
  const headers = {};
  if (accept) headers.Accept = accept;
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { headers, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new DicomWebError('unreachable', 'Server unreachable', 0);
  }
  if (!res.ok) {
    const err = errorFor(res.status, what);
    // PS3.18 §8.5: the server may say why in a Warning header ("299 host: reason").
    const why = /^\d{3}\s+\S+\s+(.*)$/.exec(res.headers.get('Warning') || '')?.[1];
    if (why && err.kind !== 'unauthorized') err.message += ` — ${why.replace(/^"|"$/g, '').replace(/^[0-9A-F]{4}\s+/, '')}`;
    throw err;
  }
  return res;
}

/** URL for <img>: headers cannot be set there, so the token rides as a query parameter. */
export function imgUrl(url) {
  if (!token) return url;
  return url + (url.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
}

const enc = encodeURIComponent;
export const studyUrl = (s) => `${ROOT}/studies/${enc(s)}`;
export const seriesUrl = (s, se) => `${studyUrl(s)}/series/${enc(se)}`;
export const instanceUrl = (s, se, i) => `${seriesUrl(s, se)}/instances/${enc(i)}`;
export const frameUrl = (s, se, i, n) => `${instanceUrl(s, se, i)}/frames/${n}`;

async function json(url, signal, what) {
  const res = await request(url, { accept: 'application/dicom+json', signal, what });
  // QIDO answers 204 when nothing matched.
  if (res.status === 204) return [];
  const text = await res.text();
  if (!text.trim()) return [];
  try {
    return JSON.parse(text);
  } catch {
    throw new DicomWebError('format', `${what}: the server's answer is not DICOM JSON`);
  }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.append(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

/** QIDO-RS Search for Studies (PS3.18 §10.6). */
export const searchForStudies = (params, signal) =>
  json(`${ROOT}/studies${query(params)}`, signal, 'Study search');
/** QIDO-RS Search for Series. */
export const searchForSeries = (s, params, signal) =>
  json(`${studyUrl(s)}/series${query(params)}`, signal, 'Series search');
/** QIDO-RS Search for Instances of one series. */
export const searchForInstances = (s, se, params, signal) =>
  json(`${seriesUrl(s, se)}/instances${query(params)}`, signal, 'Instance search');
/** WADO-RS Retrieve Series Metadata (PS3.18 §10.4). */
export const retrieveSeriesMetadata = (s, se, signal) =>
  json(`${seriesUrl(s, se)}/metadata`, signal, 'Series metadata');

/**
 * WADO-RS Retrieve Frames as uncompressed little endian.
 * Returns the first part's bytes, or throws 'undecodable' when the server sent
 * something else (a compressed syntax we cannot decode in the browser).
 */
export async function retrieveFrame(s, se, i, n, signal) {
  const res = await request(frameUrl(s, se, i, n), { accept: FRAME_ACCEPT, signal, what: 'Frame' });
  const ct = res.headers.get('Content-Type') || '';
  const buf = new Uint8Array(await res.arrayBuffer());
  const boundary = boundaryOf(ct);
  let partType = ct, body = buf;
  if (boundary) {
    const parts = parseMultipart(buf, boundary);
    if (!parts.length) throw new DicomWebError('format', 'Frame: empty multipart response');
    partType = parts[0].headers['content-type'] || param(ct, 'type') || 'application/octet-stream';
    body = parts[0].body;
  }
  const ts = param(partType, 'transfer-syntax') || param(ct, 'transfer-syntax');
  if (!/^application\/octet-stream/i.test(partType.trim()) || (ts && ts !== EXPLICIT_LE && ts !== IMPLICIT_LE))
    throw new DicomWebError('undecodable', `Frame: got ${partType.split(';')[0]} ${ts || ''}, need uncompressed`);
  return body;
}

/**
 * WADO-RS Retrieve Rendered Frame (PS3.18 §10.4.1.1.3) as an ImageBitmap.
 * opts: {quality, viewport: [w,h], window: [c,w]}.
 */
export async function retrieveRenderedFrame(s, se, i, n, opts = {}, signal) {
  const p = {};
  if (opts.quality) p.quality = Math.round(opts.quality);
  if (opts.viewport) p.viewport = opts.viewport.map(Math.round).join(',');
  if (opts.window) p.window = `${+opts.window[0].toFixed(3)},${+opts.window[1].toFixed(3)},linear`;
  const res = await request(`${frameUrl(s, se, i, n)}/rendered${query(p)}`,
    { accept: opts.accept || 'image/jpeg', signal, what: 'Rendered image' });
  const blob = await res.blob();
  try {
    return await createImageBitmap(blob);
  } catch {
    throw new DicomWebError('undecodable', 'Rendered image: the browser cannot decode the answer');
  }
}

export const thumbnailUrl = (s, se, size = 128) =>
  imgUrl(`${se ? seriesUrl(s, se) : studyUrl(s)}/thumbnail?viewport=${size},${size}`);
