// Tag browser for the current image, built from the series metadata (DICOM JSON).
// Everything is inserted as text nodes: values come from the data and are never markup.
import { T } from './dicomjson.js';

// Names for the tags a reader looks for; anything else shows its number and VR.
const NAMES = Object.fromEntries(Object.entries(T).map(([k, v]) => [v, k]));
Object.assign(NAMES, {
  '00080005': 'SpecificCharacterSet', '00080008': 'ImageType', '00080012': 'InstanceCreationDate',
  '00080013': 'InstanceCreationTime', '00080021': 'SeriesDate', '00080022': 'AcquisitionDate',
  '00080023': 'ContentDate', '00080031': 'SeriesTime', '00080032': 'AcquisitionTime', '00080033': 'ContentTime',
  '00080070': 'Manufacturer', '00080090': 'ReferringPhysicianName', '00081010': 'StationName',
  '00081090': 'ManufacturerModelName', '00081140': 'ReferencedImageSequence', '00180015': 'BodyPartExamined',
  '00180060': 'KVP', '00180088': 'SpacingBetweenSlices', '00181020': 'SoftwareVersions',
  '00181030': 'ProtocolName', '00181150': 'ExposureTime', '00181151': 'XRayTubeCurrent',
  '00181152': 'Exposure', '00181210': 'ConvolutionKernel', '00185100': 'PatientPosition',
  '00180080': 'RepetitionTime', '00180081': 'EchoTime', '00180087': 'MagneticFieldStrength',
  '00200010': 'StudyID', '00200012': 'AcquisitionNumber', '00200052': 'FrameOfReferenceUID',
  '00201040': 'PositionReferenceIndicator', '00204000': 'ImageComments', '00280006': 'PlanarConfiguration',
  '00281055': 'WindowCenterWidthExplanation', '00282110': 'LossyImageCompression', '00100021': 'IssuerOfPatientID',
  '00101010': 'PatientAge', '00101020': 'PatientSize', '00101030': 'PatientWeight', '00321060': 'RequestedProcedureDescription',
  '00400244': 'PerformedProcedureStepStartDate', '00400254': 'PerformedProcedureStepDescription',
  '00081060': 'NameOfPhysiciansReadingStudy', '00081070': 'OperatorsName', '00080018': 'SOPInstanceUID',
  '7FE00010': 'PixelData', '00020010': 'TransferSyntaxUID', '00020002': 'MediaStorageSOPClassUID',
});

function text(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return v.Alphabetic ?? JSON.stringify(v);
  return String(v);
}

function valueText(e) {
  if (e.BulkDataURI) return `(bulk data: ${e.BulkDataURI})`;
  if (e.InlineBinary) return `(binary, ${Math.round(e.InlineBinary.length * 3 / 4)} bytes)`;
  if (!Array.isArray(e.Value)) return '';
  const s = e.Value.map(text).join('\\');
  return s.length > 300 ? s.slice(0, 300) + '…' : s;
}

function rows(ds, depth, out) {
  for (const tag of Object.keys(ds).sort()) {
    const e = ds[tag];
    const name = NAMES[tag.toUpperCase()] || (parseInt(tag.slice(0, 4), 16) % 2 ? 'Private' : '');
    const tr = document.createElement('tr');
    tr.className = 'd' + Math.min(depth, 4);
    const cells = [`(${tag.slice(0, 4)},${tag.slice(4)})`, e.vr || '', name, e.vr === 'SQ' ? `${(e.Value || []).length} item(s)` : valueText(e)];
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.append(td);
    }
    tr.dataset.search = cells.join(' ').toLowerCase();
    out.push(tr);
    if (e.vr === 'SQ' && Array.isArray(e.Value)) {
      e.Value.forEach((item, i) => {
        const it = document.createElement('tr');
        it.className = 'item d' + Math.min(depth + 1, 4);
        const td = document.createElement('td');
        td.colSpan = 4;
        td.textContent = `Item ${i + 1}`;
        it.append(td);
        it.dataset.search = '';
        out.push(it);
        rows(item || {}, depth + 1, out);
      });
    }
  }
}

/** Fill `panel` with a filterable table of `ds`. */
export function showTags(panel, ds, title) {
  panel.replaceChildren();
  const head = document.createElement('div');
  head.className = 'tags-head';
  const h = document.createElement('h2');
  h.textContent = title;
  const filter = document.createElement('input');
  filter.type = 'search';
  filter.placeholder = 'Filter tags';
  filter.setAttribute('aria-label', 'Filter tags');
  const close = document.createElement('button');
  close.textContent = '✕';
  close.title = 'Close tag browser';
  close.addEventListener('click', () => panel.classList.remove('open'));
  head.append(h, filter, close);
  const table = document.createElement('table');
  table.className = 'tags';
  const body = document.createElement('tbody');
  const out = [];
  if (ds) rows(ds, 0, out); else {
    const tr = document.createElement('tr');
    tr.textContent = 'No metadata loaded for this image yet.';
    out.push(tr);
  }
  body.append(...out);
  table.append(body);
  filter.addEventListener('input', () => {
    const q = filter.value.trim().toLowerCase();
    for (const tr of out) tr.hidden = !!q && !tr.dataset.search?.includes(q);
  });
  const scroll = document.createElement('div');
  scroll.className = 'tags-scroll';
  scroll.append(table);
  panel.append(head, scroll);
}
