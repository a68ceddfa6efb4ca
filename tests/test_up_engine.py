"""`nnserve up --engine`: where no Docker engine answers, `docker` is a clear error before any
training and `auto` runs the embedded model server. With an engine, tests/compose runs the
tensorflow/serving stand-in through it."""

from support import DIGITS_SPEC, free_port, refused_start

from service import up

NO_ENGINE = "unix:///nonexistent/docker.sock"


def test_docker_engine_without_an_engine_is_refused_before_training(tmp_path):
    repo = tmp_path / "models"
    stderr = refused_start(
        "up",
        "--engine",
        "docker",
        "--spec",
        str(DIGITS_SPEC),
        "--grpc-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        env={"DOCKER_HOST": NO_ENGINE, "NNSERVE_MODEL_REPO": str(repo)},
    )
    assert f"no Docker engine answers at {NO_ENGINE}" in stderr, stderr
    assert "--engine embedded" in stderr and "Traceback" not in stderr
    assert not repo.exists(), "it trained before finding out"


def test_auto_without_an_engine_runs_the_embedded_model_server(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    assert up._docker_engine("auto", "tensorflow/serving:2.20.0") is None
    assert f"model server: embedded, as no Docker engine answers at {NO_ENGINE}" in (
        capsys.readouterr().out
    )


def test_unknown_engine_is_refused():
    assert "invalid choice: 'podman'" in refused_start("up", "--engine", "podman")
