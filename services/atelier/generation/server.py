"""The generation service's registration with the runtime.

Settings (env ``ATELIER_GENERATION_<NAME>`` or ``ATELIER_<NAME>``):
MODELS_DIR (default <ATELIER_DATA_DIR>/models/generation), PRELOAD ("none", "all", or model names, comma-separated),
MEMORY_BUDGET_MB (8192), QUEUE_SIZE (jobs waiting per device, 4), MAX_BATCH_IMAGES (1: compatible
text-to-image requests of different callers share one pipeline call up to this many images), DEVICE ("auto": cuda if
available, else cpu), DTYPE ("auto": float16 on CUDA, float32 on CPU; or bfloat16), A1111_PORT (unset: off; a port number: the
A1111-compatible HTTP API there, atelier.generation.webui; 0: any free port).
"""

from __future__ import annotations

from atelier.generation import paths
from atelier.generation.models import DeviceSettings
from atelier.generation.service import GenerationService
from atelier.generation.servicer import GenerationServicer
from atelier.generation.sessions import SessionStore
from atelier.generation.v1 import generation_pb2, generation_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec

SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name


def device_settings(device: str, dtype: str) -> DeviceSettings:
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(
            f"ATELIER_GENERATION_DTYPE must be auto, float32, float16 or bfloat16, got {dtype!r}"
        )
    return DeviceSettings(device=device, dtype=dtype)


def build(runtime: Runtime) -> ServiceSpec:
    config = runtime.config
    models_dir = paths.models_dir(config)
    device = device_settings(config.setting("DEVICE", "auto"), config.setting("DTYPE", "auto"))
    service = GenerationService(
        models_dir=models_dir,
        sessions=SessionStore(runtime.store),
        device=device,
        memory_budget_bytes=int(float(config.setting("MEMORY_BUDGET_MB", "8192")) * 1024 * 1024),
        max_waiting=int(config.setting("QUEUE_SIZE", "4")),
        max_batch_images=int(config.setting("MAX_BATCH_IMAGES", "1")),
        on_health=runtime.set_health,
    )
    servicer = GenerationServicer(service)
    http = None
    a1111_port = config.setting("A1111_PORT", "").strip()
    if a1111_port and a1111_port.lower() not in ("off", "none"):
        from atelier.generation import webui  # FastAPI and uvicorn only when the port is wanted

        try:
            port = int(a1111_port)
        except ValueError:
            raise ValueError(
                f"ATELIER_GENERATION_A1111_PORT must be a port number, got {a1111_port!r}"
            ) from None
        api = webui.WebUIApi(
            service,
            servicer,
            runtime.authoriser,
            runtime.admission,
            webui.OptionsStore(runtime.store),
            max_body_bytes=config.max_message_bytes,
        )
        http = webui.WebUIServer(api, config, port)
    preload = config.setting("PRELOAD", "none").strip()

    def load() -> None:
        service.list_models()  # publishes each model's health now that the health servicer exists
        if preload == "all":
            service.cache.preload(None)
        elif preload and preload != "none":
            service.cache.preload([name.strip() for name in preload.split(",") if name.strip()])

    def close() -> None:
        if http is not None:
            http.close()  # its calls in flight end first: they use the queue
        service.close()

    return ServiceSpec(
        name="generation",
        servicers=[(generation_pb2_grpc.add_GenerationServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        load=load,
        close=close,
        health_names=service.cache.health_names(),
        start=http.start if http is not None else None,
        drain=http.drain if http is not None else None,
        ports={"a1111_port": http.port} if http is not None else {},
    )
