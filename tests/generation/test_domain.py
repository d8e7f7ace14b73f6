"""The generation domain without gRPC: tiling maths, model cache, queue, sessions, seamless tiles."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from atelier.generation import engine, testing, tile
from atelier.generation.models import DeviceSettings, ModelCache, ModelError, ModelState, scan_models
from atelier.generation.queue import DONE, DeviceQueue, Ticket
from atelier.generation.sessions import SessionStore
from atelier.runtime.context import Cancellation
from atelier.runtime.errors import ResourceExhaustedError
from atelier.runtime.storage import Store
from tests.conftest import SHARED_BENCHMARKS


@pytest.fixture(scope="module")
def tiny_pipe() -> object:
    pipe = testing.build_tiny_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe: object, latents: torch.Tensor, tileable: bool) -> np.ndarray:
    modules = (pipe.unet, pipe.vae) if tileable else ()  # type: ignore[attr-defined]
    with torch.inference_mode(), engine.circular_padding(*modules):
        return pipe(
            "a floral print",
            num_inference_steps=3,
            height=64,
            width=64,  # type: ignore[operator]
            latents=latents,
            output_type="np",
        ).images[0]


def test_circular_padding_makes_the_pipeline_wrap_around_exactly(tiny_pipe: object) -> None:
    """With circular padding, shifting the starting noise by 2 latent pixels shifts the image by 16 px:
    the wrap-around neighbours are treated exactly as interior ones, so the output tiles seamlessly."""
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    shifted = torch.roll(latents, 2, dims=3)
    a, b = _generate(tiny_pipe, latents, True), _generate(tiny_pipe, shifted, True)
    assert np.abs(np.roll(a, 16, axis=1) - b).max() < 1e-4
    # Zero padding (the default) is not shift-equivariant: the edges are edges.
    c, d = _generate(tiny_pipe, latents, False), _generate(tiny_pipe, shifted, False)
    assert np.abs(np.roll(c, 16, axis=1) - d).max() > 0.05
    assert {m.padding_mode for m in tiny_pipe.unet.modules() if isinstance(m, torch.nn.Conv2d)} == {"zeros"}  # type: ignore[attr-defined]


def test_cancellation_stops_between_steps(tiny_pipe: object) -> None:
    token = Cancellation()
    seen: list[int] = []

    def progress(p: engine.Progress) -> None:
        seen.append(p.step)
        if p.step == 2:
            token.cancel("test")

    job = engine.Job(
        model="tiny",
        mode="text_to_image",
        settings=engine.Settings(prompt="x", steps=20, width_px=64, height_px=64, seed=1),
    )
    with pytest.raises(Exception, match="test"):
        engine.run(tiny_pipe, job, token, progress)
    assert seen == [1, 2]


def test_defaults_and_prompt_token_limit(tiny_pipe: object) -> None:
    s = engine.fill_defaults(
        engine.Settings(prompt="x", steps=0, guidance_scale=3.0),
        {"steps": 12, "strength": 0.5},
        explicit={"guidance_scale"},
    )
    assert (s.steps, s.strength, s.guidance_scale, s.width_px) == (12, 0.5, 3.0, 512)
    tokenizer = tiny_pipe.tokenizer  # type: ignore[attr-defined]
    assert engine.token_limit(tokenizer) == 75
    assert (
        engine.token_count(tokenizer, "ab cd") == 4
    )  # the tiny vocabulary has no merges: one token a letter


# -- model directory and cache ----------------------------------------------------------------------


def _fake_loader(sizes: dict[str, int], fail: set[str]) -> object:
    def load(entry: object, _device: DeviceSettings) -> torch.nn.Module:
        name = entry.name  # type: ignore[attr-defined]
        if name in fail:
            raise RuntimeError("weights are corrupt")
        return torch.nn.Linear(sizes[name], 1, bias=False)  # 4 bytes a weight

    return load


def _model_dir(root: Path, names: list[str]) -> Path:
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
        (folder / "unet").mkdir()  # a folder without UNet weights is listed FAILED (config-only)
        (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
        testing.write_manifest(folder, name=name, kind="diffusers", licence="test")
    return root


def test_cache_evicts_least_recently_used_within_budget_and_marks_failures(tmp_path: Path) -> None:
    root = _model_dir(tmp_path, ["a", "b", "c", "bad"])
    health: dict[str, bool] = {}
    cache = ModelCache(
        root,
        DeviceSettings(),
        memory_budget_bytes=2500,
        on_health=lambda n, s: health.__setitem__(n.rsplit("/", 1)[1], s),
        loader=_fake_loader({"a": 250, "b": 250, "c": 250}, {"bad"}),
    )  # type: ignore[arg-type]
    cache.get("a")
    cache.get("b")
    cache.get("a")  # a is now the most recently used
    cache.get("c")  # 3 x 1000 bytes > 2500: b goes
    states = {e.name: e.state for e in cache.entries()}
    assert states == {
        "a": ModelState.LOADED,
        "b": ModelState.INSTALLED,
        "c": ModelState.LOADED,
        "bad": ModelState.INSTALLED,
    }
    assert cache.used_bytes == 2000 and cache.evictions == 1
    cache.pin("a")
    cache.get("b")  # a is pinned (in use): c goes instead
    assert {e.name for e in cache.entries() if e.state is ModelState.LOADED} == {"a", "b"}
    with pytest.raises(ModelError, match="corrupt"):
        cache.get("bad")
    bad = cache.entry("bad")
    assert bad is not None and bad.state is ModelState.FAILED and "corrupt" in bad.error
    assert health["bad"] is False and health["a"] is True
    with pytest.raises(ModelError, match="not installed"):
        cache.get("nope")
    cache.unpin("a")
    cache.evict_all()
    assert cache.used_bytes == 0


def test_scan_reports_broken_manifests_without_raising(tmp_path: Path) -> None:
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "manifest.json").write_text("{not json")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "manifest.json").write_text(json.dumps({"kind": "hypernetwork"}))
    (tmp_path / "lonely.safetensors").write_bytes(b"")
    found = {e.name: e for e in scan_models(tmp_path)}
    assert found["garbled"].state is ModelState.FAILED and "manifest" in found["garbled"].error
    assert found["odd"].state is ModelState.FAILED and "hypernetwork" in found["odd"].error
    assert found["lonely"].kind == "single_file" and found["lonely"].state is ModelState.FAILED
    assert scan_models(tmp_path / "missing") == []


# -- queue ------------------------------------------------------------------------------------------


def test_queue_bounds_waiting_and_reports_positions() -> None:
    q = DeviceQueue("cpu", max_waiting=2)
    release = threading.Event()
    running = q.submit(lambda _t: release.wait(10), Cancellation())
    assert running.started.wait(5)
    first = q.submit(lambda t: t.emit("first ran"), Cancellation())
    cancelled = Cancellation()
    second = q.submit(lambda t: t.emit("never"), cancelled)
    assert (q.position(first), q.position(second), q.position(running)) == (1, 2, 0)
    with pytest.raises(ResourceExhaustedError) as info:
        q.submit(lambda _t: None, Cancellation())
    assert info.value.retry_after_s and info.value.retry_after_s > 0
    cancelled.cancel("client left")
    release.set()
    assert first.events.get(timeout=5) == "first ran" and first.events.get(timeout=5) is DONE
    assert "client left" in str(second.events.get(timeout=5))  # skipped, never run
    q.close()


def test_queue_batches_waiting_tickets_with_the_same_key_up_to_the_image_limit() -> None:
    q = DeviceQueue("cpu", max_waiting=8, max_batch_images=4)
    release = threading.Event()
    running = q.submit(lambda _t: release.wait(10), Cancellation())
    assert running.started.wait(5)
    groups: list[list[str]] = []

    def batch_work(tickets: list[Ticket]) -> None:
        groups.append([t.payload for t in tickets])

    def solo(t: Ticket) -> None:
        groups.append([t.payload])

    left = Cancellation()
    submitted = [
        q.submit(solo, Cancellation(), batch_key="a", batch_images=2, batch_work=batch_work, payload="a1"),
        q.submit(solo, Cancellation(), batch_key="b", batch_images=1, batch_work=batch_work, payload="b1"),
        q.submit(solo, left, batch_key="a", batch_images=1, batch_work=batch_work, payload="a-left"),
        q.submit(solo, Cancellation(), batch_key="a", batch_images=1, batch_work=batch_work, payload="a2"),
        q.submit(solo, Cancellation(), batch_key="a", batch_images=2, batch_work=batch_work, payload="a3"),
        q.submit(solo, Cancellation(), payload="none"),  # no key: never batched
    ]
    left.cancel("client left")
    release.set()
    for ticket in submitted:
        while (event := ticket.events.get(timeout=5)) is not DONE:
            if isinstance(event, BaseException):
                assert ticket.payload == "a-left" and "client left" in str(event)
                break
    # a1 + a2 fill 3 of 4 images; a3 (2 more) does not fit and waits for the next call; the cancelled one is
    # skipped; b1 and the unkeyed job run alone, in their turn.
    assert groups == [["a1", "a2"], ["b1"], ["a3"], ["none"]]
    q.close()


# -- sessions (SQLite and PostgreSQL) ---------------------------------------------------------------


def test_sessions_keep_history_and_last_round_images_per_tenant(store: Store) -> None:
    sessions = SessionStore(store)
    sid = sessions.new_id()
    assert (
        sessions.save_round("brand-a", sid, "tiny", {"prompt": "p", "strength": 0.75}, [b"png0", b"png1"])
        == 1
    )
    assert sessions.save_round("brand-a", sid, "tiny", {"prompt": "p", "strength": 0.75}, [b"png2"]) == 2
    record = sessions.get("brand-a", sid)
    assert record is not None and record.rounds == 2 and len(record.history) == 2
    assert record.images == [b"png2"]
    assert sessions.get("brand-b", sid) is None


# -- seamless tiles without a model -----------------------------------------------------------------


def test_make_tileable_on_a_synthetic_gradient() -> None:
    y, x = np.mgrid[0:80, 0:120]
    image = np.stack([x * 2, y * 3, (x + y)], -1).clip(0, 255).astype(np.uint8)
    result = tile.make_tileable(image)
    assert result.seam_error_before > 50
    assert result.seam_error <= result.interior_error * 1.5
    assert result.tile.shape == image.shape


def test_make_tileable_on_a_real_fabric_photo() -> None:
    folder = SHARED_BENCHMARKS / "inspection" / "aitex"
    strips = sorted(folder.rglob("NoDefect_images/*/*.png")) if folder.exists() else []
    if not strips:
        pytest.skip(f"AITEX fabric images not found under {folder}")
    import cv2

    # One good strip per fabric; a 256 x 256 patch of real woven fabric, away from the padded ends.
    first_per_fabric = {strip.parent.name: strip for strip in reversed(strips)}
    results = []
    for strip in first_per_fabric.values():
        crop = cv2.imread(str(strip), cv2.IMREAD_GRAYSCALE)[:, 1000:1256]
        results.append((crop, tile.make_tileable(crop)))
    # Every fabric: the seam ends no worse than the photo's and looks like the inside of the tile.
    for _, result in results:
        assert result.seam_error <= result.seam_error_before
        assert result.seam_error < 2 * result.interior_error
    # The fabric whose edges match least (some photos are nearly periodic already) shows the repair.
    crop, result = max(results, key=lambda cr: cr[1].seam_error_before)
    assert result.seam_error_before > 50 and result.seam_error < result.seam_error_before / 4
    # Tiled 2 x 2, the joins look like the inside: the join column and row are within the spread of the
    # tile's own neighbour differences, while the photo's joins stand far out.
    for image, seamless in ((result.tile, True), (crop, False)):
        big = np.tile(image.astype(np.float64), (2, 2))
        columns = np.abs(np.diff(big, axis=1)).mean(axis=0)
        rows = np.abs(np.diff(big, axis=0)).mean(axis=1)
        inside = columns[255] <= np.percentile(columns, 99) and rows[255] <= np.percentile(rows, 99)
        assert inside == seamless


def test_web_ui_emphasis_becomes_compel_weights() -> None:
    assert engine.to_compel_syntax("(silk:1.3) dress, [cotton]") == "(silk)1.3 dress, (cotton)0.9091"
    assert engine.to_compel_syntax("((linen))") == "((linen)1.1)1.1"  # nesting multiplies, as in the web UIs
    assert engine.to_compel_syntax("(a (b:0.5):1.2) c") == "(a (b)0.5)1.2 c"
    assert engine.to_compel_syntax("plain t-shirt, time: 3pm") == "plain t-shirt, time: 3pm"


def test_a_batch_with_a_long_prompt_encodes_every_prompt_with_compel(tiny_pipe: object) -> None:
    def job(prompt: str, seed: int) -> engine.Job:
        settings = engine.Settings(prompt=prompt, steps=2, width_px=64, height_px=64, seed=seed)
        return engine.Job(model="tiny", mode="text_to_image", settings=settings, num_images=1)

    long = "(silk:1.2) " + "floral " * 20  # 150 tokens of the tiny tokenizer
    jobs = [job("plain linen", 1), job(long, 2)]
    batched = engine.run_batch(tiny_pipe, jobs, [Cancellation(), Cancellation()], [lambda _p: None] * 2)
    alone = engine.run(tiny_pipe, jobs[1], Cancellation(), lambda _p: None)
    assert [len(outputs) for outputs in batched] == [1, 1]
    assert json.loads(_text(batched[0][0].png)["atelier"])["prompt_encoding"].startswith("compel")
    # The long prompt's image in the batch is the one it gets alone, up to float rounding.
    assert np.abs(batched[1][0].pixels.astype(int) - alone[0].pixels).max() <= 2


def _text(png: bytes) -> dict[str, str]:
    import io

    from PIL import Image

    return dict(Image.open(io.BytesIO(png)).text)  # type: ignore[attr-defined]
