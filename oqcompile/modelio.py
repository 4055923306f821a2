"""Reading and writing ONNX files safely.

``load`` turns every way a file can be unreadable into one :class:`OQError` sentence, and
fills in the value shapes ONNX shape inference can derive (the TorchScript exporter writes
none; structure analysis needs static channel dims to see through token-flattening Reshapes).
Weights in external data stay memory-mapped (read-only arrays): a pass reads one weight's
pages when it needs them, and the mapping goes when the pass replaces the weight
(:func:`oqcompile.graph.replace_input`), so a compile holds about one copy of the model, not
two. The data file may be renamed over or deleted meanwhile (POSIX keeps a mapped file's
contents), not rewritten in place: nothing in oqcompile writes to its inputs.
``save`` never leaves a half-written file: it writes into a temporary folder next to the
target and renames into place; models whose weights exceed ``EXTERNAL_DATA_BYTES`` keep
their weights in ``<name>.data`` beside the ``.onnx`` file (ONNX external data).
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from oqcompile.errors import OQError

__all__ = ["EXTERNAL_DATA_BYTES", "check_writable", "load", "metadata", "save"]

logger = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 1 << 30


def load(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file; weights in external data are mapped now (a missing or short data file
    fails here) and read when used."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise OQError(f"{path}: no such file")
    try:
        model = ir.load(path)
        for graph in model.graphs():
            for value in graph.initializers.values():
                if isinstance(value.const_value, ir.ExternalTensor):
                    value.const_value.numpy()
    except FileNotFoundError as error:  # mapping an external data file
        missing = pathlib.Path(error.filename).name if error.filename else "it names"
        raise OQError(f"{path}: its external data file {missing} is missing (it must lie "
                      "beside the .onnx file, under the name the model gives it)") from error
    except Exception as error:  # protobuf and external-data errors have many types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OQError(f"{path}: not a readable ONNX model ({reason})") from error
    try:
        ShapeInferencePass(strict_mode=False, data_prop=True)(model)
    except Exception as error:  # inference is a help, not a requirement
        logger.warning("%s: shape inference failed (%s); continuing with the stored shapes", path, error)
    _restore_sequence_types(model)
    _forget_departed_inputs(model.graph)
    return model


def _restore_sequence_types(model: ir.Model) -> None:
    """Give sequence-valued outputs back their sequence type.

    ``ShapeInferencePass`` (onnx_ir 1.1) types the output of ``SplitToSequence`` and the other
    sequence ops as a tensor of its element type, and ORT refuses the saved file (torch's dynamo
    exporter without its optimizer writes ``chunk`` as ``SplitToSequence``).
    """
    import onnx

    version = model.opset_imports.get("", 1)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, version, "")
        except onnx.defs.SchemaError:
            continue
        constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
        for value, formal in zip(node.outputs, schema.outputs):
            allowed = constraints.get(formal.type_str, [formal.type_str])
            if isinstance(value.type, ir.TensorType) and all(t.startswith("seq(") for t in allowed):
                value.type, value.shape = ir.SequenceType(value.type), None


def _forget_departed_inputs(graph: ir.Graph) -> None:
    """Drop the zero entries of ``graph.inputs``' reference counter.

    ``ShapeInferencePass`` lists every initializer as a graph input while ONNX infers shapes and
    then takes them out again, but onnx_ir (1.1) keeps a zero count per value it ever held, and
    with it every original weight, replaced or not, for the rest of the compile.
    """
    counts = graph.inputs._ref_counter  # onnx_ir offers no public way to prune it
    for value in [value for value, count in counts.items() if count <= 0]:
        del counts[value]


def metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, without reading external weights."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise OQError(f"{path}: not a readable ONNX model ({type(error).__name__})") from error
    return {entry.key: entry.value for entry in proto.metadata_props}


def external_data_files(path: str | os.PathLike) -> list[pathlib.Path]:
    """The files an ONNX file's initializers keep their data in (beside it), without reading them."""
    import onnx

    path = pathlib.Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for tensor in proto.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    return sorted(path.with_name(location) for location in locations)


def file_bytes(path: str | os.PathLike) -> int:
    """Bytes of an ONNX file with its external data."""
    return pathlib.Path(path).stat().st_size + sum(f.stat().st_size for f in external_data_files(path))


def check_writable(path: str | os.PathLike) -> pathlib.Path:
    """Raise :class:`OQError` unless ``path`` can be created; return its directory."""
    path = pathlib.Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise OQError(f"{path}: output directory {parent} does not exist")
    if path.is_dir():
        raise OQError(f"{path}: is a directory; give the output file's name")
    try:  # a real write: permission bits do not bind root, and read-only mounts ignore them
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise OQError(f"{path}: output directory {parent} is not writable ({error.strerror})") from error
    return parent


def save(model: ir.Model, path: str | os.PathLike,
         check: Callable[[pathlib.Path], None] | None = None) -> pathlib.Path:
    """Write ``model`` to ``path`` atomically (plus ``path.data`` for large weights); ``check``
    (e.g. that ONNX Runtime loads it) runs on the written file before it is moved into place."""
    path = pathlib.Path(path)
    parent = check_writable(path)
    weight_bytes = sum(v.const_value.nbytes for v in model.graph.initializers.values()
                       if v.const_value is not None)
    data_name = path.name + ".data" if weight_bytes > EXTERNAL_DATA_BYTES else None
    if data_name is None:  # ir.save would keep references into the input's data file
        ir.external_data.load_to_model(model)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    try:
        ir.save(model, staging / path.name, external_data=data_name)
        if check is not None:
            check(staging / path.name)
        if data_name:
            os.replace(staging / data_name, parent / data_name)
        os.replace(staging / path.name, path)
    except OSError as error:
        raise OQError(f"{path}: could not write ({error.strerror or error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
