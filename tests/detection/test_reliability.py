"""One bad photo, a corrupted cache or an odd input never ends a long job or yields a silently
wrong number: each case named, skipped and counted."""

from __future__ import annotations

import logging
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from sppnet.data.decode import ImageDecodeError, decode_image
from sppnet.data.synthetic import write_voc_folder
from sppnet.data.voc import load_voc, parse_voc_xml
from sppnet.detection.features import MAX_LONG_SIDE, BackboneSpec, ConvMapCache, scaled_sizes
from sppnet.detection.proposal_cache import ProposalCache, ProposalConfig
from sppnet.detection.train import save_stage
from tests.detection.fakes import TinyTrunk


def png_bomb(path, w=100_000, h=100_000):
    """A tiny PNG whose header claims ``w x h`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_an_unreadable_image(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    with pytest.raises(ImageDecodeError, match="bomb.png"):
        decode_image(bomb)


def test_decompression_bomb_in_a_voc_folder_is_skipped_by_name(tmp_path):
    write_voc_folder(tmp_path, 2, seed=3, prefix="v")
    png_bomb(tmp_path / "v_00001.png")
    (tmp_path / "v_00001.jpg").unlink()
    xml = (tmp_path / "v_00001.xml").read_text().replace("v_00001.jpg", "v_00001.png")
    (tmp_path / "v_00001.xml").write_text(xml)
    ds = load_voc(tmp_path)
    assert [a.image_id for a in ds] == ["v_00000"]
    assert any("v_00001" in k for k in ds.skipped)


def test_long_side_is_capped():
    # a 20000 x 20 strip at shorter side 688 would be 688,000 px long
    (h, w), = scaled_sizes((20, 20000), (688,))
    assert w == MAX_LONG_SIDE and h == 2
    assert scaled_sizes((375, 500), (688,)) == [(688, 917)]  # ordinary photos: unchanged


def test_nan_and_inf_in_voc_xml(tmp_path, caplog):
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><filename>a.jpg</filename><size><width>nan</width><height>inf"
                   "</height></size><object><name>cat</name><bndbox><xmin>1</xmin><ymin>nan"
                   "</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object><object><name>dog"
                   "</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
                   "</bndbox></object></annotation>")
    with caplog.at_level(logging.WARNING):
        raw = parse_voc_xml(xml)
    assert raw["size"] == (0, 0)
    assert [o[0] for o in raw["objects"]] == ["dog"]
    assert "a.xml" in caplog.text and "not finite" in caplog.text


def test_cache_entry_overwritten_in_place_is_rebuilt(tmp_path, caplog):
    img = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)).save(img)
    trunk = TinyTrunk()
    cache = ConvMapCache(tmp_path / "maps", trunk, BackboneSpec(model="tiny"), torch.float16)
    first = cache.get(img, (64,))[0]
    entry = tmp_path / "maps" / f"{cache.key(img, 64, False)}.safetensors"
    raw = bytearray(entry.read_bytes())
    nan16 = np.full(first.numel(), np.nan, np.float16).tobytes()
    raw[-len(nan16):] = nan16  # same size, every value NaN: a loader without a checksum is fooled
    entry.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        again = cache.get(img, (64,))[0]
    assert "checksum" in caplog.text and trunk.calls == 2
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_proposal_cache_entry_changed_in_place_is_rebuilt(tmp_path, caplog):
    cache = ProposalCache(tmp_path, ProposalConfig())
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 30]], np.float32)
    cache.save("k", boxes)
    z = dict(np.load(cache.path("k")))
    z["boxes"] = z["boxes"] + 1  # consistent npz, other numbers
    np.savez(cache.path("k"), **z)
    with caplog.at_level(logging.WARNING):
        assert cache.load("k") is None
    assert "checksum" in caplog.text


def test_a_non_finite_stage_is_never_saved(tmp_path):
    w = torch.ones(3, 2)
    w[1, 0] = float("nan")
    with pytest.raises(ValueError, match="SVMs on fc7: weight holds 1 non-finite"):
        save_stage(tmp_path / "svm_fc7.safetensors", "SVMs on fc7",
                   {"weight": w, "bias": torch.zeros(2)}, {})
    assert not (tmp_path / "svm_fc7.safetensors").exists()
    # -inf bias = a class without positives: allowed
    save_stage(tmp_path / "ok.safetensors", "SVMs", {"weight": torch.ones(3, 2),
                                                    "bias": torch.tensor([0.0, -np.inf])}, {})
    assert (tmp_path / "ok.safetensors").is_file()


def test_a_conv_map_entry_copied_over_another_key_is_rebuilt(tmp_path, caplog):
    import shutil

    rng = np.random.default_rng(1)
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), np.uint8)).save(tmp_path / f"{name}.png")
    trunk = TinyTrunk()
    cache = ConvMapCache(tmp_path / "maps", trunk, BackboneSpec(model="tiny"), torch.float16)
    p = cache.get(tmp_path / "p.png", (64,))[0]
    q = cache.get(tmp_path / "q.png", (64,))[0]
    entry = lambda name: tmp_path / "maps" / (  # noqa: E731
        f"{cache.key(tmp_path / f'{name}.png', 64, False)}.safetensors")
    shutil.copy(entry("p"), entry("q"))  # q's name now holds p's maps (a valid checksum)
    with caplog.at_level(logging.WARNING):
        again = cache.get(tmp_path / "q.png", (64,))[0]
    assert "stores the key" in caplog.text and trunk.calls == 3
    torch.testing.assert_close(again, q, rtol=0, atol=0)
    assert not torch.equal(p, q)


def test_train_times_carry_provenance_and_read_back_as_seconds(tmp_path, monkeypatch):
    """train_times.json records, beside each stage's seconds, where they come from (seeds,
    commit, command, threads per stage); the readers see only the stages' seconds, and a file
    written before the provenance entry reads the same way."""
    import json

    import sppnet.utils.provenance as prov_mod
    from sppnet.detection.train import StageTimes
    from sppnet.utils.provenance import read_stage_times

    monkeypatch.setattr(prov_mod, "_STAGE_THREADS", {})  # this process's earlier stages
    path = tmp_path / "train_times.json"
    times = StageTimes(path, seeds={"seed": 3})
    with times("cache"):
        pass
    with times("finetune"):
        pass
    doc = json.loads(path.read_text())
    prov = doc["provenance"]
    assert prov["seeds"] == {"seed": 3}
    assert list(prov["stage_threads"]) == ["cache", "finetune"]
    assert "commit" in prov["git"] and prov["command"]
    assert read_stage_times(path) == {"cache": doc["cache"], "finetune": doc["finetune"]}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"cache": 1.5, "svm_fc7": 2.0}))
    assert read_stage_times(old) == {"cache": 1.5, "svm_fc7": 2.0}
    assert read_stage_times(tmp_path / "missing.json") == {}
