"""Write TF Serving's model config file: an entry for each model of the repository with a version.

`tensorflow/serving` serves only the models its `--model_config_file` lists and re-reads that file
every `--model_config_file_poll_wait_seconds`; new versions of a listed model it finds by itself.
Run with `--watch`, this keeps the file equal to the repository, so a model the worker publishes for
the first time is served without restarting anything.

A model without a complete version is left out: TF Serving does not open its ports until every
listed model has loaded, so listing it would stall the server's start.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from service import model_repository
from service.settings import get_settings

CONFIG_FILE_NAME = "models.config"


def served_models(repo: Path) -> list[str]:
    """Names of the repository's models that have at least one complete version, sorted."""
    if not repo.is_dir():
        return []
    return sorted(
        entry.name
        for entry in repo.iterdir()
        if entry.is_dir()
        and not entry.name.startswith(".")
        and model_repository.complete_versions(entry)
    )


def render(repo: Path, models: list[str]) -> str:
    """A ModelServerConfig text proto; JSON string quoting is valid text-format quoting."""
    entries = "".join(
        "  config {\n"
        f"    name: {json.dumps(name)}\n"
        f"    base_path: {json.dumps(str(repo / name))}\n"
        '    model_platform: "tensorflow"\n'
        "  }\n"
        for name in models
    )
    return "model_config_list {\n" + entries + "}\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Replace the file atomically when its text differs: TF Serving never reads half a file."""
    if path.is_file() and path.read_text() == text:
        return False
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return True


def update(repo: Path, output: Path) -> list[str]:
    models = served_models(repo)
    if write_if_changed(output, render(repo, models)):
        print(f"{output}: serving {', '.join(models) or 'no model yet'}", flush=True)
    return models


def main(argv: list[str] | None = None) -> int:
    repo_default = get_settings().model_repo
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repo",
        type=Path,
        default=repo_default,
        help=f"model repository (default: NNSERVE_MODEL_REPO, here {repo_default})",
    )
    parser.add_argument(
        "--output", type=Path, help=f"config file to write (default: REPO/{CONFIG_FILE_NAME})"
    )
    parser.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="keep rewriting the file when the repository changes, checking every SECONDS",
    )
    args = parser.parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        parser.error(f"--watch takes a positive number of seconds, got {args.watch}")
    repo = args.repo.resolve()
    output = args.output or repo / CONFIG_FILE_NAME
    if not output.parent.is_dir():
        parser.error(f"cannot write {output}: {output.parent} is not a directory")
    update(repo, output)
    while args.watch is not None:
        time.sleep(args.watch)
        update(repo, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
