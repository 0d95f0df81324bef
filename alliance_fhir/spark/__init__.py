"""Scoring on Spark, for data teams that keep QuestionnaireResponses in Delta, Parquet or NDJSON.

An adapter over :mod:`alliance_fhir.scoring` (the ``spark`` extra: ``pip install 'alliance-fhir[spark]'``):

- :func:`score_frame`: QuestionnaireResponse JSON strings -> Observation JSON, byte for byte what
  ``alliance-fhir score --format ndjson`` writes;
- :func:`score_rows`: the same responses -> flat score rows with the columns of the shipped
  ``alliance_scores`` ViewDefinition.

pyspark is imported only when a DataFrame is scored. See ``docs/data-teams.md``.
"""

from __future__ import annotations

from .frames import OBSERVATION_SCHEMA, SCORE_ROW_SCHEMA, score_frame, score_rows
from .rows import SCORE_ROW_COLUMNS

__all__ = ["OBSERVATION_SCHEMA", "SCORE_ROW_COLUMNS", "SCORE_ROW_SCHEMA", "score_frame", "score_rows"]
