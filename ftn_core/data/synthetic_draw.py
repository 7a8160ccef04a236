"""Procedural drawing for the synthetic benchmark: identities, persons, camera scenes, objects.

Everything here is pure drawing from a ``numpy.random.Generator``; which identity appears in
which camera with which background object is decided in :mod:`ftn_core.data.synthetic`.
Interpretation of the paper's Figure 1: a background object that recurs with one identity
in training is a shortcut that causes false alarms when other persons stand beside it.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SS = 2
"""Supersampling of the person layer (anti-aliased edges and soft mask borders)."""
PANO = 4
"""A camera's scene is PANO image widths wide; each image shows a window of it."""

# Labels of the person layer: each maps to one colour of the identity.
BG, SKIN, HAIR, UPPER, LOWER, SHOES, BAG, HAT, PRINT = range(9)

SKIN_TONES = ((236, 200, 170), (198, 148, 108), (118, 80, 56))
HAIR_COLOURS = ((25, 20, 20), (95, 58, 30), (210, 175, 105), (160, 160, 160))
UPPER_COLOURS = (
    (200, 40, 45),
    (35, 45, 110),
    (232, 232, 226),
    (35, 35, 38),
    (45, 130, 65),
    (226, 196, 55),
    (130, 130, 136),
    (120, 170, 222),
)
LOWER_COLOURS = (
    (50, 70, 125),
    (30, 30, 35),
    (176, 156, 110),
    (122, 122, 128),
    (226, 226, 220),
    (100, 66, 40),
)
SHOE_COLOURS = ((25, 25, 25), (236, 236, 236), (112, 72, 40), (190, 40, 40))
BAG_COLOURS = ((30, 30, 30), (122, 82, 46), (180, 40, 40), (40, 70, 150))
HAT_COLOURS = ((30, 30, 30), (200, 40, 45), (40, 70, 150))
UPPER_TEXTURES = ("plain", "stripes", "checks", "logo")
LOWER_STYLES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder", "handbag")
LOGO_SHAPES = ("circle", "square", "triangle")
OBJECT_KINDS = ("bin", "plant", "bike", "sign", "cone", "bench", "lamp", "vending")
OBJECT_COLOURS = ((215, 40, 40), (40, 95, 205), (240, 200, 40), (40, 165, 75))
NUM_OBJECTS = len(OBJECT_KINDS) * len(OBJECT_COLOURS)


@dataclass(frozen=True)
class Identity:
    """One person's appearance: palette indices (−1 = absent) and a body build."""

    skin: int
    hair: int
    long_hair: int
    hat: int
    upper: int
    texture: int
    second: int
    long_sleeves: int
    logo: int
    lower: int
    lower_style: int
    shoes: int
    bag: int
    bag_colour: int
    build: float

    def codes(self) -> tuple[int, ...]:
        return astuple(self)[:-1]


def _draw_identity(rng: np.random.Generator) -> Identity:
    texture = int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))
    upper = int(rng.integers(len(UPPER_COLOURS)))
    second = int(rng.choice([c for c in range(len(UPPER_COLOURS)) if c != upper]))
    bag = int(rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]))
    return Identity(
        skin=int(rng.integers(len(SKIN_TONES))),
        hair=int(rng.integers(len(HAIR_COLOURS))),
        long_hair=int(rng.random() < 0.35),
        hat=int(rng.integers(len(HAT_COLOURS))) if rng.random() < 0.25 else -1,
        upper=upper,
        texture=texture,
        second=second if texture else -1,
        long_sleeves=int(rng.random() < 0.5),
        logo=int(rng.integers(len(LOGO_SHAPES))) if texture == 3 else -1,
        lower=int(rng.integers(len(LOWER_COLOURS))),
        lower_style=int(rng.choice(3, p=[0.6, 0.2, 0.2])),
        shoes=int(rng.integers(len(SHOE_COLOURS))),
        bag=bag,
        bag_colour=int(rng.integers(len(BAG_COLOURS))) if bag else -1,
        build=float(rng.uniform(0.88, 1.12)),
    )


def sample_identities(rng: np.random.Generator, n: int, min_diff: int = 3) -> list[Identity]:
    """``n`` identities whose attribute codes differ pairwise in at least ``min_diff`` places.

    Palettes are small, so every single attribute is shared by many identities.
    """
    out: list[Identity] = []
    codes = np.zeros((0, len(_draw_identity(np.random.default_rng(0)).codes())), np.int16)
    while len(out) < n:
        cand = _draw_identity(rng)
        c = np.array(cand.codes(), np.int16)
        if len(out) and (codes != c).sum(axis=1).min() < min_diff:
            continue
        out.append(cand)
        codes = np.vstack([codes, c])
    return out


# --------------------------------------------------------------------------- camera scenes


def camera_scene(cam: int, seed: int, height: int, width: int) -> np.ndarray:
    """The (H, PANO·W, 3) uint8 backdrop of one camera: a wall above a floor, with clutter.

    Six recipes (brick, shop fronts, park, road, hall, glass facade); cameras beyond six reuse
    a recipe with permuted colour channels, so every camera looks distinct.
    """
    rng = np.random.default_rng([seed, 7919, cam])
    H, PW, u = height, width * PANO, height / 128
    yy, xx = np.mgrid[0:H, 0:PW].astype(np.float32)  # (H, PW) each
    horizon = int(H * rng.uniform(0.5, 0.62))
    wall = yy < horizon
    cell = rng.normal(0, 1, (64, 64)).astype(np.float32)

    def col(base, jitter=10.0):
        return np.clip(np.asarray(base, np.float32) + rng.normal(0, jitter, 3), 0, 255)

    def grid(ch, cw, stagger=0.0):
        row = np.floor(yy / ch)
        off = (row % 2) * cw * stagger
        colm = np.floor((xx + off) / cw)
        line = (yy % ch < max(1.0, u * 1.2)) | ((xx + off) % cw < max(1.0, u * 1.2))
        return cell[row.astype(int) % 64, colm.astype(int) % 64], line, row, colm

    img = np.zeros((H, PW, 3), np.float32)
    recipe = cam % 6
    if recipe == 0:  # brick wall over paving
        var, line, _, _ = grid(6 * u, 14 * u, 0.5)
        brick = col((150, 70, 50)) + 14 * var[..., None]
        img[:] = np.where(line[..., None], col((190, 180, 170)), brick)
        var, line, _, _ = grid(10 * u, 22 * u)
        floor = np.where(
            line[..., None], col((100, 100, 98)), col((150, 150, 144)) + 6 * var[..., None]
        )
    elif recipe == 1:  # shop fronts with windows
        panel = np.floor(xx / (40 * u)).astype(int) % 4
        shades = np.stack(
            [col(c, 25) for c in ((170, 60, 60), (60, 110, 150), (200, 180, 120), (90, 140, 90))]
        )
        img[:] = shades[panel]
        win = (
            ((xx % (40 * u)) > 8 * u)
            & ((xx % (40 * u)) < 32 * u)
            & (yy > 0.15 * H)
            & (yy < 0.45 * H)
        )
        img[win] = col((60, 70, 85))
        floor = col((186, 176, 150)) + 8 * rng.normal(0, 1, (H, PW, 1))
    elif recipe == 2:  # park: sky, trees, grass with a path
        img[:] = col((170, 200, 226))
        floor = col((80, 140, 60)) + 14 * rng.normal(0, 1, (H, PW, 1))
        path = (yy > horizon + 0.12 * H) & (yy < horizon + 0.22 * H)
        floor[path] = col((172, 160, 140))
    elif recipe == 3:  # road: grey building, asphalt with markings
        var, line, row, colm = grid(12 * u, 16 * u)
        img[:] = col((112, 112, 122))
        img[(~line) & (row % 2 == 1) & (colm % 2 == 0)] = col((50, 60, 80))
        floor = col((70, 70, 76)) + 10 * rng.normal(0, 1, (H, PW, 1))
        dash = (np.abs(yy - horizon - 0.25 * H) < 1.5 * u) & ((xx % (40 * u)) < 22 * u)
        floor[dash] = (235, 235, 230)
        floor[np.abs(yy - horizon) < 2 * u] = col((180, 180, 170))
    elif recipe == 4:  # hall: beige wall with doors, checker floor
        img[:] = col((200, 190, 165))
        door = ((xx % (60 * u)) > 20 * u) & ((xx % (60 * u)) < 40 * u) & (yy > 0.12 * H)
        img[door] = col((120, 80, 50))
        _, _, row, colm = grid(12 * u, 12 * u)
        floor = np.where(
            ((row + colm) % 2 == 0)[..., None], col((225, 225, 220)), col((140, 140, 145))
        )
    else:  # glass facade, dark granite floor
        var, line, _, _ = grid(20 * u, 18 * u)
        img[:] = np.where(
            line[..., None], col((40, 40, 45)), col((110, 140, 165)) + 18 * var[..., None]
        )
        floor = col((62, 62, 68)) + 12 * rng.normal(0, 1, (H, PW, 1))
    img = np.where(wall[..., None], img, floor)
    if cam >= 6:
        img = img[..., rng.permutation(3)]

    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(PW / (30 * u))):  # clutter: posters, poles, foliage
        x, kind = float(rng.uniform(0, PW)), int(rng.integers(3))
        c = tuple(int(v) for v in rng.integers(20, 235, 3))
        if kind == 0:
            y = rng.uniform(0.05, 0.35) * H
            draw.rectangle((x, y, x + rng.uniform(8, 20) * u, y + rng.uniform(8, 24) * u), fill=c)
        elif kind == 1:
            draw.rectangle((x, 0, x + 2 * u, horizon + 6 * u), fill=(45, 45, 50))
        elif recipe == 2:
            r = rng.uniform(12, 26) * u
            draw.ellipse(
                (x - r, horizon - 1.8 * r, x + r, horizon + 0.2 * r),
                fill=(int(rng.integers(20, 70)), int(rng.integers(90, 140)), 40),
            )
    return np.asarray(canvas)


# --------------------------------------------------------------------------- objects


def draw_object(draw: ImageDraw.ImageDraw, obj: int, x: float, floor: float, u: float) -> None:
    """Background object ``obj`` (kind × colour, ``NUM_OBJECTS`` in all) standing at (x, floor)."""
    kind, c = OBJECT_KINDS[obj // len(OBJECT_COLOURS)], OBJECT_COLOURS[obj % len(OBJECT_COLOURS)]
    dark = tuple(v // 2 for v in c)
    if kind == "bin":
        draw.rectangle((x - 7 * u, floor - 26 * u, x + 7 * u, floor), fill=c)
        draw.rectangle((x - 8 * u, floor - 29 * u, x + 8 * u, floor - 25 * u), fill=dark)
    elif kind == "plant":
        draw.polygon(
            [
                (x - 7 * u, floor - 12 * u),
                (x + 7 * u, floor - 12 * u),
                (x + 5 * u, floor),
                (x - 5 * u, floor),
            ],
            fill=c,
        )
        draw.ellipse((x - 12 * u, floor - 38 * u, x + 12 * u, floor - 10 * u), fill=(40, 110, 45))
    elif kind == "bike":
        for dx in (-10, 10):
            draw.ellipse(
                (x + (dx - 8) * u, floor - 16 * u, x + (dx + 8) * u, floor),
                outline=(30, 30, 30),
                width=max(1, int(2 * u)),
            )
        draw.line(
            [
                (x - 10 * u, floor - 8 * u),
                (x, floor - 20 * u),
                (x + 10 * u, floor - 8 * u),
                (x - 10 * u, floor - 8 * u),
            ],
            fill=c,
            width=max(1, int(3 * u)),
        )
    elif kind == "sign":
        draw.rectangle((x - u, floor - 50 * u, x + u, floor), fill=(90, 90, 95))
        draw.rectangle((x - 10 * u, floor - 62 * u, x + 10 * u, floor - 46 * u), fill=c)
        draw.rectangle((x - 7 * u, floor - 56 * u, x + 7 * u, floor - 53 * u), fill=(245, 245, 245))
    elif kind == "cone":
        draw.polygon([(x, floor - 24 * u), (x + 8 * u, floor), (x - 8 * u, floor)], fill=c)
        draw.rectangle((x - 5 * u, floor - 12 * u, x + 5 * u, floor - 9 * u), fill=(245, 245, 245))
    elif kind == "bench":
        draw.rectangle((x - 16 * u, floor - 14 * u, x + 16 * u, floor - 10 * u), fill=c)
        draw.rectangle((x - 16 * u, floor - 26 * u, x + 16 * u, floor - 20 * u), fill=c)
        for dx in (-14, 12):
            draw.rectangle((x + dx * u, floor - 14 * u, x + (dx + 2) * u, floor), fill=dark)
    elif kind == "lamp":
        draw.rectangle((x - 1.5 * u, floor - 70 * u, x + 1.5 * u, floor), fill=(50, 50, 55))
        draw.ellipse((x - 7 * u, floor - 78 * u, x + 7 * u, floor - 66 * u), fill=c)
    else:  # vending machine
        draw.rectangle((x - 10 * u, floor - 46 * u, x + 10 * u, floor), fill=c)
        draw.rectangle((x - 7 * u, floor - 40 * u, x + 3 * u, floor - 18 * u), fill=(220, 230, 235))


# --------------------------------------------------------------------------- persons


def draw_person(
    ident: Identity, rng: np.random.Generator, height: int, width: int, partial: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Render one person in a random pose: premultiplied colour (H, W, 3) and alpha (H, W).

    Pose nuisance: view (front / back / side), scale, off-centre shift, stride and arm swing.
    ``partial`` draws a badly cropped detection (for pid-0 distractors).
    """
    H, W = height * SS, width * SS
    view = rng.choice(["front", "back", "side"], p=[0.4, 0.35, 0.25])
    face = 1 if rng.random() < 0.5 else -1  # side-view direction; bag side elsewhere
    s = H * rng.uniform(0.80, 0.94) * (rng.uniform(1.3, 1.8) if partial else 1.0)
    cx = W / 2 + W * rng.uniform(-0.1, 0.1) + (face * W * rng.uniform(0.3, 0.5) if partial else 0)
    y0 = (H - s) / 2 + H * rng.uniform(-0.03, 0.03)
    b = ident.build * rng.uniform(0.95, 1.05)
    side = view == "side"
    r = 0.068 * s
    ys, yh, yk, yf = y0 + 0.156 * s, y0 + 0.53 * s, y0 + 0.73 * s, y0 + 0.965 * s
    sw, hw = (0.075 * s, 0.07 * s) if side else (0.125 * s * b, 0.10 * s * b)
    hx = cx + (face * 0.02 * s if side else 0.0)

    lab = Image.new("L", (W, H), BG)
    d = ImageDraw.Draw(lab)

    def quad(xt, xb, wt, wb, yt, yb, fill):
        d.polygon(
            [(xt - wt / 2, yt), (xt + wt / 2, yt), (xb + wb / 2, yb), (xb - wb / 2, yb)], fill=fill
        )

    # legs (x at the hip, x at the foot)
    if side:
        st = rng.uniform(0.0, 0.16) * s
        legs = [(cx, cx + st), (cx, cx - st)]
    else:
        sp = rng.uniform(-0.005, 0.03) * s
        legs = [(cx - hw / 2, cx - hw / 2 - sp), (cx + hw / 2, cx + hw / 2 + sp)]
    lw, aw = 0.085 * s * b, 0.06 * s
    bare = ident.lower_style != 0
    if ident.bag == 1 and side:  # backpack behind the back
        d.rounded_rectangle(
            sorted_box(cx - face * 0.17 * s, ys + 0.02 * s, cx - face * 0.04 * s, ys + 0.27 * s),
            radius=0.03 * s,
            fill=BAG,
        )
    for xt, xb in legs:
        quad(xt, xb, lw, aw, yh, yf, SKIN if bare else LOWER)
        if ident.lower_style == 1:  # shorts to the knee
            t = (yk - yh) / (yf - yh)
            quad(xt, xt + t * (xb - xt), lw * 1.1, lw * 1.05, yh, yk, LOWER)
        ex = face * 0.02 * s if side else 0.0
        d.ellipse(
            (xb + ex - 0.05 * s, yf - 0.01 * s, xb + ex + 0.05 * s, yf + 0.035 * s), fill=SHOES
        )
    if ident.lower_style == 2:  # skirt
        d.polygon(
            [
                (cx - hw, yh - 0.02 * s),
                (cx + hw, yh - 0.02 * s),
                (cx + hw + 0.06 * s, yk + 0.02 * s),
                (cx - hw - 0.06 * s, yk + 0.02 * s),
            ],
            fill=LOWER,
        )
    # torso and print
    d.polygon(
        [
            (cx - sw, ys),
            (cx + sw, ys),
            (cx + hw * 1.05, yh + 0.02 * s),
            (cx - hw * 1.05, yh + 0.02 * s),
        ],
        fill=UPPER,
    )
    if ident.logo >= 0 and view == "front":
        lc, lr = (cx, ys + 0.12 * s), 0.05 * s
        if ident.logo == 0:
            d.ellipse((lc[0] - lr, lc[1] - lr, lc[0] + lr, lc[1] + lr), fill=PRINT)
        elif ident.logo == 1:
            d.rectangle((lc[0] - lr, lc[1] - lr, lc[0] + lr, lc[1] + lr), fill=PRINT)
        else:
            d.regular_polygon((lc[0], lc[1], lr * 1.3), 3, fill=PRINT)
    # arms: one visible arm in side view, two otherwise
    swing = rng.uniform(-0.1, 0.1) * s if side else rng.uniform(-0.02, 0.02) * s
    arms = (
        [(cx, swing)]
        if side
        else [(cx - sw + 0.025 * s, -0.02 * s + swing), (cx + sw - 0.025 * s, 0.02 * s + swing)]
    )
    aw_px = max(1, int(0.055 * s))
    hands = []
    for ax, dx in arms:
        a0, a1 = (ax, ys + 0.02 * s), (ax + dx, y0 + 0.50 * s)
        cut = 1.0 if ident.long_sleeves else 0.38
        am = (a0[0] + cut * (a1[0] - a0[0]), a0[1] + cut * (a1[1] - a0[1]))
        d.line([a0, a1], fill=SKIN, width=aw_px)
        d.line([a0, am], fill=UPPER, width=aw_px)
        d.ellipse(
            (a0[0] - aw_px / 2, a0[1] - aw_px / 2, a0[0] + aw_px / 2, a0[1] + aw_px / 2), fill=UPPER
        )
        d.ellipse(
            (a1[0] - 0.028 * s, a1[1] - 0.02 * s, a1[0] + 0.028 * s, a1[1] + 0.035 * s), fill=SKIN
        )
        hands.append(a1)
    # bags in front of the body
    bag_side = 1 if rng.random() < 0.5 else -1
    if ident.bag == 1 and view == "front":
        for k in (-1, 1):
            d.line(
                [(cx + k * 0.07 * s, ys), (cx + k * 0.08 * s, ys + 0.2 * s)],
                fill=BAG,
                width=max(1, int(0.02 * s)),
            )
    elif ident.bag == 1 and view == "back":
        d.rounded_rectangle(
            (cx - 0.1 * s, ys + 0.03 * s, cx + 0.1 * s, ys + 0.27 * s), radius=0.03 * s, fill=BAG
        )
    elif ident.bag == 2:
        bx = cx + bag_side * (hw + 0.03 * s)
        if not side:
            d.line(
                [(cx - bag_side * sw * 0.7, ys), (bx, yh - 0.06 * s)],
                fill=BAG,
                width=max(1, int(0.018 * s)),
            )
        d.rectangle(sorted_box(bx - 0.06 * s, yh - 0.1 * s, bx + 0.05 * s, yh), fill=BAG)
    elif ident.bag == 3:
        hx_, hy_ = hands[0] if bag_side < 0 or side else hands[-1]
        d.rectangle((hx_ - 0.045 * s, hy_ + 0.02 * s, hx_ + 0.045 * s, hy_ + 0.11 * s), fill=BAG)
    # head, hair, hat
    if ident.long_hair and view == "front":
        d.rectangle((hx - 1.15 * r, y0 + r, hx + 1.15 * r, ys + 0.07 * s), fill=HAIR)
    d.rectangle((hx - 0.4 * r, y0 + 1.6 * r, hx + 0.4 * r, ys + 0.01 * s), fill=SKIN)
    head = (hx - r * 0.9, y0, hx + r * 0.9, y0 + 2 * r)
    d.ellipse(head, fill=HAIR if view == "back" else SKIN)
    hair_box = (head[0] - 0.08 * r, head[1] - 0.1 * r, head[2] + 0.08 * r, head[3])
    if view == "front":
        d.chord(hair_box, 180, 360, fill=HAIR)
    elif side:
        d.chord(
            hair_box, 110 if face > 0 else 210, 330 if face > 0 else 70, fill=HAIR
        )  # top and back
    if ident.long_hair and view == "back":
        d.rectangle((hx - 1.0 * r, y0 + r, hx + 1.0 * r, ys + 0.1 * s), fill=HAIR)
    if ident.hat >= 0:
        d.chord(
            (head[0] - 0.1 * r, head[1] - 0.2 * r, head[2] + 0.1 * r, head[3] - 0.3 * r),
            180,
            360,
            fill=HAT,
        )
        bx0 = head[0] - (0.5 * r if side and face < 0 else 0.1 * r)
        bx1 = head[2] + (0.5 * r if side and face > 0 else 0.1 * r)
        d.rectangle((bx0, y0 + 0.7 * r, bx1, y0 + 0.85 * r), fill=HAT)

    L = np.asarray(lab)  # (H·SS, W·SS) labels
    lut = _palette(ident, rng)  # (9, 3)
    rgb = lut[L]  # (H·SS, W·SS, 3)
    yy = np.arange(H, dtype=np.float32)[:, None]  # (H·SS, 1)
    xx = np.arange(W, dtype=np.float32)[None, :]  # (1, W·SS)
    if ident.texture in (1, 2):  # stripes / checks on the upper garment
        p = 0.05 * s
        pat = (
            ((yy - ys) // p) % 2 == 1
            if ident.texture == 1
            else (((yy - ys) // p + (xx - cx) // p) % 2) == 1
        )
        rgb[(L == UPPER) & pat] = lut[PRINT]
    shade = 1 - 0.35 * np.clip(((xx - cx) / (1.6 * sw)) ** 2, 0, 1)  # (1, W·SS): rounded body
    on = L > 0
    prem = np.where(on[..., None], rgb * shade[..., None], 0).clip(0, 255).astype(np.uint8)
    # box-filter SS×SS blocks (PIL's reduce is much faster than a float reshape-mean)
    prem = np.asarray(Image.fromarray(prem).reduce(SS), np.float32)  # (H, W, 3)
    alpha = np.asarray(Image.fromarray(on.astype(np.uint8) * 255).reduce(SS), np.float32) / 255
    return prem, alpha


def sorted_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _palette(ident: Identity, rng: np.random.Generator) -> np.ndarray:
    """(9, 3) float colours per label, with a little per-image colour noise."""
    lut = np.zeros((9, 3), np.float32)
    lut[SKIN] = SKIN_TONES[ident.skin]
    lut[HAIR] = HAIR_COLOURS[ident.hair]
    lut[UPPER] = UPPER_COLOURS[ident.upper]
    lut[PRINT] = UPPER_COLOURS[ident.second] if ident.second >= 0 else UPPER_COLOURS[ident.upper]
    lut[LOWER] = LOWER_COLOURS[ident.lower]
    lut[SHOES] = SHOE_COLOURS[ident.shoes]
    lut[BAG] = BAG_COLOURS[max(ident.bag_colour, 0)]
    lut[HAT] = HAT_COLOURS[max(ident.hat, 0)]
    return np.clip(lut + rng.normal(0, 5, (9, 3)), 0, 255).astype(np.float32)


# --------------------------------------------------------------------------- whole image


def render_image(
    ident: Identity,
    scene: np.ndarray,
    spot: int,
    obj: int,
    obj_x: float,
    light: np.ndarray,
    rng: np.random.Generator,
    occlusion: float,
    blur: float,
    partial: bool = False,
) -> tuple[Image.Image, Image.Image]:
    """One photo and its mask: scene window at ``spot``, object at ``obj_x`` (fraction of the
    width), person, occluder, lighting.

    ``light``: (3,) per-channel gain of the camera. Returns an RGB image and an ``L`` mask
    (255 = visible person; occluded person pixels are 0).
    """
    H, W = scene.shape[0], scene.shape[1] // PANO
    u = H / 128
    bg = Image.fromarray(scene[:, spot : spot + W])
    if obj >= 0:
        draw_object(ImageDraw.Draw(bg), obj, W * obj_x, H * rng.uniform(0.95, 0.98), u)
    prem, alpha = draw_person(ident, rng, H, W, partial)
    img = np.asarray(bg, np.float32) * (1 - alpha[..., None]) + prem  # (H, W, 3)
    mask = alpha >= 0.5
    if rng.random() < occlusion:
        occ = Image.new("L", (W, H), 0)
        od = ImageDraw.Draw(occ)
        if rng.random() < 0.5:  # a pole or a passer-by's edge
            x0 = W * rng.uniform(0.15, 0.75)
            od.rectangle((x0, 0, x0 + W * rng.uniform(0.08, 0.2), H), fill=255)
        else:  # a railing, car bonnet or counter across the legs
            od.rectangle((0, H * rng.uniform(0.68, 0.82), W, H), fill=255)
        om = np.asarray(occ) > 0
        if (mask & ~om).sum() >= 0.5 * mask.sum():
            oc = rng.integers(30, 200, 3).astype(np.float32)
            img[om] = oc + rng.normal(0, 6, (int(om.sum()), 1))
            mask &= ~om
    gain = light * rng.uniform(0.8, 1.2) * (1 + rng.normal(0, 0.04, 3))
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.85, 1.15) + mean
    img = img * gain + rng.normal(0, 3, img.shape)
    photo = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < blur:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.1) * u))
    return photo, Image.fromarray((mask * 255).astype(np.uint8))
