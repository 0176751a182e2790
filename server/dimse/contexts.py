"""The presentation contexts the SCP accepts (PS3.4 Annex B, C; PS3.5 Section 10)."""

from __future__ import annotations

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

from server.dicom import uids

# pynetdicom accepts the first of *our* syntaxes that the requestor offers. An SCU offers the
# syntax its file is in plus uncompressed fallbacks, so the compressed ones come first (store
# what was sent, no transcoding on the modality); then uncompressed, Explicit VR LE before
# deflate (frames of a deflated file have no byte offsets); then anything else pydicom knows,
# taken only when nothing better is on offer, since we store bytes without decoding them.
_PREFERRED = [
    uids.JPEG_LS_LOSSLESS,
    uids.JPEG_LS_NEAR,
    uids.JPEG_2000_LOSSLESS,
    uids.JPEG_2000,
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    uids.JPEG_LOSSLESS_SV1,
    uids.JPEG_LOSSLESS_P14,
    uids.JPEG_BASELINE,
    uids.JPEG_EXTENDED,
    uids.RLE_LOSSLESS,
    uids.EXPLICIT_VR_LE,
    uids.IMPLICIT_VR_LE,
    uids.EXPLICIT_VR_BE,
    uids.DEFLATED_LE,
]
STORE_SYNTAXES = _PREFERRED + [str(ts) for ts in ALL_TRANSFER_SYNTAXES if ts not in _PREFERRED]
QUERY_SYNTAXES = [uids.EXPLICIT_VR_LE, uids.IMPLICIT_VR_LE, uids.EXPLICIT_VR_BE]

VERIFICATION = "1.2.840.10008.1.1"
# PS3.4 Annex C.6: the Patient Root and Study Root information models
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_ROOT = frozenset({PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET})
QR_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND, PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE,
             PATIENT_ROOT_GET, STUDY_ROOT_GET)

STORAGE_CLASSES = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


def add_supported(ae: AE) -> None:
    ae.add_supported_context(VERIFICATION, QUERY_SYNTAXES)
    for model in QR_MODELS:
        ae.add_supported_context(model, QUERY_SYNTAXES)
    # scp_role: a C-GET requestor asks us to act as Storage SCU on its association (PS3.7 D.3.3.4)
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, STORE_SYNTAXES, scu_role=True, scp_role=True)
