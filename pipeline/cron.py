"""Cron expressions as Prefect's CronSchedule accepts them, checked without importing Prefect.

Importing Prefect takes seconds, and a spec is validated before anything heavy is imported (a
typo is reported at once). Prefect validates a cron string with the croniter it vendors; that
module needs nothing of Prefect, so it is loaded here from Prefect's installed files on its own,
and the grammar stays Prefect's. Where a Prefect release no longer ships it there, Prefect's own
CronSchedule decides (slower, same answer). The deployments are built with CronSchedule anyway.
"""

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

_VENDORED = Path("_vendor", "croniter", "croniter.py")
# What Prefect's validator refuses although croniter accepts it: random and hashed fields.
_UNSUPPORTED_FIELDS = {"r", "h"}


def cron_problem(cron: str) -> str | None:
    """Why Prefect's CronSchedule would refuse `cron`, or None when it accepts it."""
    croniter = _vendored_croniter()
    if croniter is None:
        return _prefect_says(cron)
    if not croniter.croniter.is_valid(cron):
        return f'Invalid cron string: "{cron}"'
    if any(field.casefold() in _UNSUPPORTED_FIELDS for field in cron.split()):
        return f'Random and Hashed expressions are unsupported, received: "{cron}"'
    return None


@cache
def _vendored_croniter() -> ModuleType | None:
    found = importlib.util.find_spec("prefect")  # finds the package without running it
    if found is None or found.origin is None:
        return None
    path = Path(found.origin).parent / _VENDORED
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("nnserve_prefect_croniter", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses and pickling look themselves up there
    spec.loader.exec_module(module)
    return module


def _prefect_says(cron: str) -> str | None:
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError as error:
        return "; ".join(issue["msg"] for issue in error.errors())
    return None
