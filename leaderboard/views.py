"""The leaderboard's browsing views, each declared once: its title, what it shows and its SQL.

``harness leaderboard serve`` turns every :class:`View` into a datasette canned query
(:mod:`leaderboard.datasette_plugin`), and ``harness leaderboard publish`` runs the same SQL to
write a static page per view (:mod:`leaderboard.site`), so the two always show the same rows.
The SQL reads the leaderboard's own tables and two functions that
:func:`leaderboard.sql_functions.register` adds to a connection: ``pairsel_compare`` (the
paired comparison of ``harness leaderboard compare``, as JSON) and ``pairsel_stdev`` (a
sample standard deviation).

The table and column descriptions come from :mod:`leaderboard.schema_doc`, which also writes
docs/leaderboard/schema.md: :func:`table_descriptions` and :func:`column_descriptions`.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VIEWS", "View", "column_descriptions", "table_descriptions", "view"]

#: The datasette name of the leaderboard database, so that every URL is the same whatever the file is called.
DATABASE_NAME = "leaderboard"


@dataclass(frozen=True)
class View:
    """One view of the leaderboard.

    ``name``: its URL name (``/leaderboard/NAME`` in serve, ``NAME.html`` in publish);
    ``params``: the named SQL parameters it takes (``:run_id``); ``per_run``: publish
    writes one page per run, with ``run_id`` set.
    """

    name: str
    title: str
    description: str
    sql: str
    params: tuple[str, ...] = ()
    per_run: bool = False


STRATEGIES = View(
    name="strategies",
    title="Strategies ranked by gain per 1,000 labels",
    description=(
        "One row per strategy (the finished runs that share instance and corpus selector, allocator, "
        "testbed, trainer and config hash, so they differ only by their seeds). gain_per_1k_labels is the "
        "mean over its runs of 1000 × (final_win_rate − initial_win_rate) / labels_used: the win rate a "
        "thousand gold labels bought. Best first; read it beside the win rate and KL. deployable is 0 for "
        "a reference point that reads information no real strategy has (gold_gradient, marked † in the "
        "terminal), which is not a strategy to deploy."
    ),
    sql="""\
select
  instance_selector,
  corpus_selector,
  allocator,
  testbed,
  trainer,
  config_hash,
  count(*) as runs,
  count(distinct seed || '/' || world_seed) as seeds,
  round(avg(1000.0 * (final_win_rate - initial_win_rate) / labels_used), 4) as gain_per_1k_labels,
  round(pairsel_stdev(1000.0 * (final_win_rate - initial_win_rate) / labels_used), 4) as gain_per_1k_labels_std,
  round(avg(final_win_rate), 4) as final_win_rate_mean,
  round(pairsel_stdev(final_win_rate), 4) as final_win_rate_std,
  round(avg(final_gold_reward), 4) as final_gold_reward_mean,
  round(avg(final_kl), 4) as final_kl_mean,
  round(avg(labels_used), 1) as labels_used_mean,
  min(coalesce(json_extract(config_json, '$.deployable'), 1)) as deployable
from runs
where status = 'finished'
group by instance_selector, corpus_selector, allocator, testbed, trainer, config_hash
order by gain_per_1k_labels is null, gain_per_1k_labels desc, final_win_rate_mean desc""",
)

COMPARE = View(
    name="compare",
    title="Paired comparison against a baseline",
    description=(
        "What `harness leaderboard compare` prints, over the finished runs: each strategy's paired "
        "difference of the metric (default final_win_rate) from its baseline (default random: the strategy "
        "that uses the baseline selector at both levels with otherwise the same config; or a config hash "
        "prefix) over the (seed, world_seed) pairs both ran. mean_difference, its std, n pairs and the "
        "Student-t interval [ci_low, ci_high] at the confidence level (default 0.95); excludes_zero is 1 "
        "when the interval lies on one side of 0. The baseline's own row comes first in its block; groups "
        "without a baseline come last, with the reason in note. deployable is 0 for a reference point "
        "(gold_gradient, † in the terminal); share_of_reference is each mean_difference as a share of the "
        "reference point's in the same block (the terminal's 'share of †': never capped, above 1 where a "
        "strategy gained more than the reference)."
    ),
    sql="""\
select
  json_extract(value, '$.instance_selector') as instance_selector,
  json_extract(value, '$.corpus_selector') as corpus_selector,
  json_extract(value, '$.allocator') as allocator,
  json_extract(value, '$.testbed') as testbed,
  json_extract(value, '$.trainer') as trainer,
  json_extract(value, '$.config_hash') as config_hash,
  json_extract(value, '$.settings') as settings,
  json_extract(value, '$.is_baseline') as is_baseline,
  json_extract(value, '$.runs') as runs,
  json_extract(value, '$.n') as n,
  json_extract(value, '$.mean') as mean_difference,
  json_extract(value, '$.std') as std,
  json_extract(value, '$.ci_low') as ci_low,
  json_extract(value, '$.ci_high') as ci_high,
  json_extract(value, '$.excludes_zero') as excludes_zero,
  json_extract(value, '$.group_mean') as group_mean,
  json_extract(value, '$.baseline_mean') as baseline_mean,
  json_extract(value, '$.baseline_config_hash') as baseline_config_hash,
  json_extract(value, '$.deployable') as deployable,
  json_extract(value, '$.reference_share') as share_of_reference,
  json_extract(value, '$.reason') as note
from json_each(pairsel_compare(:baseline, :metric, :confidence))
order by key""",
    params=("baseline", "metric", "confidence"),
)

RUN_ITERATIONS = View(
    name="run_iterations",
    title="One run's iterations",
    description=(
        "Every iteration row of the run (iteration 0 is pi_0): win rate, gold reward, KL, the labels "
        "bought, the selected-pair diagnostics (sel_*), training (train_*) and the time per stage (time_*)."
    ),
    sql="select * from iterations where run_id = :run_id order by iteration",
    params=("run_id",),
    per_run=True,
)

RUN_LABELS = View(
    name="run_labels",
    title="The labels a run bought",
    description=(
        "Every gold label charged to the run, in order: the pair (or scored response) with its texts, "
        "the label (a, b or tie, in the harness's order) or score, and who gave it. A label still awaited "
        "from people has no label yet."
    ),
    sql="""\
select
  labels.id,
  labels.iteration,
  labels.kind,
  labels.label,
  labels.score,
  labels.source,
  labels.annotator,
  prompt.text as prompt,
  a.text as response_a,
  b.text as response_b,
  labels.labelled_at
from labels
left join texts as prompt on prompt.hash = labels.prompt_hash
left join texts as a on a.hash = labels.a_hash
left join texts as b on b.hash = labels.b_hash
where labels.run_id = :run_id
order by labels.iteration, labels.kind, labels.position""",
    params=("run_id",),
    per_run=True,
)

#: Every view, in the order the index lists them.
VIEWS: tuple[View, ...] = (STRATEGIES, COMPARE, RUN_ITERATIONS, RUN_LABELS)


def view(name: str) -> View:
    """The view called ``name`` (KeyError naming the views otherwise)."""
    for item in VIEWS:
        if item.name == name:
            return item
    raise KeyError(f"no view {name!r}; views: {', '.join(v.name for v in VIEWS)}")


def table_descriptions() -> dict[str, str]:
    """``{table: what it holds}``, the notes of docs/leaderboard/schema.md."""
    from leaderboard import schema_doc

    return dict(schema_doc._NOTES)  # declared once, beside the column descriptions


def column_descriptions() -> dict[str, dict[str, str]]:
    """``{table: {column: what it holds}}``, the descriptions of docs/leaderboard/schema.md."""
    from leaderboard import schema_doc

    return {table: dict(columns) for table, columns in schema_doc.DESCRIPTIONS.items()}
