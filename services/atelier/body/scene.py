"""Synthetic people as 3D shapes, photographed through a pinhole camera onto real or drawn scenes.

A body of ANSUR II measurements is built from elliptical cross-sections: the torso's width and
depth follow the measured breadths/depths at their measured heights (the same profiles as
:mod:`atelier.body.synthetic`), legs, arms, neck, head, hands and feet are tapered tubes and
ellipsoids, the acromion sits at half the biacromial breadth at acromial height and the deltoids
reach the bideltoid breadth. The surface is shaded (one directional light plus ambient), dressed
(a top with a knit/stripe/print texture, trousers, shoes, skin, hair) and rasterised at twice the
size, then reduced, so the outline is anti-aliased like a photo's. The camera stands at a given
height and distance, pitched at a given angle; the person casts a soft shadow on the floor and
stands in front of a background photo or a drawn room (wall, floor, clutter).

Ground truth comes with each render: the person's mask, the pixel rows of the head top and of the
heel contact, and the image positions of the two acromions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.interpolate import PchipInterpolator

from atelier.body.camera import FULL_FRAME_DIAGONAL_MM

SS = 2  # supersampling factor


@dataclass(frozen=True)
class Camera:
    height_cm: float = 120.0
    distance_cm: float = 280.0
    pitch_deg: float = 0.0  # positive: pointing down
    focal_px: float = 1000.0
    width_px: int = 720
    height_px: int = 960
    # Radial lens distortion (Brown's model, first term): a point at normalised radius r from the
    # image centre (r in focal lengths) is drawn at r * (1 + k1 * r^2). Negative is barrel, as in
    # phone main cameras; 0 is a pinhole. Applied to the person only (a background photo is pasted
    # as it is).
    k1: float = 0.0

    @property
    def focal_35mm(self) -> float:
        """The focal length as a 35 mm equivalent, as a phone writes it into the photo's EXIF."""
        return self.focal_px * FULL_FRAME_DIAGONAL_MM / math.hypot(self.width_px, self.height_px)


@dataclass
class SceneRender:
    image_rgb: np.ndarray
    mask: np.ndarray  # the person, bool
    camera: Camera
    head_top_px: tuple[float, float]
    heel_px: tuple[float, float]  # mid-point of the two heels' floor contact
    acromion_px: list[tuple[float, float]] = field(default_factory=list)
    px_per_cm: float = 0.0  # at the body's centre plane, at chest level
    coverage: np.ndarray | None = None  # the person's share of each pixel, 0..1 (``mask`` is > 0.5)


@dataclass
class _Mesh:
    quads: list[np.ndarray] = field(default_factory=list)  # each (n, 4, 3) world cm
    colours: list[np.ndarray] = field(default_factory=list)  # each (n, 3) albedo 0..1

    def add(self, quads: np.ndarray, colours: np.ndarray) -> None:
        self.quads.append(quads.reshape(-1, 4, 3))
        self.colours.append(colours.reshape(-1, 3))


def _grid_quads(points: np.ndarray) -> np.ndarray:
    """(rings, segments, 3) points of a closed tube -> (rings-1, segments, 4, 3) quads."""
    nxt = np.roll(points, -1, axis=1)
    return np.stack([points[:-1], nxt[:-1], nxt[1:], points[1:]], axis=2)


def _frame(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = direction / np.linalg.norm(direction)
    ref = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(d, ref)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def _tube(path: np.ndarray, radii: np.ndarray, segments: int = 18) -> np.ndarray:
    """Circular tube along ``path`` (n, 3) with ``radii`` (n,) -> (n, segments, 3)."""
    u, v = _frame(path[-1] - path[0])
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.cos(t)[:, None] * u + np.sin(t)[:, None] * v
    return path[:, None, :] + radii[:, None, None] * ring[None]


def _ellipsoid(
    centre: Sequence[float] | np.ndarray, radii: Sequence[float], rings: int = 14, segments: int = 20
) -> np.ndarray:
    phi = np.linspace(-np.pi / 2, np.pi / 2, rings)
    t = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    x = np.cos(phi)[:, None] * np.cos(t)[None] * radii[0]
    z = np.cos(phi)[:, None] * np.sin(t)[None] * radii[2]
    y = np.repeat(np.sin(phi)[:, None] * radii[1], segments, axis=1)
    return np.stack([x, y, z], axis=-1) + np.asarray(centre, float)


def _profile(levels: list[tuple[float, float]], heights: np.ndarray, smooth: bool = False) -> np.ndarray:
    """The values at ``levels`` (height, value) carried to ``heights``: straight segments between
    them, or with ``smooth`` a monotone cubic (PCHIP: no overshoot, and flat where a level is a
    local extreme, as a real torso is at its narrowest or deepest)."""
    hs, ws = zip(*sorted(levels), strict=True)
    if smooth and np.all(np.diff(hs) > 0):
        return np.asarray(PchipInterpolator(hs, ws, extrapolate=False)(np.clip(heights, hs[0], hs[-1])))
    return np.interp(heights, hs, ws)


@dataclass(frozen=True)
class Outfit:
    top: tuple[float, float, float]
    bottom: tuple[float, float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    shoes: tuple[float, float, float]
    pattern: str  # "plain", "stripes", "knit", "print"


def random_outfit(rng: np.random.Generator) -> Outfit:
    skins = [(0.93, 0.78, 0.66), (0.80, 0.60, 0.45), (0.62, 0.44, 0.32), (0.40, 0.27, 0.19)]
    tops = [
        (0.15, 0.2, 0.45),
        (0.7, 0.7, 0.72),
        (0.1, 0.1, 0.1),
        (0.6, 0.15, 0.15),
        (0.2, 0.45, 0.3),
        (0.9, 0.88, 0.8),
    ]
    bottoms = [(0.12, 0.16, 0.3), (0.08, 0.08, 0.08), (0.35, 0.33, 0.3), (0.25, 0.3, 0.45)]
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    return Outfit(
        pick(tops),
        pick(bottoms),
        pick(skins),
        pick([(0.08, 0.06, 0.05), (0.35, 0.22, 0.1), (0.75, 0.6, 0.35)]),
        pick([(0.05, 0.05, 0.05), (0.9, 0.9, 0.9), (0.4, 0.25, 0.15)]),
        pick(["plain", "stripes", "knit", "print"]),
    )


def _texture(colour: Sequence[float], pattern: str, u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Albedo per quad from its (u around, v along) coordinates: clothing-like variation."""
    base = np.asarray(colour, float)
    rng = np.random.default_rng(seed)
    k = np.ones_like(u)
    if pattern == "stripes":
        k = np.where(np.sin(v * 0.9) > 0.3, 1.0, 0.55)
    elif pattern == "knit":
        k = 0.85 + 0.15 * np.sin(u * 40) * np.sin(v * 3)
    elif pattern == "print":
        k = 0.75 + 0.25 * (np.sin(u * 7 + 3 * np.sin(v * 0.3)) > 0.6)
    k = k * (1 + rng.normal(0, 0.04, u.shape))
    return np.clip(base[None] * k[..., None], 0, 1)


def build_body(
    b: Mapping[str, float],
    view: str,
    arm_angle_deg: float,
    outfit: Outfit,
    seed: int,
    smooth_torso: bool = False,
) -> tuple[_Mesh, list[np.ndarray]]:
    """The body's quads (world cm: x right, y up, z towards the camera) and its acromion points.

    ``view`` "side" turns the body 90 degrees (it faces +x) with the arms hanging and feet together.
    """
    stature = b["height"]
    chest_w, waist_w, hip_w = b["chest_width"], b["waist_width"], b["hip_width"]
    chest_d, waist_d, hip_d = b["chest_depth"], b["waist_depth"], b["hip_depth"]
    sh_h, sw = b["shoulder_height"], b["shoulder_width"]
    crotch = b["inseam"]
    deltoid = b.get("deltoid_width", sw * 1.15)
    mesh = _Mesh()
    # Torso: elliptical cross-sections from below the crotch to the shoulder line.
    hs = np.linspace(crotch - 2, sh_h, 90)
    width_levels = [
        (crotch - 2, hip_w * 0.9),
        (b["hip_height"], hip_w),
        (b["waist_height"], waist_w),
        (b["chest_height"], chest_w),
        # Up to the armpits the torso keeps about its chest breadth; above them it widens into
        # the shoulder line, which meets the arms (separate tubes) at the deltoids.
        (sh_h - 10, chest_w * 1.03),
        (sh_h - 4, max(chest_w * 1.05, sw - 12)),
        (sh_h, sw - 9),
    ]
    depth_levels = [
        (crotch - 2, hip_d * 0.85),
        (b["hip_height"], hip_d),
        (b["waist_height"], waist_d),
        (b["chest_height"], chest_d),
        (sh_h - 10, chest_d * 0.95),
        (sh_h, chest_d * 0.6),
    ]
    shift_levels = [
        (crotch - 2, -0.12 * hip_d),
        (b["hip_height"], -0.1 * hip_d),
        (b["waist_height"], 0.0),
        (b["chest_height"], 0.06 * chest_d),
        (sh_h, -0.05 * chest_d),
    ]
    a = _profile(width_levels, hs, smooth_torso) / 2
    d = _profile(depth_levels, hs, smooth_torso) / 2
    zc = _profile(shift_levels, hs, smooth_torso)
    t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
    torso = np.stack(
        [
            a[:, None] * np.cos(t)[None],
            np.repeat(hs[:, None], t.size, axis=1),
            zc[:, None] + d[:, None] * np.sin(t)[None],
        ],
        axis=-1,
    )
    u, v = np.meshgrid(t[:], hs[:-1])
    mesh.add(_grid_quads(torso), _texture(outfit.top, outfit.pattern, u, v, seed))
    # Shoulder line: from the torso's top ring up over the trapezius to the neck (a cap).
    neck_r = b["neck_girth"] / (2 * np.pi)
    cap_h = np.linspace(sh_h, sh_h + 5.5, 8)
    frac = np.linspace(0, 1, 8)
    ca = (sw - 9) / 2 * (1 - frac) + neck_r * 1.1 * frac
    cd = chest_d * 0.3 * (1 - frac) + neck_r * 1.1 * frac
    cap = np.stack(
        [ca[:, None] * np.cos(t)[None], np.repeat(cap_h[:, None], t.size, 1), cd[:, None] * np.sin(t)[None]],
        -1,
    )
    mesh.add(_grid_quads(cap), _texture(outfit.top, "plain", *np.meshgrid(t, cap_h[:-1]), seed + 1))
    # Neck and head (with hair on top).
    neck = _tube(np.array([[0, sh_h + 3, 0.0], [0, stature - 22.5, 0.5]]), np.array([neck_r, neck_r]), 18)
    mesh.add(_grid_quads(neck), np.tile(outfit.skin, (neck.shape[1],)))
    head_h = 23.5
    head = _ellipsoid((0, stature - head_h / 2, 1.0), (7.6, head_h / 2, 9.6))
    hv = head[..., 1]
    hair = (hv[:-1] > stature - 0.3 * head_h)[..., None] | (head[:-1, :, 2] < -2)[..., None]
    mesh.add(_grid_quads(head), np.where(hair, outfit.hair, outfit.skin))
    # A face the person detector can key on: nose, eyes, brows, mouth, ears.
    top_z = 10.6
    feature = [
        ((0, stature - 13.0, top_z - 0.3), (1.3, 2.4, 1.8), outfit.skin),
        ((-3.2, stature - 10.3, top_z - 1.6), (1.2, 0.6, 0.6), (0.1, 0.08, 0.07)),
        ((3.2, stature - 10.3, top_z - 1.6), (1.2, 0.6, 0.6), (0.1, 0.08, 0.07)),
        ((-3.2, stature - 8.6, top_z - 1.4), (1.6, 0.35, 0.5), outfit.hair),
        ((3.2, stature - 8.6, top_z - 1.4), (1.6, 0.35, 0.5), outfit.hair),
        ((0, stature - 16.8, top_z - 1.3), (2.2, 0.4, 0.5), (0.55, 0.25, 0.25)),
        ((-7.6, stature - 12.0, 1.0), (0.9, 3.0, 1.8), outfit.skin),
        ((7.6, stature - 12.0, 1.0), (0.9, 3.0, 1.8), outfit.skin),
    ]
    for centre, radii, colour in feature:
        mesh.add(_grid_quads(_ellipsoid(centre, radii, 6, 10)), np.tile(colour, (5 * 10, 1)))
    # Shoulders: the acromion at (+-sw/2, sh_h); a deltoid sphere whose 45-degree point is there.
    r_up = max(b["bicep_girth"] / (2 * np.pi) * 0.95, (deltoid - sw) / 2 + 0.5)
    acromions = []
    front = view == "front"
    for side in (-1, 1):
        joint = np.array([side * (sw / 2 - r_up * math.sqrt(0.5)), sh_h - r_up * math.sqrt(0.5), 0.0])
        acromion = np.array([side * sw / 2, sh_h, 0.0])
        acromions.append(acromion)
        mesh.add(_grid_quads(_ellipsoid(joint, (r_up, r_up, r_up))), np.tile(outfit.top, (13 * 20, 1)))
        angle = math.radians(arm_angle_deg if front else 3.0)
        direction = np.array([side * math.sin(angle), -math.cos(angle), 0.0 if front else 0.05])
        direction /= np.linalg.norm(direction)
        # Sleeve outseam = acromion -> elbow -> wrist; upper arm 0.55 of it.
        upper, fore = 0.55 * b["sleeve_length"], 0.45 * b["sleeve_length"]
        # |acromion - (joint + s * direction)| = upper
        rel = joint - acromion
        bq = 2 * rel @ direction
        s = (-bq + math.sqrt(bq * bq - 4 * (rel @ rel - upper * upper))) / 2
        elbow = joint + s * direction
        wrist = elbow + fore * direction
        r_wr = b["wrist_girth"] / (2 * np.pi)
        arm_path = np.vstack([joint + direction * k for k in np.linspace(0, s + fore, 24)])
        arm_r = np.interp(np.linspace(0, 1, 24), [0, 0.45, 0.6, 1], [r_up, r_up * 0.85, r_up * 0.75, r_wr])
        arm = _tube(arm_path, arm_r, 16)
        sleeve_end = 0.5 if outfit.pattern != "plain" else 1.0  # short or long sleeves
        along = np.linspace(0, 1, 24)[:-1]
        sleeve_colour = np.where(
            (along < sleeve_end)[:, None, None], np.asarray(outfit.top), np.asarray(outfit.skin)
        )
        mesh.add(_grid_quads(arm), np.broadcast_to(sleeve_colour, (23, 16, 3)).copy())
        hand = _ellipsoid(wrist + direction * 8.5, (4.2, 9.0, 2.2))
        # Turn the hand along the arm (it was built vertical).
        hand = wrist + direction * 8.5 + (hand - (wrist + direction * 8.5)) @ _rot_z(side * angle).T
        mesh.add(_grid_quads(hand), np.tile(outfit.skin, (13 * 20, 1)))
    # Legs and feet.
    knee = b["knee_height"]
    thigh = min(b["thigh_girth"] / np.pi * 1.02, 0.47 * hip_w)
    for side in (-1, 1):
        lh = np.linspace(7.0, crotch + 1, 40)
        lw = _profile([(7.0, 7.5), (knee, 11.0), (crotch + 1, thigh)], lh) / 2
        spread = 9.0 * side if front else 0.0  # feet about hip-width apart, as the app asks
        # The thighs meet at the crotch (their inner edges touch there) and part below it.
        x = (
            side * (lw.max() - 0.2) + spread * (1 - lh / crotch)
            if front
            else side * (thigh / 2 + 0.3) * np.ones_like(lh)
        )
        leg = np.stack(
            [
                x[:, None] + lw[:, None] * np.cos(t[::2])[None],
                np.repeat(lh[:, None], t.size // 2, 1),
                -0.03 * hip_d + lw[:, None] * np.sin(t[::2])[None] * 1.05,
            ],
            -1,
        )
        mesh.add(_grid_quads(leg), _texture(outfit.bottom, "plain", *np.meshgrid(t[::2], lh[:-1]), seed + 3))
        foot = _ellipsoid((x[0], 4.0, 6.5), (4.8, 4.0, 13.0))
        foot[..., 1] = np.maximum(foot[..., 1], 0.0)
        mesh.add(_grid_quads(foot), np.tile(outfit.shoes, (13 * 20, 1)))
    if not front:  # turn the body to face +x
        rot = _rot_y(math.pi / 2)
        mesh.quads = [q @ rot.T for q in mesh.quads]
        acromions = [p @ rot.T for p in acromions]
    return mesh, acromions


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def project(points: np.ndarray, cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World cm -> (image px (..., 2), depth cm (...)) for a camera at (0, height, distance) facing -z."""
    p = points - np.array([0.0, cam.height_cm, cam.distance_cm])
    xc, yc, zc = p[..., 0], -p[..., 1], -p[..., 2]
    th = math.radians(cam.pitch_deg)
    yc2 = yc * math.cos(th) - zc * math.sin(th)
    zc2 = zc * math.cos(th) + yc * math.sin(th)
    if cam.k1:
        factor = 1 + cam.k1 * ((xc / zc2) ** 2 + (yc2 / zc2) ** 2)
        xc, yc2 = xc * factor, yc2 * factor
    u = cam.width_px / 2 + cam.focal_px * xc / zc2
    v = cam.height_px / 2 + cam.focal_px * yc2 / zc2
    return np.stack([u, v], -1), zc2


def _floor_row(cam: Camera, z: float) -> float:
    return float(project(np.array([0.0, 0.0, z]), cam)[0][1])


def drawn_background(cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """A room: a textured wall, a floor in perspective (boards or tiles), some clutter."""
    h, w = cam.height_px, cam.width_px
    img = np.zeros((h, w, 3), np.float32)
    wall = rng.uniform(0.35, 0.9, 3)
    wall_z = -float(rng.uniform(60, 250))
    horizon = _floor_row(cam, wall_z)
    rows = np.arange(h)[:, None]
    img[:] = wall
    img *= (1 + rng.normal(0, 0.03, (h, w, 1))).astype(np.float32)
    floor = rng.uniform(0.2, 0.7, 3)
    # Floor rows: the ray through each row below the wall base meets the floor at a depth.
    below = rows >= horizon
    th = math.radians(cam.pitch_deg)
    ray_y = (rows - h / 2) / cam.focal_px
    yc = ray_y * math.cos(th) + math.sin(th)
    zc = math.cos(th) - ray_y * math.sin(th)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(yc > 1e-6, cam.height_cm / yc, np.nan)
        xs = np.arange(w)[None, :]
        x_world = (xs - w / 2) / cam.focal_px * t
        board = ((np.floor(x_world / rng.uniform(10, 40)) % 2) * 0.12 + 0.94)[..., None]
        pattern = floor[None, None] * board
        del zc
    img = np.where(below[..., None], np.nan_to_num(pattern, nan=0.5), img).astype(np.float32)
    img[int(max(0, horizon)) : int(max(0, horizon)) + 3] *= 0.6  # skirting
    # Clutter: boxes and a picture frame on the wall, an object on the floor.
    for _ in range(int(rng.integers(1, 5))):
        x0 = int(rng.uniform(0, w - 40))
        bw, bh = int(rng.uniform(30, w / 3)), int(rng.uniform(30, h / 4))
        y0 = (
            int(rng.uniform(0, max(1, horizon - bh)))
            if rng.random() < 0.5
            else int(max(0, horizon) - bh + rng.uniform(0, h - horizon))
        )
        cv2.rectangle(
            img, (x0, y0), (x0 + bw, y0 + bh), tuple(float(c) for c in rng.uniform(0.05, 0.95, 3)), -1
        )
    return np.clip(img, 0, 1)


def photo_background(path: Path, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"background photo {path} could not be read")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    h, w = cam.height_px, cam.width_px
    scale = max(h / img.shape[0], w / img.shape[1]) * rng.uniform(1.0, 1.3)
    img = cv2.resize(
        img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    y0 = int(rng.uniform(0, img.shape[0] - h + 1))
    x0 = int(rng.uniform(0, img.shape[1] - w + 1))
    return img[y0 : y0 + h, x0 : x0 + w]


def render_scene(
    body: Mapping[str, float],
    view: str = "front",
    camera: Camera | None = None,
    background: Path | str | None = "drawn",
    arm_angle_deg: float = 22.0,
    seed: int = 0,
    light_deg: float = 30.0,
    shadow: bool = True,
    outfit: Outfit | None = None,
    smooth_torso: bool = False,
    background_seed: int | None = None,
) -> SceneRender:
    """Render ``body`` (measurement name -> cm) standing at the origin, seen from ``camera``.

    ``background_seed``: the background (the photo's crop, or the drawn room) of a render with this
    seed and no outfit given, instead of this render's own: two views of one camera with one
    background are two photos from a phone that stayed where it was while the person turned.

    ``smooth_torso``: the torso's width and depth carried between the measured levels by a monotone
    cubic instead of straight segments (which make a corner at every level, the navel's included).

    ``background``: a photo's path, "drawn" (a room drawn here) or None (plain grey).
    """
    rng = np.random.default_rng(seed)
    cam = camera or Camera()
    outfit = outfit or random_outfit(rng)
    mesh, acromions = build_body(body, view, arm_angle_deg, outfit, seed, smooth_torso)
    quads = np.concatenate(mesh.quads)
    albedo = np.concatenate(mesh.colours)
    # Normals (outward) from the quad diagonals; cull those facing away from the camera.
    n = np.cross(quads[:, 2] - quads[:, 0], quads[:, 3] - quads[:, 1])
    norm = np.linalg.norm(n, axis=1)
    keep = norm > 1e-9
    quads, albedo, n = quads[keep], albedo[keep], n[keep] / norm[keep, None]
    centre = quads.mean(axis=1)
    cam_pos = np.array([0.0, cam.height_cm, cam.distance_cm])
    to_cam = cam_pos - centre
    # Tubes are built with either winding: orient normals away from their part's axis instead.
    # (A quad's normal points outward when it points away from the body's interior; for convex
    # parts the sign test against the vector to the camera below is then enough.)
    facing = np.einsum("ij,ij->i", n, to_cam)
    light = np.array([math.sin(math.radians(light_deg)), 0.8, 0.6])
    light /= np.linalg.norm(light)
    lambert = np.abs(np.einsum("ij,j->i", n, light))
    shade = 0.45 + 0.6 * lambert * np.where(facing != 0, 1.0, 1.0)
    colour = np.clip(albedo * shade[:, None], 0, 1)
    big = Camera(
        cam.height_cm,
        cam.distance_cm,
        cam.pitch_deg,
        cam.focal_px * SS,
        cam.width_px * SS,
        cam.height_px * SS,
        cam.k1,
    )
    pts, depth = project(quads, big)
    order = np.argsort(-depth.mean(axis=1))  # far first (painter's algorithm)
    canvas = np.zeros((big.height_px, big.width_px, 3), np.float32)
    alpha = np.zeros((big.height_px, big.width_px), np.float32)
    poly = np.round(pts * 16).astype(np.int32)  # 4 fractional bits
    for i in order:
        c = colour[i]
        cv2.fillConvexPoly(canvas, poly[i], (float(c[0]), float(c[1]), float(c[2])), cv2.LINE_8, 4)
        # One cv2.fillPoly call for all quads was tried: overlapping polygons fill even-odd, and the
        # holes let the background through the person (the pose model then found nobody).
        cv2.fillConvexPoly(alpha, poly[i], 1.0, cv2.LINE_8, 4)
    # cv2 fills a polygon's boundary pixels too (a quad from x=10.0 to 20.0 fills 11 columns), so the
    # union of the quads came out one supersampled pixel wider and taller than the body: every width
    # and depth of the test set 0.1-0.2 cm too large. Dropping the last column and row of each run
    # (an erosion anchored at the top-left) gives the body's own extent, shifted by half a
    # supersampled pixel.
    covered = cv2.erode(
        alpha, np.ones((2, 2), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0
    )
    size = (cam.width_px, cam.height_px)
    person = cv2.resize(canvas, size, interpolation=cv2.INTER_AREA)
    a = cv2.resize(covered, size, interpolation=cv2.INTER_AREA)[..., None]
    # Background and a soft shadow on the floor (contact shadow plus a cast shadow to one side).
    bg_rng = rng
    if background_seed is not None:
        # In the state a render with that seed (and no outfit given) draws its background in.
        bg_rng = np.random.default_rng(background_seed)
        random_outfit(bg_rng)
    if background is None:
        bg = np.full((cam.height_px, cam.width_px, 3), 0.85, np.float32)
    elif background == "drawn":
        bg = drawn_background(cam, bg_rng)
    else:
        bg = photo_background(Path(background), cam, bg_rng)
    if shadow:
        sh = np.zeros(bg.shape[:2], np.float32)
        foot_w = body["hip_width"] * 0.6
        ring = np.array(
            [
                [x, 0.0, z]
                for x, z in zip(
                    np.cos(np.linspace(0, 2 * np.pi, 40)) * foot_w,
                    np.sin(np.linspace(0, 2 * np.pi, 40)) * 18,
                    strict=True,
                )
            ]
        )
        cast = ring * np.array([1.0, 0, 1.0]) + np.array([math.tan(math.radians(light_deg)) * 30, 0, -25])
        for shape, strength in ((ring, 0.55), (cast * np.array([1.6, 0, 1.4]), 0.3)):
            p, _ = project(shape, cam)
            cv2.fillPoly(sh, [np.round(p).astype(np.int32)], strength)
        sh = cv2.GaussianBlur(sh, (0, 0), cam.height_px / 120)
        bg = bg * (1 - sh[..., None])
    img = bg * (1 - a) + person * a
    img += np.asarray(rng.normal(0, 0.012, img.shape), np.float32)  # sensor noise
    out = np.clip(img * 255, 0, 255).astype(np.uint8)
    top = np.array([0.0, body["height"], 1.0])
    if view != "front":
        top = top @ _rot_y(math.pi / 2).T
    heel = np.array([0.0, 0.0, -4.0]) if view == "front" else np.array([-4.0, 0.0, 0.0])
    (head_px, heel_px), _ = project(np.vstack([top, heel]), cam)
    acr, _ = project(np.array(acromions), cam)
    chest = project(np.array([[0, body["chest_height"], 0], [10, body["chest_height"], 0]]), cam)[0]
    return SceneRender(
        out,
        a[..., 0] > 0.5,
        cam,
        (float(head_px[0]), float(head_px[1])),
        (float(heel_px[0]), float(heel_px[1])),
        [(float(x), float(y)) for x, y in acr],
        float(abs(chest[1, 0] - chest[0, 0]) / 10),
        a[..., 0],
    )


def random_camera(
    rng: np.random.Generator, stature_cm: float, width_px: int = 720, height_px: int = 960, lens: float = 1.0
) -> Camera:
    """A phone held by someone else: chest to eye height, the person filling 60-85% of the frame, aimed at
    the middle of the body or held level (half each), +-3 degrees. ``lens``: the lens as a multiple of
    the main camera's focal length (0.5: an ultra-wide, taken from half as far; 2: a telephoto); the
    draws from ``rng`` are the same for any lens."""
    focal = 0.78 * height_px * rng.uniform(0.9, 1.1) * lens  # 26 mm-equivalent main lens (x lens), portrait
    cam_h = float(rng.uniform(90, 160))
    # Far enough that the person fills at most ~85% of the frame height.
    aim_middle = rng.random() < 0.5
    pitch_jitter = float(rng.uniform(-3, 3))
    fill = float(rng.uniform(0.6, 0.85))  # share of the frame height the person fills
    # Step back until head and feet are inside the frame with a 2% margin (a good photo).
    for _ in range(40):
        dist = focal * stature_cm / (fill * height_px)
        aim = math.degrees(math.atan2(cam_h - stature_cm / 2, dist)) if aim_middle else 0.0
        cam = Camera(cam_h, dist, aim + pitch_jitter, focal, width_px, height_px)
        (top, bottom), _ = project(np.array([[0, stature_cm, 0], [0, 0, 20.0]]), cam)
        if top[1] > 0.02 * height_px and bottom[1] < 0.98 * height_px:
            return cam
        fill *= 0.95
    return cam
