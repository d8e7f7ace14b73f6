"""The A1111-compatible HTTP API (atelier.generation.webui) on a real socket, beside the gRPC port of the
same server, on the tiny random pipelines: requests as the web UI's documentation writes them, the web
UI's own Python client (webuiapi) unchanged, keys and tenants, and bad input answered 4xx."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from atelier.generation.v1 import generation_pb2 as pb
from atelier.runtime.keys import Role, new_key, write_keys_file
from tests.generation.conftest import GenServer, decode, photo, png_bytes

Start = Callable[..., GenServer]


def url(server: GenServer, route: str) -> str:
    return f"http://127.0.0.1:{server.server.spec.ports['a1111_port']}/sdapi/v1/{route}"


def b64_png(pixels: np.ndarray) -> str:
    return base64.b64encode(png_bytes(pixels)).decode()


def pixels_of(b64: str) -> np.ndarray:
    return decode(base64.b64decode(b64))


class KeysFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.a, rec_a = new_key(["tenant-a"], Role.WRITE, "a")
        self.b, rec_b = new_key(["tenant-b"], Role.WRITE, "b")
        self.a_read, rec_r = new_key(["tenant-a"], Role.READ, "a read-only")
        write_keys_file(path, [rec_a, rec_b, rec_r])


@pytest.fixture
def keys(tmp_path: Path) -> KeysFile:
    return KeysFile(tmp_path / "keys.json")


@pytest.fixture
def http_server(gen_server: Start) -> GenServer:
    return gen_server(A1111_PORT="0")


@pytest.fixture
def keyed_server(
    start_server: Callable[..., Any], models_dir: Path, keys: KeysFile, monkeypatch: pytest.MonkeyPatch
) -> GenServer:
    import grpc

    from atelier.generation.server import build
    from atelier.generation.v1 import generation_pb2_grpc

    monkeypatch.setenv("ATELIER_GENERATION_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    monkeypatch.setenv("ATELIER_GENERATION_A1111_PORT", "0")
    server = start_server("generation", build, api_keys_file=str(keys.path))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return GenServer(server, generation_pb2_grpc.GenerationServiceStub(channel), channel)


# -- what the web UI's documentation shows ------------------------------------------------------------


def test_the_documented_txt2img_request_answers_pngs_with_their_settings(http_server: GenServer) -> None:
    # The API page of the web UI's wiki: {"prompt": "puppy dog", "steps": 5}, then images[0] as base64.
    response = requests.post(
        url=url(http_server, "txt2img"), json={"prompt": "puppy dog", "steps": 5}, timeout=120
    )
    assert response.status_code == 200, response.text
    r = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(r["images"][0])))
    assert image.format == "PNG" and image.size == (64, 64)  # the model's default size
    info = json.loads(r["info"])
    assert info["steps"] == 5 and info["prompt"] == "puppy dog" and info["sd_model_name"] == "tiny"
    assert 0 <= info["seed"] < 2**31 and info["all_seeds"] == [info["seed"]]
    assert "Steps: 5" in info["infotexts"][0] and "Seed: " + str(info["seed"]) in info["infotexts"][0]
    assert image.info["parameters"] == info["infotexts"][0]  # the PNG carries the web UIs' settings chunk
    assert r["parameters"]["prompt"] == "puppy dog" and r["parameters"]["steps"] == 5


def test_the_documented_options_request_switches_the_checkpoint(http_server: GenServer) -> None:
    models = requests.get(url(http_server, "sd-models"), timeout=30).json()
    titles = {m["title"]: m for m in models}
    assert {"tiny", "tiny-single.safetensors"} <= set(titles)
    assert (
        "tiny-style" not in titles and "tiny-scribble" not in titles
    )  # LoRA and ControlNet are not checkpoints
    assert titles["tiny-single.safetensors"]["model_name"] == "tiny-single"
    assert titles["tiny-single.safetensors"]["filename"].endswith("tiny-single.safetensors")

    assert requests.get(url(http_server, "options"), timeout=30).json()["sd_model_checkpoint"] == "tiny"
    # As the wiki's example, with a title carrying the web UI's short hash.
    option_payload = {
        "sd_model_checkpoint": "tiny-single.safetensors [2700c435]",
        "CLIP_stop_at_last_layers": 2,
    }
    assert requests.post(url(http_server, "options"), json=option_payload, timeout=30).status_code == 200
    options = requests.get(url(http_server, "options"), timeout=30).json()
    assert options["sd_model_checkpoint"] == "tiny-single.safetensors"
    assert options["CLIP_stop_at_last_layers"] == 2
    r = requests.post(url(http_server, "txt2img"), json={"prompt": "linen", "steps": 2}, timeout=120).json()
    assert json.loads(r["info"])["sd_model_name"] == "tiny-single"
    # override_settings picks a checkpoint for one request only.
    r = requests.post(
        url(http_server, "txt2img"),
        json={"prompt": "linen", "steps": 2, "override_settings": {"sd_model_checkpoint": "tiny"}},
        timeout=120,
    ).json()
    assert json.loads(r["info"])["sd_model_name"] == "tiny"

    unknown = requests.post(
        url(http_server, "options"), json={"sd_model_checkpoint": "nope.ckpt"}, timeout=30
    )
    assert unknown.status_code == 404 and "tiny-single.safetensors" in unknown.json()["detail"]


def test_same_seed_and_settings_give_the_grpc_image(http_server: GenServer) -> None:
    body = {
        "prompt": "a paisley print on silk",
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": 4,
        "cfg_scale": 6.5,
        "width": 64,
        "height": 64,
        "batch_size": 2,
        "sampler_name": "Euler a",
    }
    r = requests.post(url(http_server, "txt2img"), json=body, timeout=120).json()
    http_images = [pixels_of(i) for i in r["images"]]
    assert json.loads(r["info"])["all_seeds"] == [1234, 1235]
    settings = pb.GenerationSettings(
        prompt="a paisley print on silk",
        negative_prompt="blurry",
        seed=1234,
        steps=4,
        guidance_scale=6.5,
        width_px=64,
        height_px=64,
        scheduler="euler_a",
    )
    events = http_server.generate(pb.GenerateRequest(model="tiny", settings=settings, num_images=2))
    grpc_images = [decode(e.image.image.data) for e in events if e.HasField("image")]
    assert len(http_images) == len(grpc_images) == 2
    for a, b in zip(http_images, grpc_images, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(http_images[0], http_images[1])  # seed + i per image
    # Seed 0 is a seed in the web UI (not "random" as a proto3 zero is).
    zero = [
        requests.post(
            url(http_server, "txt2img"), json={**body, "seed": 0, "batch_size": 1}, timeout=120
        ).json()
        for _ in range(2)
    ]
    assert [json.loads(z["info"])["seed"] for z in zero] == [0, 0]
    assert np.array_equal(pixels_of(zero[0]["images"][0]), pixels_of(zero[1]["images"][0]))


def test_img2img_and_inpainting_as_the_web_ui_takes_them(http_server: GenServer) -> None:
    init = photo(64, 64, seed=3)
    body = {
        "init_images": ["data:image/png;base64," + b64_png(init)],
        "prompt": "indigo denim",
        "denoising_strength": 0.5,
        "seed": 5,
        "steps": 4,
        "width": 64,
        "height": 64,
    }
    r = requests.post(url(http_server, "img2img"), json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert pixels_of(r.json()["images"][0]).shape == (64, 64, 3)
    assert json.loads(r.json()["info"])["denoising_strength"] == 0.5
    assert r.json()["parameters"]["init_images"] is None  # not echoed unless include_init_images

    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255  # white: repaint
    body_mask = {**body, "mask": b64_png(np.stack([mask] * 3, axis=-1)), "denoising_strength": 1.0}
    out = pixels_of(
        requests.post(url(http_server, "img2img"), json=body_mask, timeout=120).json()["images"][0]
    )
    assert np.array_equal(out[mask == 0], init[mask == 0])  # outside the mask: the input, exactly
    assert not np.array_equal(out[mask > 0], init[mask > 0])
    inverted = {**body_mask, "inpainting_mask_invert": 1}
    out = pixels_of(
        requests.post(url(http_server, "img2img"), json=inverted, timeout=120).json()["images"][0]
    )
    assert np.array_equal(out[mask > 0], init[mask > 0])


def test_lora_tags_in_the_prompt_use_the_installed_lora(http_server: GenServer) -> None:
    body = {"prompt": "a floral print", "seed": 9, "steps": 3, "width": 64, "height": 64}
    plain = requests.post(url(http_server, "txt2img"), json=body, timeout=120).json()
    tagged = requests.post(
        url(http_server, "txt2img"),
        json={**body, "prompt": "a floral print <lora:tiny-style:0.8>"},
        timeout=120,
    ).json()
    zero = requests.post(
        url(http_server, "txt2img"),
        json={**body, "prompt": "a floral print <lora:tiny-style:0>"},
        timeout=120,
    ).json()
    assert "LoRA: tiny-style:0.8" in json.loads(tagged["info"])["infotexts"][0]
    assert not np.array_equal(pixels_of(plain["images"][0]), pixels_of(tagged["images"][0]))
    assert np.array_equal(pixels_of(plain["images"][0]), pixels_of(zero["images"][0]))
    missing = requests.post(
        url(http_server, "txt2img"), json={**body, "prompt": "x <lora:nope:1>"}, timeout=120
    )
    assert missing.status_code == 422 and missing.json()["violations"][0]["field"] == "prompt"


# -- a client written for the web UI's API, unchanged ---------------------------------------------------


def test_the_webuiapi_client_works_unchanged(keyed_server: GenServer, keys: KeysFile) -> None:
    port = keyed_server.server.spec.ports["a1111_port"]
    # As its README says: host and port, then set_auth when the web UI runs with --api-auth user:pass.
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=3)
    api.set_auth("designer", keys.a)
    assert "tiny-single.safetensors" in api.util_get_model_names()
    assert "Euler a" in api.util_get_sampler_names()
    api.util_set_model("tiny-single")
    assert api.util_get_current_model() == "tiny-single.safetensors"

    result = api.txt2img(
        prompt="cute squirrel",
        negative_prompt="ugly, out of frame",
        seed=1003,
        cfg_scale=7,
        width=64,
        height=64,
    )
    assert result.image.size == (64, 64) and result.info["seed"] == 1003
    assert result.info["sd_model_name"] == "tiny-single" and result.parameters["prompt"] == "cute squirrel"

    init = Image.fromarray(photo(64, 64, seed=4))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    result = api.img2img(
        images=[init],
        mask_image=mask,
        prompt="a linen shirt",
        seed=11,
        denoising_strength=0.9,
        width=64,
        height=64,
    )
    out = np.asarray(result.image.convert("RGB"))
    keep = np.asarray(mask) == 0
    assert np.array_equal(out[keep], np.asarray(init)[keep])

    progress = api.get_progress()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0
    api.util_wait_for_ready(check_interval=0.1)  # returns at once: nothing running


# -- keys, roles, tenants ---------------------------------------------------------------------------------


def test_keys_and_roles_as_on_the_grpc_port(keyed_server: GenServer, keys: KeysFile) -> None:
    body = {"prompt": "tweed", "steps": 2}
    none = requests.post(url(keyed_server, "txt2img"), json=body, timeout=60)
    assert none.status_code == 401 and none.headers["WWW-Authenticate"].startswith("Basic")
    wrong = requests.post(
        url(keyed_server, "txt2img"), json=body, auth=("designer", "atk_nope_nope"), timeout=60
    )
    assert wrong.status_code == 401
    read_only = requests.post(url(keyed_server, "txt2img"), json=body, auth=("x", keys.a_read), timeout=60)
    assert read_only.status_code == 403 and "write" in read_only.json()["detail"]
    assert (
        requests.get(url(keyed_server, "sd-models"), auth=("x", keys.a_read), timeout=60).status_code == 200
    )
    bearer = {"Authorization": f"Bearer {keys.a}"}
    assert (
        requests.post(url(keyed_server, "txt2img"), json=body, headers=bearer, timeout=120).status_code == 200
    )
    assert (
        requests.get(url(keyed_server, "progress"), headers={"X-Api-Key": keys.a}, timeout=60).status_code
        == 200
    )
    other_tenant = {**bearer, "X-Atelier-Tenant": "tenant-b"}
    assert requests.get(url(keyed_server, "options"), headers=other_tenant, timeout=60).status_code == 403
    assert (
        requests.post(url(keyed_server, "options"), json={}, auth=("x", keys.a_read), timeout=60).status_code
        == 403
    )


def test_options_progress_and_interrupt_stay_with_their_tenant(
    keyed_server: GenServer, keys: KeysFile
) -> None:
    a, b = ("x", keys.a), ("x", keys.b)
    assert requests.post(
        url(keyed_server, "options"), json={"sd_model_checkpoint": "tiny-single"}, auth=a, timeout=60
    ).ok
    assert (
        requests.get(url(keyed_server, "options"), auth=a, timeout=60).json()["sd_model_checkpoint"]
        == "tiny-single.safetensors"
    )
    assert (
        requests.get(url(keyed_server, "options"), auth=b, timeout=60).json()["sd_model_checkpoint"] == "tiny"
    )

    # A long job of tenant A: B sees no job and cannot interrupt it; A sees its progress and can.
    outcome: dict[str, Any] = {}

    def run() -> None:
        long = {"prompt": "a long job", "steps": 150, "batch_size": 8, "width": 64, "height": 64, "seed": 1}
        outcome["response"] = requests.post(url(keyed_server, "txt2img"), json=long, auth=a, timeout=600)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = requests.get(url(keyed_server, "progress"), auth=a, timeout=60).json()
        if seen["state"]["sampling_step"] > 0:
            break
        time.sleep(0.02)
    assert seen["state"]["job_count"] == 1 and seen["state"]["job"] == "txt2img", seen
    assert 0 < seen["progress"] < 1 and seen["state"]["sampling_steps"] == 150
    while time.monotonic() < deadline and seen["current_image"] is None:  # a preview every 10 steps
        seen = requests.get(url(keyed_server, "progress"), auth=a, timeout=60).json()
        time.sleep(0.02)
    # The engine's cheap preview: latents mapped linearly to RGB, 1/8 of the image a side.
    assert Image.open(io.BytesIO(base64.b64decode(seen["current_image"]))).size == (8, 8)
    skipped = requests.get(url(keyed_server, "progress?skip_current_image=true"), auth=a, timeout=60).json()
    assert skipped["current_image"] is None
    theirs = requests.get(url(keyed_server, "progress"), auth=b, timeout=60).json()
    assert theirs["state"]["job_count"] == 0 and theirs["current_image"] is None
    assert requests.post(url(keyed_server, "interrupt"), auth=b, timeout=60).ok
    time.sleep(0.2)
    assert thread.is_alive()  # B's interrupt did not touch A's job
    assert requests.post(url(keyed_server, "interrupt"), auth=a, timeout=60).ok
    thread.join(120)
    response = outcome["response"]
    assert response.status_code == 409 and "interrupted" in response.json()["detail"]
    assert requests.get(url(keyed_server, "progress"), auth=a, timeout=60).json()["state"]["job_count"] == 0


# -- bad input answers 4xx with the field, never 500 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("txt2img", {"prompt": "x", "steps": 0}, "steps"),
        ("txt2img", {"prompt": "x", "steps": 500}, "steps"),
        ("txt2img", {"prompt": "x", "width": 65, "height": 64}, "width"),
        ("txt2img", {"prompt": "x", "width": 64}, "height"),
        ("txt2img", {"prompt": "x", "cfg_scale": 99}, "cfg_scale"),
        ("txt2img", {"prompt": "x", "batch_size": 4, "n_iter": 4}, "n_iter"),
        ("txt2img", {"prompt": "x", "seed": -7}, "seed"),
        ("txt2img", {"prompt": "x", "sampler_name": "DPM++ 2M Karras"}, "sampler_name"),
        ("txt2img", {"prompt": "x", "scheduler": "Karras"}, "scheduler"),
        ("txt2img", {"prompt": "x", "enable_hr": True}, "enable_hr"),
        (
            "txt2img",
            {"prompt": "x", "alwayson_scripts": {"ControlNet": {"args": [{"enabled": True}]}}},
            "alwayson_scripts",
        ),
        ("txt2img", {"prompt": ""}, "prompt"),
        ("txt2img", {"prompt": "x", "steps": "many"}, "steps"),
        ("txt2img", {"prompt": "x\u0000y"}, "prompt"),
        ("img2img", {"prompt": "x"}, "init_images"),
        ("img2img", {"prompt": "x", "init_images": ["%%%not base64"]}, "init_images[0]"),
        (
            "img2img",
            {"prompt": "x", "init_images": [base64.b64encode(b"not an image").decode()]},
            "init_images[0]",
        ),
        ("img2img", {"prompt": "x", "init_images": ["https://example.com/a.png"]}, "init_images[0]"),
        ("img2img", {"prompt": "x", "init_images": ["R0lG"], "resize_mode": 2}, "resize_mode"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    http_server: GenServer, route: str, body: dict[str, Any], field: str
) -> None:
    response = requests.post(url(http_server, route), json=body, timeout=60)
    assert response.status_code == 422, response.text
    assert field in [v["field"] for v in response.json()["violations"]], response.json()


def test_bad_bodies_and_masks(http_server: GenServer) -> None:
    not_json = requests.post(url(http_server, "txt2img"), data=b"{prompt", timeout=60)
    assert not_json.status_code == 422 and "JSON" in not_json.json()["detail"]
    assert requests.post(url(http_server, "txt2img"), json=["prompt"], timeout=60).status_code == 422
    init = b64_png(photo(64, 64))
    small_mask = b64_png(np.full((32, 32, 3), 255, np.uint8))
    r = requests.post(
        url(http_server, "img2img"),
        json={"prompt": "x", "init_images": [init], "mask": small_mask},
        timeout=60,
    )
    assert r.status_code == 422 and "mask" in [v["field"] for v in r.json()["violations"]]
    empty_mask = b64_png(np.zeros((64, 64, 3), np.uint8))
    r = requests.post(
        url(http_server, "img2img"),
        json={"prompt": "x", "init_images": [init], "mask": empty_mask},
        timeout=60,
    )
    assert r.status_code == 422 and "empty" in r.text
    r = requests.post(
        url(http_server, "txt2img"),
        json={"prompt": "x", "override_settings": {"sd_model_checkpoint": "nope"}},
        timeout=60,
    )
    assert r.status_code == 404


def test_config_shows_the_http_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from atelier.cli.main import app

    monkeypatch.delenv("ATELIER_GENERATION_A1111_PORT", raising=False)
    monkeypatch.delenv("ATELIER_A1111_PORT", raising=False)
    assert "a1111_port = off" in CliRunner().invoke(app, ["config", "generation"]).output
    monkeypatch.setenv("ATELIER_GENERATION_A1111_PORT", "7860")
    assert "a1111_port = 7860" in CliRunner().invoke(app, ["config", "generation"]).output


def test_a_client_that_hangs_up_cancels_its_job(http_server: GenServer) -> None:
    from atelier.generation.webui import PREFIX, ROUTES

    api = http_server.server.spec.start.__self__.api  # the WebUIServer's WebUIApi
    assert {r.path for r in api.app.routes if r.path.startswith(PREFIX)} == ROUTES  # the metric's labels
    jobs: list[Any] = []
    add = api.jobs.add
    api.jobs.add = lambda job: (jobs.append(job), add(job))
    long = {"prompt": "a long job", "steps": 150, "batch_size": 8, "width": 64, "height": 64, "seed": 1}
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(url(http_server, "txt2img"), json=long, timeout=(5, 1.5))
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and requests.get(url(http_server, "progress"), timeout=30).json()["state"]["job_count"]
    ):
        time.sleep(0.05)
    assert len(jobs) == 1 and jobs[0].cancellation.reason == "the client went away"
    assert jobs[0].step < 150  # stopped between steps, not run to the end
    # The device is free again: the next call runs.
    quick = requests.post(url(http_server, "txt2img"), json={"prompt": "next", "steps": 2}, timeout=120)
    assert quick.status_code == 200


def test_http_calls_take_the_grpc_ports_slots_and_stop_with_the_server(
    start_server: Callable[..., Any], models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grpc

    from atelier.generation.server import build
    from atelier.generation.v1 import generation_pb2_grpc

    monkeypatch.setenv("ATELIER_GENERATION_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    monkeypatch.setenv("ATELIER_GENERATION_A1111_PORT", "0")
    server = start_server("generation", build, max_concurrent_rpcs=1)
    http = GenServer(server, None, None)  # type: ignore[arg-type]
    outcome: dict[str, Any] = {}
    long = {"prompt": "a long job", "steps": 150, "batch_size": 8, "width": 64, "height": 64, "seed": 1}
    thread = threading.Thread(
        target=lambda: outcome.update(r=requests.post(url(http, "txt2img"), json=long, timeout=600))
    )
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if requests.get(url(http, "progress"), timeout=30).json()["state"]["job_count"]:
            break
        time.sleep(0.02)
    refused = requests.post(url(http, "txt2img"), json={"prompt": "x", "steps": 2}, timeout=60)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "overloaded" in refused.json()["detail"]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = generation_pb2_grpc.GenerationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(
                stub.Generate(
                    pb.GenerateRequest(model="tiny", settings=pb.GenerationSettings(prompt="x")), timeout=60
                )
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Reads are not shed: the caller can still watch and stop its job.
    assert requests.get(url(http, "sd-models"), timeout=30).status_code == 200
    assert requests.post(url(http, "interrupt"), timeout=30).ok
    thread.join(120)
    assert outcome["r"].status_code == 409
    assert (
        requests.post(url(http, "txt2img"), json={"prompt": "x", "steps": 2}, timeout=120).status_code == 200
    )

    assert server.stop(grace_s=2)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url(http, "sd-models"), timeout=5)


def test_the_http_port_serves_mtls_with_the_grpc_ports_certificates(
    start_server: Callable[..., Any], models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atelier.generation.server import build
    from tests.integration.certs import make_certs

    (tmp_path / "certs").mkdir()
    certs = make_certs(tmp_path / "certs")
    monkeypatch.setenv("ATELIER_GENERATION_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    monkeypatch.setenv("ATELIER_GENERATION_A1111_PORT", "0")
    server = start_server(
        "generation",
        build,
        wait=False,
        tls_cert_file=str(certs.server_crt),
        tls_key_file=str(certs.server_key),
        tls_client_ca_file=str(certs.ca_crt),
    )
    base = f"https://127.0.0.1:{server.spec.ports['a1111_port']}/sdapi/v1"
    ok = requests.get(
        f"{base}/sd-models",
        verify=str(certs.ca_crt),
        cert=(str(certs.client_crt), str(certs.client_key)),
        timeout=30,
    )
    assert ok.status_code == 200 and "tiny" in {m["title"] for m in ok.json()}
    for cert in (None, (str(certs.stranger_crt), str(certs.stranger_key))):
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(f"{base}/sd-models", verify=str(certs.ca_crt), cert=cert, timeout=30)
    with pytest.raises(requests.exceptions.ConnectionError):  # no plaintext on the TLS port
        requests.get(f"http://127.0.0.1:{server.spec.ports['a1111_port']}/sdapi/v1/sd-models", timeout=30)
