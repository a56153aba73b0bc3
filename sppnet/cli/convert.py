"""``sppnet convert``: VOC folders to COCO instances JSON and back.

    sppnet convert --voc ../shared/data/fruit/test --to-coco fruit_test.json
    sppnet convert --coco GT.json --images DIR --to-voc OUT_DIR

VOC -> COCO: categories 1..K in sorted class order (or ``--classes``), boxes continuous
``[x, y, w, h]`` from VOC's 1-based inclusive pixels, ``difficult`` as ``iscrowd``, ``file_name``
the image's name (its folder is the ``--images`` to give when reading it back). COCO -> VOC: one
XML per image naming its image file (images are not copied), ``iscrowd`` as ``difficult``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..utils.config import names_arg


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser("sppnet convert")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--voc", type=Path, help="VOC-format folder to read")
    src.add_argument("--coco", type=Path, help="COCO instances JSON to read")
    p.add_argument("--images", type=Path, help="--coco: the folder its file_names are in")
    p.add_argument("--split", help="--voc: ImageSets/Main/<split>.txt")
    p.add_argument("--classes", type=names_arg(),
                   help="class names in label order (default: from the data)")
    dst = p.add_mutually_exclusive_group(required=True)
    dst.add_argument("--to-coco", type=Path, help="COCO JSON file to write")
    dst.add_argument("--to-voc", type=Path, help="folder of VOC XML to write")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from ..data.coco import load_coco, to_coco, write_voc_folder
    from ..data.voc import load_voc
    from ..utils.run_dir import check_output_dir, check_output_file, refuse_other_kind

    if args.to_coco is not None:
        check_output_file(args.to_coco, "--to-coco")
    else:  # XML files never go into a run's folder
        refuse_other_kind(check_output_dir(args.to_voc, "--to-voc"), "convert")

    classes = list(args.classes) if args.classes else None
    if args.voc is not None:
        if args.images:
            raise ValueError("--images is for --coco; a VOC folder holds its images")
        ds = load_voc(args.voc, args.split, classes)
    else:
        ds = load_coco(args.coco, args.images, classes)
    if classes and not any(len(a.boxes) for a in ds):  # every object was of another class
        raise ValueError(f"--classes {','.join(classes)}: no object of these classes in the "
                         f"{len(ds)} annotation(s); check the names")
    if args.to_coco is not None:
        if args.to_coco.exists():
            raise FileExistsError(f"--to-coco {args.to_coco} exists; not overwriting it")
        data = to_coco(ds)
        tmp = args.to_coco.with_name(f".{args.to_coco.name}.tmp")
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(args.to_coco)
        print(f"wrote {args.to_coco}: {len(data['images'])} images, "
              f"{len(data['annotations'])} objects, {len(data['categories'])} categories")
    else:
        if args.to_voc.exists() and any(args.to_voc.glob("*.xml")):
            raise FileExistsError(f"--to-voc {args.to_voc} already holds XML files; not "
                                  "overwriting them")
        written = write_voc_folder(ds, args.to_voc)
        print(f"wrote {len(written)} XML files to {args.to_voc} (images stay in "
              f"{Path(ds[0].image_path).parent if len(ds) else '-'})")
    return 0
