"""The serving process that `nnserve model-server` supervises: `python -m service.model_server`
with the same flags and the log level the settings gave (without it, it reads the settings
itself). It loads TensorFlow and the models and answers gRPC until SIGTERM."""

import argparse
import logging
import sys

from service import garbage_collection, json_logging
from service.cli import UserError, add_model_server_arguments, check_model_server_arguments
from service.model_server.channel_arguments import parse_channel_arguments
from service.model_server.limits import FeedLimits
from service.model_server.without_keras import hide_keras
from service.ports import PortInUseError

log = logging.getLogger("nnserve.model_server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nnserve model-server", allow_abbrev=False)
    add_model_server_arguments(parser)
    # From the supervisor, which has read the settings: pydantic costs this process 14 MB.
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=logging.getLevelNamesMapping(),
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args(argv)
    json_logging.configure(args.log_level or _settings_log_level())
    try:
        check_model_server_arguments(args)
        _serve(args)
    except (UserError, PortInUseError) as error:
        log.error("nnserve model-server: error: %s", error)
        return 2
    return 0


def _settings_log_level() -> str:
    from service.settings import get_settings

    return get_settings().log_level


def _serve(args: argparse.Namespace) -> None:
    hide_keras()
    garbage_collection.pause_for_startup()
    from service.model_server.batching import BatchingParameters, read_batching_parameters
    from service.model_server.config import ConfigError, read_config_file
    from service.model_server.manager import ModelConfig
    from service.model_server.servable import session_config
    from service.model_server.server import ServerOptions, StartupError, serve

    try:
        if args.model_config_file:
            models = read_config_file(args.model_config_file)
        else:
            models = [ModelConfig(args.model_name, args.model_base_path.resolve())]
        batching = None
        if args.enable_batching:
            batching = (
                read_batching_parameters(args.batching_parameters_file)
                if args.batching_parameters_file
                else BatchingParameters()
            )
        session = session_config(
            args.tensorflow_session_parallelism,
            args.tensorflow_intra_op_parallelism,
            args.tensorflow_inter_op_parallelism,
        )
    except (ConfigError, ValueError) as error:
        raise UserError(str(error)) from error
    options = ServerOptions(
        host=args.host,
        port=args.port,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        batching=batching,
        session_config=session,
        feed_limits=FeedLimits(
            args.max_tensor_elements, args.max_request_elements, args.max_string_elements
        ),
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        grpc_max_threads=args.grpc_max_threads,
        grpc_channel_arguments=parse_channel_arguments(args.grpc_channel_arguments),
        enable_grpc_healthcheck_service=args.enable_grpc_healthcheck_service,
    )
    try:
        serve(models, options)
    except StartupError as error:
        raise UserError(str(error)) from error


if __name__ == "__main__":
    sys.exit(main())
