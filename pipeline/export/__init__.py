"""Export committed masks to labeling tools: COCO JSON, CVAT for video 1.1 XML, Label Studio JSON.

:func:`export_masks` reads the Parquet masks dataset of an output root (:mod:`pipeline.sinks.masks`), keeps the
selected videos and frames (all of them, or only the frames flagged for review by :mod:`pipeline.report.review`),
writes the selected frames as PNG images from each video's source file (recorded in its manifest) and one
annotation file per format:

=============  ======================================================================================
``coco``       ``annotations.json`` (one image per frame, one RLE annotation per part present)
               and ``images/<video_id>/<frame:06d>.png``
``cvat``       ``<video_id>/annotations.xml`` (CVAT for video 1.1: one single-frame mask track per
               part and frame, as CVAT itself exports shapes) and ``<video_id>/images/frame_<frame:06d>.png``
``labelstudio`` ``tasks.json`` (one task per frame, the masks as ``brushlabels`` predictions),
               ``labeling_config.xml`` and ``images/<video_id>/<frame:06d>.png``
=============  ======================================================================================

Background (part id 0) is not exported: labeling tools treat unlabelled pixels as background.
"""

from __future__ import annotations

from pipeline.export.select import FRAME_SELECTIONS, ExportError, ExportVideo, PartMask, select_videos
from pipeline.export.writer import FORMATS, ExportResult, export_masks

__all__ = [
    "FORMATS",
    "FRAME_SELECTIONS",
    "ExportError",
    "ExportResult",
    "ExportVideo",
    "PartMask",
    "export_masks",
    "select_videos",
]
