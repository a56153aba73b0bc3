"""Model combination (SPP section 4.3): two detectors score the same windows; NMS on the union.
Part of the run loop (:mod:`.run`); these names are kept here for the code that imports them.
"""

from .run import combine_detections, detect_combined

__all__ = ["combine_detections", "detect_combined"]
