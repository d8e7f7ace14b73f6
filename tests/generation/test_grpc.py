"""Every mode of the generation service over real gRPC sockets, on tiny random pipelines (CPU)."""

from __future__ import annotations

import gc
import io
import json
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from PIL import Image

from atelier.common.v1 import image_pb2
from atelier.generation.v1 import generation_pb2 as pb
from atelier.runtime.context import Cancellation
from atelier.runtime.status import field_violations
from tests.generation.conftest import GenServer, decode, photo, png_bytes

Start = Callable[..., GenServer]


def settings(**kw: object) -> pb.GenerationSettings:
    values: dict[str, object] = {"prompt": "a paisley print on silk", "seed": 7, "steps": 4}
    values.update(kw)
    return pb.GenerationSettings(**values)  # type: ignore[arg-type]


def images(events: list[pb.GenerateResponse]) -> list[pb.GeneratedImage]:
    return [e.image for e in events if e.HasField("image")]


def health(server: GenServer, name: str) -> int:
    reply = health_pb2_grpc.HealthStub(server.channel).Check(
        health_pb2.HealthCheckRequest(service=name), timeout=5
    )
    return int(reply.status)


def expect_invalid(call: Callable[[], object], field: str) -> list[tuple[str, str]]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    violations = field_violations(info.value)
    assert field in [f for f, _ in violations], violations
    return violations


# -- models -----------------------------------------------------------------------------------------


def test_list_models_shows_every_kind_and_failures_with_health(gen_server: Start, models_dir: Path) -> None:
    (models_dir / "broken").mkdir()
    (models_dir / "broken" / "manifest.json").write_text(json.dumps({"kind": "diffusers", "name": "broken"}))
    (models_dir / "half.safetensors").write_bytes(b"not a checkpoint")  # a cut-off download
    server = gen_server()
    reply = server.stub.ListModels(pb.ListModelsRequest(), timeout=10)
    by_name = {m.name: m for m in reply.models}
    assert {"tiny", "tiny-single", "tiny-scribble", "tiny-style", "broken", "half"} <= set(by_name)
    assert by_name["tiny"].kind == "diffusers" and by_name["tiny"].state == pb.MODEL_STATE_INSTALLED
    assert by_name["tiny"].defaults.steps == 4 and "CC0" in by_name["tiny"].licence
    assert by_name["tiny-single"].kind == "single_file"
    assert (
        by_name["tiny-scribble"].kind == "controlnet" and by_name["tiny-scribble"].conditioning == "scribble"
    )
    assert by_name["tiny-style"].kind == "lora"
    assert by_name["broken"].state == pb.MODEL_STATE_FAILED and "model_index.json" in by_name["broken"].error
    assert by_name["half"].state == pb.MODEL_STATE_FAILED and "not a safetensors" in by_name["half"].error
    assert health(server, by_name["tiny"].health_name) == health_pb2.HealthCheckResponse.SERVING
    assert health(server, by_name["broken"].health_name) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert reply.device == "cpu" and reply.memory_used_bytes == 0

    server.generate(pb.GenerateRequest(model="tiny", settings=settings()))
    loaded = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest()).models}["tiny"]
    assert loaded.state == pb.MODEL_STATE_LOADED and loaded.memory_bytes > 100_000


def test_a_model_that_fails_to_load_is_not_serving_with_the_reason(
    gen_server: Start, models_dir: Path
) -> None:
    (models_dir / "tiny" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    server = gen_server(PRELOAD="all")
    by_name = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest()).models}
    assert by_name["tiny"].state == pb.MODEL_STATE_FAILED and by_name["tiny"].error
    assert by_name["tiny-single"].state == pb.MODEL_STATE_LOADED  # preloaded, and unaffected
    assert health(server, by_name["tiny"].health_name) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(server, by_name["tiny-single"].health_name) == health_pb2.HealthCheckResponse.SERVING
    assert health(server, "atelier.generation.v1.GenerationService") == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        server.generate(pb.GenerateRequest(model="tiny", settings=settings()))
    assert (
        info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "failed to load" in info.value.details()
    )


@pytest.mark.slow
def test_memory_budget_evicts_the_least_recently_used_model(gen_server: Start) -> None:
    server = gen_server(MEMORY_BUDGET_MB="1.5")  # one tiny pipeline (~1 MB) fits, two do not
    server.generate(pb.GenerateRequest(model="tiny", settings=settings()))
    server.generate(pb.GenerateRequest(model="tiny-single", settings=settings()))
    reply = server.stub.ListModels(pb.ListModelsRequest())
    states = {m.name: m.state for m in reply.models}
    assert states["tiny"] == pb.MODEL_STATE_INSTALLED and states["tiny-single"] == pb.MODEL_STATE_LOADED
    assert server.service.cache.evictions == 1
    assert 0 < reply.memory_used_bytes <= reply.memory_budget_bytes


# -- text to image, reproducibility, PNG metadata ---------------------------------------------------


def test_text_to_image_streams_progress_previews_then_reproducible_images(gen_server: Start) -> None:
    server = gen_server()
    request = pb.GenerateRequest(model="tiny", settings=settings(), num_images=2, preview_every=2)
    events = server.generate(request)
    steps = [e.progress.step for e in events if e.HasField("progress") and e.progress.total_steps]
    assert steps == [1, 2, 3, 4]
    assert all(
        e.progress.total_steps == 4 for e in events if e.HasField("progress") and e.progress.total_steps
    )
    previews = [e.progress.preview for e in events if e.HasField("progress") and e.progress.preview.data]
    assert len(previews) == 2 and decode(previews[0].data).shape == (8, 8, 3)  # 1/8 of 64 px
    out = images(events)
    assert [i.index for i in out] == [0, 1] and [i.seed for i in out] == [7, 8]
    assert events[-1].session_id and events[-1].round == 1
    first = decode(out[0].image.data)
    assert first.shape == (64, 64, 3) and first.std() > 1.0  # not blank
    assert not np.array_equal(first, decode(out[1].image.data))  # variations differ

    # Same model, seed, settings -> the same bytes; variation 1 alone with seed + 1 -> the same image up to
    # rounding (a batch of 2 runs other matmul kernels than a batch of 1: the last float bits differ).
    again = images(server.generate(request))
    assert again[0].image.data == out[0].image.data and again[1].image.data == out[1].image.data
    alone = images(server.generate(pb.GenerateRequest(model="tiny", settings=settings(seed=8))))
    difference = np.abs(decode(alone[0].image.data).astype(int) - decode(out[1].image.data))
    assert difference.max() <= 2 and difference.mean() < 0.1

    png = Image.open(io.BytesIO(out[1].image.data))
    meta = json.loads(png.text["atelier"])
    assert meta["settings"]["seed"] == 8 and meta["settings"]["prompt"] == "a paisley print on silk"
    assert meta["model"] == "tiny" and meta["mode"] == "text_to_image" and meta["settings"]["steps"] == 4
    assert "Seed: 8" in png.text["parameters"] and "Steps: 4" in png.text["parameters"]
    assert out[1].settings.seed == 8 and out[1].settings.guidance_scale == 7.5  # defaults filled in


def test_scheduler_and_guidance_change_the_image(gen_server: Start) -> None:
    server = gen_server()
    base = decode(
        images(server.generate(pb.GenerateRequest(model="tiny", settings=settings())))[0].image.data
    )
    euler = decode(
        images(server.generate(pb.GenerateRequest(model="tiny", settings=settings(scheduler="euler_a"))))[
            0
        ].image.data
    )
    assert not np.array_equal(base, euler)


@pytest.mark.slow
def test_single_file_checkpoint_matches_the_diffusers_folder_of_the_same_weights(gen_server: Start) -> None:
    server = gen_server()
    a = images(server.generate(pb.GenerateRequest(model="tiny", settings=settings())))[0]
    b = images(server.generate(pb.GenerateRequest(model="tiny-single", settings=settings())))[0]
    assert np.abs(decode(a.image.data).astype(int) - decode(b.image.data)).max() <= 1


# -- image to image and refinement sessions ---------------------------------------------------------


def test_image_to_image_and_two_round_refinement_session(gen_server: Start) -> None:
    server = gen_server()
    init = photo(72, 64)  # 72 x 64: multiples of 8, kept as is
    request = pb.GenerateRequest(
        model="tiny",
        mode=pb.MODE_IMAGE_TO_IMAGE,
        settings=settings(strength=0.75),
        init_image=image_pb2.Image(data=png_bytes(init)),
    )
    first_events = server.generate(request)
    totals = {
        e.progress.total_steps for e in first_events if e.HasField("progress") and e.progress.total_steps
    }
    assert totals == {3}  # strength 0.75 of 4 steps
    first = images(first_events)[0]
    assert (first.image.width_px, first.image.height_px) == (72, 64)
    session_id = first_events[-1].session_id
    second_events = server.generate(
        pb.GenerateRequest(model="tiny", settings=settings(strength=0.75), session_id=session_id)
    )
    second = images(second_events)[0]
    assert second_events[-1].session_id == session_id and second_events[-1].round == 2
    assert not np.array_equal(decode(first.image.data), decode(second.image.data))

    # Round 2 is exactly img2img on round 1's output: the server fed the right image back.
    direct = images(
        server.generate(
            pb.GenerateRequest(
                model="tiny",
                mode=pb.MODE_IMAGE_TO_IMAGE,
                settings=settings(strength=0.75),
                init_image=image_pb2.Image(data=first.image.data),
            )
        )
    )[0]
    assert np.array_equal(decode(direct.image.data), decode(second.image.data))

    session = server.stub.GetSession(pb.GetSessionRequest(session_id=session_id))
    assert session.rounds == 2 and len(session.history) == 2 and session.model == "tiny"
    assert session.history[1].strength == 0.75 and session.last_image.data == second.image.data


def test_sessions_are_per_tenant(gen_server: Start) -> None:
    server = gen_server()
    events = list(
        server.stub.Generate(
            pb.GenerateRequest(model="tiny", settings=settings()), metadata=[("x-atelier-tenant", "brand-a")]
        )
    )
    session_id = events[-1].session_id
    with pytest.raises(grpc.RpcError) as info:
        server.stub.GetSession(
            pb.GetSessionRequest(session_id=session_id), metadata=[("x-atelier-tenant", "brand-b")]
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- tiling -----------------------------------------------------------------------------------------


def _edge_ratio(pixels: np.ndarray) -> float:
    """Wrap-around edge difference over the mean neighbour difference inside (1: as continuous as inside)."""
    img = pixels.astype(np.float64)
    seam = (np.abs(img[:, -1] - img[:, 0]).mean() + np.abs(img[-1] - img[0]).mean()) / 2
    inside = (np.abs(np.diff(img, axis=1)).mean() + np.abs(np.diff(img, axis=0)).mean()) / 2
    return float(seam / inside)


def test_tileable_output_is_continuous_across_its_edges(gen_server: Start) -> None:
    server = gen_server()
    tiled, plain = [], []
    for seed in (1, 2, 3):
        req = pb.GenerateRequest(model="tiny", settings=settings(seed=seed, tileable=True, steps=3))
        tiled.append(_edge_ratio(decode(images(server.generate(req))[0].image.data)))
        req = pb.GenerateRequest(model="tiny", settings=settings(seed=seed, tileable=False, steps=3))
        plain.append(_edge_ratio(decode(images(server.generate(req))[0].image.data)))
    # Circular padding makes the wrap-around neighbours as close as interior neighbours.
    assert max(tiled) < 1.2, tiled
    assert np.mean(tiled) < np.mean(plain), (tiled, plain)
    # The cached model is back to zero padding afterwards.
    pipe = server.service.cache.get("tiny")
    assert {m.padding_mode for m in pipe.unet.modules() if hasattr(m, "padding_mode")} == {"zeros"}


# -- inpainting, sketch, ControlNet, LoRA -----------------------------------------------------------


def test_inpainting_changes_only_the_mask_region(gen_server: Start) -> None:
    server = gen_server()
    init = photo(64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:44] = 255
    out = images(
        server.generate(
            pb.GenerateRequest(
                model="tiny",
                mode=pb.MODE_INPAINT,
                settings=settings(strength=1.0),
                init_image=image_pb2.Image(data=png_bytes(init)),
                mask=image_pb2.Mask(data=png_bytes(mask)),
            )
        )
    )[0]
    result = decode(out.image.data)
    outside = mask == 0
    assert np.array_equal(result[outside], init[outside])
    assert np.abs(result[~outside].astype(int) - init[~outside]).mean() > 5


def test_sketch_to_illustration_with_and_without_controlnet(gen_server: Start) -> None:
    server = gen_server()
    drawing = np.full((64, 64, 3), 255, np.uint8)
    drawing[10:54, 30:34] = 0  # a dark stroke on white paper
    drawing[30:34, 10:54] = 0
    base = dict(model="tiny", mode=pb.MODE_SKETCH, init_image=image_pb2.Image(data=png_bytes(drawing)))
    plain = images(server.generate(pb.GenerateRequest(**base, settings=settings())))[0]  # type: ignore[arg-type]
    controlled = images(
        server.generate(pb.GenerateRequest(**base, settings=settings(controlnet="tiny-scribble")))
    )[0]  # type: ignore[arg-type]
    a, b = decode(plain.image.data), decode(controlled.image.data)
    assert a.shape == b.shape == (64, 64, 3)
    assert np.abs(a.astype(int) - b).mean() > 0.5  # the ControlNet residuals changed the result
    assert "ControlNet: tiny-scribble" in Image.open(io.BytesIO(controlled.image.data)).text["parameters"]


@pytest.mark.slow
def test_lora_adapter_changes_the_image_and_switches_off_again(gen_server: Start) -> None:
    server = gen_server()
    plain = decode(
        images(server.generate(pb.GenerateRequest(model="tiny", settings=settings())))[0].image.data
    )
    styled = decode(
        images(server.generate(pb.GenerateRequest(model="tiny", settings=settings(loras=["tiny-style"]))))[
            0
        ].image.data
    )
    after = decode(
        images(server.generate(pb.GenerateRequest(model="tiny", settings=settings())))[0].image.data
    )
    assert np.abs(plain.astype(int) - styled).mean() > 1
    assert np.array_equal(plain, after)


def test_several_loras_with_their_own_weights(gen_server: Start, models_dir: Path) -> None:
    from atelier.generation import testing

    testing.write_tiny_lora(models_dir / "tiny-style2", seed=3)
    server = gen_server()

    def run(**kw: object) -> pb.GeneratedImage:
        return images(server.generate(pb.GenerateRequest(model="tiny", settings=settings(**kw))))[0]

    def px(image: pb.GeneratedImage) -> np.ndarray:
        return decode(image.image.data).astype(int)

    base = px(run())
    pair = ["tiny-style", "tiny-style2"]
    assert np.array_equal(px(run(loras=pair, lora_weights=[0.0, 0.0])), base)  # weight 0 = no LoRA at all
    light, strong = (
        px(run(loras=["tiny-style"], lora_weights=[0.4])),
        px(run(loras=["tiny-style"], lora_weights=[0.8])),
    )
    assert 0 < np.abs(light - base).mean() < np.abs(strong - base).mean()
    both = run(loras=pair, lora_weights=[0.4, 0.8])
    assert np.abs(px(both) - light).mean() > 0.5  # the second LoRA's 0.8 adds to the first's 0.4
    assert (
        "LoRA: tiny-style:0.4, tiny-style2:0.8" in Image.open(io.BytesIO(both.image.data)).text["parameters"]
    )
    assert np.array_equal(px(run(loras=pair, lora_weights=[0.4, 0.8])), px(both))  # reproducible
    assert np.array_equal(px(run()), base)  # and switched off again
    expect_invalid(lambda: run(loras=pair, lora_weights=[0.5]), "settings.lora_weights")
    expect_invalid(lambda: run(loras=["tiny-style"], lora_weights=[3.0]), "settings.lora_weights[0]")
    expect_invalid(lambda: run(loras=["tiny-style", "tiny-style"]), "settings.loras")


def test_long_weighted_prompts_are_chunked_and_weighted_by_compel(gen_server: Start) -> None:
    server = gen_server()

    def run(prompt: str, negative: str = "") -> pb.GeneratedImage:
        request = pb.GenerateRequest(model="tiny", settings=settings(prompt=prompt, negative_prompt=negative))
        return images(server.generate(request))[0]

    def px(image: pb.GeneratedImage) -> np.ndarray:
        return decode(image.image.data).astype(int)

    # 200 tokens of the tiny byte-level tokenizer (one token a character), with the web UIs' weighting.
    words = "silk dress, "
    head = "(embroidered:1.3) [cotton] "
    long_prompt = head + words * ((200 - len(head)) // len(words))
    long_prompt += "x" * (200 - len(long_prompt))
    assert len(long_prompt) == 200
    first = run(long_prompt, negative="blurry")
    meta = json.loads(Image.open(io.BytesIO(first.image.data)).text["atelier"])
    assert meta["prompt_encoding"].startswith("compel") and meta["settings"]["prompt"] == long_prompt
    # Text past the first window counts (nothing is cut), and the weights count.
    assert not np.array_equal(px(first), px(run(long_prompt[:-20] + "y" * 20, negative="blurry")))
    assert not np.array_equal(px(first), px(run(long_prompt.replace(":1.3", ":0.6"), negative="blurry")))
    assert np.array_equal(px(first), px(run(long_prompt, negative="blurry")))  # reproducible
    # A short plain prompt still goes through the pipeline's own encoding.
    plain = json.loads(Image.open(io.BytesIO(run("silk dress").image.data)).text["atelier"])
    assert plain["prompt_encoding"] == "pipeline"


# -- errors -----------------------------------------------------------------------------------------


def test_bad_inputs_are_invalid_argument_naming_the_field(gen_server: Start) -> None:
    server = gen_server()
    init = image_pb2.Image(data=png_bytes(photo(64, 64)))

    def gen(**kw: object) -> Callable[[], object]:
        return lambda: server.generate(pb.GenerateRequest(**{"model": "tiny", **kw}))  # type: ignore[arg-type]

    expect_invalid(gen(settings=settings(width_px=65, height_px=64)), "settings.width_px")
    expect_invalid(gen(settings=settings(width_px=4096, height_px=4096)), "settings.width_px")
    expect_invalid(gen(settings=settings(width_px=1536, height_px=1536)), "settings.width_px")  # > 1 Mpx
    expect_invalid(gen(settings=settings(width_px=64, height_px=60)), "settings.height_px")
    expect_invalid(gen(settings=settings(width_px=32, height_px=64)), "settings.width_px")  # below 64
    expect_invalid(
        gen(mode=pb.MODE_IMAGE_TO_IMAGE, init_image=init, settings=settings(strength=1.5)),
        "settings.strength",
    )
    expect_invalid(
        gen(mode=pb.MODE_IMAGE_TO_IMAGE, init_image=init, settings=settings(strength=-0.1)),
        "settings.strength",
    )
    expect_invalid(
        gen(
            mode=pb.MODE_IMAGE_TO_IMAGE,
            init_image=image_pb2.Image(data=b"\x89PNG\r\n\x1a\nbroken"),
            settings=settings(),
        ),
        "init_image.data",
    )
    truncated = png_bytes(photo(64, 64))[:200]
    expect_invalid(
        gen(mode=pb.MODE_IMAGE_TO_IMAGE, init_image=image_pb2.Image(data=truncated), settings=settings()),
        "init_image.data",
    )
    small_mask = image_pb2.Mask(data=png_bytes(np.full((32, 32), 255, np.uint8)))
    expect_invalid(
        gen(mode=pb.MODE_INPAINT, init_image=init, mask=small_mask, settings=settings()), "mask.data"
    )
    expect_invalid(gen(mode=pb.MODE_INPAINT, init_image=init, settings=settings()), "mask")
    expect_invalid(gen(settings=settings(), num_images=9), "num_images")
    expect_invalid(gen(settings=settings(), num_images=-1), "num_images")
    expect_invalid(
        gen(
            mode=pb.MODE_INPAINT,
            init_image=init,
            mask=image_pb2.Mask(data=png_bytes(np.zeros((64, 64), np.uint8))),
            settings=settings(),
        ),
        "mask.data",
    )  # an empty mask marks nothing to repaint
    expect_invalid(
        gen(
            mode=pb.MODE_IMAGE_TO_IMAGE,
            init_image=image_pb2.Image(data=png_bytes(photo(4104, 8))),
            settings=settings(),
        ),
        "init_image.data",
    )  # over 4096 px a side
    expect_invalid(gen(settings=settings(prompt="")), "settings.prompt")
    expect_invalid(gen(settings=settings(scheduler="k_fancy")), "settings.scheduler")
    expect_invalid(gen(settings=settings(steps=151)), "settings.steps")
    expect_invalid(gen(mode=pb.MODE_IMAGE_TO_IMAGE, settings=settings()), "init_image")
    expect_invalid(gen(settings=settings(loras=["nope"])), "settings.loras[0]")
    expect_invalid(gen(settings=settings(controlnet="tiny-style")), "settings.controlnet")  # a LoRA, not a CN
    # Prompts beyond three windows of 75 tokens are rejected, never silently cut.
    violations = expect_invalid(gen(settings=settings(prompt="floral " * 50)), "settings.prompt")
    assert any("225" in why for _, why in violations)
    expect_invalid(gen(settings=settings(negative_prompt="blurry " * 50)), "settings.negative_prompt")
    # The boundary: the tiny tokenizer has no merges, so "a" * n is n tokens: 225 runs, 226 is refused.
    assert images(server.generate(pb.GenerateRequest(model="tiny", settings=settings(prompt="a" * 225))))
    violations = expect_invalid(gen(settings=settings(prompt="a" * 226)), "settings.prompt")
    assert any("226 tokens" in why for _, why in violations), violations

    with pytest.raises(grpc.RpcError) as info:
        server.generate(pb.GenerateRequest(model="no-such-model", settings=settings()))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "tiny" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        server.generate(pb.GenerateRequest(model="tiny", settings=settings(), session_id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # The service is still fine after all that.
    assert images(server.generate(pb.GenerateRequest(model="tiny", settings=settings())))


# -- queue, cancellation, out of memory -------------------------------------------------------------


def test_queue_position_then_full_queue_is_resource_exhausted_with_retry_info(gen_server: Start) -> None:
    server = gen_server(QUEUE_SIZE="1")
    server.generate(pb.GenerateRequest(model="tiny", settings=settings()))  # loaded
    release = threading.Event()
    busy = server.service.queue.submit(lambda _t: release.wait(30), Cancellation())  # holds the device
    assert busy.started.wait(5)
    try:
        queued = server.stub.Generate(pb.GenerateRequest(model="tiny", settings=settings()), timeout=60)
        first = next(queued)
        assert first.progress.queue_position == 1  # waiting, first in line
        with pytest.raises(grpc.RpcError) as info:  # the one waiting slot is taken
            server.generate(pb.GenerateRequest(model="tiny", settings=settings()), timeout=10)
        assert (
            info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and "queue is full" in info.value.details()
        )
        status = rpc_status.from_call(info.value)
        assert status is not None
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert retry, "RetryInfo detail expected"
        info_detail = error_details_pb2.RetryInfo()
        retry[0].Unpack(info_detail)
        assert info_detail.retry_delay.ToNanoseconds() > 0
    finally:
        release.set()
    rest = list(queued)  # runs once the device is free
    assert [e.progress.step for e in rest if e.progress.step][-1] == 4 and images(rest)


@pytest.mark.slow
def test_cancelling_the_call_stops_the_denoising_loop(gen_server: Start) -> None:
    server = gen_server()
    server.generate(pb.GenerateRequest(model="tiny", settings=settings()))  # load first
    long = pb.GenerateRequest(model="tiny", settings=settings(steps=150, width_px=256, height_px=256))
    call = server.stub.Generate(long)
    seen = 0
    for event in call:
        if event.progress.step:
            seen = event.progress.step
            break
    call.cancel()
    began = time.monotonic()
    # The next request runs as soon as the device is free: far sooner than 150 steps would take.
    assert images(server.generate(pb.GenerateRequest(model="tiny", settings=settings()), timeout=30))
    assert seen >= 1 and time.monotonic() - began < 10
    steps = server.service.queue  # the cancelled job is gone from the queue
    assert steps.position(object()) == 0  # type: ignore[arg-type]


@pytest.mark.slow
def test_deadline_stops_generation_with_deadline_exceeded(gen_server: Start) -> None:
    server = gen_server()
    server.generate(pb.GenerateRequest(model="tiny", settings=settings()))
    long = pb.GenerateRequest(model="tiny", settings=settings(steps=150, width_px=256, height_px=256))
    began = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        server.generate(long, timeout=1.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert images(server.generate(pb.GenerateRequest(model="tiny", settings=settings()), timeout=30))
    assert time.monotonic() - began < 12


def _oom_on_second_unet_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The UNet raises CUDA's out-of-memory error on its second call, inside the real denoising loop.

    Patched on the class, not on a cached instance, so the test itself keeps no model alive.
    """
    import torch
    from diffusers import UNet2DConditionModel

    real_forward = UNet2DConditionModel.forward
    calls = {"n": 0}

    def forward(self: object, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)


@pytest.mark.slow
def test_out_of_memory_is_resource_exhausted_frees_models_and_service_stays_up(
    gen_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = gen_server()
    server.generate(pb.GenerateRequest(model="tiny", settings=settings()))
    server.generate(pb.GenerateRequest(model="tiny-single", settings=settings()))
    held = [weakref.ref(server.service.cache.get(name)) for name in ("tiny", "tiny-single")]

    _oom_on_second_unet_step(monkeypatch)
    seen: list[int] = []
    with pytest.raises(grpc.RpcError) as info:
        for event in server.stub.Generate(pb.GenerateRequest(model="tiny-single", settings=settings())):
            seen.append(event.progress.step)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "memory" in info.value.details()
    assert 1 in seen and 2 not in seen  # step 1 ran; the error came from inside the denoising loop
    status = rpc_status.from_call(info.value)
    assert status is not None and any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
    assert server.service.cache.used_bytes == 0  # every cached model was freed, the one in use too
    gc.collect()
    # Really gone, not just forgotten by the cache: no traceback frame kept the pipeline in use alive.
    assert [ref() for ref in held] == [None, None]
    states = {m.name: m.state for m in server.stub.ListModels(pb.ListModelsRequest()).models}
    assert states["tiny-single"] == pb.MODEL_STATE_INSTALLED  # not marked failed: it loads again
    assert health(server, "atelier.generation.v1.GenerationService") == health_pb2.HealthCheckResponse.SERVING
    monkeypatch.undo()
    assert images(server.generate(pb.GenerateRequest(model="tiny-single", settings=settings())))


@pytest.mark.slow
def test_out_of_memory_in_a_batch_answers_every_caller_in_it(
    gen_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = gen_server(MAX_BATCH_IMAGES="4")
    server.generate(pb.GenerateRequest(model="tiny", settings=settings()))  # loaded
    release = threading.Event()
    busy = server.service.queue.submit(lambda _t: release.wait(30), Cancellation())
    assert busy.started.wait(5)
    calls = [
        server.stub.Generate(pb.GenerateRequest(model="tiny", settings=settings(seed=s)), timeout=60)
        for s in (1, 2)
    ]
    assert sorted(next(c).progress.queue_position for c in calls) == [1, 2]
    _oom_on_second_unet_step(monkeypatch)
    release.set()
    for call in calls:
        with pytest.raises(grpc.RpcError) as info:
            list(call)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.service.cache.used_bytes == 0
    monkeypatch.undo()
    assert images(server.generate(pb.GenerateRequest(model="tiny", settings=settings())))


# -- MakeTileable ------------------------------------------------------------------------------------


def test_make_tileable_over_grpc(gen_server: Start) -> None:
    server = gen_server()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    weave = 127 + 60 * np.sin(x / 3.0) * np.cos(y / 5.0) + x * 0.6 - y * 0.4 + rng.normal(0, 6, x.shape)
    texture = np.clip(np.stack([weave, weave * 0.8, weave * 0.6], -1), 0, 255).astype(np.uint8)
    reply = server.stub.MakeTileable(pb.MakeTileableRequest(image=image_pb2.Image(data=png_bytes(texture))))
    tile = decode(reply.tile.data)
    assert tile.shape == texture.shape and (reply.tile.width_px, reply.tile.height_px) == (128, 96)
    assert reply.seam_error_before > 20 and reply.seam_error < reply.interior_error * 1.5
    assert _edge_ratio(tile) < 1.5 < _edge_ratio(texture)
    expect_invalid(
        lambda: server.stub.MakeTileable(pb.MakeTileableRequest(image=image_pb2.Image(data=b"junk"))),
        "image.data",
    )
    expect_invalid(
        lambda: server.stub.MakeTileable(
            pb.MakeTileableRequest(image=image_pb2.Image(data=png_bytes(texture)), blend=0.9)
        ),
        "blend",
    )


@pytest.mark.slow
def test_runs_as_its_own_process_with_preloading(
    service_process: Callable[..., object], models_dir: Path
) -> None:
    """`python -m atelier.runtime.server generation`, as production starts it."""
    _proc, port, _metrics = service_process(  # type: ignore[misc]
        "generation",
        env={
            "ATELIER_GENERATION_MODELS_DIR": str(models_dir),
            "ATELIER_GENERATION_DEVICE": "cpu",
            "ATELIER_GENERATION_PRELOAD": "tiny",
        },
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        from atelier.generation.v1 import generation_pb2_grpc

        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        states = {m.name: m.state for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models}
        assert states["tiny"] == pb.MODEL_STATE_LOADED and states["tiny-single"] == pb.MODEL_STATE_INSTALLED
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="atelier.generation.v1.GenerationService/models/tiny"),
            timeout=5,
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        events = list(stub.Generate(pb.GenerateRequest(model="tiny", settings=settings()), timeout=60))
        assert decode(images(events)[0].image.data).shape == (64, 64, 3)


def _hold_device(server: GenServer) -> threading.Event:
    """Occupies the device thread until the returned event is set, so requests queue up behind it."""
    release = threading.Event()
    busy = server.service.queue.submit(lambda _t: release.wait(30), Cancellation())
    assert busy.started.wait(5)
    return release


def _batch_metric() -> tuple[float, float]:
    """(pipeline calls, images in them) so far, from atelier_generation_batch_images."""
    from atelier.generation.service import BATCH_IMAGES

    samples = BATCH_IMAGES.collect()[0].samples
    count = next(s.value for s in samples if s.name.endswith("_count"))
    total = next(s.value for s in samples if s.name.endswith("_sum"))
    return count, total


def test_compatible_requests_from_different_callers_share_one_batch(gen_server: Start) -> None:
    server = gen_server(MAX_BATCH_IMAGES="4", QUEUE_SIZE="4")
    requests = [
        pb.GenerateRequest(
            model="tiny", settings=settings(seed=21, prompt="red tartan"), num_images=2, preview_every=2
        ),
        pb.GenerateRequest(
            model="tiny",
            settings=settings(seed=30, prompt="blue denim", negative_prompt="blurry"),
            preview_every=2,
        ),
    ]
    alone = [server.generate(r) for r in requests]  # one at a time: nothing to batch with
    release = _hold_device(server)
    too_long = pb.GenerateRequest(model="tiny", settings=settings(prompt="floral " * 50))
    calls = [server.stub.Generate(r, timeout=60) for r in (*requests, too_long)]
    assert sorted(next(c).progress.queue_position for c in calls) == [1, 2, 3]  # all three waiting
    before = _batch_metric()
    release.set()
    batched = [list(c) for c in calls[:2]]
    with pytest.raises(grpc.RpcError) as info:  # the too-long prompt fails its own caller only
        list(calls[2])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "settings.prompt" in [f for f, _ in field_violations(info.value)]
    calls_after, images_after = _batch_metric()
    assert (calls_after, images_after) == (before[0] + 1, before[1] + 3)  # one pipeline call, 2 + 1 images

    for request, solo, events in zip(requests, alone, batched, strict=True):
        assert [e.progress.step for e in events if e.progress.total_steps] == [1, 2, 3, 4]
        got, want = images(events), images(solo)
        assert (
            [i.seed for i in got]
            == [i.seed for i in want]
            == [request.settings.seed + i for i in range(max(1, request.num_images))]
        )
        for g, w in zip(got, want, strict=True):
            # Not bit-exact: the UNet and VAE kernels of a batch of 3 round differently from a batch of 1
            # or 2 (about 1e-6 in float), which moves a rare pixel by one level.
            difference = np.abs(decode(g.image.data).astype(int) - decode(w.image.data))
            assert difference.max() <= 2 and difference.mean() < 0.05
            meta = json.loads(Image.open(io.BytesIO(g.image.data)).text["atelier"])
            assert meta["batch_images"] == 3 and meta["settings"]["prompt"] == request.settings.prompt
            assert meta["settings"]["negative_prompt"] == request.settings.negative_prompt
        # Each caller's previews come from its own latents.
        previews = [decode(e.progress.preview.data) for e in events if e.progress.preview.data]
        solo_previews = [decode(e.progress.preview.data) for e in solo if e.progress.preview.data]
        assert len(previews) == len(solo_previews) == 2
        for p, q in zip(previews, solo_previews, strict=True):
            assert np.abs(p.astype(int) - q).max() <= 2
    first_a, first_b = (decode(images(e)[0].image.data).astype(int) for e in batched)
    assert np.abs(first_a - first_b).mean() > 1  # different prompts and seeds: different pictures
    assert (
        np.abs(
            decode(next(e.progress.preview.data for e in batched[0] if e.progress.preview.data)).astype(int)
            - decode(next(e.progress.preview.data for e in batched[1] if e.progress.preview.data))
        ).mean()
        > 1
    )


def test_cancelling_one_caller_of_a_batch_leaves_the_others_running(
    gen_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import UNet2DConditionModel

    from atelier.generation import engine

    server = gen_server(MAX_BATCH_IMAGES="4")
    keep = pb.GenerateRequest(model="tiny", settings=settings(seed=5, steps=6))
    leave = pb.GenerateRequest(model="tiny", settings=settings(seed=6, steps=6))
    alone = decode(images(server.generate(keep))[0].image.data)

    # Hold the denoising loop at step 3 until the service has seen the cancel, so the cancel lands mid-batch.
    batch: dict[str, object] = {}
    real_run_batch, real_forward = engine.run_batch, UNet2DConditionModel.forward

    def run_batch(
        pipe: object, jobs: list[engine.Job], cancellations: list[Cancellation], *a: object, **k: object
    ):  # type: ignore[no-untyped-def]
        batch["leaving"] = next(c for j, c in zip(jobs, cancellations, strict=True) if j.settings.seed == 6)
        batch["size"] = len(jobs)
        return real_run_batch(pipe, jobs, cancellations, *a, **k)  # type: ignore[arg-type]

    steps = {"n": 0}

    def forward(self: object, *args: object, **kwargs: object) -> object:
        steps["n"] += 1
        if steps["n"] == 3:
            leaving = batch["leaving"]
            deadline = time.monotonic() + 10
            while not leaving.cancelled and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.01)
        return real_forward(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "run_batch", run_batch)
    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    release = _hold_device(server)
    leaving_call = server.stub.Generate(leave, timeout=60)
    staying_call = server.stub.Generate(keep, timeout=60)
    assert sorted(next(c).progress.queue_position for c in (leaving_call, staying_call)) == [1, 2]
    release.set()
    for event in leaving_call:
        if event.progress.step == 2:
            break
    leaving_call.cancel()
    events = list(staying_call)
    assert batch["size"] == 2 and batch["leaving"].cancelled  # type: ignore[attr-defined]
    assert [e.progress.step for e in events if e.progress.total_steps] == [1, 2, 3, 4, 5, 6]
    difference = np.abs(decode(images(events)[0].image.data).astype(int) - alone)
    assert difference.max() <= 2 and difference.mean() < 0.05
    with pytest.raises(grpc.RpcError) as info:
        list(leaving_call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
