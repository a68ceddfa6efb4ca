"""The `nnserve` command (DESCRIPTION says what it does for its users).

Heavy imports happen inside each subcommand, after its arguments and files are checked: the
gateway never loads TensorFlow, `nnserve --help` answers at once, and a bad spec is reported
before TensorFlow or Prefect is imported."""

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from service import console
from service.console import EACH_EPOCH, OVERALL
from service.model_server.limits import DEFAULT_GRPC_MAX_THREADS, FeedLimits
from service.ports import PortInUseError

CONFIG_FILE_SETTING = "NNSERVE_MODEL_CONFIG_FILE, default NNSERVE_MODEL_REPO/models.config"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    # Commands without --verbose (the servers log JSON, the registry commands say little) keep
    # every library's INFO records.
    verbose = getattr(args, "verbose", True)
    if console.is_quiet(verbose):
        console.quiet_environment()  # before TensorFlow or Prefect is imported, here or below
    console.configure(verbose)
    try:
        return args.run(args) or 0
    except (UserError, PortInUseError) as error:
        print(f"nnserve {args.command}: error: {error}", file=sys.stderr)
        return 2


class UserError(Exception):
    """A problem the user can fix, reported as one line without a traceback."""


DESCRIPTION = """\
nnserve: train Keras models from a YAML spec with a Prefect flow, publish them as versioned
SavedModels, and serve them through TensorFlow Serving's API and an HTTP gateway.

Start with `nnserve up`: it trains the demo model if the model repository has none, then serves
every model of the repository on 127.0.0.1. `nnserve COMMAND --help` tells more of each command."""

ENVIRONMENT = {
    "NNSERVE_MODEL_REPO": "the model repository (default ./models)",
    "NNSERVE_RUNS_DIR": "training runs and their reports (default ./runs)",
    "NNSERVE_MODEL_CONFIG_FILE": "the record of what is served (default "
    "NNSERVE_MODEL_REPO/models.config)",
    "NNSERVE_TFSERVING_ADDR": "the model server's gRPC address (default localhost:8500)",
    "NNSERVE_TFSERVING_IMAGE": "the image --engine docker runs (default tensorflow/serving:2.20.0)",
    "NNSERVE_DATA_DIR": "downloaded dataset files (default ~/.cache/nnserve/datasets)",
    "NNSERVE_PROMOTION_TIMEOUT_SECONDS": "how long a promotion waits for the model server "
    "(default 300)",
    "NNSERVE_NOTIFICATION_BLOCK": "Prefect block announcing failed and rejected runs "
    "(default none)",
    "NNSERVE_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR: what is logged (default: WARNING on "
    "the terminal of up and train, INFO for the servers' JSON logs)",
    "PREFECT_API_URL": "a Prefect server for the flow runs (default: Prefect's temporary one)",
    "TF_ENABLE_ONEDNN_OPTS": "TensorFlow's oneDNN kernels (the model server's default: 0)",
}


def _environment(*names: str) -> str:
    """An epilog naming the environment variables a command reads."""
    return "environment:\n" + "\n".join(f"  {name}\n      {ENVIRONMENT[name]}" for name in names)


def _command(commands, name: str, help: str, description: str | None = None, reads=(), **parser):
    return commands.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=_environment(*reads) if reads else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **parser,
    )


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show every library's log (TensorFlow, Prefect, the servers' INFO records) instead "
        "of progress lines, warnings and errors; NNSERVE_LOG_LEVEL sets the level (default: off)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnserve",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _command(
        commands,
        "up",
        "train the demo model if needed, then serve every model of the repository",
        "Trains the spec's model if the model repository has no version of it, then runs the "
        "model server (TensorFlow Serving's gRPC API) and the gateway (HTTP) on 127.0.0.1 until "
        "Ctrl-C. Both serve what the model config lists; a model of the repository it lacks is "
        "added with its newest version stable. With --models they serve only the models named "
        "and the spec's, while the model config keeps every model's entry and labels. Prints a "
        "line per step, then a banner once every model served is AVAILABLE.",
        reads=(
            "NNSERVE_MODEL_REPO",
            "NNSERVE_RUNS_DIR",
            "NNSERVE_MODEL_CONFIG_FILE",
            "NNSERVE_TFSERVING_IMAGE",
            "NNSERVE_LOG_LEVEL",
            "PREFECT_API_URL",
        ),
    )
    up.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="spec of the model to train when missing and to show in the banner (default: "
        "pipeline/specs/digits-cnn.yaml)",
    )
    up.add_argument(
        "--grpc-port", type=int, default=8500, help="the model server's gRPC port (default 8500)"
    )
    up.add_argument(
        "--http-port", type=int, default=8000, help="the gateway's HTTP port (default 8000)"
    )
    up.add_argument(
        "--engine",
        choices=("auto", "embedded", "docker"),
        default="auto",
        help="where the model server runs: `docker` runs NNSERVE_TFSERVING_IMAGE "
        "(tensorflow/serving) on a Docker engine, `embedded` runs nnserve model-server; "
        "`auto` (default) takes Docker where an engine answers and has the image",
    )
    up.add_argument(
        "--models",
        metavar="NAME[,NAME...]",
        type=_model_names,
        action="extend",
        help="serve only these models of the model repository or the model config, and the "
        "spec's model, which is always served; repeatable. A model missing from the model config "
        "is added to it; the other models' entries and labels stay there. `nnserve promote` and "
        "`rollback` of a model served take effect as without --models (default: every model of "
        "both)",
    )
    _add_verbose(up)
    up.set_defaults(run=_up)

    train = _command(
        commands,
        "train",
        "run the retraining flow once for a spec: train, gate, publish, promote",
        "Runs the retraining flow once: checks the spec and its dataset files (within a "
        "second, before TensorFlow is loaded); skips when the data and the spec are those of "
        "the stable version (unless --force); trains; evaluates the candidate and the stable "
        "version on the same test split; publishes the candidate only if the spec's gate "
        "accepts it, makes it stable through the model server at NNSERVE_TFSERVING_ADDR, and "
        "prunes versions beyond retraining.keep_versions. A rejected candidate is kept in its "
        "run folder (NNSERVE_RUNS_DIR) and the command fails, giving both numbers.",
        reads=(
            "NNSERVE_MODEL_REPO",
            "NNSERVE_RUNS_DIR",
            "NNSERVE_MODEL_CONFIG_FILE",
            "NNSERVE_TFSERVING_ADDR",
            "NNSERVE_DATA_DIR",
            "NNSERVE_PROMOTION_TIMEOUT_SECONDS",
            "NNSERVE_NOTIFICATION_BLOCK",
            "NNSERVE_LOG_LEVEL",
            "PREFECT_API_URL",
        ),
    )
    train.add_argument(
        "spec", type=Path, help="the model's YAML spec, such as pipeline/specs/digits-cnn.yaml"
    )
    train.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        type=_override,
        action="append",
        default=[],
        help="replace a value of the spec: a dotted key and a YAML value, such as "
        "training.epochs=3 or model.units=[8,8]; repeatable (default: none)",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="train even when neither the data nor the spec changed since the stable version "
        "(default: off)",
    )
    train.add_argument(
        "--progress",
        choices=(EACH_EPOCH, OVERALL),
        default=EACH_EPOCH,
        help=f"{EACH_EPOCH}: a bar and the metrics for each epoch; {OVERALL}: one line for the "
        f"whole training, redrawn in place on a terminal (default {EACH_EPOCH})",
    )
    _add_verbose(train)
    train.set_defaults(run=_train)

    schedule = _command(
        commands,
        "schedule",
        "serve the scheduled retraining deployments, one per spec with retraining.cron",
        "Serves a Prefect deployment of the `retrain` flow for every spec that has "
        "a retraining.cron, with that schedule and the spec's retraining.parameters, and runs "
        "the flow runs that fall due, until Ctrl-C or SIGTERM. Works against PREFECT_API_URL "
        "(a server, its UI and `prefect deployment run retrain/MODEL`) or, when that is "
        "unset, Prefect's temporary API. --write-prefect-yaml writes the same deployments as "
        "prefect.yaml for `prefect deploy --all` instead.",
        reads=("PREFECT_API_URL", "NNSERVE_MODEL_REPO", "NNSERVE_RUNS_DIR", "NNSERVE_LOG_LEVEL"),
    )
    schedule.add_argument(
        "specs", nargs="*", type=Path, help="spec files (default: every one in pipeline/specs/)"
    )
    schedule.add_argument(
        "--write-prefect-yaml",
        metavar="PATH",
        type=Path,
        nargs="?",
        const=Path("prefect.yaml"),
        help="write the deployments to PATH (prefect.yaml when PATH is left out) and exit "
        "(default: serve them)",
    )
    _add_verbose(schedule)
    schedule.set_defaults(run=_schedule)

    server = _command(
        commands,
        "model-server",
        "serve SavedModels over TensorFlow Serving's gRPC API",
        "Takes TensorFlow Serving's flag names, as --flag=value or --flag value, and refuses "
        "any other flag, as TF Serving does. Serves from a child process that it starts again "
        "if it crashes; logs one JSON object per line on stderr.",
        reads=("NNSERVE_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"),
        allow_abbrev=False,
    )
    add_model_server_arguments(server)
    server.set_defaults(run=_model_server)

    gateway = _command(
        commands,
        "gateway",
        "serve the HTTP API in front of the model server",
        "Serves TensorFlow Serving's REST API, :classify_images and the demo page at / over "
        "HTTP, calling the model server at NNSERVE_TFSERVING_ADDR. Its limits, API keys and CORS "
        "are NNSERVE_* settings too: see the Settings table of README.md.",
        reads=("NNSERVE_TFSERVING_ADDR", "NNSERVE_MODEL_CONFIG_FILE", "NNSERVE_LOG_LEVEL"),
    )
    gateway.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    gateway.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    gateway.set_defaults(run=_gateway)

    registry_reads = ("NNSERVE_MODEL_REPO", "NNSERVE_MODEL_CONFIG_FILE", "NNSERVE_TFSERVING_ADDR")
    models = _command(
        commands,
        "models",
        "list each model's versions: labels, served, metrics, data, creation, flow run",
        "Lists the versions in the model repository (NNSERVE_MODEL_REPO), which "
        "are stable, previous and served according to the model config "
        f"({CONFIG_FILE_SETTING}), and what each version's assets.extra/nnserve.json says: "
        "metrics, dataset fingerprint, creation time, flow run id, gate decision.",
        reads=registry_reads[:2],
    )
    models.add_argument("model", nargs="?", help="only this model (default: every model)")
    models.add_argument(
        "--json", action="store_true", help="print JSON instead of a table (default: off)"
    )
    models.set_defaults(run=_models)

    promote = _command(
        commands,
        "promote",
        "make a version the stable one, without a failed request",
        "Makes VERSION the stable version of MODEL in the model config "
        f"({CONFIG_FILE_SETTING}), in TF Serving's steps: VERSION joins the served versions; "
        "once the model server at NNSERVE_TFSERVING_ADDR reports it AVAILABLE (waiting at most "
        "NNSERVE_PROMOTION_TIMEOUT_SECONDS), the label `stable` moves to it and `previous` to "
        "the old stable; then the version before that stops being served. Where no model "
        "server answers at that address, the steps are written at once. Refuses a version that "
        "is not complete in the model repository (NNSERVE_MODEL_REPO), and one whose "
        "nnserve.json records a rejection by the retraining gate unless --force.",
        reads=(*registry_reads, "NNSERVE_PROMOTION_TIMEOUT_SECONDS"),
    )
    promote.add_argument("model", help="the model's name, as in the model repository")
    promote.add_argument("version", type=_positive, help="the version to make stable")
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote a version the retraining gate rejected (default: off)",
    )
    promote.set_defaults(run=_promote)

    rollback = _command(
        commands,
        "rollback",
        "make the previous stable version stable again",
        "In the model config "
        f"({CONFIG_FILE_SETTING}), the version labelled `previous` becomes `stable` and the "
        "version that was stable stops being served, in one write. The model server at "
        "NNSERVE_TFSERVING_ADDR, if one answers there, must have the previous version "
        "AVAILABLE. A model with no previous version (one rollback already made) is refused.",
        reads=registry_reads,
    )
    rollback.add_argument("model", help="the model's name, as in the model repository")
    rollback.set_defaults(run=_rollback)
    return parser


def add_model_server_arguments(server: argparse.ArgumentParser) -> None:
    """`nnserve model-server`'s flags: TF Serving's names, and a few of nnserve's own."""
    limits = FeedLimits()
    server.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    server.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on (nnserve only; TF Serving always uses 0.0.0.0)",
    )
    server.add_argument(
        "--model_name", default="default", help="name of the single model (default: default)"
    )
    server.add_argument(
        "--model_base_path",
        type=Path,
        help="folder of the single model's versions (default: none; or --model_config_file)",
    )
    server.add_argument(
        "--model_config_file",
        type=Path,
        help="ModelServerConfig text proto listing the models, instead of --model_base_path "
        "(default: none)",
    )
    server.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="seconds between re-reads of the config file; 0 reads it once (default 0.0)",
    )
    server.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="seconds between scans for new versions; 0 scans once at start (default 1.0)",
    )
    _add_flag(server, "--enable_batching", "merge concurrent calls into batches (default: false)")
    server.add_argument(
        "--batching_parameters_file",
        type=Path,
        help="BatchingParameters text proto: max_batch_size, batch_timeout_micros, ... "
        "(default: none, TF Serving's defaults)",
    )
    for scope, meaning in (
        ("session", "both thread pools of a session"),
        ("intra_op", "the threads one op is split across"),
        ("inter_op", "the threads ops run on; negative runs them on the calling thread"),
    ):
        server.add_argument(
            f"--tensorflow_{scope}_parallelism",
            type=int,
            default=0,
            help=f"{meaning} (default 0: TensorFlow chooses)",
        )
    _add_flag(
        server,
        "--allow_version_labels_for_unavailable_models",
        "let a new version label point to a version not loaded yet, as TF Serving (default: false)",
    )
    _add_flag(
        server,
        "--enable_grpc_healthcheck_service",
        "also answer grpc.health.v1.Health/Check (default false, as TF Serving)",
    )
    server.add_argument(
        "--grpc_max_threads",
        type=_positive,
        default=DEFAULT_GRPC_MAX_THREADS,
        help="threads answering gRPC calls (default: 4 per CPU, as TF Serving: "
        f"{DEFAULT_GRPC_MAX_THREADS} here)",
    )
    server.add_argument(
        "--grpc_channel_arguments",
        default="",
        help="gRPC server arguments as key=value,key=value, such as "
        "grpc.max_receive_message_length=134217728 (default: none; the message limit is then "
        "64 MiB, TF Serving's 2 GiB)",
    )
    for what, default, meaning in (
        ("tensor", limits.max_tensor_elements, "elements of one input"),
        ("request", limits.max_request_elements, "elements of all inputs of a request"),
        ("string", limits.max_string_elements, "elements of one string input"),
    ):
        server.add_argument(
            f"--max_{what}_elements",
            type=_positive,
            default=default,
            help=f"most {meaning} a Predict may send (nnserve only; default {default})",
        )


def _add_flag(server: argparse.ArgumentParser, name: str, help: str) -> None:
    """A TF Serving boolean flag, off unless given (`--flag`, `--flag=true`)."""
    server.add_argument(name, type=_flag_value, nargs="?", const=True, default=False, help=help)


def check_model_server_arguments(args: argparse.Namespace) -> None:
    """What can be refused before any TensorFlow is loaded."""
    from service.model_server.channel_arguments import parse_channel_arguments

    if (args.model_config_file is None) == (args.model_base_path is None):
        raise UserError("give either --model_base_path (one model) or --model_config_file")
    if args.batching_parameters_file and not args.enable_batching:
        raise UserError("--batching_parameters_file is set without setting --enable_batching")
    try:
        parse_channel_arguments(args.grpc_channel_arguments)
    except ValueError as error:
        raise UserError(str(error)) from error


def _up(args: argparse.Namespace) -> int:
    from service import up

    spec = args.spec or up.DEFAULT_SPEC
    try:
        return up.run(
            spec,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            engine=args.engine,
            verbose=args.verbose,
            models=args.models,
        )
    except up.UpError as error:
        raise UserError(str(error)) from error


def _train(args: argparse.Namespace) -> int:
    from pipeline.dataset_files import DatasetError, check_files
    from pipeline.spec import SpecError, load_spec, merge

    overrides: dict = {}
    for override in args.overrides:  # a later --set of the same key wins
        overrides = merge(overrides, override)
    try:  # all that can be checked before TensorFlow and Prefect are imported
        spec = load_spec(args.spec, overrides, overrides_from="--set")
        check_files(spec.dataset)
    except (SpecError, DatasetError) as error:
        raise UserError(str(error)) from error
    console.STEPS.info(
        "%s: spec and dataset files checked; loading TensorFlow and Prefect", spec.name
    )
    result = _run_flow(args, spec, overrides)
    from pipeline.outcome import SKIPPED

    if result.outcome == SKIPPED:
        print(f"{result.model_name}: {result.message}; nothing trained (--force trains anyway)")
        return 0
    resumed = (
        f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else ""
    )
    promotion = result.promotion
    previous = f", previous: {promotion.previous}" if promotion.previous else ""
    print(
        f"trained {result.model_name} version {result.version} in "
        f"{result.epochs_trained} epochs{resumed}: {result.evaluation.describe()}"
    )
    print(f"  gate:    accepted, {result.message}")
    print(
        f"  serving: version {result.version} is stable{previous} (served: "
        f"{', '.join(map(str, promotion.served))})"
    )
    if result.pruned:
        print(f"  pruned:  versions {', '.join(map(str, result.pruned))}")
    print(f"  model:   {result.version_dir}")
    print(f"  reports: {result.run_dir}")
    if args.verbose:
        for report in sorted(path.name for path in result.run_dir.iterdir() if path.is_file()):
            print(f"           {report}")
    return 0


def _run_flow(args: argparse.Namespace, spec, overrides: dict):
    """The retraining flow in this process, its failures that a user can fix as UserError."""
    _allow_slow_prefect_start()
    from pipeline import ephemeral_api

    api_ready = ephemeral_api.start_early()
    with console.native_chatter_hidden(args.verbose):
        import tensorflow as tf

        from pipeline.flow import retrain

        tf.config.list_physical_devices()  # TensorFlow's probe for GPUs, and its chatter, now
    api_ready()
    from pipeline.datasets import DatasetError
    from pipeline.downloads import DownloadError
    from pipeline.gate import GateError
    from pipeline.models import ModelError
    from pipeline.outcome import DECISION_FILE, CandidateRejected
    from pipeline.spec import SpecError
    from pipeline.stable import StableVersionError
    from service.model_status import ModelServerError
    from service.serving_config import PromotionError, ServingConfigError

    try:
        return retrain(
            str(args.spec), overrides=overrides or None, force=args.force, progress=args.progress
        )
    except CandidateRejected as rejected:
        raise UserError(
            f"{rejected.result.model_name} not published: {rejected}; the candidate, its "
            f"reports and {DECISION_FILE} are in {rejected.result.run_dir}"
        ) from rejected
    except (
        SpecError,
        DatasetError,
        DownloadError,
        ModelError,
        GateError,
        StableVersionError,
        ServingConfigError,
        PromotionError,
        ModelServerError,
    ) as error:
        raise UserError(str(error)) from error


def _schedule(args: argparse.Namespace) -> int:
    _allow_slow_prefect_start()
    from pipeline import schedules

    try:
        found = schedules.find_schedules(args.specs)
    except schedules.ScheduleError as error:
        raise UserError(str(error)) from error
    if args.write_prefect_yaml:
        args.write_prefect_yaml.write_text(schedules.prefect_yaml(found))
        print(f"wrote {len(found)} deployment(s) to {args.write_prefect_yaml}")
        return 0
    schedules.serve(found)
    return 0


def _override(text: str) -> dict:
    """`--set a.b=VALUE` as the nested overrides `{"a": {"b": VALUE}}`, VALUE read as YAML."""
    import yaml

    key, equals, value = text.partition("=")
    keys = [part.strip() for part in key.split(".")]
    if not equals or not all(keys):
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with a dotted KEY, such as training.epochs=3; got {text!r}"
        )
    try:
        override = yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not a YAML value") from None
    for part in reversed(keys):
        override = {part: override}
    return override


def _allow_slow_prefect_start() -> None:
    """On its first run Prefect's ephemeral API builds its database before it answers, which
    takes longer than Prefect's 20 s default on a busy two-core machine; a user's setting wins."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _model_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected model names separated by commas, such as digits-cnn,iris-mlp; got {text!r}"
        )
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _flag_value(text: str) -> bool:
    """TF Serving's boolean flags: `--flag`, `--flag=true` or `--flag=false`."""
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _model_server(args: argparse.Namespace) -> int:
    from service.settings import get_settings

    check_model_server_arguments(args)
    level = get_settings().log_level
    serving = [sys.executable, "-m", "service.model_server", f"--log-level={level}", *args.argv[1:]]
    # The supervisor lasts as long as the server: a fresh interpreter runs it without what
    # checked the settings (pydantic, numpy), 52 -> 16 MB resident. Same process, same signals.
    supervisor = [sys.executable, "-m", "service.model_server.supervisor", level, *serving]
    os.execv(sys.executable, supervisor)


def _gateway(args: argparse.Namespace) -> int:
    from service import garbage_collection

    garbage_collection.pause_for_startup()
    from service.gateway.server import serve

    serve(args.host, args.port)
    return 0


@contextlib.contextmanager
def _registry_errors() -> Iterator[None]:
    """The registry's refusals as one line each, exit code 2."""
    from service.model_status import ModelServerError
    from service.registry import RegistryError
    from service.serving_config import PromotionError, ServingConfigError

    try:
        yield
    except (RegistryError, ServingConfigError, PromotionError, ModelServerError) as error:
        raise UserError(str(error)) from error


def _models(args: argparse.Namespace) -> int:
    from service import registry, serving_config
    from service.settings import get_settings

    settings = get_settings()
    with _registry_errors():
        config = serving_config.read(settings.serving_config_file(), missing_ok=True)
        models = registry.describe(settings.model_repo, config, args.model)
    if args.json:
        print(json.dumps({"models": [model.to_json() for model in models]}, indent=2))
    elif not models:
        print(f"no models in {settings.model_repo} or {settings.serving_config_file()}")
    else:
        print("\n\n".join(_model_table(model) for model in models))
    return 0


def _model_table(model) -> str:
    rows = [("VERSION", "LABELS", "SERVED", "METRICS", "DATASET", "CREATED", "FLOW RUN", "NOTE")]
    for version in model.versions:
        metadata = version.metadata or {}
        metrics = metadata.get("metrics") or {}
        notes = [
            "incomplete" if not version.complete else "",
            f"rejected: {version.rejection}" if version.rejection else "",
            version.metadata_error or "",
        ]
        rows.append(
            (
                str(version.version),
                ",".join(version.labels) or "-",
                "yes" if version.served else "no",
                " ".join(_metric(name, value) for name, value in sorted(metrics.items())) or "-",
                str(metadata.get("dataset_fingerprint") or "-")[:12],
                str(metadata.get("created_at") or "-"),
                str(metadata.get("flow_run_id") or "-")[:8],
                "; ".join(note for note in notes if note),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    listed = "" if model.listed else " (not in the model config)"
    return f"{model.name}  {model.base_path}{listed}\n" + "\n".join(
        "  " + line.rstrip() for line in lines
    )


def _metric(name: str, value) -> str:
    return f"{name}={value:.4g}" if isinstance(value, int | float) else f"{name}={value}"


def _promote(args: argparse.Namespace) -> int:
    from service import registry, served_view, serving_config
    from service.model_status import ModelStatusClient
    from service.settings import get_settings

    settings = get_settings()
    config_file = settings.serving_config_file()
    left_out = served_view.leaves_out(config_file, settings.tfserving_addr, args.model)
    with _registry_errors():
        config = serving_config.read(config_file, missing_ok=True)
        base = registry.base_path(settings.model_repo, config, args.model)
        registry.check_promotable(base, args.model, args.version, args.force)
        with ModelStatusClient(settings.tfserving_addr) as model_server:
            promotion = serving_config.promote(
                config_file,
                args.model,
                args.version,
                base,
                None if left_out else model_server,
                settings.promotion_timeout_seconds,
            )
    if promotion.confirmed_available:
        how = f"AVAILABLE on the model server at {settings.tfserving_addr}"
    elif left_out:
        how = f"{left_out}: written in one step"
    else:
        how = f"no model server answered at {settings.tfserving_addr}: written in one step"
    previous = f"previous: {promotion.previous}" if promotion.previous else "no previous"
    served = ", ".join(map(str, promotion.served))
    print(
        f"{args.model} version {args.version} is stable ({previous}; served: {served}); {how}\n"
        f"  {config_file}"
    )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from service import registry, served_view
    from service.model_status import ModelStatusClient
    from service.settings import get_settings

    settings = get_settings()
    config_file = settings.serving_config_file()
    left_out = served_view.leaves_out(config_file, settings.tfserving_addr, args.model)
    with _registry_errors(), ModelStatusClient(settings.tfserving_addr) as model_server:
        stable = registry.roll_back(config_file, args.model, None if left_out else model_server)
    print(f"{args.model} version {stable} is stable again; no previous version is left")
    print(f"  {config_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
