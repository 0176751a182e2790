// Reading the DICOM JSON model (PS3.18 Annex F): tags are 8 hex digits, values in "Value".

export const T = {
  PatientName: '00100010', PatientID: '00100020', PatientBirthDate: '00100030', PatientSex: '00100040',
  StudyInstanceUID: '0020000D', StudyDate: '00080020', StudyTime: '00080030', AccessionNumber: '00080050',
  StudyDescription: '00081030', ModalitiesInStudy: '00080061', NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208', SeriesInstanceUID: '0020000E', SeriesNumber: '00200011',
  SeriesDescription: '0008103E', Modality: '00080060', NumberOfSeriesRelatedInstances: '00201209',
  SOPInstanceUID: '00080018', SOPClassUID: '00080016', InstanceNumber: '00200013',
  NumberOfFrames: '00280008', Rows: '00280010', Columns: '00280011', BitsAllocated: '00280100',
  BitsStored: '00280101', HighBit: '00280102', PixelRepresentation: '00280103',
  SamplesPerPixel: '00280002', PhotometricInterpretation: '00280004',
  RescaleIntercept: '00281052', RescaleSlope: '00281053', RescaleType: '00281054',
  WindowCenter: '00281050', WindowWidth: '00281051', PixelSpacing: '00280030',
  ImagerPixelSpacing: '00181164', SliceLocation: '00201041', ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037', SliceThickness: '00180050', FrameTime: '00181063',
  CineRate: '00180040', RecommendedDisplayFrameRate: '00082144', TransferSyntaxUID: '00020010',
  SharedFunctionalGroups: '52009229', PerFrameFunctionalGroups: '52009230',
  PixelMeasuresSequence: '00289110', PixelValueTransformationSequence: '00289145',
  FrameVOILUTSequence: '00289132', PlanePositionSequence: '00209113',
  PixelAspectRatio: '00280034', InstitutionName: '00080080',
};

export function values(ds, tag) {
  const e = ds && ds[tag];
  return e && Array.isArray(e.Value) ? e.Value : [];
}
export function first(ds, tag, dflt = undefined) {
  const v = values(ds, tag);
  return v.length ? v[0] : dflt;
}
export function num(ds, tag, dflt = undefined) {
  const v = first(ds, tag);
  const n = typeof v === 'number' ? v : parseFloat(v);
  return Number.isFinite(n) ? n : dflt;
}
export function nums(ds, tag) {
  return values(ds, tag).map(Number).filter(Number.isFinite);
}
export function str(ds, tag) {
  const v = first(ds, tag);
  if (v === undefined || v === null) return '';
  return typeof v === 'object' ? personName(v) : String(v);
}
/** "Family^Given^Middle" → "Family, Given Middle" for reading, not for matching. */
export function personName(v) {
  const a = typeof v === 'object' ? (v.Alphabetic || v.Ideographic || v.Phonetic || '') : String(v || '');
  const [fam = '', giv = '', mid = '', pre = '', suf = ''] = a.split('^');
  const rest = [pre, giv, mid, suf].filter(Boolean).join(' ');
  return fam && rest ? `${fam}, ${rest}` : (fam || rest);
}
export function formatDate(da) {
  return /^\d{8}$/.test(da || '') ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : (da || '');
}
export function formatTime(tm) {
  return /^\d{4}/.test(tm || '') ? `${tm.slice(0, 2)}:${tm.slice(2, 4)}` : '';
}

/**
 * Attribute of one frame: per-frame functional group first, then the shared group,
 * then the top level (PS3.3 C.7.6.16). `macro` is the functional group macro sequence tag.
 */
export function frameAttr(ds, frameIndex, macro, tag) {
  for (const fg of [values(ds, T.PerFrameFunctionalGroups)[frameIndex], first(ds, T.SharedFunctionalGroups)]) {
    const item = fg && first(fg, macro);
    if (item && item[tag] && values(item, tag).length) return values(item, tag);
  }
  return values(ds, tag);
}
