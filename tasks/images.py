"""Procedural 32×32 image-classification tasks for the tiny-clip suite (deterministic, offline).

    >>> from bench.tasks.images import TASKS, generate
    >>> x, y = generate("digits", 8, seed=0)
    >>> x.shape, x.dtype, y.tolist()[:4], TASKS["digits"].classes[:3]
    ((8, 3, 32, 32), dtype('uint8'), [6, 2, 4, 0], ['0', '1', '2'])
    >>> bool((generate("digits", 8, seed=0)[0] == x).all())          # a pure function of its arguments
    True

Seven tasks (`TASKS`): digits (10) and letters (10) rendered with the TrueType fonts matplotlib
ships (DejaVu Sans Bold, DejaVu Serif Bold) via PIL, a glyph with no ink dropped and redrawn; shapes
(6); stripe orientation (18 × 10°); texture frequency (7 bands of band-pass noise); dominant hue of
a tile mosaic (12); dot count (1–5). Every image draws random colours, positions and noise, so all
tasks share low-level features (edges, strokes, blobs, colour contrast). The background tasks
(stripes, texture, colour) also carry one random foreground object (a glyph, shape or dots) that
they must ignore, while the foreground tasks must read exactly such objects: the tasks see similar
inputs and ask for different invariances, so fine-tuning one moves the features the others read,
which is what makes merging them a trade-off. Fine-grained classes (10° orientations, 30° hues)
keep the easy tasks from saturating. (Measured while choosing: with coarse classes and no
distractors, 12 of the 21 task pairs merged to within 0.05 of both fine-tuned models.)

Images are uint8 [N, 3, 32, 32], labels int64 [N] balanced over the classes. `generate(task, n,
seed, stream)` depends only on its arguments (numpy's SeedSequence keyed by the task name), so the
same seed gives byte-identical data (given the same numpy, Pillow and FreeType).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 32
FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf")  # two faces, large glyphs: the tiny ViT overfits more
MIN_INK = 12          # pixels (of 1024) a glyph mask must cover at ≥ 50 %, else the sample is redrawn


@dataclass(frozen=True)
class TaskSpec:
    name: str
    classes: list[str]
    draw: Callable[[np.random.Generator, int], np.ndarray]   # (rng, label) → float32 [3, 32, 32] in [0, 255]
    description: str


# ---- colours and compositing --------------------------------------------------------------------
def _contrasting_pair(rng: np.random.Generator, min_gap: float = 90.0) -> tuple[np.ndarray, np.ndarray]:
    """Random background / foreground RGB colours whose luminances differ by at least `min_gap`."""
    while True:
        bg, fg = rng.uniform(0, 255, size=(2, 3))
        lum = np.array([0.299, 0.587, 0.114])
        if abs(bg @ lum - fg @ lum) >= min_gap:
            return bg, fg


def _compose(mask: np.ndarray, bg: np.ndarray, fg: np.ndarray, rng: np.random.Generator,
             noise: float = 8.0) -> np.ndarray:
    """mask [32, 32] in [0, 1] → image [3, 32, 32] = bg·(1 − mask) + fg·mask + Gaussian noise."""
    img = bg[:, None, None] * (1.0 - mask) + fg[:, None, None] * mask
    return img + rng.normal(0.0, noise, size=img.shape)


# ---- glyphs (digits, letters) -------------------------------------------------------------------
@lru_cache(maxsize=None)
def _font(file: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / file), size)


def glyph_mask(char: str, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased mask of `char` in a random bundled font, size 22–27 px, ±10° rotation, ±2 px shift."""
    for _ in range(100):
        font = _font(FONTS[rng.integers(len(FONTS))], int(rng.integers(22, 28)))
        canvas = 64                                  # draw centred on a larger canvas, then rotate and crop
        im = Image.new("L", (canvas, canvas), 0)
        x0, y0, x1, y1 = ImageDraw.Draw(im).textbbox((0, 0), char, font=font)
        dx, dy = rng.integers(-2, 3, size=2)
        ImageDraw.Draw(im).text(((canvas - (x1 - x0)) / 2 - x0 + dx, (canvas - (y1 - y0)) / 2 - y0 + dy),
                                char, fill=255, font=font)
        im = im.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)
        o = (canvas - SIZE) // 2
        mask = np.asarray(im.crop((o, o, o + SIZE, o + SIZE)), dtype=np.float32) / 255.0
        if (mask >= 0.5).sum() >= MIN_INK:          # drop glyph images with no ink
            return mask
    raise RuntimeError(f"could not render glyph {char!r} with ink")


def _glyph_task(chars: str):
    def draw(rng, label):
        bg, fg = _contrasting_pair(rng)
        return _compose(glyph_mask(chars[label], rng), bg, fg, rng)
    return draw


# ---- shapes and dots ----------------------------------------------------------------------------
SHAPES = ["disk", "square", "triangle", "plus", "ring", "bar"]
_SS = 4   # supersampling factor for anti-aliased polygon masks


def _polygon(n_vertices: int, radius: float, angle: float, cx: float, cy: float,
             inner: float | None = None) -> list[tuple[float, float]]:
    """Regular polygon (or star when `inner` is the inner radius) in supersampled coordinates."""
    k = 2 * n_vertices if inner else n_vertices
    pts = []
    for j in range(k):
        r = radius if (inner is None or j % 2 == 0) else inner
        a = angle + 2 * np.pi * j / k
        pts.append(((cx + r * np.cos(a)) * _SS, (cy + r * np.sin(a)) * _SS))
    return pts


def shape_mask(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Mask of one large shape (radius 9–13 px) at a random position and rotation."""
    r = float(rng.uniform(9, 13))
    cx, cy = rng.uniform(r + 1, SIZE - r - 1, size=2)
    angle = float(rng.uniform(0, 2 * np.pi))
    im = Image.new("L", (SIZE * _SS, SIZE * _SS), 0)
    d = ImageDraw.Draw(im)
    box = [(cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS]
    if shape == "disk":
        d.ellipse(box, fill=255)
    elif shape == "ring":
        d.ellipse(box, fill=255)
        ri = 0.55 * r
        d.ellipse([(cx - ri) * _SS, (cy - ri) * _SS, (cx + ri) * _SS, (cy + ri) * _SS], fill=0)
    elif shape == "square":
        d.polygon(_polygon(4, r, angle, cx, cy), fill=255)
    elif shape == "triangle":
        d.polygon(_polygon(3, r, angle, cx, cy), fill=255)
    elif shape == "bar":                             # a 2r × 0.7r rectangle
        c, s = np.cos(angle), np.sin(angle)
        pts = [(cx + a * c * r - b * s * 0.35 * r, cy + a * s * r + b * c * 0.35 * r)
               for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        d.polygon([(x * _SS, y * _SS) for x, y in pts], fill=255)
    elif shape == "plus":
        w = 0.32 * r
        c, s = np.cos(angle), np.sin(angle)
        for ux, uy in ((c, s), (-s, c)):             # two perpendicular bars
            pts = [(cx + a * ux * r + b * -uy * w, cy + a * uy * r + b * ux * w)
                   for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            d.polygon([(x * _SS, y * _SS) for x, y in pts], fill=255)
    else:  # pragma: no cover
        raise ValueError(shape)
    return np.asarray(im.resize((SIZE, SIZE), Image.BOX), dtype=np.float32) / 255.0


def dots_mask(count: int, rng: np.random.Generator) -> np.ndarray:
    """Mask of `count` non-overlapping disks of radius 3 px (centres ≥ 9 px apart)."""
    r, min_dist = 3.0, 9.0
    while True:
        centres: list[np.ndarray] = []
        for _ in range(200):
            c = rng.uniform(r + 1, SIZE - r - 1, size=2)
            if all(np.hypot(*(c - o)) >= min_dist for o in centres):
                centres.append(c)
                if len(centres) == count:
                    break
        if len(centres) == count:
            break
    im = Image.new("L", (SIZE * _SS, SIZE * _SS), 0)
    d = ImageDraw.Draw(im)
    for cx, cy in centres:
        d.ellipse([(cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS], fill=255)
    return np.asarray(im.resize((SIZE, SIZE), Image.BOX), dtype=np.float32) / 255.0


def _shapes(rng, label):
    bg, fg = _contrasting_pair(rng)
    return _compose(shape_mask(SHAPES[label], rng), bg, fg, rng)


def _dots(rng, label):
    bg, fg = _contrasting_pair(rng)
    return _compose(dots_mask(label + 1, rng), bg, fg, rng)


# ---- distractors: the foreground tasks' objects on the background tasks' images ----------------
GLYPHS = "0123456789ABDEFHKMRT"


def with_distractor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint one random object (a glyph, a shape or 1–5 dots) in a random colour over `img`. The
    background tasks (stripes, texture, colour) then see the foreground tasks' objects and must
    ignore them: the tasks share inputs, so fine-tuning one moves the features the others read."""
    kind = rng.integers(3)
    if kind == 0:
        mask = glyph_mask(GLYPHS[rng.integers(len(GLYPHS))], rng)
    elif kind == 1:
        mask = shape_mask(SHAPES[rng.integers(len(SHAPES))], rng)
    else:
        mask = dots_mask(int(rng.integers(1, 6)), rng)
    a = rng.uniform(0.6, 0.9) * mask
    return img * (1.0 - a) + rng.uniform(0, 255, size=3)[:, None, None] * a


# ---- gratings and textures ----------------------------------------------------------------------
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
ORIENTATIONS = [10 * k for k in range(18)]             # degrees, 0 … 170


def _stripes(rng, label):
    """Soft grating at orientation 10°·label (±3°), random period 4–9 px and phase, low contrast, noisy."""
    theta = np.deg2rad(ORIENTATIONS[label] + rng.uniform(-3, 3))
    period = rng.uniform(4, 9)
    u = _XX * np.cos(theta) + _YY * np.sin(theta)
    mask = 0.5 + 0.5 * np.tanh(2.0 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)))
    bg, fg = _contrasting_pair(rng, 40.0)
    return with_distractor(_compose(mask, bg, fg, rng, noise=20.0), rng)


TEX_FREQS = [round(2.5 * 1.3 ** k, 2) for k in range(7)]   # cycles per image of band-pass noise, 2.5 … 12
_FR = np.hypot(*np.meshgrid(np.fft.fftfreq(SIZE) * SIZE, np.fft.fftfreq(SIZE) * SIZE, indexing="ij"))


def _texfreq(rng, label):
    """Isotropic band-pass noise whose radial frequency band (±10 %, centre ±5 %) is the class."""
    f = TEX_FREQS[label] * rng.uniform(0.95, 1.05)
    band = (np.abs(_FR - f) <= 0.10 * f + 0.5).astype(np.float32)
    tex = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(SIZE, SIZE))) * band))
    tex = (tex - tex.mean()) / (tex.std() + 1e-8)
    mask = 0.5 + 0.5 * np.tanh(1.5 * tex)
    bg, fg = _contrasting_pair(rng, 50.0)
    return with_distractor(_compose(mask, bg, fg, rng, noise=16.0), rng)


COLOURS = ["red", "orange", "yellow", "lime", "green", "spring", "cyan", "azure", "blue", "violet",
           "magenta", "rose"]                                   # hues 0°, 30°, …, 330°


def _colour(rng, label):
    """A mosaic of 8×8 tiles of 4 px: 40–60 % in the class hue (±10°), the rest in random hues."""
    from matplotlib.colors import hsv_to_rgb

    tiles = SIZE // 4
    dominant = rng.uniform(size=(tiles, tiles)) < rng.uniform(0.4, 0.6)
    hue = np.where(dominant, label / 12 + rng.uniform(-10, 10, size=(tiles, tiles)) / 360,
                   rng.uniform(size=(tiles, tiles))) % 1.0
    hsv = np.stack([hue, rng.uniform(0.55, 1.0, size=hue.shape), rng.uniform(0.45, 1.0, size=hue.shape)], -1)
    img = (hsv_to_rgb(hsv) * 255.0).transpose(2, 0, 1).repeat(4, axis=1).repeat(4, axis=2)
    return with_distractor(img + rng.normal(0.0, 8.0, size=img.shape), rng)


TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("digits", list("0123456789"), _glyph_task("0123456789"), "rendered digits 0–9"),
    TaskSpec("letters", list("ABDEFHKMRT"), _glyph_task("ABDEFHKMRT"), "rendered capital letters"),
    TaskSpec("shapes", SHAPES, _shapes, "one large shape: disk, square, triangle, plus, ring, bar"),
    TaskSpec("stripes", [f"{a}deg" for a in ORIENTATIONS], _stripes, "grating orientation, 18 × 10°"),
    TaskSpec("texfreq", [f"{f:g}cyc" for f in TEX_FREQS], _texfreq, "band-pass noise frequency, 7 bands"),
    TaskSpec("colour", COLOURS, _colour, "dominant hue of a tile mosaic, 12 hues"),
    TaskSpec("dots", [str(k) for k in range(1, 6)], _dots, "count of dots, 1–5"),
]}


def generate(task: str, n: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` images of `task` (uint8 [n, 3, 32, 32]) and balanced labels (int64 [n]), a pure function
    of (task, n, seed, stream); use one `stream` per split so splits never share draws."""
    spec = TASKS[task]
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(task.encode()), stream]))
    k = len(spec.classes)
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i] = np.clip(np.rint(spec.draw(rng, int(y))), 0, 255).astype(np.uint8)
    return images, labels
