"""Macro-averaged F1 as a local `evaluate` metric (load it by path: no Hub download).

evaluate parses this file's import lines to check requirements: keep one import per line.
"""

import datasets
import evaluate

from metanlp.metrics.functional import macro_f1

_DESCRIPTION = "Unweighted mean over classes of per-class F1 (classes seen in either list)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted label ids.
    references (`list[int]`): reference label ids.
    labels (`list[int]`, *optional*): classes to average over.
Returns:
    macro_f1 (`float`): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, labels=None):
        return {"macro_f1": macro_f1(predictions, references, labels=labels)}
