"""The one Definitions object (placeholder until the orchestration issue lands)."""

import dagster as dg

defs = dg.Definitions()
