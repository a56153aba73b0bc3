"""The tables of docs/speed.md, from the benchmark JSON files under docs/figures/:

- ``summarize_bench``: `sppnet bench ops` and, in the same command, the torchvision peer, and
  `sppnet bench train` with the MobileNetV2 fine-tuning regimes, on one quiet machine whose
  matrix-product rate the files record (written by `bash docs/experiments/speed.sh ops train`);
- ``summarize_bench_earlier``: two `sppnet bench ops` runs on an earlier, faster machine, from
  files that predate the matrix-product record.

    python docs/experiments/summarize_bench.py           # print
    python docs/experiments/summarize_bench.py --write   # replace the blocks in docs/speed.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIG = ROOT / "docs" / "figures"
DOC = ROOT / "docs" / "speed.md"
# the day a benchmark file was measured: its provenance's written_at, or for files written before
# provenance recorded it, the date of the commit that added the file (measured_on.json)
MEASURED_ON = FIG / "measured_on.json"


def measured_on(name: str) -> str:
    doc = json.loads((FIG / name).read_text())
    written = doc.get("provenance", {}).get("written_at")
    if written:
        return written[:10]
    return json.loads(MEASURED_ON.read_text())["files"][name]


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms"


def ops_table() -> list[str]:
    ours = json.loads((FIG / "bench_ops_epyc.json").read_text())
    tv = json.loads((FIG / "bench_ops_torchvision.json").read_text())
    wf, wb, nms = ours["window_forward"], ours["window_forward_backward"], ours["nms"]
    e, te = ours["env"], tv["env"]
    peer = tv["torchvision"]
    lines = [f"`docs/figures/bench_ops_epyc.json` (torch {e['torch']}) and "
             f"`docs/figures/bench_ops_torchvision.json` (torch {te['torch']}, torchvision "
             f"{peer['torchvision']}, a separate benchmark venv), measured on "
             f"{measured_on('bench_ops_epyc.json')}, {e['threads']} threads, "
             f"float32, matrix-product rate {e['cpu_gemm_gflops']:.0f} / "
             f"{te['cpu_gemm_gflops']:.0f} GFLOP/s:", "",
             "| case (2000 windows on a 256×43×57 map) | reference | sppnet | sppnet faster |",
             "|---|---|---|---|",
             f"| window pooling, forward | loop of `adaptive_max_pool2d`: {_ms(wf['loop_s'])} | "
             f"{_ms(wf['fast_s'])} | {wf['ratio']:.1f}× (`equal: {str(wf['equal']).lower()}`) |",
             f"| same, pure-PyTorch backend (the GPU path) | same loop | "
             f"{_ms(wf['torch_backend_s'])} | {wf['ratio_torch_backend']:.1f}× |",
             f"| window pooling, forward + backward | loop: {_ms(wb['loop_s'])} | "
             f"{_ms(wb['fast_s'])} | {wb['ratio']:.1f}× |",
             f"| greedy NMS, 2000 windows × 20 classes | NumPy: {_ms(nms['numpy_s'])} | "
             f"{_ms(nms['compiled_s'])} | {nms['ratio']:.1f}× |"]
    if peer.get("available"):
        lines += [
            f"| forward, against torchvision | `roi_pool` per level, concatenated: "
            f"{_ms(peer['roi_pool_forward_s'])} | {_ms(peer['sppnet_forward_s'])} | "
            f"**{peer['ratio_forward']:.1f}×** ({100 * peer['fraction_of_values_differing']:.0f}%"
            " of values differ: rounded bins, by design) |",
            f"| forward + backward, against torchvision | "
            f"{_ms(peer['roi_pool_forward_backward_s'])} | "
            f"{_ms(peer['sppnet_forward_backward_s'])} | "
            f"**{peer['ratio_forward_backward']:.1f}×** |",
            f"| batched NMS (random classes of 20), against torchvision | `batched_nms`: "
            f"{_ms(peer['batched_nms_s'])} | {_ms(peer['sppnet_batched_nms_s'])} | "
            f"**{peer['ratio_nms']:.1f}×** (same kept set: "
            f"{str(peer['nms_same_kept_set']).lower()}) |"]
    return lines


def train_table() -> list[str]:
    r = json.loads((FIG / "bench_train_epyc.json").read_text())
    lines = ["", "`sppnet bench train --weights ...` (`docs/figures/bench_train_epyc.json`), "
             "forward + backward + SGD step, channels_last:", "",
             "| net | batch @ size | images/s |", "|---|---|---|"]
    for c in r["cases"]:
        lines.append(f"| {c['label']} | {c['batch']} @ {c['size']} | {c['images_per_s']:.1f} |")
    return lines


def earlier_table() -> list[str]:
    """Two consecutive `sppnet bench ops` runs on the earlier machine (no matrix-product rate
    recorded: these files predate it)."""
    a, b = (json.loads((FIG / f).read_text()) for f in ("bench_ops.json", "bench_ops_run2.json"))
    e = a["env"]

    def ms(key: str, field: str) -> str:
        return f"{1e3 * a[key][field]:.1f} / {1e3 * b[key][field]:.1f} ms"

    def ratio(key: str, field: str) -> str:
        return f"{a[key][field]:.1f}× / {b[key][field]:.1f}×"

    w, wb, im, nms = "window_forward", "window_forward_backward", "image_forward_backward", "nms"
    eq = str(a[w]["equal"] and b[w]["equal"]).lower()
    return [
        f"`docs/figures/bench_ops.json` and `docs/figures/bench_ops_run2.json` (torch "
        f"{e['torch']}, numba {e['numba']}, {e['threads']} threads, float32; measured on "
        f"{measured_on('bench_ops.json')}), run 1 / run 2:", "",
        "| case | reference | sppnet | ratio |", "|---|---|---|---|",
        f"| 2000 windows on a 256×43×57 map, forward | loop of `adaptive_max_pool2d` per window "
        f"and level: {ms(w, 'loop_s')} | `spp_roi_pool` {ms(w, 'fast_s')} | "
        f"{ratio(w, 'ratio')}, `equal: {eq}` |",
        f"| same, into a reused `out=` buffer | same loop | {ms(w, 'fast_reused_out_s')} | "
        f"{ratio(w, 'ratio_reused_out')} |",
        f"| same, output pool off (fresh memory every call) | same loop | "
        f"{ms(w, 'fast_pool_off_s')} | {ratio(w, 'ratio_pool_off')} |",
        f"| same, loop on a channels_last map | {ms(w, 'loop_channels_last_s')} | "
        f"{ms(w, 'fast_s')} | {ratio(w, 'ratio_vs_channels_last_loop')} |",
        f"| same, pure-PyTorch backend | same loop | {ms(w, 'torch_backend_s')} | "
        f"{ratio(w, 'ratio_torch_backend')} |",
        f"| same, forward + backward | {ms(wb, 'loop_s')} | {ms(wb, 'fast_s')} | "
        f"{ratio(wb, 'ratio')} |",
        f"| whole image, N=64, C=256, 13×13, fwd+bwd | concat of `adaptive_max_pool2d`: "
        f"{ms(im, 'concat_adaptive_s')} | `spp_pool` {ms(im, 'spp_pool_s')} | "
        f"{ratio(im, 'ratio')} |",
        f"| same, channels_last input | {ms(im, 'concat_adaptive_channels_last_s')} | "
        f"{ms(im, 'spp_pool_channels_last_s')} | {ratio(im, 'ratio_channels_last')} |",
        f"| greedy NMS, 2000 windows × 20 classes, IoU 0.3 | NumPy, one vector step per kept "
        f"box: {ms(nms, 'numpy_s')} | compiled {ms(nms, 'compiled_s')} | "
        f"{ratio(nms, 'ratio')}, `equal: {str(a[nms]['equal'] and b[nms]['equal']).lower()}` |"]


def replace_block(path: Path, marker: str, block: str) -> None:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    text = path.read_text()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{block}{end}{tail}")


def train_det_table() -> list[str]:
    """The two ways trained stage by stage on the same photos and windows
    (``sppnet bench train-det``, docs/experiments/speed.sh traindet), when measured."""
    name = "bench_train_det.json"
    if not (FIG / name).is_file():
        return ["Not measured yet on a quiet machine: `bash docs/experiments/speed.sh traindet` "
                f"writes `docs/figures/{name}`."]
    r = json.loads((FIG / name).read_text())
    s, spp, rcnn = r["settings"], r["ways"]["spp"], r["ways"]["rcnn"]
    prov = r.get("provenance", {})
    threads = (prov.get("threads") or {}).get("torch", "?")
    gemm = prov.get("cpu_gemm_gflops")
    lines = [f"`docs/figures/{name}` (measured on {measured_on(name)}, {threads} torch threads"
             + (f", matrix-product rate {gemm:.0f} GFLOP/s" if gemm else "")
             + f"): {r['images']} photos, {r['windows']:,} "
             f"windows in all, {s['ft_iters']} fine-tuning iterations of the same fc head "
             "(`--finetune fc`, the paper's way; the default end-to-end iteration is below), "
             f"scale(s) {r['scales']}, flips {'on' if s['flip'] else 'off'}; the proposals "
             f"({r['proposals']:.1f} s) are shared and in neither total.", "",
             "| stage | SPP way | R-CNN way | R-CNN / SPP |", "|---|---|---|---|"]
    for k, v in spp["seconds"].items():
        lines.append(f"| {k} | {v:.1f} s | {rcnn['seconds'].get(k, 0):.1f} s | "
                     f"{r['ratios'].get(k, float('nan')):.2f}× |")
    lines.append(f"| **total** | {spp['total']:.1f} s | {rcnn['total']:.1f} s | "
                 f"**{r['ratios']['total']:.2f}×** |")
    p = r["projected"]
    lines += ["", f"Computed from the measured rates (not measured): {p['images']} photos × "
              f"{p['windows_per_image']:,} windows, {p['iterations']:,} iterations: SPP way "
              f"{p['total']['spp']:,.0f} s, R-CNN way {p['total']['rcnn']:,.0f} s, "
              f"**{p['ratio']:.1f}×**."]
    other = FIG / "bench_train_det_688.json"
    if other.is_file():  # the same command at the paper's scale, run right after
        o = json.loads(other.read_text())
        lines += ["", f"The same at the paper's scale {o['scales']} (`{other.name}`, run next): "
                  f"fine-tuning {o['ways']['spp']['seconds']['finetune']:.1f} s against "
                  f"{o['ways']['rcnn']['seconds']['finetune']:.1f} s "
                  f"({o['ratios']['finetune']:.2f}×), whole training "
                  f"{o['ratios']['total']:.2f}×, computed for the larger set "
                  f"{o['projected']['ratio']:.1f}×. The R-CNN way's cache stage, the same work "
                  f"in both files, took {rcnn['seconds']['cache']:.0f} s and "
                  f"{o['ways']['rcnn']['seconds']['cache']:.0f} s: differences of that size "
                  "between the two ways' fine-tuning are noise."]
    rates = [(f, json.loads((FIG / f).read_text()).get("provenance", {}).get("cpu_gemm_gflops"))
             for f in (name, "bench_train_det_688.json", "bench_e2e.json") if (FIG / f).is_file()]
    rates = [(f, g) for f, g in rates if g]
    if len(rates) > 1:
        lines += ["", "The study's runs were paused for these benchmarks; the matrix-product rate "
                  "each file recorded (" + ", ".join(f"{g:.0f}" for _, g in rates) + " GFLOP/s) "
                  "shows the machine was still not perfectly steady."]
    e2e = FIG / "bench_e2e.json"
    if e2e.is_file():
        b = json.loads(e2e.read_text())
        sec = b["seconds"]
        lines += ["", f"One end-to-end fine-tuning iteration (`sppnet bench e2e`, `{e2e.name}`: "
                  f"{b['backbone']}, {b['images']} photos of {b['image_size'][0]} × "
                  f"{b['image_size'][1]}, {b['windows_per_image']} windows each, the last "
                  f"{b['trained_convs']} convolutions trained): {1e3 * sec['iteration']:.0f} ms, "
                  f"of which the window pyramid's forward and backward "
                  f"{1e3 * sec['pyramid_forward_backward']:.0f} ms "
                  f"({100 * b['pyramid_share']:.0f}%); peak memory {b['peak_rss_mb']:,.0f} MB. "
                  f"At that rate 3000 iterations take {3000 * sec['iteration'] / 60:.0f} min "
                  "(computed; the study's end-to-end runs took longer: they shared the 2 cores "
                  "with other runs)."]
    return lines


def blocks() -> dict[str, str]:
    return {"summarize_bench": "\n".join(ops_table() + train_table()) + "\n",
            "summarize_bench_earlier": "\n".join(earlier_table()) + "\n",
            "summarize_train_det": "\n".join(train_det_table()) + "\n"}


def main() -> None:
    for marker, block in blocks().items():
        print(f"<!-- {marker} -->\n{block}")
        if "--write" in sys.argv[1:]:
            replace_block(DOC, marker, block)
    if "--write" in sys.argv[1:]:
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
