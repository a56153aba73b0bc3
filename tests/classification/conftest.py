import numpy as np
import pytest
from PIL import Image, ImageDraw


def _draw(label: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Class 0: red discs, 1: green bars, 2: blue crosses, on noisy backgrounds."""
    h, w = size
    bg = rng.integers(60, 200, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    colour = [(230, 30, 30), (30, 200, 40), (40, 60, 230)][label % 3]
    for _ in range(3):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(5, max(6, min(h, w) // 3)))
        if label % 3 == 0:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif label % 3 == 1:
            d.rectangle([cx - r, cy - r // 3, cx + r, cy + r // 3], fill=colour)
        else:
            d.line([cx - r, cy, cx + r, cy], fill=colour, width=4)
            d.line([cx, cy - r, cx, cy + r], fill=colour, width=4)
    return img


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory):
    """A small real-JPEG class folder: 3 classes x 16 images of varied size and aspect ratio,
    plus one corrupt file."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for label, name in enumerate(["crosses", "discs", "bars"][:3]):
        (root / name).mkdir()
        for i in range(16):
            h, w = int(rng.integers(50, 110)), int(rng.integers(50, 140))
            _draw([2, 0, 1][label], (h, w), rng).save(root / name / f"img_{i:03d}.jpg",
                                                      quality=90)
    (root / "discs" / "img_999.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
    return root
