"""Formula-driven images for pre-training without natural images (``ablations/pretrain.py``).

FractalDB (Kataoka et al., ACCV 2020): a category is an iterated function system (IFS), a few
random affine maps ``x ↦ A x + b``; its instances are renderings of slightly perturbed
parameters. The maps are drawn as Anderson & Farrell (WACV 2022) propose, by their singular
values: ``A = R(θ) diag(σ1, σ2) R(φ) diag(d, 1)`` with the σ-factor ``Σ (σ1 + 2 σ2)`` of the
system in [(5 + N) / 2, (6 + N) / 2] for N maps, which gives shapes that are neither dust nor a
filled blob. Our additions: a category is kept only when its rendering is non-degenerate (fill
ratio and spread thresholds, ``FILL`` / ``SPREAD``); each instance gets its own colours (one per
map), background gradient, scale and position, so that only the shape tells the category.

Rendering is vectorised over all instances of a category (chaos game on many chains at once,
then one ``bincount``), at 2× and box-filtered: 100 categories × 100 instances at 64×32 take
seconds. Everything is a function of ``FractalSpec`` (its seed included).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

FILL = (0.12, 0.85)
"""Share of the shape's bounding box its points cover (at 32 px): below, dust or thin curves;
above, a filled blob."""
SPREAD = 0.2
"""Least ratio of the shape's shorter to its longer side: below, a line."""
CHAINS, BURN, STEPS = 128, 12, 32
"""Chaos game: parallel chains per rendering, iterations dropped, iterations kept (4,096 points)."""
SS = 2
"""Supersampling of the rasterisation (anti-aliased edges)."""


@dataclass(frozen=True)
class FractalSpec:
    """Size of a fractal image set; ``seed`` fixes every draw."""

    categories: int = 300
    instances: int = 50
    height: int = 64
    width: int = 32
    min_maps: int = 2
    max_maps: int = 4
    seed: int = 0


VERSION = 1
"""Bump with any change to the rendered images (``tests/test_generator_version.py`` pins it to a
hash of rendered categories): part of the images' digest, unlike comments or refactoring."""

_V1_CODE = "562e226b21006c55"
"""Version 1 was keyed by a hash of this module's source text, frozen here so that its
pre-trainings keep their digest; later versions by ``VERSION`` alone."""


def settings_digest(spec: FractalSpec) -> str:
    """The images' digest, known without rendering them (they depend on nothing else)."""
    text = repr(sorted(asdict(spec).items())) + (_V1_CODE if VERSION == 1 else f"v{VERSION}")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- systems


def _maps(theta, phi, s1, s2, d, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parameters (..., N) → matrices A (..., N, 2, 2), offsets (..., N, 2), probabilities
    (..., N) ∝ |det A| (zero where a padded map has σ = 0)."""
    c, s = np.cos(theta), np.sin(theta)
    cp, sp = np.cos(phi), np.sin(phi)
    # A = R(θ) · diag(σ1, σ2) · R(φ) · diag(d, 1)
    a11 = (c * s1 * cp - s * s2 * sp) * d
    a12 = -c * s1 * sp - s * s2 * cp
    a21 = (s * s1 * cp + c * s2 * sp) * d
    a22 = -s * s1 * sp + c * s2 * cp
    A = np.stack([np.stack([a11, a12], -1), np.stack([a21, a22], -1)], -2)  # (..., N, 2, 2)
    det = s1 * s2
    p = det / np.maximum(det.sum(-1, keepdims=True), 1e-12)
    return A, b, p


def sample_systems(rng: np.random.Generator, count: int, min_maps: int, max_maps: int) -> dict:
    """``count`` IFS parameter sets, padded to ``max_maps`` maps (a padded map has σ = 0, so
    probability 0): θ, φ, σ1, σ2, d (count, max_maps), b (count, max_maps, 2), n (count,)."""
    n = rng.integers(min_maps, max_maps + 1, count)
    out = {k: np.zeros((count, max_maps)) for k in ("theta", "phi", "s1", "s2", "d")}
    out["b"] = np.zeros((count, max_maps, 2))
    for i in range(count):
        k = int(n[i])
        lo, hi = (5 + k) / 2, (6 + k) / 2
        while True:  # σ-factor in [lo, hi]: rejection over a batch of candidates
            s1 = rng.uniform(0.25, 1.0, (64, k))
            s2 = rng.uniform(0.0, 1.0, (64, k)) * s1
            alpha = (s1 + 2 * s2).sum(-1)
            ok = np.flatnonzero((alpha >= lo) & (alpha <= hi))
            if ok.size:
                out["s1"][i, :k], out["s2"][i, :k] = s1[ok[0]], s2[ok[0]]
                break
        out["theta"][i, :k] = rng.uniform(-np.pi, np.pi, k)
        out["phi"][i, :k] = rng.uniform(-np.pi, np.pi, k)
        out["d"][i, :k] = rng.choice([-1.0, 1.0], k)
        out["b"][i, :k] = rng.uniform(-1, 1, (k, 2))
    out["n"] = n
    return out


def perturb(rng: np.random.Generator, system: dict, index: int, count: int) -> dict:
    """``count`` instances of system ``index``: its maps' angles, singular values (kept < 1, so
    every map still contracts) and offsets moved a little, FractalDB's intra-category variation."""
    k = system["theta"].shape[1]
    real = system["s1"][index] > 0  # (k,): padded maps stay padded
    out = {}
    for name, scale in (("theta", 0.12), ("phi", 0.12)):
        out[name] = system[name][index] + rng.normal(0, scale, (count, k)) * real
    for name in ("s1", "s2"):
        out[name] = np.clip(system[name][index] * np.exp(rng.normal(0, 0.06, (count, k))), 0, 0.98)
    out["s2"] = np.minimum(out["s2"], out["s1"])
    out["d"] = np.broadcast_to(system["d"][index], (count, k)).copy()
    out["b"] = system["b"][index] + rng.normal(0, 0.06, (count, k, 2)) * real[:, None]
    return out


def chaos_game(
    rng: np.random.Generator,
    params: dict,
    chains: int = CHAINS,
    burn: int = BURN,
    steps: int = STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Points on the attractors of B systems at once: (B, 2, steps·chains) as (x, y) rows, and
    the map that placed each point (B, steps·chains)."""
    A, b, p = _maps(*(params[k] for k in ("theta", "phi", "s1", "s2", "d", "b")))
    B, N = p.shape
    coef = np.concatenate([A.reshape(B, N, 4), b], -1).transpose(0, 2, 1)  # (B, 6, N)
    cum = np.cumsum(p, -1)  # (B, N)
    cum[:, -1] = 1.0
    x, y = np.zeros((B, chains)), np.zeros((B, chains))
    pts = np.empty((B, 2, steps, chains))
    which = np.empty((B, steps, chains), np.int64)
    for t in range(burn + steps):
        u = rng.random((B, chains))
        k = (u[..., None] > cum[:, None, :]).sum(-1)  # (B, chains): the map drawn
        m = np.take_along_axis(coef, np.broadcast_to(k[:, None], (B, 6, chains)), 2)  # (B, 6, C)
        x, y = m[:, 0] * x + m[:, 1] * y + m[:, 4], m[:, 2] * x + m[:, 3] * y + m[:, 5]
        if t >= burn:
            pts[:, 0, t - burn], pts[:, 1, t - burn], which[:, t - burn] = x, y, k
    return pts.reshape(B, 2, -1), which.reshape(B, -1)


def _box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower corner and extent (B, 2) of each cloud (B, 2, P)."""
    lo, hi = points.min(2), points.max(2)
    return lo, np.maximum(hi - lo, 1e-9)


def shape_stats(points: np.ndarray, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Fill ratio and spread of each point cloud (B, 2, P): the share of the ``size``-pixel
    raster of its bounding box (longer side = ``size``) that its points hit, and its shorter
    side over its longer side."""
    B = len(points)
    lo, ext = _box(points)
    side = ext.max(1)  # (B,)
    cells = np.maximum(np.ceil(ext / side[:, None] * size), 1).prod(1)  # (B,): raster of the box
    ij = ((points - lo[..., None]) / side[:, None, None] * size).astype(np.int64)  # (B, 2, P)
    ij = np.minimum(ij, size - 1)
    flat = (np.arange(B)[:, None] * size + ij[:, 0]) * size + ij[:, 1]  # (B, P)
    hit = np.bincount(flat.ravel(), minlength=B * size * size).reshape(B, -1) > 0
    finite = np.isfinite(points).all((1, 2))
    fill, spread = hit.sum(1) / cells, ext.min(1) / side
    return np.where(finite, fill, 0.0), np.where(finite, spread, 0.0)


def _ok(fill: np.ndarray, spread: np.ndarray) -> np.ndarray:
    return (fill >= FILL[0]) & (fill <= FILL[1]) & (spread >= SPREAD)


def category_systems(spec: FractalSpec) -> dict:
    """The ``spec.categories`` IFS of the set: random systems, each kept only when its own
    rendering is non-degenerate (``FILL``, ``SPREAD``), in the order drawn."""
    rng = np.random.default_rng([spec.seed, 0])
    kept: list[dict] = []
    while sum(len(k["n"]) for k in kept) < spec.categories:
        cand = sample_systems(rng, 64, spec.min_maps, spec.max_maps)
        points, _ = chaos_game(rng, cand)
        good = np.flatnonzero(_ok(*shape_stats(points)))
        kept.append({k: v[good] for k, v in cand.items()})
    out = {k: np.concatenate([c[k] for c in kept])[: spec.categories] for k in kept[0]}
    return out


# --------------------------------------------------------------------------- rendering


def _pool(a: np.ndarray) -> np.ndarray:
    """Mean over SS×SS blocks of (B, h, w, ...) → (B, h/SS, w/SS, ...)."""
    return sum(a[:, i::SS, j::SS] for i in range(SS) for j in range(SS)) / SS**2


def _upright(rng: np.random.Generator, points: np.ndarray, tilt: float) -> np.ndarray:
    """Each cloud (B, 2, P) turned so that its longer principal axis is vertical (as a person
    stands in a tall image), then by a random angle of about ``tilt`` radians."""
    centred = points - points.mean(2, keepdims=True)
    cov = np.einsum("bip,bjp->bij", centred, centred)  # (B, 2, 2)
    major = np.arctan2(2 * cov[:, 0, 1], cov[:, 0, 0] - cov[:, 1, 1]) / 2  # angle of the major axis
    turn = np.pi / 2 - major + rng.normal(0, tilt, len(points))  # (B,)
    c, s = np.cos(turn)[:, None], np.sin(turn)[:, None]
    x, y = centred[:, 0], centred[:, 1]
    return np.stack([c * x - s * y, s * x + c * y], 1)


def _render(
    rng: np.random.Generator, points: np.ndarray, which: np.ndarray, H: int, W: int
) -> np.ndarray:
    """Draw B point clouds (B, 2, P) as (B, H, W, 3) uint8 images: each at its own scale and
    place, a colour per map, over a two-colour gradient background with a little noise."""
    B, N = len(points), int(which.max()) + 1
    h, w = H * SS, W * SS
    points = _upright(rng, points, tilt=0.15)
    lo, ext = _box(points)
    # (x, y) of the cloud → (col, row): fit the box into the canvas, shrink, place at random
    fit = np.minimum(w / ext[:, 0], h / ext[:, 1]) * rng.uniform(0.6, 1.0, B)  # (B,)
    size = ext * fit[:, None]  # (B, 2) in pixels (cols, rows)
    origin = rng.uniform(0, 1, (B, 2)) * (np.array([w, h]) - size)
    xy = (points - lo[..., None]) * fit[:, None, None] + origin[..., None]  # (B, 2, P)
    col = np.clip(xy[:, 0].astype(np.int64), 0, w - 1)
    row = np.clip(xy[:, 1].astype(np.int64), 0, h - 1)
    flat = (((np.arange(B)[:, None] * h + row) * w + col) * N + which).ravel()  # (B·P,)
    per_map = np.bincount(flat, minlength=B * h * w * N).reshape(B, h * w, N).astype(np.float32)
    count = per_map.sum(-1)  # (B, h·w): points per subpixel
    palette = rng.uniform(0, 255, (B, N, 3)).astype(np.float32)  # a colour per map
    fg = np.matmul(per_map, palette) / np.maximum(count, 1)[..., None]  # (B, h·w, 3): mean colour
    alpha = _pool((count > 0).astype(np.float32).reshape(B, h, w))  # (B, H, W): coverage
    prem = _pool(fg.reshape(B, h, w, 3))  # (B, H, W, 3): premultiplied colour (0 where empty)
    # background: a linear gradient between two colours in a random direction, each kept away
    # from the shape's mean brightness so that the shape stays visible
    c0, c1 = rng.uniform(0, 255, (2, B, 3)).astype(np.float32)
    bright = palette.mean((1, 2))[:, None]  # (B, 1)
    for c in (c0, c1):
        c[:] = np.where(np.abs(c.mean(1, keepdims=True) - bright) < 50, 255 - c, c)
    angle = rng.uniform(0, 2 * np.pi, B)[:, None, None]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    t = np.clip(np.cos(angle) * (xx / W - 0.5) + np.sin(angle) * (yy / H - 0.5) + 0.5, 0, 1)
    bg = c0[:, None, None] * (1 - t[..., None]) + c1[:, None, None] * t[..., None]  # (B, H, W, 3)
    img = bg * (1 - alpha[..., None]) + prem + rng.normal(0, 4, (B, H, W, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_category(spec: FractalSpec, systems: dict, index: int) -> np.ndarray:
    """All ``spec.instances`` images of category ``index``: (I, H, W, 3) uint8. An instance
    whose perturbation made it degenerate is drawn again (up to 4 times, then the category's
    own parameters stand in)."""
    rng = np.random.default_rng([spec.seed, 1, index])
    params = perturb(rng, systems, index, spec.instances)
    points, which = chaos_game(rng, params)
    for attempt in range(5):
        bad = np.flatnonzero(~_ok(*shape_stats(points)))
        if not bad.size:
            break
        again = (
            perturb(rng, systems, index, len(bad))
            if attempt < 4
            else {k: np.repeat(systems[k][index : index + 1], len(bad), 0) for k in params}
        )
        points[bad], which[bad] = chaos_game(rng, again)
    return _render(rng, points, which, spec.height, spec.width)


def generate(spec: FractalSpec, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """The whole set: images (categories·instances, H, W, 3) uint8 and labels (…,) int64,
    category-major. ``progress``: called with the number of categories done."""
    systems = category_systems(spec)
    images = np.empty((spec.categories * spec.instances, spec.height, spec.width, 3), np.uint8)
    for c in range(spec.categories):
        images[c * spec.instances : (c + 1) * spec.instances] = render_category(spec, systems, c)
        if progress is not None:
            progress(c + 1)
    labels = np.repeat(np.arange(spec.categories), spec.instances)
    return images, labels
