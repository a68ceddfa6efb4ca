"""The committed modules in service/wire/gen are exactly what scripts/generate_wire.py makes."""

import ast
import filecmp
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
GEN = Path("service") / "wire" / "gen"
PROTOS = REPO_ROOT / "service" / "wire" / "protos"
SCRIPT = REPO_ROOT / "scripts" / "generate_wire.py"


def _pinned_grpcio_tools() -> str:
    tree = ast.parse(SCRIPT.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "PINNED_GRPCIO_TOOLS":
            return node.value.value
    raise AssertionError("PINNED_GRPCIO_TOOLS not found in the script")


def _files(root: Path) -> set[Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def _embedded_descriptor(module: Path) -> descriptor_pb2.FileDescriptorProto:
    """The serialized FileDescriptorProto a generated module registers, read without importing."""
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return descriptor_pb2.FileDescriptorProto.FromString(node.args[0].value)
    raise AssertionError(f"no AddSerializedFile call in {module}")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wire-gen")
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], check=True, capture_output=True
    )
    return out / GEN


def test_same_files_are_generated_and_committed(fresh: Path):
    fresh_files, committed_files = _files(fresh), _files(REPO_ROOT / GEN)
    # Not vacuous: one module and one stub per proto file.
    protos = list(PROTOS.rglob("*.proto"))
    assert len([p for p in fresh_files if p.name.endswith("_pb2.py")]) == len(protos) > 15
    assert len([p for p in fresh_files if p.name.endswith("_pb2.pyi")]) == len(protos)
    assert sorted(map(str, fresh_files - committed_files)) == [], "not committed"
    assert sorted(map(str, committed_files - fresh_files)) == [], "stale, no longer generated"


def test_committed_modules_embed_the_current_protos(fresh: Path):
    # Independent of the protoc version: what each committed module registers is what the
    # .proto files say today.
    modules = sorted(p for p in _files(fresh) if p.name.endswith("_pb2.py"))
    assert modules
    stale = [
        str(p)
        for p in modules
        if _embedded_descriptor(fresh / p) != _embedded_descriptor(REPO_ROOT / GEN / p)
    ]
    assert stale == [], "run: python scripts/generate_wire.py"


@pytest.fixture
def pinned_protoc() -> None:
    """Byte-level comparisons only make sense with the grpcio-tools the files were made with."""
    pinned = _pinned_grpcio_tools()
    installed = importlib.metadata.version("grpcio-tools")
    if installed != pinned:
        pytest.skip(f"grpcio-tools {installed} is not the pinned {pinned}: bytes would differ")


@pytest.mark.usefixtures("pinned_protoc")
def test_committed_files_are_byte_identical(fresh: Path):
    committed = REPO_ROOT / GEN
    different = [
        str(p)
        for p in sorted(_files(fresh))
        if (committed / p).exists() and not filecmp.cmp(fresh / p, committed / p, shallow=False)
    ]
    assert different == [], "run: python scripts/generate_wire.py"


@pytest.mark.usefixtures("pinned_protoc")
def test_check_mode_agrees():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_protos_use_prefixed_packages_and_declare_no_service():
    # A service in our package would get the wrong gRPC path: see service/wire/methods.py.
    protos = list(PROTOS.rglob("*.proto"))
    assert protos
    for proto in protos:
        text = proto.read_text()
        assert "\npackage nnserve.wire.tensorflow" in text, proto
        assert "\nservice " not in text, proto
