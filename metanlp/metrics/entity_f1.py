"""Entity-level micro F1 (seqeval, strict IOB2) as a local `evaluate` metric, loaded by path.

Tags may be IO or IOB2: both sides are converted to IOB2 before strict scoring.
evaluate parses this file's import lines to check requirements: keep one import per line.
"""

import datasets
import evaluate

from metanlp.metrics.functional import entity_scores

_DESCRIPTION = "Entity-level micro precision, recall and F1 (seqeval, mode='strict', IOB2)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): predicted word-level tags per sentence.
    references (`list[list[str]]`): reference word-level tags per sentence.
Returns:
    precision, recall, f1 (`float`): entity-level micro averages.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EntityF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        return entity_scores(predictions, references)
