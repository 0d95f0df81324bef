"""Spark DataFrames in, score Observations and flat score rows out: ``mapInPandas`` over :mod:`.rows`.

``mapInPandas`` (not ``rdd.mapPartitions``) because it is a DataFrame operation: it works on
Spark Connect (Databricks shared and serverless compute has no RDD API) and moves the data
through Arrow. The function Spark runs is called once per partition, so the catalog (reading
and cross-checking the Questionnaires and mappings) is loaded once per partition, on the
executor, from the ``alliance-fhir`` installed there (plus any ``instruments`` folders, which
must then be readable on every executor).

pyspark is imported inside the functions: ``import alliance_fhir`` never needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..instruments.catalog import load_catalog
from .rows import SCORE_ROW_COLUMNS, score_lines, score_rows_of

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

__all__ = ["OBSERVATION_SCHEMA", "SCORE_ROW_SCHEMA", "score_frame", "score_rows"]

OBSERVATION_SCHEMA = "observation string, error string"
"""``score_frame``'s output: the Observation JSON (as ``score --format ndjson`` writes it), or the error line."""

_TYPES = {"value": "double"}
SCORE_ROW_SCHEMA = ", ".join(f"{name} {_TYPES.get(name, 'string')}" for name in (*SCORE_ROW_COLUMNS, "error"))
"""``score_rows``'s output: the ``alliance_scores`` view's columns (without ``observation_id``) and ``error``."""

Batches = Callable[[Iterator["pd.DataFrame"]], Iterator["pd.DataFrame"]]


def score_frame(df: DataFrame, column: str = "value", *, instruments: Sequence[str | Path] = ()) -> DataFrame:
    """Score a DataFrame of QuestionnaireResponse JSON strings (column ``column``) into Observation JSON.

    One output row per input row, in order: ``observation`` (the JSON the CLI writes for that
    response) or ``error`` (why it could not be scored). ``spark.read.text(path)`` gives the
    ``value`` column from NDJSON files.
    """
    return df.select(df[column].alias("value")).mapInPandas(
        _observations(tuple(map(str, instruments))), OBSERVATION_SCHEMA
    )


def score_rows(df: DataFrame, column: str = "value", *, instruments: Sequence[str | Path] = ()) -> DataFrame:
    """Score a DataFrame of QuestionnaireResponse JSON strings into flat score rows (one per score and subscale).

    A response that cannot be scored gives one row with only ``error`` set, so nothing is lost.
    """
    return df.select(df[column].alias("value")).mapInPandas(_rows(tuple(map(str, instruments))), SCORE_ROW_SCHEMA)


def _observations(instruments: tuple[str, ...]) -> Batches:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        catalog = load_catalog(instruments)  # once per partition: Spark calls run once per partition
        for batch in batches:
            scored = list(score_lines(batch["value"], catalog))
            yield pd.DataFrame(
                {
                    "observation": [None if obs is None else obs.decode() for obs, _, _ in scored],
                    "error": [error for _, _, error in scored],
                }
            )

    return run


def _rows(instruments: tuple[str, ...]) -> Batches:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        catalog = load_catalog(instruments)
        blank = (None,) * len(SCORE_ROW_COLUMNS)
        for batch in batches:
            out: list[tuple[object, ...]] = []
            for _, observation, error in score_lines(batch["value"], catalog, as_dict=True):
                if observation is None:
                    out.append((*blank, error))
                else:
                    out += [(*row, None) for row in score_rows_of(observation)]
            yield pd.DataFrame.from_records(out, columns=[*SCORE_ROW_COLUMNS, "error"])

    return run
