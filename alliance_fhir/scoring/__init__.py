"""Exact scoring of QuestionnaireResponses and the score Observations built from it."""
