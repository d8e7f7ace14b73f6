"""The contracts: generated code is fresh, and every contract follows the house conventions
(Google AIP / buf lint rules that matter to callers)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

REPO = Path(__file__).resolve().parents[2]
PROTO_MODULES = sorted(
    f"atelier.{p.parent.parent.name}.v1.{p.stem}_pb2"
    for p in (REPO / "protos" / "atelier").glob("*/v1/*.proto")
)
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
# Fields holding a length must say their unit.
LENGTH_WORDS = {"width", "height", "length", "spacing", "margin", "depth", "girth"}


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "protos" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _files() -> list[FileDescriptor]:
    return [importlib.import_module(name).DESCRIPTOR for name in PROTO_MODULES]


def _enums(file: FileDescriptor) -> list[EnumDescriptor]:
    found = list(file.enum_types_by_name.values())

    def walk(msg: Descriptor) -> None:
        found.extend(msg.enum_types)
        for nested in msg.nested_types:
            walk(nested)

    for msg in file.message_types_by_name.values():
        walk(msg)
    return found


@pytest.mark.parametrize("module", PROTO_MODULES)
def test_contract_conventions(module: str) -> None:
    file = importlib.import_module(module).DESCRIPTOR
    problems: list[str] = []
    package_dir = "/".join(file.package.split("."))
    if not file.name.startswith(package_dir + "/"):
        problems.append(f"{file.name}: package {file.package} does not match its folder")
    if not re.fullmatch(r"atelier\.[a-z]+\.v\d+", file.package):
        problems.append(f"{file.name}: package {file.package} is not atelier.<name>.v<N>")
    for enum in _enums(file):
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
        first = enum.values[0]
        if first.number != 0 or first.name != prefix + "UNSPECIFIED":
            problems.append(f"enum {enum.full_name}: first value must be {prefix}UNSPECIFIED = 0")
        problems += [
            f"enum value {v.name} lacks prefix {prefix}" for v in enum.values if not v.name.startswith(prefix)
        ]
    for msg in file.message_types_by_name.values():
        if not PASCAL.match(msg.name):
            problems.append(f"message {msg.full_name} is not PascalCase")
        for fld in msg.fields:
            if not SNAKE.match(fld.name):
                problems.append(f"field {msg.name}.{fld.name} is not lower_snake_case")
            words = set(fld.name.split("_"))
            if (
                fld.type in (fld.TYPE_DOUBLE, fld.TYPE_FLOAT, fld.TYPE_INT32, fld.TYPE_INT64)
                and words & LENGTH_WORDS
                and not words & {"mm", "cm", "m", "px", "in", "yd", "m2", "mm2", "index", "count"}
            ):
                problems.append(f"field {msg.name}.{fld.name} holds a length without a unit in its name")
    for service in file.services_by_name.values():
        if not service.name.endswith("Service"):
            problems.append(f"service {service.full_name} should end in Service")
        request_types = [m.input_type.full_name for m in service.methods]
        for method in service.methods:
            if method.input_type.name != f"{method.name}Request":
                problems.append(
                    f"rpc {service.name}.{method.name} takes {method.input_type.name}, "
                    f"not {method.name}Request"
                )
        duplicates = {t for t in request_types if request_types.count(t) > 1}
        problems += [f"request {t} is shared by several RPCs" for t in sorted(duplicates)]
    assert not problems, "\n".join(problems)
