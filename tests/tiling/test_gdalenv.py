"""Per-image read credentials: thread-local GDAL options, restored, never shown."""

import threading

import pytest
from rasterio.env import get_gdal_config, getenv

from tiling.gdalenv import (
    ReadCredentials,
    ensure_thread_env,
    holding_path,
    image_credentials,
    vsi_path,
)

KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
ROLE = ReadCredentials("ASIAROLE", "role-secret", "role-token")


def gdal_options(names: tuple[str, ...] = (*KEYS, "CPL_VSIL_CURL_NON_CACHED")) -> dict[str, str]:
    return {name: get_gdal_config(name, normalize=False) for name in names}


def in_thread(fn: object) -> dict[str, str]:
    found: list[dict[str, str]] = []

    def run() -> None:
        ensure_thread_env()
        found.append(fn())  # type: ignore[operator]

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return found[0]


def test_credentials_hold_on_this_thread_only_and_are_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "worker-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)

    def scenario() -> dict[str, str]:
        before = gdal_options()
        env_before = getenv()
        seen: dict[str, str] = {}
        with image_credentials(ROLE, "/vsis3/bucket/a.tif"):
            seen.update(gdal_options())
            seen["other thread"] = in_thread(gdal_options)["AWS_ACCESS_KEY_ID"]
            with image_credentials(ReadCredentials("ASIAB", "b", "t"), "/vsis3/bucket/b.tif"):
                seen["nested"] = get_gdal_config("AWS_ACCESS_KEY_ID")
            seen["after nested"] = get_gdal_config("AWS_ACCESS_KEY_ID")
        assert gdal_options() == before
        assert getenv() == env_before
        return seen

    seen = in_thread(scenario)  # a fresh thread: its environment is the worker's own keys
    assert seen["AWS_ACCESS_KEY_ID"] == "ASIAROLE"
    assert seen["AWS_SECRET_ACCESS_KEY"] == "role-secret"
    assert seen["AWS_SESSION_TOKEN"] == "role-token"
    assert seen["CPL_VSIL_CURL_NON_CACHED"] == "/vsis3/bucket/a.tif"
    assert seen["other thread"] == "worker-key"
    assert seen["nested"] == "ASIAB"
    assert seen["after nested"] == "ASIAROLE"


def test_credentials_are_never_shown() -> None:
    assert repr(ROLE) == "ReadCredentials(<hidden>)"
    assert "role-secret" not in str(ROLE)
    assert "role-token" not in f"{ROLE!r} {[ROLE]}"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("s3://bucket/dir/image.ntf", "/vsis3/bucket/dir/image.ntf"),
        ("/data/image.tif", None),
        ("file:///data/image.tif", None),
    ],
)
def test_vsi_path(url: str, path: str | None) -> None:
    assert vsi_path(url) == path


def test_holding_path_counts_and_forgets() -> None:
    from tiling import gdalenv  # noqa: PLC0415 - the module's bookkeeping, on purpose

    with holding_path("/vsis3/b/k"), holding_path("/vsis3/b/k"):
        assert gdalenv._role_paths["/vsis3/b/k"] == 2
    assert "/vsis3/b/k" not in gdalenv._role_paths
