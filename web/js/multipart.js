// multipart/related reader for WADO-RS frame responses (PS3.18 §8.7.1).
// Works on bytes, never on strings: pixel data may contain any byte sequence,
// so only the boundary line (CRLF + "--" + boundary) delimits parts.

const CRLF2 = [13, 10, 13, 10];

/** Boundary from a Content-Type header value, or null if the response is not multipart. */
export function boundaryOf(contentType) {
  if (!contentType || !/^\s*multipart\//i.test(contentType)) return null;
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return m ? (m[1] || m[2]) : null;
}

function indexOf(hay, needle, from) {
  const n0 = needle[0], last = hay.length - needle.length;
  outer: for (let i = from; i <= last; i++) {
    if (hay[i] !== n0) continue;
    for (let j = 1; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function parseHeaders(bytes) {
  const headers = {};
  for (const line of new TextDecoder('latin1').decode(bytes).split('\r\n')) {
    const k = line.indexOf(':');
    if (k > 0) headers[line.slice(0, k).trim().toLowerCase()] = line.slice(k + 1).trim();
  }
  return headers;
}

/**
 * Split a multipart body into parts: [{headers: {lowercased: value}, body: Uint8Array}].
 * Bodies are views into `buf`, not copies.
 */
export function parseMultipart(buf, boundary) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  const delim = new TextEncoder().encode('--' + boundary);
  const parts = [];
  let pos = indexOf(bytes, delim, 0);
  if (pos < 0) throw new Error('multipart boundary not found');
  while (pos >= 0) {
    let start = pos + delim.length;
    // "--boundary--" closes the body.
    if (bytes[start] === 45 && bytes[start + 1] === 45) break;
    if (bytes[start] === 13 && bytes[start + 1] === 10) start += 2;
    const hdrEnd = indexOf(bytes, CRLF2, start);
    // A part may legally carry no headers at all: then it starts right after the CRLF.
    const noHeaders = bytes[start] === 13 && bytes[start + 1] === 10;
    const headers = noHeaders || hdrEnd < 0 ? {} : parseHeaders(bytes.subarray(start, hdrEnd));
    const bodyStart = noHeaders ? start + 2 : hdrEnd + 4;
    const crDelim = new Uint8Array(delim.length + 2);
    crDelim.set([13, 10]); crDelim.set(delim, 2);
    const next = indexOf(bytes, crDelim, bodyStart);
    const bodyEnd = next < 0 ? bytes.length : next;
    parts.push({ headers, body: bytes.subarray(bodyStart, bodyEnd) });
    pos = next < 0 ? -1 : next + 2;
  }
  return parts;
}

/** Value of a media-type parameter, e.g. param('application/octet-stream; transfer-syntax=1.2', 'transfer-syntax'). */
export function param(contentType, name) {
  const m = new RegExp(';\\s*' + name + '=(?:"([^"]*)"|([^;\\s]+))', 'i').exec(contentType || '');
  return m ? (m[1] ?? m[2]) : null;
}
