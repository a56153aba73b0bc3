"""Data: real-world image decoding, the paper's transforms, class-per-folder datasets with seeded
splits, VOC-format detection data, and the synthetic detection set the demo and tests use.

Boxes are continuous 0-based ``xyxy`` (VOC's 1-based boxes are converted once, in :mod:`.voc`);
sizes are ``(H, W)``.
"""

from .datasets import load_dataset
from .decode import IMAGE_EXTENSIONS, ImageDecodeError, decode_image, is_image_file, list_images
from .folder import ClassFolder, DecodedImages, Sample, split_per_class
from .voc import Annotation, AnnotationError, VOCDataset, load_voc, parse_voc_xml, write_voc_xml

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "decode_image", "is_image_file",
           "list_images", "ClassFolder", "DecodedImages", "Sample", "split_per_class",
           "Annotation", "AnnotationError", "VOCDataset", "load_voc", "parse_voc_xml",
           "write_voc_xml", "load_dataset"]
