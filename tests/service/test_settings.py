"""Settings from HEGNN_* variables, and the `hegnn serve` command."""

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from hegnn_serve.service.settings import Settings, get_settings


def test_environment_variables_set_values(monkeypatch) -> None:
    monkeypatch.setenv("HEGNN_API_KEYS", " one, two ,,")
    monkeypatch.setenv("HEGNN_MAX_ATOMS", "50")
    monkeypatch.setenv("HEGNN_BATCHING", "false")
    monkeypatch.setenv("HEGNN_CHECKPOINTS", "/models")
    monkeypatch.setenv("HEGNN_LOG_LEVEL", "WARNING")
    s = Settings()
    assert s.api_keys == ["one", "two"]
    assert s.max_atoms == 50 and s.batching is False
    assert s.checkpoints == Path("/models") and s.log_level == "warning"


def test_defaults_need_no_environment() -> None:
    s = Settings()
    assert s.api_keys == [] and s.device == "auto" and s.torch_threads == 1
    assert s.max_wait_ms > 0 and s.batching


@pytest.mark.parametrize(
    "name, value", [("DEVICE", "tpu"), ("MAX_ATOMS", "0"), ("DTYPE", "float16")]
)
def test_bad_values_are_refused(monkeypatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"HEGNN_{name}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_is_cached(monkeypatch) -> None:
    get_settings.cache_clear()
    try:
        monkeypatch.setenv("HEGNN_PORT", "9001")
        assert get_settings() is get_settings() and get_settings().port == 9001
    finally:
        get_settings.cache_clear()


def test_hegnn_serve_runs_uvicorn_with_the_options(monkeypatch, tmp_path) -> None:
    import uvicorn

    from hegnn_cli import app

    calls = []

    def run(server: uvicorn.Server, sockets=None) -> None:
        calls.append((server.config.app, vars(server.config)))
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "8123",
            "--checkpoints",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    ((served, options),) = calls
    assert options["host"] == "0.0.0.0" and options["port"] == 8123
    assert served.state.settings.checkpoints == tmp_path
    assert served.state.settings.device == "auto"
    # uvicorn's own graceful timeout is a backstop behind HEGNN_DRAIN_S.
    drain_s = served.state.settings.drain_s
    assert drain_s <= 10 and options["timeout_graceful_shutdown"] > drain_s


def test_hegnn_serve_rejects_a_bad_device() -> None:
    from hegnn_cli import app

    result = CliRunner().invoke(app, ["serve", "--device", "tpu"])
    assert result.exit_code != 0


def test_the_dtype_setting_converts_models(checkpoint_dir) -> None:
    import torch

    from hegnn_serve.service.registry import load_registry

    registry = load_registry(Settings(checkpoints=checkpoint_dir, dtype="float32"))
    predictor = registry.predictors["tiny-ff"]
    assert predictor.dtype == torch.float32 and not registry.failed
    assert predictor.summary()["dtype"] == "float32"
