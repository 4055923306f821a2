"""Run a recipe on a model and record what was done in the model's metadata."""

from __future__ import annotations

import json
import logging

import onnx_ir as ir
import onnx_ir.passes.common

from oqcompile import __version__
from oqcompile.errors import OQError
from oqcompile.recipes import build_recipe

__all__ = ["optimize"]

logger = logging.getLogger(__name__)


def optimize(model: ir.Model, recipe: str, seed: int = 0) -> ir.Model:
    """Apply ``recipe`` to ``model`` in place and return it.

    ``metadata_props`` records ``oq.recipe``, ``oq.seed``, ``oq.version`` and ``oq.passes``
    (a JSON list of ``{"pass": name, "params": {...}}``). A pass whose precondition fails
    raises :class:`OQError` with the pass's own sentence.
    """
    passes = build_recipe(recipe, seed)
    for p in passes:
        logger.info("running %s %s", p.name, p.params())
        try:
            p(model)
        except ir.passes.PreconditionError as error:
            raise OQError(f"{p.name}: {error}") from error
    cleanup = ir.passes.PassManager([
        ir.passes.common.RemoveUnusedNodesPass(),
        ir.passes.common.DeduplicateInitializersPass(),
    ])
    cleanup(model)
    model.metadata_props.update({
        "oq.recipe": recipe,
        "oq.seed": str(seed),
        "oq.version": __version__,
        "oq.passes": json.dumps([{"pass": p.name, "params": p.params()} for p in passes]),
    })
    return model
