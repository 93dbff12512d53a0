"""Load model files safely, and name a model by its content.

Two formats are accepted, both zip archives that hold a program as data rather than pickled
Python objects:

* **TorchScript** (``torch.jit.script(m).save(path)`` / ``torch.jit.trace``): loaded with
  ``torch.jit.load``, whose C++ unpickler resolves only TorchScript classes and tensor rebuilders,
  never calls Python, and refuses any other global. Its pickles are also scanned first (without
  unpickling) so that a refusal comes with a clear message. The model's code runs TorchScript
  ops only.
* **torch.export** (``torch.export.save(ep, path)``): ``torch.export.load`` falls back to
  unrestricted ``pickle``/``torch.load(weights_only=False)`` for some entries, evaluates shape
  strings with sympy and ``exec``-s the program's guards, so the archive is vetted first: every
  pickled entry must load with ``torch.load(weights_only=True)``; custom/opaque objects and
  AOTInductor binaries are refused; graph call targets must be ``torch.ops.*``, ``_operator.*``
  or ``math.*``; names must be identifiers; shape expressions and guards must be plain
  arithmetic over sizes. The vetted in-memory bytes are the ones loaded. Vetting follows the
  archive layout of torch 2.x; an archive it does not understand is refused, not loaded.

Anything else -- a ``torch.save`` checkpoint or state dict, a raw pickle -- is refused with
:class:`~engine.errors.ModelError`. Nothing here calls ``torch.load(weights_only=False)``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
import pickletools
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from engine.errors import ModelError
from engine.models.card import ModelCard

log = logging.getLogger(__name__)

ModelFormat = Literal["torchscript", "torch_export"]

MODEL_ID_LENGTH = 16

# Globals a TorchScript pickle may name (the C++ unpickler enforces its own, similar list).
_TS_GLOBAL_MODULES_PREFIX = "__torch__"
_TS_GLOBALS_ALLOWED: dict[str, re.Pattern[str]] = {
    "torch._utils": re.compile(r"^_rebuild_[a-z_0-9]+$"),
    "torch.jit._pickle": re.compile(r"^(build_[a-z]+|restore_type_tag)$"),
    "torch": re.compile(
        r"^([A-Za-z0-9]+Storage|device|Size|per_tensor_affine|per_channel_affine"
        r"|per_channel_affine_float_qparams|per_tensor_symmetric|per_channel_symmetric)$"
    ),
    "collections": re.compile(r"^OrderedDict$"),
    "builtins": re.compile(r"^(set|frozenset|complex)$"),
}
# Pickle opcodes that TorchScript's writer never emits but that reach arbitrary callables.
_REFUSED_OPCODES = {"STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEWOBJ_EX"}

# torch.export archive layout (torch/export/pt2_archive/constants.py), relative to the root dir.
_PT2_ALLOWED_TOP = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")
_PT2_ALLOWED_FILES = {
    "archive_format",
    "archive_version",
    "version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    ".format_version",
    ".storage_alignment",
}
_PT2_TARGET_PREFIXES = ("torch.ops.", "_operator.", "math.")
# A shape expression: symbols (s0, u3), integers, arithmetic, comparisons and a few sympy calls.
_SYM_TOKEN = re.compile(
    r"[A-Za-z_][A-Za-z_0-9]*|\d+(?:\.\d+)?|'[^'\\]*'|\"[^\"\\]*\"|\*\*|//|[-+*/%(),<>=!&|~ ]"
)
_SYM_FUNCTIONS = {
    "FloorDiv",
    "ModularIndexing",
    "Where",
    "PythonMod",
    "Mod",
    "CleanDiv",
    "CeilToInt",
    "FloorToInt",
    "CeilDiv",
    "IntTrueDiv",
    "FloatTrueDiv",
    "TruncToInt",
    "TruncToFloat",
    "ToFloat",
    "Max",
    "Min",
    "Abs",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "And",
    "Or",
    "Not",
    "True",
    "False",
    "OpaqueUnaryFn_sqrt",
    "PowByNatural",
    "FloatPow",
    "RoundToInt",
    "RoundDecimal",
    "LShift",
    "RShift",
    "BitwiseFn_bitwise_and",
    "BitwiseFn_bitwise_or",
    "Identity",
    "Piecewise",
    "oo",
    "zoo",
    "Symbol",
    "Integer",
    "Rational",
    "Float",
    "Add",
    "Mul",
    "Pow",
    "StrictLessThan",
    "LessThan",
    "StrictGreaterThan",
    "GreaterThan",
    "Equality",
    "Unequality",
    "BooleanTrue",
    "BooleanFalse",
    "true",
    "false",
    "Tuple",
    "Half",
    "One",
    "Zero",
    "NegativeOne",
    "Infinity",
    "NegativeInfinity",
}
_SYM_ASSUMPTIONS = {
    "positive",
    "negative",
    "nonnegative",
    "nonpositive",
    "nonzero",
    "zero",
    "integer",
    "real",
    "finite",
    "infinite",
    "even",
    "odd",
    "rational",
    "irrational",
    "commutative",
    "complex",
    "extended_real",
    "extended_positive",
    "extended_negative",
    "extended_nonnegative",
    "extended_nonpositive",
    "extended_nonzero",
    "prime",
    "composite",
    "imaginary",
    "hermitian",
    "algebraic",
    "transcendental",
    "noninteger",
    "precision",
}
_SYM_SYMBOL = re.compile(r"^[a-z]+\d+$")


def detect_model_format(path: Path | str) -> ModelFormat:
    """Say whether ``path`` is a TorchScript or a torch.export archive; refuse anything else."""
    return _detect(Path(path), _read_bytes(Path(path)))[0]


def load_model(path: Path | str, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a TorchScript or torch.export file onto ``device``, in eval mode, without unpickling.

    Raises :class:`ModelError` for a missing file, a pickle (``torch.save`` checkpoint, state
    dict, ``pickle.dump``), a vetting failure or a load error.
    """
    path = Path(path)
    payload = _read_bytes(path)
    model_format, root = _detect(path, payload)
    device = torch.device(device)
    if model_format == "torchscript":
        _vet_torchscript(path, payload, root)
        try:
            module = torch.jit.load(io.BytesIO(payload), map_location=device)
        except Exception as exc:  # the C++ loader raises bare RuntimeErrors
            raise ModelError(f"cannot load TorchScript model {path}: {_first_line(exc)}") from exc
        return module.eval()
    _vet_torch_export(path, payload, root)
    try:
        program = torch.export.load(io.BytesIO(payload))
        graph_module = program.module().to(device)
    except Exception as exc:
        raise ModelError(f"cannot load torch.export model {path}: {_first_line(exc)}") from exc
    return ExportedProgramModule(graph_module).eval()


class ExportedProgramModule(torch.nn.Module):
    """An exported program's module that tolerates ``.eval()``/``.train()``.

    ``ExportedProgram.module()`` raises on ``eval()``; the graph runs as it was exported (export
    in eval mode), so mode switches here only set the flag and never reach the graph.
    """

    def __init__(self, graph_module: torch.nn.Module) -> None:
        super().__init__()
        self.graph_module = graph_module

    def forward(self, x: torch.Tensor) -> Any:
        return self.graph_module(x)

    def train(self, mode: bool = True) -> ExportedProgramModule:
        self.training = mode
        return self


def model_id(model_path: Path | str, card: ModelCard) -> str:
    """Content address of a model: the first 16 hex characters of

    ``sha256( sha256(model file bytes) || sha256(card.canonical_json()) )``

    where ``||`` joins the two 32-byte digests. It changes when a byte of the file or any card
    field changes (name and version included), and not when the card file is merely reformatted.
    64 bits: collisions are negligible for any realistic registry.
    """
    file_digest = _sha256_file(Path(model_path))
    card_digest = hashlib.sha256(card.canonical_json()).digest()
    return hashlib.sha256(file_digest + card_digest).hexdigest()[:MODEL_ID_LENGTH]


# --------------------------------------------------------------------------------------------
# Detection


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist") from None
    except IsADirectoryError:
        raise ModelError(
            f"model file {path} is a directory, not a TorchScript/export file"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from None


def _sha256_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist") from None
    return digest.digest()


_EXPORT_HINT = (
    "Export the model instead: torch.jit.script(model).save(path) (or torch.jit.trace), "
    "or torch.export.save(torch.export.export(model, (example,)), path)."
)


def _detect(path: Path, payload: bytes) -> tuple[ModelFormat, str]:
    """Return the format and the archive's root directory name (with trailing '/')."""
    if not zipfile.is_zipfile(io.BytesIO(payload)):
        what = "a Python pickle" if payload[:1] == b"\x80" else "not a zip archive"
        raise ModelError(
            f"model file {path} is {what}: SlideFleet loads only TorchScript or torch.export "
            f"archives and never unpickles arbitrary objects. {_EXPORT_HINT}"
        )
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ModelError(
            f"model file {path} is a zip archive but not a PyTorch one ({len(names)} entries)"
        )
    root = next(iter(roots)) + "/"
    inner = {name[len(root) :] for name in names}
    if "archive_format" in inner:
        return "torch_export", root
    if "constants.pkl" in inner and any(name.startswith("code/") for name in inner):
        return "torchscript", root
    if "data.pkl" in inner:
        raise ModelError(
            f"model file {path} is a torch.save checkpoint (a pickle, e.g. a state dict or a "
            f"pickled module), which SlideFleet does not load: unpickling can run arbitrary code. "
            f"{_EXPORT_HINT}"
        )
    raise ModelError(f"model file {path} is a zip archive but neither TorchScript nor torch.export")


# --------------------------------------------------------------------------------------------
# TorchScript


def _vet_torchscript(path: Path, payload: bytes, root: str) -> None:
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        for name in archive.namelist():
            if name.endswith((".pkl", ".debug_pkl")):  # torch.jit.load reads both
                for module, attribute in _pickle_globals(archive.read(name), path, name):
                    if not _torchscript_global_allowed(module, attribute):
                        raise ModelError(
                            f"model file {path} ({name}) references {module}.{attribute}, which a "
                            "TorchScript archive never needs; it was refused without being "
                            "unpickled (SlideFleet never unpickles arbitrary objects)."
                        )


def _torchscript_global_allowed(module: str, attribute: str) -> bool:
    if module == _TS_GLOBAL_MODULES_PREFIX or module.startswith(_TS_GLOBAL_MODULES_PREFIX + "."):
        return True
    pattern = _TS_GLOBALS_ALLOWED.get(module)
    return bool(pattern and pattern.match(attribute))


def _pickle_globals(data: bytes, path: Path, entry: str) -> Iterator[tuple[str, str]]:
    """Yield every (module, name) a pickle imports, without executing it."""
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in _REFUSED_OPCODES:
                raise ModelError(
                    f"model file {path} ({entry}) uses the pickle opcode {opcode.name}, which "
                    "TorchScript never writes; refused without unpickling."
                )
            if opcode.name == "GLOBAL":
                module, _, attribute = str(argument).partition(" ")
                yield module, attribute
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"model file {path} ({entry}) is not a valid pickle stream: {exc}"
        ) from None


# --------------------------------------------------------------------------------------------
# torch.export


def _vet_torch_export(path: Path, payload: bytes, root: str) -> None:
    def refuse(why: str) -> ModelError:
        return ModelError(f"torch.export model {path} refused: {why}")

    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        entries = {name[len(root) :]: name for name in archive.namelist()}
        for inner in entries:
            if inner.endswith("/"):
                continue
            if inner not in _PT2_ALLOWED_FILES and not inner.startswith(_PT2_ALLOWED_TOP):
                raise refuse(
                    f"unexpected entry {inner!r} (AOTInductor/compiled packages and other "
                    "payloads are not loaded; save a plain torch.export program)"
                )
        if archive.read(entries["archive_format"]).decode().strip() != "pt2":
            raise refuse("archive_format is not 'pt2'")

        def read(inner: str) -> bytes:
            if inner not in entries:
                raise refuse(f"missing entry {inner!r}")
            return archive.read(entries[inner])

        raw_payloads: set[str] = set()
        for inner in entries:
            if not inner.endswith(".json") or not inner.startswith(
                ("data/weights/", "data/constants/")
            ):
                continue
            config = _json(read(inner), refuse, inner)
            directory = inner.rsplit("/", 1)[0] + "/"
            for fqn, meta in (config.get("config") or {}).items():
                path_name = str(meta.get("path_name", ""))
                if "/" in path_name or path_name.startswith("."):
                    raise refuse(f"{inner}: {fqn} names an odd payload path {path_name!r}")
                if path_name.startswith(("custom_obj", "opaque_obj")):
                    raise refuse(
                        f"{inner}: constant {fqn!r} is a pickled custom object ({path_name}); "
                        "only tensors are accepted"
                    )
                if not meta.get("use_pickle", False):
                    raw_payloads.add(directory + path_name)
        for inner in entries:
            if inner.endswith("/") or inner.endswith(".json") or inner in raw_payloads:
                continue
            if inner.startswith(("data/weights/", "data/constants/", "data/sample_inputs/")):
                blob = read(inner)
                if blob:
                    _check_weights_only(blob, refuse, inner)
        for inner in entries:
            if inner.startswith("models/") and inner.endswith(".json"):
                _vet_graph(_json(read(inner), refuse, inner), refuse, inner)


def _check_weights_only(blob: bytes, refuse: Any, inner: str) -> None:
    """Load a pickled entry with the restricted unpickler; anything it refuses is refused here."""
    try:
        torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise refuse(
            f"{inner} is a pickle that torch.load(weights_only=True) refuses "
            f"({_first_line(exc)}); only plain tensors are accepted"
        ) from None


def _json(blob: bytes, refuse: Any, inner: str) -> dict[str, Any]:
    try:
        value = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise refuse(f"{inner} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise refuse(f"{inner} is not a JSON object")
    return value


def _vet_graph(program: dict[str, Any], refuse: Any, inner: str) -> None:
    """Walk a serialized ExportedProgram: everything torch turns into code must be harmless.

    Call targets are resolved by name (``torch.*`` could reach ``torch.load``), shape strings go
    through ``sympy.sympify`` (an ``eval``), node names become identifiers in generated Python,
    and ``guards_code`` is ``exec``-ed by ``ExportedProgram.module()``.
    """
    for guard in program.get("guards_code") or []:
        _vet_guard(str(guard), refuse, inner)
    stack: list[Any] = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if not isinstance(value, str):
                    stack.append(value)
                elif key == "target" and not value.startswith(_PT2_TARGET_PREFIXES):
                    raise refuse(f"{inner}: graph calls {value!r}; only torch.ops.* are allowed")
                elif key == "expr_str":
                    _vet_sym_expr(value, refuse, inner)
                elif key in ("name", "as_name") and not value.isidentifier():
                    raise refuse(f"{inner}: graph value name {value!r} is not an identifier")
                elif key in ("parameter_name", "buffer_name", "fqn") and not all(
                    part.isidentifier() or part.isdigit() for part in value.split(".") if value
                ):
                    raise refuse(f"{inner}: {key} {value!r} is not a dotted name")
        elif isinstance(item, list):
            stack.extend(item)


def _vet_sym_expr(expr: str, refuse: Any, inner: str) -> None:
    position = 0
    while position < len(expr):
        match = _SYM_TOKEN.match(expr, position)
        if not match:
            raise refuse(f"{inner}: shape expression {expr!r} has unexpected text at {position}")
        token = match.group()
        if token[0] in "'\"":
            if not _SYM_SYMBOL.match(token[1:-1]):
                raise refuse(f"{inner}: shape expression {expr!r} quotes {token}")
        elif token[0].isalpha() or token[0] == "_":
            keyword = (
                expr[match.end() : match.end() + 1] == "="
                and expr[match.end() : match.end() + 2] != "=="
            )
            allowed = _SYM_ASSUMPTIONS if keyword else _SYM_FUNCTIONS
            if token not in allowed and not (not keyword and _SYM_SYMBOL.match(token)):
                raise refuse(f"{inner}: shape expression {expr!r} names {token!r}")
        position = match.end()


_GUARD_NODES = (
    ast.Expression,
    ast.Compare,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Constant,
    ast.Name,
    ast.Subscript,
    ast.Attribute,
    ast.Call,
    ast.Load,
    ast.Slice,
    ast.Tuple,
    ast.operator,
    ast.cmpop,
    ast.boolop,
    ast.unaryop,
)
_GUARD_NAMES = {"L", "math", "inf", "args"}
_GUARD_ATTRIBUTES = {"size", "stride", "storage_offset", "dim", "shape", "isnan", "inf"}


def _vet_guard(guard: str, refuse: Any, inner: str) -> None:
    """A guard must be a comparison over input sizes and constants (it is exec-ed on load)."""
    try:
        tree = ast.parse(guard, mode="eval")
    except SyntaxError:
        raise refuse(f"{inner}: guard {guard!r} is not a Python expression") from None
    for node in ast.walk(tree):
        ok = isinstance(node, _GUARD_NODES)
        if isinstance(node, ast.Name):
            ok = node.id in _GUARD_NAMES
        elif isinstance(node, ast.Attribute):
            ok = node.attr in _GUARD_ATTRIBUTES
        elif isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Attribute) and not node.keywords
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            ok = node.value.isidentifier()
        if not ok:
            raise refuse(f"{inner}: guard {guard!r} contains {ast.dump(node)[:60]}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
