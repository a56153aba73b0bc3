"""The demo's pictures and a static ``report.html`` that shows them.

The report is one file: pictures are embedded as ``data:`` URIs, the style sheet is inline, no
script, font or image is fetched from anywhere, so it opens from disk, travels as an e-mail
attachment and renders the same offline.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

__all__ = ["plot_timing", "sample_grid", "write_report"]

PICTURES = (  # (file under the output folder, caption)
    ("data_samples.jpg", "Training images with their ground-truth boxes"),
    ("classifier/curves.png", "Classifier: multi-size training from scratch (loss, top-1)"),
    ("detector/finetune_curves.png", "Detector: fine-tuning fc6-fc8 on pooled windows"),
    ("detector/eval/pr_curves.png", "Precision-recall per class on the held-back images"),
    ("detector/eval/detections_grid.png",
     "Detections on held-back images (white: ground truth)"),
    ("timing.png", "Seconds per image: SPP (one conv pass) vs the R-CNN way (one per window)"),
)


def plot_timing(timing: dict, path: Path) -> None:
    """Stacked horizontal bars of seconds per image by stage, SPP vs R-CNN (log scale)."""
    from ..utils.plotting import pyplot

    plt = pyplot()

    stages = ("conv", "pool", "fc", "nms")
    sec = timing["seconds_per_image"]
    fig, ax = plt.subplots(figsize=(7, 2.4), dpi=110)
    for row, mode in enumerate(("rcnn", "spp")):
        left = 0.0
        for k, stage in enumerate(stages):
            v = sec[mode][stage]
            ax.barh(row, v, left=left, color=f"C{k}", label=stage if row == 0 else None)
            left += v
        ax.text(left * 1.02, row, f"{sec[mode]['total']:.2f} s", va="center")
    ax.set_yticks([0, 1], ["R-CNN way", "SPP-net"])
    ax.set_xlabel(f"seconds per image ({timing['windows_per_image']:.0f} windows, "
                  f"{timing['threads']} threads); SPP is {timing['speedup_total']:.0f}x faster")
    ax.set_xlim(0, sec["rcnn"]["total"] * 1.18)
    ax.legend(loc="lower right", fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sample_grid(ds, path: Path, n: int = 6) -> None:
    """A grid of ``n`` training images with their labelled ground-truth boxes."""
    from ..data.decode import decode_image
    from ..detection.visualize import draw_detections, image_grid

    pics = []
    for i in np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int):
        a = ds[int(i)]
        pics.append(draw_detections(decode_image(a.image_path), a.boxes,
                                    np.ones(len(a.boxes)), a.labels, ds.classes, -1.0,
                                    show_scores=False))
    image_grid(pics, path)  # a .jpg path: JPEG keeps the report small


def _img(path: Path) -> str:
    mime = "image/jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _row(*cells: object, head: bool = False) -> str:
    tag = "th" if head else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


STYLE = """
body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.big{font-size:1.3em}.big b{color:#06c}figure{margin:1em 0}img{max-width:100%;
border:1px solid #ddd}figcaption{color:#555;font-size:.9em}
"""


def write_report(results: dict, out: Path) -> Path:
    """Write ``timing.png``, ``data_samples.jpg`` and ``report.html`` into ``out``."""
    from ..data.datasets import load_dataset

    out = Path(out)
    plot_timing(results["timing"], out / "timing.png")
    d = results["data"]
    train_root = results["settings"]["train_root"]
    ds = load_dataset(train_root[0], train_root[1], tuple(d["classes"]))
    sample_grid(ds, out / "data_samples.jpg")
    t = results["timing"]
    sec = t["seconds_per_image"]
    cls = results["classifier"]
    cls_top1 = cls["val"]["top1"] * 100 if cls.get("val") else float("nan")
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>sppnet demo report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>SPP-net demo</h1>",
        f"<p class=big>Detection <b id=map>mAP {100 * results['mAP']:.1f}</b> (VOC07, "
        f"{d['test_images']} held-back images) &middot; SPP is <b id=speedup>"
        f"{results['speedup']:.1f}&times; faster</b> than the R-CNN way on the same "
        f"{t['windows_per_image']:.0f} windows per image.</p>",
        f"<p>Data: {html.escape(d['source'])} &mdash; {len(d['classes'])} classes, "
        f"{d['train_images']} training images ({d['train_objects']} objects), "
        f"{d['test_images']} test images ({d['test_objects']} objects). "
        f"Backbone: a quarter-width ZF-5 SPP-net trained from scratch here, multi-size "
        f"{'/'.join(str(s) for s in cls['sizes'])} px, {cls['epochs']} epochs, held-out crop "
        f"top-1 {cls_top1:.1f}%. Detection at one scale (shorter side "
        f"{results['settings']['det_scale']}).</p>",
        "<h2>Results</h2><table id=results>",
        _row("", "value", head=True),
        _row("mAP (VOC07 11-point, IoU 0.5), " + results["variant"],
             f"{100 * results['mAP']:.1f}"),
        *[_row(f"AP {c}", f"{100 * v:.1f}") for c, v in results["per_class_ap"].items()],
        *[_row(f"mAP, {k}", f"{100 * v:.1f}") for k, v in results["variants_mAP"].items()
          if k != results["variant"]],
        "</table>",
        "<h2>Speed: SPP vs the R-CNN way</h2><table id=timing>",
        _row("seconds per image", "conv", "pool", "fc", "nms", "total", head=True),
        *[_row(name, *(f"{sec[m][k]:.3f}" for k in ("conv", "pool", "fc", "nms", "total")))
          for name, m in (("SPP-net", "spp"), ("R-CNN way", "rcnn"))],
        _row("speedup", f"{t['speedup_conv']:.1f}x", "", "", "", f"{t['speedup_total']:.1f}x"),
        "</table>",
        f"<p>Mean over {t['images']} test image(s) after a warm-up, "
        f"{t['threads']} CPU threads, torch {html.escape(results['settings']['torch'])}. "
        "Both modes score the same Selective Search windows with the same fc layers, SVMs and "
        "NMS; only the window features differ in how they are computed.</p>",
    ]
    for rel, caption in PICTURES:
        p = out / rel
        if p.is_file():
            parts.append(f"<figure><img src=\"{_img(p)}\" alt=\"{html.escape(caption)}\">"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    walls = results["wall_seconds"]
    parts += ["<h2>Wall time</h2><table id=wall>", _row("stage", "seconds", head=True),
              *[_row(k, f"{v:.0f}") for k, v in walls.items()], "</table>", "</body></html>"]
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
