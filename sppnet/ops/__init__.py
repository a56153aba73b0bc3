"""Pure tensor functions: spatial pyramid pooling (whole maps and windows), boxes, NMS, box coder.

Nothing here knows about models, files or the command line.
"""

from ._buffers import set_cache_limit as set_buffer_cache_limit
from .box_coder import BoxCoder
from .boxes import batched_nms, box_area, box_iou, clip_boxes, nms, remove_small_boxes
from .pyramid import bin_edges, spp_output_dim, spp_pool
from .windows import (
    BACKENDS,
    boxes_to_rois,
    numba_available,
    project_boxes,
    spp_pool_cells,
    spp_pool_valid,
    spp_roi_pool,
)

__all__ = [
    "BACKENDS",
    "BoxCoder",
    "batched_nms",
    "bin_edges",
    "box_area",
    "boxes_to_rois",
    "box_iou",
    "clip_boxes",
    "nms",
    "numba_available",
    "project_boxes",
    "remove_small_boxes",
    "set_buffer_cache_limit",
    "spp_output_dim",
    "spp_pool",
    "spp_pool_cells",
    "spp_pool_valid",
    "spp_roi_pool",
]
