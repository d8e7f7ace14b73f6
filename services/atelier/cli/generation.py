"""`atelier gen`: Stable Diffusion on the running generation service, and model-free seamless tiles.

atelier gen models
atelier gen txt2img --model NAME --prompt "paisley print" --tileable -n 4 -o out/
atelier gen txt2img --model sdxl-base --refiner sdxl-refiner --refiner-switch 0.8 --prompt "..." -o out/
atelier gen img2img photo.jpg --model NAME --prompt "..." --negative "..." --strength 0.75 --guidance 7.5 --rounds 2 -o out/
atelier gen sketch sketch.png --model NAME --prompt "..." [--controlnet NAME] -o out/
atelier gen inpaint model.jpg mask.png --model NAME --prompt "a linen blazer" -o out/
atelier gen tile texture.jpg -o tile.png
atelier gen session ID -o out/
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atelier.cli import client
from atelier.common.v1 import image_pb2
from atelier.generation.v1 import generation_pb2 as pb
from atelier.generation.v1 import generation_pb2_grpc
from atelier.runtime.config import DEFAULT_PORTS

app = typer.Typer(
    help="Image generation: prints, textures, img2img refinement, sketches, inpainting, tiles.",
    no_args_is_help=True,
)
console = Console()

DEFAULT_ADDRESS = f"{os.environ.get('ATELIER_HOST', '127.0.0.1')}:" + os.environ.get(
    "ATELIER_GENERATION_PORT", str(DEFAULT_PORTS["generation"][0])
)
AddressOption = typer.Option(DEFAULT_ADDRESS, "--address", help="the generation service, host:port")
STATE_NAMES = {v: k.removeprefix("MODEL_STATE_").lower() for k, v in pb.ModelState.items()}


def _stub(address: str) -> generation_pb2_grpc.GenerationServiceStub:
    channel = client.channel(address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    return generation_pb2_grpc.GenerationServiceStub(channel)


def _fail(exc: grpc.RpcError) -> typer.Exit:
    console.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    try:
        from atelier.runtime.status import field_violations

        for field, why in field_violations(exc):
            console.print(f"  {field}: {why}")
    except Exception:  # the details are a courtesy; the status line above is the message
        pass
    return typer.Exit(1)


def _image(path: Path) -> image_pb2.Image:
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    return image_pb2.Image(data=path.read_bytes())


def _lora(item: str) -> tuple[str, float]:
    """``name`` or ``name:weight`` (the web UIs' <lora:name:weight>); the weight defaults to 1.0."""
    name, _, weight = item.rpartition(":") if ":" in item else (item, "", "1")
    try:
        return name, float(weight)
    except ValueError:
        raise typer.BadParameter(f"--lora {item!r}: the weight after ':' must be a number") from None


def _settings(
    prompt: str,
    negative: str,
    strength: float,
    guidance: float,
    steps: int,
    scheduler: str,
    seed: int,
    width: int,
    height: int,
    tileable: bool,
    lora: list[str] | None,
    controlnet: str = "",
    refiner: str = "",
    refiner_switch: float = 0.0,
) -> pb.GenerationSettings:
    return pb.GenerationSettings(
        prompt=prompt,
        negative_prompt=negative,
        strength=strength,
        guidance_scale=guidance,
        steps=steps,
        scheduler=scheduler,
        seed=seed,
        width_px=width,
        height_px=height,
        tileable=tileable,
        loras=[_lora(item)[0] for item in lora or []],
        lora_weights=[_lora(item)[1] for item in lora or []] if any(":" in i for i in lora or []) else [],
        controlnet=controlnet,
        refiner=refiner,
        refiner_switch=refiner_switch,
    )


RefinerOption = typer.Option("", help="an installed SDXL refiner (or SDXL checkpoint) as a second stage")
RefinerSwitchOption = typer.Option(
    0.0, help="share of the steps the base model runs before the refiner, (0, 1) (0: 0.8)"
)


def _run(
    stub: generation_pb2_grpc.GenerationServiceStub,
    request: pb.GenerateRequest,
    out: Path,
    prefix: str,
    label: str,
) -> tuple[str, list[Path]]:
    """One Generate call with a progress bar; writes the PNGs; returns (session id, files)."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    session_id = request.session_id
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(label, total=None)
        try:
            for event in stub.Generate(request):
                if event.HasField("progress"):
                    p = event.progress
                    if p.total_steps:
                        progress.update(task, total=p.total_steps, completed=p.step, description=label)
                    elif p.queue_position:
                        progress.update(task, description=f"{label} (queued, position {p.queue_position})")
                    if p.preview.data:
                        (out / f"{prefix}preview.png").write_bytes(p.preview.data)
                else:
                    session_id = event.session_id
                    path = out / f"{prefix}{event.image.index:02d}-seed{event.image.seed}.png"
                    path.write_bytes(event.image.image.data)
                    written.append(path)
        except grpc.RpcError as exc:
            raise _fail(exc) from None
    return session_id, written


StepsOption = typer.Option(0, help="denoising steps (0: the model's default)")
SeedOption = typer.Option(0, help="seed (0: random; printed in the file names)")
SizeHelp = "multiple of 8 (0: the input's or the model's size)"


@app.command()
def models(address: str = AddressOption) -> None:
    """The installed models and whether each is loaded."""
    try:
        reply = _stub(address).ListModels(pb.ListModelsRequest(), timeout=30)
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    table = Table(
        title=f"models on {address} ({reply.device}, {reply.memory_used_bytes / 1e6:.0f} of "
        f"{reply.memory_budget_bytes / 1e6:.0f} MB used)"
    )
    for column in ("name", "kind", "base", "state", "licence", "error"):
        table.add_column(column)
    for m in reply.models:
        table.add_row(m.name, m.kind, m.base, STATE_NAMES.get(m.state, "?"), m.licence, m.error)
    console.print(table)
    console.print(f"models directory (a server started from this shell): {_models_dir()}")
    if not reply.models:
        console.print(
            "put a .safetensors or .ckpt checkpoint (SD 1.x, 2.x, SDXL) there, or run "
            "`python -m atelier.generation.testing` for tiny demo models"
        )


def _models_dir() -> str:
    from atelier.generation.paths import models_dir

    try:
        return str(models_dir())
    except ValueError as exc:  # a setting the server would refuse too
        return f"? ({exc})"


@app.command()
def txt2img(
    model: str = typer.Option(..., help="installed checkpoint"),
    prompt: str = typer.Option(..., help="what to draw"),
    negative: str = typer.Option("", help="what to avoid"),
    guidance: float = typer.Option(0.0, help="classifier-free guidance (0: model default 7.5)"),
    steps: int = StepsOption,
    scheduler: str = typer.Option("", help="ddim, euler, euler_a, dpmpp_2m, ..."),
    seed: int = SeedOption,
    width: int = typer.Option(0, help=SizeHelp),
    height: int = typer.Option(0, help=SizeHelp),
    tileable: bool = typer.Option(False, help="seamless tile (prints, textures)"),
    lora: list[str] = typer.Option(
        None, help="LoRA adapter to apply, NAME or NAME:WEIGHT; repeat for several"
    ),
    refiner: str = RefinerOption,
    refiner_switch: float = RefinerSwitchOption,
    n: int = typer.Option(1, "-n", help="variations (seeds seed, seed+1, ...)"),
    preview_every: int = typer.Option(0, help="write a low-res preview every N steps"),
    out: Path = typer.Option(Path("out"), "-o", help="output folder"),
    address: str = AddressOption,
) -> None:
    """Text to image."""
    request = pb.GenerateRequest(
        model=model,
        mode=pb.MODE_TEXT_TO_IMAGE,
        num_images=n,
        preview_every=preview_every,
        settings=_settings(
            prompt,
            negative,
            0.0,
            guidance,
            steps,
            scheduler,
            seed,
            width,
            height,
            tileable,
            lora,
            refiner=refiner,
            refiner_switch=refiner_switch,
        ),
    )
    session, files = _run(_stub(address), request, out, "", "generating")
    console.print(f"session {session}: " + ", ".join(str(f) for f in files))


@app.command()
def img2img(
    photo: Path = typer.Argument(..., help="the input photo or concept"),
    model: str = typer.Option("", help="installed checkpoint (default: the first one installed)"),
    prompt: str = typer.Option(..., help="what the result should be"),
    negative: str = typer.Option("", help="what to avoid"),
    strength: float = typer.Option(0.75, help="how much to change, (0, 1]"),
    guidance: float = typer.Option(7.5, help="classifier-free guidance"),
    steps: int = StepsOption,
    scheduler: str = typer.Option("", help="ddim, euler, euler_a, dpmpp_2m, ..."),
    seed: int = SeedOption,
    width: int = typer.Option(0, help=SizeHelp),
    height: int = typer.Option(0, help=SizeHelp),
    rounds: int = typer.Option(1, help="refinement rounds: each feeds the previous output back in"),
    tileable: bool = typer.Option(False, help="seamless tile"),
    lora: list[str] = typer.Option(
        None, help="LoRA adapter to apply, NAME or NAME:WEIGHT; repeat for several"
    ),
    refiner: str = RefinerOption,
    refiner_switch: float = RefinerSwitchOption,
    n: int = typer.Option(1, "-n", help="variations in the first round (later rounds refine the first)"),
    out: Path = typer.Option(Path("out"), "-o", help="output folder"),
    address: str = AddressOption,
) -> None:
    """Image to image, optionally in several refinement rounds (the session is kept on the server)."""
    stub = _stub(address)
    model = model or _first_checkpoint(stub)
    settings = _settings(
        prompt,
        negative,
        strength,
        guidance,
        steps,
        scheduler,
        seed,
        width,
        height,
        tileable,
        lora,
        refiner=refiner,
        refiner_switch=refiner_switch,
    )
    session = ""
    for round_no in range(1, rounds + 1):
        request = pb.GenerateRequest(
            model=model, mode=pb.MODE_IMAGE_TO_IMAGE, settings=settings, num_images=n if round_no == 1 else 1
        )
        if session:
            request.session_id = session
        else:
            request.init_image.CopyFrom(_image(photo))
        session, files = _run(stub, request, out, f"round{round_no}-", f"round {round_no}/{rounds}")
        console.print(f"round {round_no}: " + ", ".join(str(f) for f in files))
    (out / "session.json").write_text(json.dumps({"session_id": session, "model": model, "rounds": rounds}))
    console.print(f"session {session} ({rounds} rounds): `atelier gen session {session}` shows it")


@app.command()
def sketch(
    drawing: Path = typer.Argument(..., help="the sketch (dark lines on light, or light on dark)"),
    model: str = typer.Option("", help="installed checkpoint (default: the first one)"),
    prompt: str = typer.Option(..., help="what the illustration shows"),
    negative: str = typer.Option("", help="what to avoid"),
    controlnet: str = typer.Option("", help="an installed scribble/lineart ControlNet"),
    strength: float = typer.Option(0.75, help="how far from the sketch, (0, 1]"),
    steps: int = StepsOption,
    seed: int = SeedOption,
    out: Path = typer.Option(Path("out"), "-o", help="output folder"),
    address: str = AddressOption,
) -> None:
    """Sketch to illustration."""
    stub = _stub(address)
    request = pb.GenerateRequest(
        model=model or _first_checkpoint(stub),
        mode=pb.MODE_SKETCH,
        init_image=_image(drawing),
        settings=_settings(prompt, negative, strength, 0.0, steps, "", seed, 0, 0, False, None, controlnet),
    )
    session, files = _run(stub, request, out, "sketch-", "illustrating")
    console.print(f"session {session}: " + ", ".join(str(f) for f in files))


@app.command()
def inpaint(
    photo: Path = typer.Argument(..., help="the model photo"),
    mask: Path = typer.Argument(..., help="same-size mask: white where the new garment goes"),
    model: str = typer.Option("", help="installed checkpoint (default: the first one)"),
    prompt: str = typer.Option(..., help="the garment to paint in"),
    negative: str = typer.Option("", help="what to avoid"),
    strength: float = typer.Option(1.0, help="(0, 1]"),
    steps: int = StepsOption,
    seed: int = SeedOption,
    out: Path = typer.Option(Path("out"), "-o", help="output folder"),
    address: str = AddressOption,
) -> None:
    """Repaint the mask's region of a photo (dress a model in a new garment)."""
    stub = _stub(address)
    request = pb.GenerateRequest(
        model=model or _first_checkpoint(stub),
        mode=pb.MODE_INPAINT,
        init_image=_image(photo),
        mask=image_pb2.Mask(data=_image(mask).data),
        settings=_settings(prompt, negative, strength, 0.0, steps, "", seed, 0, 0, False, None),
    )
    session, files = _run(stub, request, out, "inpaint-", "inpainting")
    console.print(f"session {session}: " + ", ".join(str(f) for f in files))


@app.command()
def tile(
    texture: Path = typer.Argument(..., help="a fabric photo"),
    out: Path = typer.Option(Path("tile.png"), "-o", help="the seamless tile (PNG)"),
    blend: float = typer.Option(0.0, help="blend band, share of the size (0..0.5; 0: 0.25)"),
    preview: bool = typer.Option(True, help="also write <out>-2x2.png, the tile repeated 2 x 2"),
    address: str = AddressOption,
) -> None:
    """Make a seamless tile from any fabric photo (no diffusion model needed)."""
    try:
        reply = _stub(address).MakeTileable(
            pb.MakeTileableRequest(image=_image(texture), blend=blend), timeout=60
        )
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(reply.tile.data)
    if preview:
        import io

        from PIL import Image

        one = Image.open(io.BytesIO(reply.tile.data))
        four = Image.new(one.mode, (one.width * 2, one.height * 2))
        for x in (0, one.width):
            for y in (0, one.height):
                four.paste(one, (x, y))
        four.save(out.with_name(out.stem + "-2x2.png"))
    console.print(
        f"{out}: {reply.tile.width_px} x {reply.tile.height_px} px, seam error {reply.seam_error:.2f} "
        f"(was {reply.seam_error_before:.2f}; neighbouring pixels differ by {reply.interior_error:.2f})"
    )


@app.command()
def session(
    session_id: str = typer.Argument(...),
    out: Path = typer.Option(None, "-o", help="write the last round's images here"),
    address: str = AddressOption,
) -> None:
    """A refinement session's rounds (and its last images)."""
    try:
        reply = _stub(address).GetSession(pb.GetSessionRequest(session_id=session_id), timeout=30)
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    table = Table(title=f"session {reply.session_id} on {reply.model}: {reply.rounds} rounds")
    for column in ("round", "prompt", "strength", "guidance", "steps", "seed"):
        table.add_column(column)
    for i, s in enumerate(reply.history, start=1):
        table.add_row(str(i), s.prompt, f"{s.strength:g}", f"{s.guidance_scale:g}", str(s.steps), str(s.seed))
    console.print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(reply.last_images):
            (out / f"session-{session_id[:8]}-{i:02d}.png").write_bytes(image.data)


def _first_checkpoint(stub: generation_pb2_grpc.GenerationServiceStub) -> str:
    try:
        reply = stub.ListModels(pb.ListModelsRequest(), timeout=30)
    except grpc.RpcError as exc:
        raise _fail(exc) from None
    for m in reply.models:
        if m.kind in ("diffusers", "single_file") and m.state != pb.MODEL_STATE_FAILED:
            return m.name
    console.print(
        "[red]no checkpoint is installed[/red]: put one in the models directory (see `atelier gen models`)"
    )
    raise typer.Exit(1)
