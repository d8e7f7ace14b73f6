"""The body service's registration with the runtime.

Settings (env ``ATELIER_BODY_<NAME>``):
  POSE_MODEL  path of the PoseLandmarker bundle (default <sys.prefix>/share/atelier/models/body/pose_landmarker.task,
              i.e. .venv/share/... in a checkout, installed by ``make`` through
              ``python -m atelier.body.setup_models``); absent -> GrabCut, no landmarks.
  MATTE_MODEL  path of U^2-Net's ONNX matte, the torso outline's second opinion (default: u2net.onnx
              beside the pose bundle, installed by the same setup); empty or absent -> the pose
              model's outline alone (atelier.body.matte).
  MODEL_PARAMS  fitted body model JSON (default: the one shipped in the package).
  POPULATION  whom the predictions are for: ``soldier`` (default: ANSUR II's US Army people, the
              model as before) or ``civilian`` (US adults: height, weight and hip girth as NHANES
              2017-2020 measured them, the rest as in ANSUR II; heavy customers' hips are no
              longer predicted ~6 cm small, see atelier.body.statmodel).
"""

from __future__ import annotations

from pathlib import Path

from atelier.body.charts import ChartStore
from atelier.body.matte import MODEL_NAME as MATTE_NAME
from atelier.body.pose import PoseModel, default_bundle_path, load_pose_model
from atelier.body.servicer import BodyServicer
from atelier.body.statmodel import PARAMS_PATH, BodyModel
from atelier.body.v1 import body_pb2, body_pb2_grpc
from atelier.runtime.server import Runtime, ServiceSpec

SERVICE_NAME = body_pb2.DESCRIPTOR.services_by_name["BodyService"].full_name


def build(runtime: Runtime) -> ServiceSpec:
    config = runtime.config
    params = Path(config.setting("MODEL_PARAMS", str(PARAMS_PATH)))
    pose_path = Path(config.setting("POSE_MODEL", str(default_bundle_path())))
    matte_setting = config.setting("MATTE_MODEL", str(pose_path.parent / MATTE_NAME))
    population = config.setting("POPULATION", "soldier")

    fitted = BodyModel.load(params)  # a file fitted for other variables says so itself
    try:
        model = fitted.for_population(population)
    except ValueError as exc:  # an unknown population, or MODEL_PARAMS fitted without civilians
        raise ValueError(f"ATELIER_BODY_POPULATION={population!r}: {exc}") from None
    charts = ChartStore(runtime.store)
    servicer = BodyServicer(model, charts)
    loaded: list[PoseModel] = []

    def load() -> None:
        charts.migrate()
        servicer.pose_model = load_pose_model(pose_path, matte_setting)
        if servicer.pose_model is not None:
            loaded.append(servicer.pose_model)

    def close() -> None:
        for model in loaded:
            model.close()

    return ServiceSpec(
        name="body",
        servicers=[(body_pb2_grpc.add_BodyServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        load=load,
        close=close,
    )
