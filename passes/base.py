"""The common shape of an oqcompile pass: an in-place onnx_ir pass with recorded parameters."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import onnx_ir as ir

from oqcompile.calibrate import ActivationStats, CalibrationData, collect_statistics, stream_statistics
from oqcompile.evaluate import check_vocabulary
from oqcompile.structure import analyze

__all__ = ["CalibratedPass", "TransformerPass"]

# Marks a dataclass field that is an input of the pass, not a parameter recorded in the model.
NOT_A_PARAMETER = {"parameter": False}


class TransformerPass(ir.passes.InPlacePass):
    """An in-place pass whose constructor arguments are its parameters.

    Subclasses are dataclasses; :meth:`params` returns their fields, which the recipe
    runner records in the model's ``metadata_props`` next to the pass name.
    """

    name: str = ""

    def params(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.metadata.get("parameter", True)}

    @property
    def needs_calibration(self) -> bool:
        return False


@dataclasses.dataclass
class CalibratedPass(TransformerPass):
    """A pass that reads activation statistics of the graph as it is when the pass runs.

    ``calibration`` (the token windows) and ``progress`` (show progress bars) are given at
    construction, by keyword; they are not parameters: the model's metadata records a hash of
    the calibration data instead.
    """

    calibration: CalibrationData | None = dataclasses.field(default=None, kw_only=True, repr=False,
                                                            metadata=NOT_A_PARAMETER)
    progress: bool = dataclasses.field(default=False, kw_only=True, repr=False, metadata=NOT_A_PARAMETER)

    @property
    def needs_calibration(self) -> bool:
        return True

    def statistics(self, model: ir.Model, values: Sequence[ir.Value], gram: bool = False,
                   sample_tokens: int = 0) -> dict[str, ActivationStats]:
        """Statistics of ``values`` on the calibration data, a transformer block at a time
        (:func:`oqcompile.calibrate.collect_statistics`)."""
        return collect_statistics(model, values, self._calibration(model), block_outputs(model), gram=gram,
                                  sample_tokens=sample_tokens, progress=self.progress)

    def stream_statistics(self, model: ir.Model, values: Sequence[ir.Value], gram: bool = False,
                          sample_tokens: int = 0) -> Iterator[dict[str, ActivationStats]]:
        """The same, yielded block by block (:func:`oqcompile.calibrate.stream_statistics`)."""
        return stream_statistics(model, values, self._calibration(model), block_outputs(model), gram=gram,
                                 sample_tokens=sample_tokens, progress=self.progress)

    def _calibration(self, model: ir.Model) -> CalibrationData:
        if self.calibration is None:
            raise ir.passes.PreconditionError(f"{self.name} needs calibration data (calibration tokens)")
        check_vocabulary(self.calibration.windows, analyze(model).embedding.rows)
        return self.calibration


def block_outputs(model: ir.Model) -> list[ir.Value]:
    """The residual stream after each transformer block: where calibration cuts the graph."""
    return [block.mlp_residual.outputs[0] for block in analyze(model).blocks]
