"""Perplexity through ONNX Runtime on the evaluation text.

The first ``tokens`` tokens of the book are cut into non-overlapping windows of ``seq``
tokens; each window is one row of the ``input_ids`` batch. Perplexity is
``exp(mean NLL)`` over every position that has a next token inside its window
(``seq - 1`` predictions per window), computed in float64 from the fp logits. Models
exported with a KV cache get an all-ones ``attention_mask`` and empty past tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from tqdm import tqdm

from oqcompile import modelio
from oqcompile.errors import OQError
from oqcompile.modelio import metadata
from oqcompile.runtime import LIBRARY_METADATA, session_options

__all__ = ["PerplexityResult", "cache_dims", "check_loads", "check_vocabulary", "feeds", "graph_feeds", "perplexity",
           "prefill_and_decode", "session"]

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                "tensor(int32)": np.int32}


@dataclasses.dataclass
class PerplexityResult:
    perplexity: float
    tokens: int  # tokens fed to the model
    predictions: int  # next-token predictions scored
    windows: int
    seq: int


def check_loads(path: str | os.PathLike, name: str | os.PathLike | None = None) -> None:
    """Raise :class:`OQError` (naming ``name``, default ``path``) unless ONNX Runtime (CPU) creates a
    session for ``path``: its graph checks (types, shapes, opsets) and kernel lookup, without graph
    optimizations or weight prepacking, so external weights stay memory-mapped and untouched (a
    1B model loads in 0.3 s and 70 MiB)."""
    try:
        session(path, check_only=True)
    except OQError as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise OQError(f"{name or path}: not written, {reason}") from error


def session(path: str | os.PathLike, threads: int | None = None,
            profile_prefix: str | None = None, check_only: bool = False) -> ort.InferenceSession:
    """A CPU ORT session for ``path`` (one-line :class:`OQError` if ORT refuses the file).

    The oq op library is registered whenever it is installed, so lowered models run without
    reading the file twice; a lowered model (its metadata names the library) that cannot
    load because the library is missing says so. With ``profile_prefix``, ORT profiles every
    node to a JSON file of that prefix (``end_profiling()`` returns its name). ``check_only``:
    see :func:`check_loads`.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if check_only:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.disable_prepacking", "1")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    try:
        session_options(options)
        missing_library = None
    except OQError as error:
        missing_library = error
    if threads:
        options.intra_op_num_threads = threads

    def create() -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises several pybind exception types
            if missing_library is not None and LIBRARY_METADATA in metadata(path):
                raise OQError(f"{path}: lowered to oq custom ops, but {missing_library}") from error
            raise OQError(f"{path}: ONNX Runtime cannot load it ({str(error).splitlines()[0]})") from error

    created = create()
    named_head_size = any(spec.name.startswith("past") and len(spec.shape) == 4 and not isinstance(spec.shape[3], int)
                          for spec in created.get_inputs())
    if check_only or not named_head_size:
        return created
    for name, size in cache_dims(modelio.load(path).graph).items():  # a named head size (GenAI): fix it for feeds
        options.add_free_dimension_override_by_name(name, size)
    return create()


def perplexity(model: ort.InferenceSession | Callable[[np.ndarray], np.ndarray], tokens: np.ndarray,
               seq: int = 1024, batch: int = 1, progress: bool = True) -> PerplexityResult:
    """Perplexity on ``tokens`` in windows of ``seq`` (see module doc).

    ``model`` is an ORT session or any function ``input_ids [b, seq] -> logits [b, seq, vocab]``
    (e.g. a PyTorch model wrapped by the caller), so both are scored by the same code.
    """
    if not callable(model):
        _check_signature(model)
        vocab = model.get_outputs()[0].shape[-1]
        if isinstance(vocab, int):
            check_vocabulary(tokens, vocab)
    logits_of = model if callable(model) else functools.partial(_run_logits, model)
    windows = len(tokens) // seq
    if windows == 0:
        raise OQError(f"need at least {seq} tokens for one window, got {len(tokens)}")
    data = tokens[: windows * seq].reshape(windows, seq)
    nll_sum, count = 0.0, 0
    for start in tqdm(range(0, windows, batch), desc="perplexity", unit="window",
                      disable=not progress, total=-(-windows // batch)):
        rows = data[start:start + batch]
        logits = np.asarray(logits_of(rows), dtype=np.float64)
        if logits.ndim != 3 or logits.shape[:2] != rows.shape:
            raise OQError(f"not a language model: its first output has shape {list(logits.shape)} for "
                          f"input_ids of shape {list(rows.shape)}, expected logits [batch, seq, vocab]")
        logits = logits[:, :-1]
        targets = rows[:, 1:]
        top = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
        nll_sum += float((log_z - picked).sum())
        count += targets.size
    return PerplexityResult(float(np.exp(nll_sum / count)), windows * seq, count, windows, seq)


def check_vocabulary(tokens: np.ndarray, vocab_size: int) -> None:
    """Refuse token ids the model has no embedding row for (a tokenizer that is not the model's)."""
    largest = int(np.max(tokens, initial=0))
    if largest >= vocab_size:
        raise OQError(f"the text's token ids reach {largest}, but the model's vocabulary has {vocab_size} "
                      "tokens: give the model's own tokenizer (--tokenizer)")


def _check_signature(sess: ort.InferenceSession) -> None:
    """Refuse a session that does not map integer token ids to logits ``[batch, seq, vocab]``, or
    that has inputs :func:`feeds` cannot fill (before any progress bar starts)."""
    first_input, first_output = sess.get_inputs()[0], sess.get_outputs()[0]
    if first_input.type not in ("tensor(int64)", "tensor(int32)"):
        raise OQError(f"not a language model: its first input {first_input.name!r} is a {first_input.type}, "
                      "not integer token ids")
    if first_output.shape is not None and len(first_output.shape) != 3:
        raise OQError(f"not a language model: its first output {first_output.name!r} has rank "
                      f"{len(first_output.shape)}, expected logits [batch, seq, vocab]")
    feeds(sess, np.zeros((1, 1), np.int64))


def _run_logits(sess: ort.InferenceSession, input_ids: np.ndarray) -> np.ndarray:
    inputs = feeds(sess, input_ids)
    try:
        return sess.run(None, inputs)[0]
    except Exception as error:  # ORT raises several pybind exception types
        raise OQError(f"ONNX Runtime failed to run the model on {list(input_ids.shape)} token ids "
                      f"({str(error).strip().splitlines()[0]})") from error


def feeds(sess: ort.InferenceSession, input_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs for one full-sequence run: ``input_ids`` plus, where the model has them, an all-ones
    ``attention_mask``, ``position_ids`` from 0 and empty ``past_key_values.*`` (every symbolic dim
    but batch set to 0; :func:`session` fixes the head size ORT's fused attention needs)."""
    return _feeds([(spec.name, spec.type, _NUMPY_TYPES.get(spec.type), spec.shape) for spec in sess.get_inputs()],
                  input_ids)


def graph_feeds(graph: ir.Graph, input_ids: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`feeds` for the inputs of ``graph`` (for runs of a part of it)."""
    sizes = cache_dims(graph)
    return _feeds([(value.name, f"tensor({value.dtype.name.lower()})" if value.dtype else str(value.type),
                    value.dtype.numpy() if value.dtype else None,
                    [dim if isinstance(dim, int) else sizes.get(dim.value) for dim in value.shape or ()])
                   for value in graph.inputs], input_ids)


def cache_dims(graph: ir.Graph) -> dict[str, int]:
    """Sizes of the named dims of the past key/value inputs ORT's ``GroupQueryAttention`` reads.

    The op takes its cache as ``[batch, kv heads, length, head size]``; the ONNX Runtime GenAI
    builder names the head size (``kv_cache_dim``), which an empty past must still match. It
    follows from the op's query width: ``heads · head size``, or ``(heads + 2 · kv heads) · head
    size`` when q, k and v come packed. A sliding-window op (``local_window_size`` > 0, Gemma 2's
    local layers) refuses a cache shorter than its window: its past is a buffer of that length,
    empty while the attention mask covers the new tokens alone.
    """
    sizes = {}
    for node in graph:
        if node.op_type != "GroupQueryAttention" or node.inputs[0].shape is None:
            continue
        width, key = node.inputs[0].shape[-1], node.inputs[1] if len(node.inputs) > 1 else None
        heads, kv_heads = node.attributes.get_int("num_heads", 0), node.attributes.get_int("kv_num_heads", 0)
        if not isinstance(width, int) or not heads:
            continue
        head_size = width // heads if key is not None else width // (heads + 2 * kv_heads)
        window = node.attributes.get_int("local_window_size", -1)
        for past in node.inputs[3:5]:
            if past is not None and past.is_graph_input() and past.shape is not None and len(past.shape) == 4:
                dims = [(past.shape[1], kv_heads), (past.shape[3], head_size)]
                if window > 0:
                    dims.append((past.shape[2], window))
                for dim, size in dims:
                    if not isinstance(dim, int) and dim.value:
                        sizes[dim.value] = size
    return sizes


def _feeds(inputs: list[tuple[str, str, type | None, list]], input_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Feeds for inputs given as ``(name, type name, numpy type, shape)``, ``input_ids`` first."""
    batch, length = input_ids.shape
    result = {}
    for index, (name, type_name, dtype, shape) in enumerate(inputs):
        if index == 0:
            result[name] = input_ids.astype(dtype)
        elif name == "attention_mask":
            result[name] = np.ones((batch, length), dtype)
        elif name == "position_ids":  # an empty past: positions start at 0
            result[name] = np.broadcast_to(np.arange(length, dtype=dtype), (batch, length)).copy()
        elif name.startswith("past") and dtype is not None:
            shape = [d if isinstance(d, int) else 0 for d in shape]
            shape[0] = batch
            result[name] = np.zeros(shape, dtype)
        else:
            raise OQError(f"model input {name!r} ({type_name}) is not one oqcompile knows how to "
                          "feed: expected input_ids, attention_mask, position_ids and past_key_values.*")
    return result


def prefill_and_decode(sess: ort.InferenceSession, input_ids: np.ndarray,
                       attention_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A KV-cache model's logits for ``input_ids[:, :-1]`` from an empty cache, then for the last
    token fed with the cache that run returned: ``(prefill logits, last-token logits)``.

    ``attention_mask`` ([batch, length], default all ones) covers every token, the last included.
    """
    mask = np.ones(input_ids.shape, np.int64) if attention_mask is None else attention_mask
    inputs = feeds(sess, input_ids[:, :-1])
    inputs["attention_mask"] = mask[:, :-1].astype(inputs["attention_mask"].dtype)
    prefill = sess.run(None, inputs)
    past_names = [spec.name for spec in sess.get_inputs()][2:]
    step = {"input_ids": input_ids[:, -1:], "attention_mask": mask.astype(inputs["attention_mask"].dtype),
            **dict(zip(past_names, prefill[1:]))}
    return prefill[0], sess.run(None, step)[0][:, -1]
