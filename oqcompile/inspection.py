"""What an ONNX file holds and what oqcompile did to it (``oqcompile inspect``).

:func:`describe` reads the graph and its metadata; weights stay mapped from disk (the codes of
quantized weights are scanned once for their width). Its sections:

- ``file``: path, bytes on disk (external data included), opset imports;
- ``compiled``: what oqcompile records in the metadata (recipe, seed, version, source model,
  calibration text, the passes with their parameters), or ``None`` for files it did not write;
- ``weights``: initializer bytes and tensor count per element type;
- ``ops``: node count per op outside the default ONNX domain (``oq.*``, ORT's ``com.microsoft.*``);
- ``linears``: every matmul with a stored weight, in graph order: name, ``in``/``out``
  features, the weights' format (a float type, or ``int<b>`` per channel or in groups, ``b``
  the narrowest width holding the codes, as ``lower`` packs them), the activations' format
  (float, or ``int<b>`` per token, per tensor, ...) and the op that runs it;
- ``rotations``: the online rotations oqcompile inserted, by kind and size (``H_n`` Hadamards,
  ``T_n`` DuQuant transforms; folded rotations changed the weights, not the graph, and show as
  passes);
- ``transformer``: the structure map (:meth:`oqcompile.structure.Transformer.summary`), or
  ``{"not_mapped": reason}`` (a lowered file's linears are ``oq.QMatMul``, which the map does not
  read; their names carry their roles).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib

import onnx_ir as ir

from oqcompile import modelio
from oqcompile.errors import OQError
from oqcompile.qdq import QDQTag, quantized_input, quantized_weight_name, read_quantized_weight
from oqcompile.quant import code_bits
from oqcompile.rotation import BlockRotationTag, RotationTag, find_rotations
from oqcompile.structure import StructureError, analyze
from oqcompile.structure.matchers import match_linear

__all__ = ["describe"]


def describe(path: str | os.PathLike) -> dict:
    """The sections of the module doc for the ONNX file ``path``."""
    from oqcompile.passes.split_fused_linears import SplitFusedLinears
    from oqcompile.passes.split_skip_norms import SplitSkipNorms

    path = pathlib.Path(path)
    model = modelio.load(path)
    description = {
        "file": _file(path, model),
        "compiled": _compiled(model.metadata_props),
        "weights": _weights(model.graph),
        "ops": dict(collections.Counter(f"{node.domain}.{node.op_type}" for node in model.graph
                                        if node.domain not in ("", "ai.onnx")).most_common()),
        "rotations": _rotations(model.graph),
    }
    roles: dict[int, str] = {}  # id of a linear's node -> its role in the map, e.g. layers.3.mlp.up_proj
    if "oq.QMatMul" in description["ops"]:
        description["transformer"] = {"not_mapped": "lowered: its linears are oq.QMatMul ops, named by role; "
                                                    "the portable output (--portable) shows the map"}
    else:
        try:
            SplitFusedLinears()(model)  # in memory only: the map names the linears,
            SplitSkipNorms()(model)  # the residual adds and the norms apart
            transformer = analyze(model)
            description["transformer"] = transformer.summary()
            roles = {id(linear.node): linear.name for linear in transformer.linears()}
        except (StructureError, OQError, ir.passes.PreconditionError) as error:
            description["transformer"] = {"not_mapped": str(error)}
    description["linears"] = [row for node in model.graph if (row := _linear(node, roles)) is not None]
    return description


def _file(path: pathlib.Path, model: ir.Model) -> dict:
    return {"path": str(path), "bytes": modelio.file_bytes(path),
            "external_data": [f.name for f in modelio.external_data_files(path)],
            "opsets": {domain or "ai.onnx": version for domain, version in sorted(model.opset_imports.items())}}


def _compiled(metadata: dict[str, str]) -> dict | None:
    if "oq.recipe" not in metadata:
        return None
    return {"recipe": metadata["oq.recipe"], "seed": int(metadata.get("oq.seed", 0)),
            "version": metadata.get("oq.version"), "source_model": metadata.get("oq.source_model"),
            "calibration": json.loads(metadata["oq.calibration"]) if "oq.calibration" in metadata else None,
            "passes": json.loads(metadata.get("oq.passes", "[]"))}


def _weights(graph: ir.Graph) -> dict:
    by_type: dict[str, dict] = {}
    for value in graph.initializers.values():
        if value.const_value is None:
            continue
        entry = by_type.setdefault(value.const_value.dtype.name.lower(), {"tensors": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["bytes"] += value.const_value.nbytes
    return dict(sorted(by_type.items(), key=lambda item: -item[1]["bytes"]))


def _granularity(group: int | None) -> str:
    return "per channel" if group is None else f"in groups of {group}"


def _activation_format(tag: QDQTag) -> str:
    """``int4 per token``, ``int4 per token in groups of 32``, ``int8 prescaled``, ... ."""
    return f"int{tag.bits} {tag.granularity.replace('_', ' ')}" + ("" if tag.group is None
                                                                   else f" {_granularity(tag.group)}")


def _linear(node: ir.Node, roles: dict[int, str]) -> dict | None:
    """One row of ``linears`` for ``node``, or ``None`` if it is not a matmul with a stored weight;
    named by its role in the map, else by its layer name (quantized) or its weight's name."""
    if (node.domain, node.op_type) == ("oq", "QMatMul"):
        in_features, bits = node.attributes.get_int("in_features"), node.attributes.get_int("bits")
        out_features, groups = node.inputs[3].shape[0], node.inputs[3].shape[1]
        return {"name": node.name.removesuffix("/qmatmul"), "in": in_features, "out": out_features,
                "weights": f"int{bits} {_granularity(None if groups == 1 else in_features // groups)}",
                "activations": _codes_format(node.inputs[0]), "op": "oq.QMatMul"}
    if (node.domain, node.op_type) == ("com.microsoft", "MatMulNBits"):
        attribute = node.attributes.get_int
        return {"name": node.name, "in": attribute("K"), "out": attribute("N"),
                "weights": f"int{attribute('bits')} {_granularity(attribute('block_size'))}",
                "activations": _type_name(node.inputs[0]), "op": "com.microsoft.MatMulNBits"}
    linear = match_linear(node)
    if linear is None or RotationTag.read(node) is not None:  # a Hadamard applied as a MatMul is no layer
        return None
    quantized = read_quantized_weight(linear.weight_value())
    weights = (_type_name(linear.weight_value()) if quantized is None
               else f"int{code_bits(quantized.codes)} {_granularity(quantized.group)}")
    activations = _type_name(linear.input)
    dequantize = linear.input.producer()
    if dequantize is not None and dequantize.op_type == "DequantizeLinear" and quantized_input(dequantize) is not None:
        tag = QDQTag.read(dequantize)
        activations = "QDQ" if tag is None else _activation_format(tag)
    quantized_form = quantized is not None or activations.startswith(("int", "QDQ"))
    name = roles.get(id(node)) or (linear.weight_value().name if quantized is None
                                   else quantized_weight_name(linear.weight_value(), node))
    return {"name": name, "in": linear.in_features, "out": linear.out_features, "weights": weights, "activations": activations,
            "op": f"{'QDQ + ' if quantized_form else ''}{node.op_type}"}


def _codes_format(codes: ir.Value) -> str:
    """The activation codes of a ``QMatMul``, from the op that makes them."""
    quantizer = codes.producer()
    if quantizer is None or (quantizer.domain, quantizer.op_type) != ("oq", "QuantizePerToken"):
        return "int8 codes"
    bits, group = quantizer.attributes.get_int("bits", 8), quantizer.attributes.get_int("group", 0)
    if quantizer.attributes.get_float("static_scale", 0.0) > 0:
        return f"int{bits} static scale"
    return f"int{bits} per token" + (f" {_granularity(group)}" if group else "")


def _type_name(value: ir.Value) -> str:
    return value.dtype.name.lower() if value.dtype is not None else "float"


def _rotations(graph: ir.Graph) -> list[dict]:
    """Hadamards (``H_n``) and DuQuant transforms (``T_n``, online MatMuls in blocks), by size."""
    counts = collections.Counter()
    for rotation in find_rotations(graph):
        op = "oq.Hadamard" if any(node.op_type == "Hadamard" for node in rotation.nodes) else "MatMul"
        counts[("H", rotation.size, rotation.online, op)] += 1
    duquant = {tag.name: tag for node in graph if (tag := BlockRotationTag.read(node)) is not None}
    for tag in duquant.values():
        counts[("T", tag.size, True, f"MatMul in blocks of {tag.block}")] += 1
    return [{"kind": kind, "size": size, "online": online, "op": op, "count": count}
            for (kind, size, online, op), count in sorted(counts.items())]


def format_text(description: dict, layers: bool = False) -> str:
    """``description`` for people: one line per section, linears grouped by format (one row per
    linear with ``layers``), then the transformer map block by block."""
    mib = 1 << 20
    file, compiled = description["file"], description["compiled"]
    opsets = ", ".join(f"{domain} {version}" for domain, version in file["opsets"].items())
    lines = [f"{'file':>12}  {file['path']}, {file['bytes'] / mib:.2f} MiB (opsets {opsets})"]
    if compiled is None:
        lines.append(f"{'compiled':>12}  no (not written by oqcompile)")
    else:
        calibration = compiled["calibration"]
        lines.append(f"{'compiled':>12}  recipe {compiled['recipe']}, seed {compiled['seed']}, oqcompile "
                     f"{compiled['version']}, from {compiled['source_model'] or 'an unnamed model'}"
                     + (f"; calibrated on {calibration['text']}" if calibration else ""))
        for index, step in enumerate(compiled["passes"]):
            parameters = ", ".join(f"{key}={value}" for key, value in step["params"].items())
            lines.append(f"{'passes' if index == 0 else '':>12}  {step['pass']}" + (f" ({parameters})" if parameters else ""))
    lines.append(f"{'weights':>12}  " + ", ".join(f"{dtype} {entry['bytes'] / mib:.2f} MiB ({entry['tensors']})"
                                                 for dtype, entry in description["weights"].items()))
    lines.append(f"{'ops':>12}  " + (", ".join(f"{op} x{count}" for op, count in description["ops"].items())
                                     or "standard ONNX only"))
    rotations = description["rotations"]
    lines.append(f"{'rotations':>12}  " + (", ".join(
        f"{r['kind']}_{r['size']} x{r['count']} ({'online' if r['online'] else 'folded'}, {r['op']})" for r in rotations)
        or "none in the graph"))
    formats: dict[tuple, list[str]] = {}
    for row in description["linears"]:
        formats.setdefault((row["weights"], row["activations"], row["op"]), []).append(row["name"])
    for index, ((weights, activations, op), names) in enumerate(formats.items()):
        lines.append(f"{'linears' if index == 0 else '':>12}  {len(names)} x weights {weights}, activations "
                     f"{activations}, {op} ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})")
    if layers:
        width = max((len(row["name"]) for row in description["linears"]), default=0)
        lines += ["", f"{'layer':<{width}}  {'in x out':>13}  {'weights':<22}{'activations':<18}op"]
        lines += [f"{row['name']:<{width}}  {row['in']:>6}x{row['out']:<6}  {row['weights']:<22}"
                  f"{row['activations']:<18}{row['op']}" for row in description["linears"]]
    transformer = dict(description["transformer"])
    if "not_mapped" in transformer:
        lines.append(f"{'transformer':>12}  not mapped: {transformer['not_mapped']}")
        return "\n".join(lines)
    blocks = transformer.pop("blocks")
    lines += ["", *(f"{key:>22}: {value}" for key, value in transformer.items())]
    for index, block in enumerate(blocks):
        lines += ["", f"block {index}", *(f"  {role:>14}: {value}" for role, value in block.items())]
    return "\n".join(lines)
