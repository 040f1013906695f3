"""The one Definitions object, loaded by workspace.yaml and `-m reddit_dagster.definitions`."""

import dagster as dg

from reddit_dagster import scale
from reddit_dagster.assets import ASSETS
from reddit_dagster.automation import JOBS, SCHEDULES, SENSORS
from reddit_dagster.checks import CHECKS
from reddit_dagster.resources import resources_from_env

defs = dg.Definitions(
    assets=[*ASSETS, *scale.ASSETS],
    asset_checks=CHECKS,
    jobs=[*JOBS, *scale.JOBS],
    schedules=[*SCHEDULES, *scale.SCHEDULES],
    sensors=SENSORS,
    resources=resources_from_env(),
    # One process per run rather than per step: a poll is a few small steps, every 5 minutes.
    executor=dg.in_process_executor,
)
