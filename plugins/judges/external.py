"""The ``external`` annotator: people (or any tool outside the harness) label the pairs.

``harness run --annotator external`` stops at the annotation step of each
iteration: the selected pairs go to ``RUN_DIR/iteration-<i>/to-label.jsonl``,
the run is marked ``awaiting_labels`` and the command exits 0 after printing
the import and resume commands. ``harness label import`` takes the labels
back; ``harness run --resume RUN_ID`` continues from the annotation step once
every pair has one. The loop drives all of this (:mod:`harness.experiments.labels`);
this judge only names the role, so that it is chosen like any other annotator.
"""

from __future__ import annotations

from harness import hookimpl
from harness.errors import UsageError
from harness.interfaces import Judge


class ExternalAnnotator(Judge):
    name = "external"
    description = "People label the pairs: the run stops, exports them, and resumes once labels are imported"
    external = True  # the loop hands the pairs over instead of calling compare()

    def score(self, *, world, prompts, responses, rng):
        raise UsageError("the external annotator gives pairwise labels only; it cannot score responses "
                         "(use it as --annotator, not as --gold-judge or --proxy-judge)")

    def compare(self, *, world, prompts, responses, pairs, rng):
        raise UsageError("the external annotator's labels come from harness label import, not from compare()")


@hookimpl
def register_judges(register):
    register(ExternalAnnotator)
