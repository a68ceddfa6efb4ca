"""Add every model of the repository that has a version to TF Serving's model config file.

The file (`models.config`) is the record of what is served (service/serving_config.py): each
model's served versions and its version labels `stable` and `previous`, which promotions and
rollbacks move. This script only adds the models the file lacks, each with its newest complete
version: staged, then labelled stable once the model server (NNSERVE_TFSERVING_ADDR) reports it
AVAILABLE, or both at once where no model server answers yet (before TF Serving has started).
Models already listed keep their versions and labels. With `--watch` it looks again every
SECONDS, so a model published for the first time is served without restarting anything.

A model without a complete version is left out: TF Serving does not open its ports until every
listed model has loaded, so listing it would stall the server's start.
"""

import argparse
import signal
import sys
import threading
from pathlib import Path

from service import serving_config
from service.model_repository import CONFIG_FILE_NAME
from service.model_status import ModelServerError, ModelStatusClient
from service.settings import get_settings


def update(
    repo: Path, output: Path, model_server: ModelStatusClient | None, timeout_seconds: float
) -> list[str]:
    """Add the models `output` lacks; returns their names."""
    added = serving_config.add_missing_models(output, repo, model_server, timeout_seconds)
    for promotion in added:
        print(
            f"{output}: serving {promotion.model} version {promotion.version} (stable)", flush=True
        )
    return [promotion.model for promotion in added]


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repo",
        type=Path,
        default=settings.model_repo,
        help=f"model repository (default: NNSERVE_MODEL_REPO, here {settings.model_repo})",
    )
    parser.add_argument(
        "--output", type=Path, help=f"config file to write (default: REPO/{CONFIG_FILE_NAME})"
    )
    parser.add_argument(
        "--model-server",
        default=settings.tfserving_addr,
        metavar="HOST:PORT",
        help="the model server's gRPC address, asked whether a new model's version is AVAILABLE "
        f"(default: NNSERVE_TFSERVING_ADDR, here {settings.tfserving_addr})",
    )
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="keep adding models as they are published, looking every SECONDS",
    )
    args = parser.parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        parser.error(f"--watch takes a positive number of seconds, got {args.watch}")
    repo = args.repo.absolute()
    output = args.output or repo / CONFIG_FILE_NAME
    if not output.parent.is_dir():
        parser.error(f"cannot write {output}: {output.parent} is not a directory")
    failures = (serving_config.ServingConfigError, serving_config.PromotionError, ModelServerError)
    # As a container's main process it gets no default SIGTERM handling: without this, `docker
    # compose down` waits its 10 s and kills it. A write in progress is finished first.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with ModelStatusClient(args.model_server) as model_server:
        while True:
            try:
                update(repo, output, model_server, settings.promotion_timeout_seconds)
            except failures as error:
                print(f"{output}: {error}", file=sys.stderr, flush=True)
                if args.watch is None:
                    return 1
            if args.watch is None or stopping.wait(args.watch):
                return 0


if __name__ == "__main__":
    sys.exit(main())
