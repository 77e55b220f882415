"""The Pathfinder "snakes" generator, written anew from the published algorithm.

Pathfinder (Linsley et al., NeurIPS 2018; Kim et al., ICLR 2020) asks whether two marker disks lie
on the two ends of one dashed curve ("snake"). The LRA release was drawn by
drewlinsley/pathfinder `snakes2.py`; this module follows its algorithm (the facts below) with its
own code, and writes the release layout so that `tasks/pathfinder.py` reads it unchanged:

    <root>/imgs/<batch>/sample_<k>.png          8-bit grayscale PNG
    <root>/metadata/<batch>.npy                 plain text despite the name, one line per image:
        imgs/<batch> sample_<k>.png <k> <label> <continuity> <contour_length> <distractor_length>
        <dash_length> <thickness> <margin> 1

The algorithm. An image holds two target snakes of `contour_length` dashes and a few short
distractor snakes. A dash of `dash_length` pixels is drawn at `antialias` x resolution with width
`thickness x antialias` and Lanczos-downsampled; its footprint is the same line dilated by a disk
of radius `margin`, which is what collisions are tested on. The first target starts uniformly in
the image centre (a band of 2 x seed_distance is kept free), the second `seed_distance` pixels
away in a random direction. A snake grows dash by dash: the next pivot lies `dash_length + 2
margin` beyond the previous one along the heading; candidate end points are the pixels on the
circle of radius `dash_length + margin` around it, weighted by the free space there (1 minus the
margin-dilated occupancy) times cos^2(min(turn x continuity, pi/2)); a drawn candidate whose
footprint overlaps occupied pixels (sum of soft footprints >= 1.8) is rejected and redrawn (3
tries), and a snake that cannot grow fails: the two targets are then started afresh, a distractor
is retried (5 tries) or left out. A snake's newest dash is excluded from its own collision test
(consecutive dashes of one snake may touch), and committed once the next one is placed.
Markers: disks of `marker_radius` on the start of one target and on the end of the same target
(label 1) or of the other (label 0). The image is the pixelwise maximum of dashes (times their
contrast) and markers, scaled so that its brightest pixel is 255 (the original saved floats with
scipy's byte scaling).

Where this implementation differs from `snakes2.py`, on purpose: (1) the other target's newest
dash is part of the occupancy a target grows against, and both targets' last dashes are committed
before the distractors are drawn (the original commits only the second one, so distractors and the
other target could cut into a target's end, which makes negatives ambiguous); (2) the second
target's first dash must not overlap the first's; (3) labels are exactly balanced within each
batch (a shuffled half/half) rather than fair coin flips; (4) marker disks are centred on pixel
centres. Settings per resolution come from the LRA TFDS builder's notes (docs/lra-reference.md
section 3): see `settings_for`.

Determinism: batch b of a dataset is drawn from its own random stream seeded by (seed, size,
contour_length, b), so the files do not depend on how many processes drew them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from lra_base.atomic import atomic_write_text
from lra_base.errors import AlreadyDone, ConfigError

DIFFICULTIES = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}
INK = 0.1  # a dash's pixels: where its (unscaled) sprite reaches this
MANIFEST = "GENERATED.json"


@dataclass(frozen=True)
class Settings:
    size: int
    contour_length: int  # dashes per target snake
    distractor_length: int  # dashes per distractor snake
    distractors: int  # distractor snakes per image (fewer where they do not fit)
    dash_length: int
    thickness: float
    margins: tuple  # one margin drawn per image
    marker_radius: float
    seed_distance: int
    continuity: float
    padding: int
    antialias: int
    target_contrast: float
    distractor_contrast: float
    segment_retries: int = 2  # extra draws of a rejected dash
    snake_retries: int = 4  # extra attempts at a failed distractor
    stop_free_fraction: float = 0.01  # no new distractor once less free space than this is left
    # The two targets never touch: no pixel of one's ink is next to (8-neighbourhood) a pixel of the
    # other's. Not in snakes2.py, where touching targets make some negatives ambiguous.
    target_clearance: bool = True

    def __post_init__(self):
        if self.size < 8 or self.contour_length < 1 or self.distractor_length < 1 or self.distractors < 0:
            raise ConfigError(f"pathfinder generator: invalid settings {self}")
        if abs(self.thickness * self.antialias - round(self.thickness * self.antialias)) > 1e-9:
            raise ConfigError(f"thickness x antialias must be whole pixels, got {self.thickness} x {self.antialias}")
        if not self.margins or min(self.margins) < 1:
            raise ConfigError(f"margins must be positive integers, got {self.margins}")


def settings_for(size: int, difficulty: str = "curv_contour_length_14", **overrides) -> Settings:
    """The release's settings for Pathfinder-32 or Path-X (128), per the LRA TFDS builder notes.

    32:  margin 1, dash 2, thickness 0.5, marker 1.5, seed distance 7, continuity 1.0,
         distractors 20 // (L // 3) of L // 3 dashes, contrast 2 (targets x 0.75 per dash).
    128: margin 2 or 3, dash 5, thickness 1.5, marker 3, seed distance 20, continuity 1.8,
         distractors 35 // (L // 3) of L // 3 dashes (the generator ran on Python 2: integer
         division), contrast 0.9. Both: padding 1, antialias 2.
    """
    if difficulty not in DIFFICULTIES:
        raise ConfigError(f"unknown difficulty {difficulty!r}. Valid: {', '.join(DIFFICULTIES)}")
    L = DIFFICULTIES[difficulty]
    d = L // 3
    if size == 32:
        base = dict(size=32, contour_length=L, distractor_length=d, distractors=20 // d, dash_length=2,
                    thickness=0.5, margins=(1,), marker_radius=1.5, seed_distance=7, continuity=1.0, padding=1,
                    antialias=2, target_contrast=2 * 0.75, distractor_contrast=2.0)
    elif size == 128:
        base = dict(size=128, contour_length=L, distractor_length=d, distractors=35 // d, dash_length=5,
                    thickness=1.5, margins=(2, 3), marker_radius=3.0, seed_distance=20, continuity=1.8, padding=1,
                    antialias=2, target_contrast=0.9, distractor_contrast=0.9)
    else:
        raise ConfigError(f"pathfinder generator: size must be 32 or 128, got {size}")
    base.update(overrides)
    if isinstance(base["margins"], (int, float)):
        base["margins"] = (int(base["margins"]),)
    base["margins"] = tuple(int(m) for m in base["margins"])
    return Settings(**base)


# --- drawing primitives -------------------------------------------------------------------------


def _step(p, angle: float, dist: float) -> tuple[int, int]:
    """Move from pixel p by dist along angle (radians; y = sin, x = cos), rounding up."""
    return (int(math.ceil(p[0] + dist * math.sin(angle) - 1e-9)), int(math.ceil(p[1] + dist * math.cos(angle) - 1e-9)))


def _flip(angle: float) -> float:
    return angle + math.pi if angle < 0 else angle - math.pi


def _disk_offsets(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    keep = y**2 + x**2 <= radius**2
    return np.stack([y[keep], x[keep]], axis=1)


def _dilate_disk(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation of `mask` by a disk: pixels within `radius` of a set pixel."""
    pts = np.argwhere(mask)
    if len(pts) == 0:
        return np.zeros(mask.shape, np.float32)
    grid = np.indices(mask.shape).reshape(2, -1).T
    d2 = ((grid[:, None, :] - pts[None, :, :]) ** 2).sum(-1).min(1)
    return (d2 <= radius**2).reshape(mask.shape).astype(np.float32)


def _downsample(a: np.ndarray, size: int) -> np.ndarray:
    im = Image.fromarray(a.astype(np.float32), mode="F").resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)


class DashSprite(NamedTuple):
    line: np.ndarray  # (2r+1)^2 ink of a dash drawn from the centre pixel, in [0, 1]
    foot: np.ndarray  # its footprint: the line dilated by the margin, in [0, 1]
    core: np.ndarray  # (k, 2) offsets where the footprint is full: a seed needs them free
    ink: np.ndarray  # bool: the dash's pixels (line >= INK)
    halo: np.ndarray  # bool: those pixels and their 8 neighbours
    hot: np.ndarray  # flat canvas offsets (from the window's corner) where foot >= 0.8 ...
    hot_val: np.ndarray  # ... and foot there: only these can reach the collision sum of 1.8
    ink_flat: np.ndarray  # flat canvas offsets of the ink pixels


class Sprites:
    """Dashes and their footprints, rendered once per orientation (pixels are integers, so a dash
    drawn from a pixel depends only on its angle). `width`: the padded canvas width, for flat offsets."""

    def __init__(self, s: Settings, margin: int, width: int = 0):
        self.s, self.margin, self.width = s, margin, width
        self.r = s.dash_length + int(math.ceil(s.thickness)) + margin  # patch half-size
        self._cache: dict = {}

    def get(self, angle: float):
        # Angles come from integer degrees or a fixed table, so equal angles are equal floats.
        hit = self._cache.get(angle)
        if hit is None:
            hit = self._cache[angle] = self._render(angle)
        return hit

    def _render(self, angle: float):
        s, a = self.s, self.s.antialias
        big = 2 * self.r * a + 1
        c = self.r * a
        end = _step((c, c), angle, s.dash_length * a)
        im = Image.new("F", (big, big), 0.0)
        ImageDraw.Draw(im).line([(c, c), (end[1], end[0])], fill=1.0, width=int(round(s.thickness * a)))
        line_big = np.asarray(im, dtype=np.float32)
        foot_big = _dilate_disk(line_big > 0, self.margin * a)
        small = 2 * self.r + 1
        line, foot = _downsample(line_big, small), _downsample(foot_big, small)
        core = np.argwhere(foot >= 0.999) - self.r  # offsets a seed test needs free
        ink = line >= INK
        halo = ink.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                halo[max(dy, 0) : small + min(dy, 0), max(dx, 0) : small + min(dx, 0)] |= \
                    ink[max(-dy, 0) : small + min(-dy, 0), max(-dx, 0) : small + min(-dx, 0)]
        # footprints are at most 1, so a sum >= 1.8 needs foot >= 0.8: the only pixels worth testing
        hot_yx = np.argwhere(foot >= 0.8 - 1e-6)
        hot = hot_yx[:, 0] * self.width + hot_yx[:, 1]
        ink_yx = np.argwhere(ink)
        return DashSprite(line, foot, core, ink, halo, hot, foot[hot_yx[:, 0], hot_yx[:, 1]],
                          ink_yx[:, 0] * self.width + ink_yx[:, 1])


@lru_cache(maxsize=8)
def _marker_sprite(radius: float, aa: int) -> tuple[np.ndarray, int]:
    h = int(math.ceil(radius)) + 3
    n = (2 * h + 1) * aa
    centre = h * aa + (aa - 1) / 2  # the centre of the middle pixel, in the fine grid
    y, x = np.mgrid[0:n, 0:n]
    disk = ((y - centre) ** 2 + (x - centre) ** 2 <= (radius * aa) ** 2).astype(np.float32)
    return _downsample(disk, 2 * h + 1), h


@lru_cache(maxsize=32)
def _circle(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pixel offsets on a circle of `radius` (one sample per pixel of arc) and their angles."""
    step = 360.0 / (2 * radius * math.pi)
    rad = np.deg2rad(np.arange(0.0, 360.0, step))
    offs = np.unique(np.floor(np.stack([radius * np.sin(rad), radius * np.cos(rad)], 1)).astype(int), axis=0)
    return offs, np.arctan2(offs[:, 0], offs[:, 1])


def _window(p, r: int, n: int):
    """Slices of an n x n image and of a (2r+1)^2 patch centred on pixel p, clipped to the image."""
    y0, x0 = p[0] - r, p[1] - r
    iy, ix = slice(max(y0, 0), min(y0 + 2 * r + 1, n)), slice(max(x0, 0), min(x0 + 2 * r + 1, n))
    py, px = slice(iy.start - y0, iy.stop - y0), slice(ix.start - x0, ix.stop - x0)
    return (iy, ix), (py, px)


# --- the scene ------------------------------------------------------------------------------------


class Dash(NamedTuple):
    near: tuple  # end nearer the snake's origin
    far: tuple
    angle: float  # direction the sprite was drawn in, from `start`
    start: tuple  # pixel the sprite was drawn from (near for a first dash, else far)


@dataclass
class Snake:
    kind: str  # "target" or "distractor"
    contrast: float
    dashes: list = field(default_factory=list)  # [Dash], from the origin to the terminal end
    pivot: Optional[tuple] = None
    heading: Optional[float] = None
    # while growing: the occupancy this snake is tested against, and its newest dash (window, footprint)
    occ: Optional[np.ndarray] = field(default=None, repr=False)
    pending: Optional[tuple] = field(default=None, repr=False)
    halo: Optional[np.ndarray] = field(default=None, repr=False)  # its ink pixels and their neighbours

    @property
    def origin(self) -> tuple:
        return self.dashes[0].near

    @property
    def terminal(self) -> tuple:
        return self.dashes[-1].far


@dataclass
class Sample:
    image: np.ndarray  # (size, size) uint8
    label: int
    margin: int
    snakes: list  # [Snake]; the two targets first
    markers: tuple  # ((y, x), (y, x)): the origin marker, the terminal marker
    marked: tuple  # (snake index of the origin marker, snake index of the terminal marker)
    settings: Settings

    def snake_layer(self, k: int) -> np.ndarray:
        """The ink of snake k alone (float, before scaling), for tests and figures."""
        sprites = Sprites(self.settings, self.margin)
        n = self.settings.size
        out = np.zeros((n, n), np.float32)
        for dash in self.snakes[k].dashes:
            line = sprites.get(dash.angle).line
            (iy, ix), (py, px) = _window(dash.start, sprites.r, n)
            np.maximum(out[iy, ix], line[py, px], out=out[iy, ix])
        return out


class _Geometry:
    """Per (settings, margin): sprites and the index tables of a padded canvas, computed once."""

    def __init__(self, s: Settings, margin: int):
        self.s, self.m = s, margin
        L, n = s.dash_length, s.size
        self.R = L + margin  # candidate circle radius
        r = L + int(math.ceil(s.thickness)) + margin
        # Pivots may lie up to ~L + 3m outside the image; candidates and their margin disks further.
        self.P = r + 2 * (L + 3 * margin) + 2
        self.W = n + 2 * self.P
        self.sprites = Sprites(s, margin, self.W)
        inside = np.zeros((self.W, self.W), np.float32)
        inside[self.P : self.P + n, self.P : self.P + n] = 1
        self.inside = inside.ravel()
        self.offs, self.angles = _circle(self.R)
        disk = _disk_offsets(margin)
        self.cand_flat = self.offs[:, 0] * self.W + self.offs[:, 1]
        self.disk_flat = (self.offs[:, None, 0] + disk[None, :, 0]) * self.W + self.offs[:, None, 1] + disk[None, :, 1]
        self._smooth: dict = {}

    def candidates(self, heading: float):
        """The candidates a snake with this heading may turn to (cos^2(min(turn x continuity, pi/2))
        > 0), with those weights: (weights, flat offsets, flat offsets of their margin disks,
        offsets, angles). Zero-weight candidates can never be drawn, so they are dropped."""
        hit = self._smooth.get(heading)
        if hit is None:
            turn = np.abs(self.angles - heading)
            turn = np.minimum(turn, 2 * np.pi - turn)
            w = np.maximum(np.cos(np.minimum(turn * self.s.continuity, np.pi / 2)), 0.0) ** 2
            k = w > 0
            hit = self._smooth[heading] = (w[k], self.cand_flat[k], self.disk_flat[k], self.offs[k], self.angles[k])
        return hit


class _Scene:
    """A canvas being drawn. Arrays are padded by P on every side so that no window is clipped.

    A growing snake's `occ` is what it is tested against: every footprint drawn so far except its
    own newest dash. Snakes that grow together (the two targets) each have one; footprints are only
    ever added, so each is updated in place. Ink is rendered once the scene is final.
    """

    def __init__(self, g: _Geometry, rng: np.random.Generator):
        self.g, self.s, self.rng = g, g.s, rng
        n, P, pad = g.s.size, g.P, g.s.padding
        self.base = np.zeros((g.W, g.W), np.float32)  # footprints of finished snakes + the padding frame
        inner = self.inner(self.base)
        inner[:pad], inner[n - pad :], inner[:, :pad], inner[:, n - pad :] = 1, 1, 1, 1
        self.snakes: list[Snake] = []
        self.growing: list[Snake] = []

    def inner(self, a: np.ndarray) -> np.ndarray:
        P, n = self.g.P, self.s.size
        return a[P : P + n, P : P + n]

    def add(self, snake: Snake) -> None:
        snake.occ = self.base.copy()
        self.snakes.append(snake)
        self.growing.append(snake)

    def drop(self, snake: Snake) -> None:
        self.snakes.remove(snake)
        self.growing.remove(snake)

    def _inside(self, p) -> bool:
        return 0 <= p[0] < self.s.size and 0 <= p[1] < self.s.size

    def _win(self, p):
        r, P = self.g.sprites.r, self.g.P
        y, x = p[0] + P, p[1] + P
        return slice(y - r, y + r + 1), slice(x - r, x + r + 1)

    def _fits(self, snake: Snake, angle: float, p) -> bool:
        """No overlap of footprints (soft sum >= 1.8), and clear of the other target if asked."""
        sp = self.g.sprites.get(angle)
        r, P, W = sp.line.shape[0] // 2, self.g.P, self.g.W
        corner = (p[0] + P - r) * W + p[1] + P - r
        if float((snake.occ.ravel()[corner + sp.hot] + sp.hot_val).max(initial=0.0)) >= 1.8:
            return False
        if snake.halo is not None:
            for other in self.growing:
                if other is not snake and other.halo is not None and other.halo.ravel()[corner + sp.ink_flat].any():
                    return False
        return True

    def _place(self, snake: Snake, angle: float, start, near, far) -> None:
        """Add a dash whose sprite starts at `start`; the snake's previous dash becomes committed."""
        sp = self.g.sprites.get(angle)
        foot, halo = sp.foot, sp.halo
        win = self._win(start)
        if snake.halo is not None:
            snake.halo[win] |= halo
        for other in self.growing:
            if other is not snake:
                np.maximum(other.occ[win], foot, out=other.occ[win])
        if snake.pending is not None:
            pw, pf = snake.pending
            np.maximum(snake.occ[pw], pf, out=snake.occ[pw])
        snake.pending = (win, foot)
        snake.dashes.append(Dash(near, far, angle, start))

    def finish(self, *snakes: Snake) -> None:
        """The snakes stop growing: all their footprints join the committed occupancy."""
        for snake in snakes:
            occ = snake.occ
            if snake.pending is not None:
                pw, pf = snake.pending
                np.maximum(occ[pw], pf, out=occ[pw])
            np.maximum(self.base, occ, out=self.base)
            snake.occ = snake.pending = snake.halo = None
            self.growing.remove(snake)

    def ink(self) -> np.ndarray:
        """The dashes of every snake, times their contrast (unpadded)."""
        ink = np.zeros_like(self.base)
        sprites = self.g.sprites
        for snake in self.snakes:
            for d in snake.dashes:
                win = self._win(d.start)
                np.maximum(ink[win], snake.contrast * sprites.get(d.angle).line, out=ink[win])
        return self.inner(ink)

    def _random_angle(self) -> float:
        return math.radians(int(self.rng.integers(-180, 180)))

    def _sample_start(self, blocked: np.ndarray, core: np.ndarray):
        """A pixel drawn uniformly among those where a dash's footprint core is free, or None.

        Rejection from the free pixels is uniform over the valid ones (the core holds the start
        pixel itself); the exact valid set is computed only when rejection keeps failing.
        """
        n = self.s.size
        free = np.flatnonzero(~blocked)
        if free.size == 0:
            return None

        def ok(y, x):
            ys, xs = y + core[:, 0], x + core[:, 1]
            if ys.min() < 0 or xs.min() < 0 or ys.max() >= n or xs.max() >= n:
                return False
            return not blocked[ys, xs].any()

        for _ in range(48):
            y, x = divmod(int(free[self.rng.integers(free.size)]), n)
            if ok(y, x):
                return (y, x)
        valid = [i for i in free if ok(*divmod(int(i), n))]
        if not valid:
            return None
        return divmod(int(valid[self.rng.integers(len(valid))]), n)

    def seed(self, snake: Snake, band: int) -> bool:
        """Start `snake` with one dash placed uniformly where it fits, at least `band` from the edge."""
        s, n, L, m = self.s, self.s.size, self.s.dash_length, self.g.m
        occ = self.inner(snake.occ)
        if snake.kind == "distractor" and float((occ <= 0.3).mean()) < s.stop_free_fraction:
            return False
        blocked = occ > 0.3
        blocked[:band], blocked[n - band :], blocked[:, :band], blocked[:, n - band :] = True, True, True, True
        for _ in range(s.segment_retries + 1):
            angle = self._random_angle()
            start = self._sample_start(blocked, self.g.sprites.get(angle).core)
            if start is None:
                return False
            head = _step(start, angle, L)
            pivot = _step(head, _flip(angle), L + m)  # `m` behind the start: the first gap is centred on it
            if self._inside(head) and self._inside(pivot):
                self._place(snake, angle, start, start, head)
                snake.pivot, snake.heading = pivot, angle
                return True
        return False

    def seed_near(self, snake: Snake, first: Snake) -> bool:
        """Start the second target `seed_distance` from the first target's start."""
        s, L, m = self.s, self.s.dash_length, self.g.m
        occ = snake.occ
        o = first.origin
        for _ in range(s.segment_retries + 1):
            angle = self._random_angle()
            where = math.radians(int(self.rng.integers(0, 360)))
            start = (int(round(o[0] + s.seed_distance * math.sin(where))), int(round(o[1] + s.seed_distance * math.cos(where))))
            head = _step(start, angle, L)
            pivot = _step(head, _flip(angle), L + m)
            if not (self._inside(start) and self._inside(head) and self._inside(pivot)):
                continue
            if not self._fits(snake, angle, start):
                continue
            self._place(snake, angle, start, start, head)
            snake.pivot, snake.heading = pivot, angle
            return True
        return False

    def extend(self, snake: Snake) -> bool:
        """Add one dash to `snake`, turning smoothly into free space; False at a dead end."""
        g, L, m = self.g, self.s.dash_length, self.g.m
        pivot = _step(snake.pivot, snake.heading, L + 2 * m)
        smooth, cand_flat, disk_flat, offs, angles = g.candidates(snake.heading)
        if len(smooth) == 0:
            return False
        centre = (pivot[0] + g.P) * g.W + pivot[1] + g.P
        # free space = 1 - occupancy dilated by the margin, evaluated at the candidates only
        near_occ = snake.occ.ravel()[centre + disk_flat].max(axis=1)
        weight = (1.0 - near_occ) * smooth * g.inside[centre + cand_flat]
        total = float(weight.sum())
        if total < 1e-4:
            return False
        cdf = np.cumsum(weight)
        for _ in range(self.s.segment_retries + 1):
            i = min(int(np.searchsorted(cdf, self.rng.random() * total, side="right")), len(cdf) - 1)
            far = (pivot[0] + int(offs[i, 0]), pivot[1] + int(offs[i, 1]))
            angle = _flip(float(angles[i]))  # drawn from the far end back towards the pivot
            if self._fits(snake, angle, far):
                self._place(snake, angle, far, _step(far, angle, L), far)
                snake.pivot, snake.heading = pivot, float(angles[i])
                return True
        return False


def _targets(g: _Geometry, rng) -> _Scene:
    s = g.s
    for _ in range(100_000):
        scene = _Scene(g, rng)
        a, b = Snake("target", s.target_contrast), Snake("target", s.target_contrast)
        scene.add(a)
        scene.add(b)
        if s.target_clearance:
            a.halo = np.zeros(scene.base.shape, bool)
            b.halo = np.zeros(scene.base.shape, bool)
        if not (scene.seed(a, 2 * s.seed_distance) and scene.seed_near(b, a)):
            continue
        if all(scene.extend(k) for _ in range(s.contour_length - 1) for k in (a, b)):
            scene.finish(a, b)
            return scene
    raise RuntimeError(f"pathfinder generator: no two target snakes fit with {s}")


def draw_sample(s: Settings, label: int, rng: np.random.Generator, cache: dict | None = None) -> Sample:
    """One image with its label and the geometry that made it. `cache` keeps sprites between calls."""
    margin = int(s.margins[int(rng.integers(len(s.margins)))]) if len(s.margins) > 1 else s.margins[0]
    cache = {} if cache is None else cache
    g = cache.get((s, margin))
    if g is None:
        g = cache[(s, margin)] = _Geometry(s, margin)
    scene = _targets(g, rng)
    for _ in range(s.distractors):
        for _ in range(s.snake_retries + 1):
            d = Snake("distractor", s.distractor_contrast)
            scene.add(d)
            if scene.seed(d, 1) and all(scene.extend(d) for _ in range(s.distractor_length - 1)):
                scene.finish(d)
                break
            scene.drop(d)  # a failed distractor leaves nothing behind: its footprints were private
    first = int(rng.integers(2))
    last = first if label == 1 else 1 - first
    markers = (scene.snakes[first].origin, scene.snakes[last].terminal)
    image = scene.ink()
    disk, h = _marker_sprite(s.marker_radius, s.antialias)
    for p in markers:
        (iy, ix), (py, px) = _window(p, h, s.size)
        np.maximum(image[iy, ix], disk[py, px], out=image[iy, ix])
    top = float(image.max())
    pixels = np.clip(np.rint(image * (255.0 / top)), 0, 255).astype(np.uint8)
    return Sample(pixels, int(label), margin, scene.snakes, markers, (first, last), s)


# --- writing the release layout -------------------------------------------------------------------


def metadata_line(s: Settings, batch: int, k: int, label: int, margin: int) -> str:
    return (f"imgs/{batch} sample_{k}.png {k} {label} {float(s.continuity)} {s.contour_length} "
            f"{s.distractor_length} {s.dash_length} {float(s.thickness)} {margin} 1")


def _batch_rng(seed: int, s: Settings, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, s.size, s.contour_length, batch])


def batch_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    return labels


_DRAWN = None  # a worker process's shared count of drawn images (set by _count_into), for the progress bar


def _count_into(counter) -> None:
    global _DRAWN
    _DRAWN = counter


def _drawn(n: int = 1) -> None:
    if _DRAWN is not None:
        with _DRAWN.get_lock():
            _DRAWN.value += n


def write_batch(job, tick=_drawn) -> int:
    """Draw batch `batch` (`count` images) into `root`; the metadata file is written last.
    `tick(n)` is told of every image drawn (or found done), for a progress bar by image."""
    root, s, seed, batch, count = job
    root = Path(root)
    meta = root / "metadata" / f"{batch}.npy"
    if meta.exists():
        tick(count)
        return 0  # done by an earlier (interrupted) run with the same settings
    rng = _batch_rng(seed, s, batch)
    labels = batch_labels(count, rng)
    folder = root / "imgs" / str(batch)
    folder.mkdir(parents=True, exist_ok=True)
    sprites: dict = {}
    lines = []
    for k in range(count):
        sample = draw_sample(s, int(labels[k]), rng, sprites)
        Image.fromarray(sample.image, mode="L").save(folder / f"sample_{k}.png", optimize=False)
        lines.append(metadata_line(s, batch, k, sample.label, sample.margin))
        tick(1)
    meta.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta, "\n".join(lines) + "\n")
    return count


def generate(root: Path, s: Settings, *, images: int, seed: int = 0, per_batch: int = 1000,
             workers: int | None = None, force: bool = False, progress: bool = False) -> dict:
    """Write `images` images in the release layout under `root` (one difficulty folder).

    A manifest (GENERATED.json) records the settings; it says `complete: false` until every batch
    is written, so the loader never takes a half-generated set for a finished one. Running again
    with the same settings resumes (finished batches are kept); other settings need `force`.
    """
    if images < 1 or per_batch < 1:
        raise ConfigError(f"need images >= 1 and per_batch >= 1, got {images}, {per_batch}")
    root = Path(root)
    manifest = {"generator": "lra snakes (tasks/snakes.py)", "seed": seed, "images": images,
                "per_batch": per_batch, "settings": dataclasses.asdict(s)}
    path = root / MANIFEST
    if path.exists() and not force:
        old = json.loads(path.read_text())
        same = {k: v for k, v in old.items() if k != "complete"} == json.loads(json.dumps(manifest))
        if not same:
            raise ConfigError(f"{root} holds a dataset generated with other settings; pass --force to replace it")
        if old.get("complete"):
            raise AlreadyDone(f"{root} is already complete ({images} images, the same settings): nothing to do "
                              "(--force draws it again)")
    elif (root / "metadata").exists() and not force:
        raise ConfigError(f"{root} already holds Pathfinder data not made by this generator; pass --force to replace it")
    if force:
        for sub in ("imgs", "metadata"):
            shutil.rmtree(root / sub, ignore_errors=True)
        path.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**manifest, "complete": False}, indent=1))
    jobs = [(str(root), s, seed, b, min(per_batch, images - b * per_batch)) for b in range(-(-images // per_batch))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=images, desc=f"pathfinder{s.size}", unit="img", disable=not progress, mininterval=0.5)
    try:
        if workers == 1:
            for job in jobs:
                write_batch(job, tick=bar.update)
        else:
            draw_in_pool(jobs, workers, bar)
    finally:
        bar.close()
    path.write_text(json.dumps({**manifest, "complete": True}, indent=1))
    return manifest


def draw_in_pool(jobs: list, workers: int, bar) -> None:
    """The batches in worker processes; the bar follows a shared count of images drawn."""
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    drawn = ctx.Value("l", 0)
    with ctx.Pool(workers, initializer=_count_into, initargs=(drawn,)) as pool:
        result = pool.map_async(write_batch, jobs, chunksize=1)
        while not result.ready():
            result.wait(0.25)
            bar.update(drawn.value - bar.n)
        result.get()  # a worker's exception, raised here
    bar.update(drawn.value - bar.n)


def example_grid(size: int, out: Path, *, per_label: int = 4, seed: int = 0, scale: int | None = None,
                 difficulty: str = "curv_contour_length_14") -> Path:
    """A PNG with `per_label` positives (top row) and negatives (bottom row), upscaled for viewing."""
    s = settings_for(size, difficulty)
    rng = np.random.default_rng([seed, size, 99])
    scale = scale or max(1, 128 // size * 2)
    gap = 2 * scale
    rows = [[draw_sample(s, label, rng).image for _ in range(per_label)] for label in (1, 0)]
    cell = size * scale
    canvas = np.full((2 * cell + 3 * gap, per_label * cell + (per_label + 1) * gap), 96, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = gap + r * (cell + gap), gap + c * (cell + gap)
            canvas[y : y + cell, x : x + cell] = np.kron(img, np.ones((scale, scale), np.uint8))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas, mode="L").save(out)
    return out
