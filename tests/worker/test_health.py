"""The liveness file and its check."""

import os
import time
from pathlib import Path

import pytest

from worker.health import is_alive, main, touch


def test_fresh_file_is_alive(tmp_path: Path) -> None:
    path = tmp_path / "health"
    touch(str(path))
    assert is_alive(str(path), 10)


def test_stale_or_missing_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "health"
    touch(str(path))
    old = time.time() - 300
    os.utime(path, (old, old))
    assert not is_alive(str(path), 120)
    assert not is_alive(str(tmp_path / "missing"), 120)


def test_touch_without_path_does_nothing() -> None:
    touch(None)


def test_main_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "health"
    monkeypatch.delenv("MODELRUNNER_HEALTH_FILE", raising=False)
    assert main() == 1
    assert "MODELRUNNER_HEALTH_FILE is not set" in capsys.readouterr().err
    monkeypatch.setenv("MODELRUNNER_HEALTH_FILE", str(path))
    assert main() == 1
    assert "worker loop not seen within 120s" in capsys.readouterr().err
    touch(str(path))
    assert main() == 0
