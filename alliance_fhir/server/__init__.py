"""The jobs and their state: sync, backfill, signals, publish, and the state store they share."""
