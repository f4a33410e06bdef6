"""bioimage.io adapter throughput: 512 x 512 tiles, a tiny ONNX model, the local backend.

Writes a sample package from ``tests.models.bioimageio_sample`` to a temporary folder: with
``--network sigmoid`` (the default) the tests' per-pixel sigmoid in ONNX behind bioimageio.core's
``scale_linear``, with ``--network conv`` the 3-layer convolutional network (3 KB of weights,
the compute of a small segmentation network). It makes 512 x 512 uint8
tiles with 5 to 20 bright discs on a dim, noisy background, encoded as the worker sends them
(uncompressed NITF, PNG) and as ``.npy``. Then, per run and format:

- end to end: the adapter (``python -m models.bioimageio``, a separate process, or with
  ``--server thread`` a thread of this one) on 127.0.0.1 and a keep-alive client posting every
  tile sequentially, then two clients posting half each at once: tiles per second;
- per request, from the adapter's ``Server-Timing`` header on the sequential client's replies:
  decode (options and tile), prediction (the local backend), vectorising (objects to
  features) and the reply's JSON encoding; HTTP and the rest is the request's latency at the
  client minus their sum. Each stage and the latency are taken from the same request, so a
  slow moment of the machine moves both. Also ``onnxruntime`` alone on the same pixels (in
  this process), the floor prediction could reach.

Tiles per second are medians over ``--runs``; per-tile times are each tile's median over the
runs, averaged over the tiles (robust to a run slowed by other processes on the machine), and
the shares are of the sequential request latency. The target: prediction at least 70% of it.
``--profile`` prints cProfile's top functions for prediction and for the rest over one more
pass in this process (with the adapter's allocator settings).

``tests.models.bioimageio_sample`` (which needs the dev extras ``onnx`` and ``pyyaml``) imports
because ``python -m`` from the repository root puts the root on ``sys.path``.

``TQDM_DISABLE`` and ``ORT_DISABLE_TELEMETRY`` default to 1 here as in the adapter process;
set ``TQDM_DISABLE=`` (empty: tqdm reads any other value as true) to measure with tqdm's
progress bars (written to log files).

    python -m benchmarks.bioimageio_adapter [--tiles 200] [--runs 3] [--geometry polygon|bbox]
                                            [--network sigmoid|conv]
    python -m benchmarks.bioimageio_adapter --tiles 100 --runs 1 --formats NITF --profile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import io
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# As ``python -m models.bioimageio`` does, before bioimageio.core and onnxruntime are imported,
# so that this process predicts as the adapter does: no telemetry, no progress bars.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import numpy.typing as npt
import onnxruntime  # type: ignore[import-untyped]  # no stubs, no py.typed

from infra.local_stack import free_port, wait_until_up
from models.bioimageio.adapter import (
    SERVER_TIMING_HEADER,
    AdapterServer,
    encode_reply,
    parse_server_timing,
)
from models.bioimageio.invocation import Backend, Invocation, read_tile, run
from models.bioimageio.local import LocalBackend
from models.bioimageio.samples import write_sample_package
from models.http import CUSTOM_ATTRIBUTES_HEADER, keep_freed_memory, parse_custom_attributes
from tiling.encode import encode_tile

ROOT = Path(__file__).resolve().parents[1]
TILE = 512
MODEL_ID = "bright"
FORMATS = ("NITF", "PNG", "NPY", "GTIFF")
STAGES = ("decode", "predict", "vectorise", "json")
TARGET_PREDICT_SHARE = 70.0


def make_tiles(count: int, size: int = TILE, seed: int = 0) -> list[npt.NDArray[np.uint8]]:
    """``(1, size, size)`` tiles: noisy background (< 110) and 5-20 bright discs (170-250)."""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(count):
        pixels = rng.normal(45.0, 12.0, (size, size)).clip(0, 110)
        for _disc in range(int(rng.integers(5, 21))):
            cy, cx = rng.uniform(0, size, 2)
            radius = rng.uniform(5.0, 30.0)
            level = rng.uniform(170.0, 250.0)
            y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, size)
            x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, size)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            # Anti-aliased edge: full brightness inside, a one-pixel ramp at the rim.
            cover = np.clip(radius + 0.5 - np.hypot(yy - cy, xx - cx), 0.0, 1.0)
            inside = level + rng.normal(0.0, 8.0, cover.shape)
            window = pixels[y0:y1, x0:x1]
            pixels[y0:y1, x0:x1] = np.maximum(window, window + cover * (inside - window))
        tiles.append(np.rint(pixels).clip(0, 255).astype(np.uint8)[np.newaxis])
    return tiles


def encode(tile: npt.NDArray[np.uint8], tile_format: str) -> bytes:
    """The body the worker would post (``NPY``: a ``.npy`` file)."""
    if tile_format == "NPY":
        buffer = io.BytesIO()
        np.save(buffer, tile, allow_pickle=False)
        return buffer.getvalue()
    return encode_tile(tile, tile_format, "NONE")


# --- end to end -------------------------------------------------------------------------------


class NoDelayConnection(http.client.HTTPConnection):
    """http.client sends headers and body in two writes: without TCP_NODELAY (which the worker's
    aiohttp sets) Nagle's algorithm and the server's delayed ACK stall some requests ~40 ms."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class Requests:
    """Each request's seconds at the client and its stage seconds from ``Server-Timing``."""

    latencies: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})


def post_all(port: int, bodies: list[bytes], attributes: str) -> Requests:
    """POST every body on one keep-alive connection.

    Raises:
        RuntimeError: On a reply other than 200 or without the four stages' timings.
    """
    connection = NoDelayConnection("127.0.0.1", port, timeout=120)
    headers = {CUSTOM_ATTRIBUTES_HEADER: attributes, "Content-Type": "application/octet-stream"}
    result = Requests()
    try:
        for body in bodies:
            began = time.perf_counter()
            connection.request("POST", "/invocations", body=body, headers=headers)
            response = connection.getresponse()
            reply = response.read()
            result.latencies.append(time.perf_counter() - began)
            if response.status != 200:
                raise RuntimeError(f"adapter answered {response.status}: {reply[:200]!r}")
            timings = parse_server_timing(response.getheader(SERVER_TIMING_HEADER) or "")
            if set(timings) != set(STAGES):
                raise RuntimeError(f"Server-Timing has {sorted(timings)}, not {STAGES}")
            for stage in STAGES:
                result.stages[stage].append(timings[stage])
    finally:
        connection.close()
    return result


def end_to_end(
    port: int, bodies: list[bytes], attributes: str, clients: int
) -> tuple[float, Requests]:
    """Tiles per second with ``clients`` connections posting their share of ``bodies`` at once,
    and the first client's requests."""
    errors: list[BaseException] = []
    per_client: list[Requests] = [Requests() for _ in range(clients)]
    start = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        start.wait()
        try:
            per_client[number] = post_all(port, bodies[number::clients], attributes)
        except (OSError, RuntimeError, http.client.HTTPException) as err:
            errors.append(err)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]}")
    return len(bodies) / elapsed, per_client[0]


@contextlib.contextmanager
def adapter_process(package: Path, log_path: Path) -> Iterator[int]:
    """``python -m models.bioimageio`` serving ``package`` as ``bright``; its port."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "models.bioimageio", "--port", str(port)),
                *("--package", f"{MODEL_ID}={package}", "--weights-format", "onnx"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            wait_until_up(f"http://127.0.0.1:{port}/ping")
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextlib.contextmanager
def adapter_thread(package: Path) -> Iterator[int]:
    """The adapter in a thread of this process (shares the GIL with the clients)."""
    server = AdapterServer(
        ("127.0.0.1", 0), LocalBackend({MODEL_ID: str(package)}, "onnx"), MODEL_ID
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# --- in process (--profile) ------------------------------------------------------------------


class ProfiledBackend:
    """A backend whose ``predict`` is profiled apart from the rest of the handling."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.profiles = (cProfile.Profile(), cProfile.Profile())  # the rest, prediction

    def predict(self, model_id: str, tile: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        rest, prediction = self.profiles
        rest.disable()
        prediction.enable()
        try:
            return self.inner.predict(model_id, tile)
        finally:
            prediction.disable()
            rest.enable()

    def metadata(self, model_id: str) -> dict[str, Any]:
        return self.inner.metadata(model_id)


def handle_all(backend: Backend, bodies: list[bytes], attributes: str) -> None:
    """What the adapter's handler does with each body, in this process."""
    for body in bodies:
        invocation = Invocation.from_attributes(parse_custom_attributes(attributes), MODEL_ID)
        encode_reply(run(backend, invocation, read_tile(body)))


def print_profiles(title: str, profiles: tuple[cProfile.Profile, cProfile.Profile]) -> None:
    """cProfile's top functions, by own time and cumulative, for the rest and for prediction."""
    for name, profile in zip(("decode+vectorise+json", "prediction"), profiles, strict=True):
        for order in ("tottime", "cumulative"):
            print(f"\n--- profile {title}: {name}, by {order} ---", flush=True)
            stats = pstats.Stats(profile, stream=sys.stdout)
            stats.strip_dirs().sort_stats(order).print_stats(22)


# --- main -------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One format's measurements over all runs."""

    rates: dict[int, list[float]] = field(default_factory=lambda: {1: [], 2: []})
    runs: list[Requests] = field(default_factory=list)  # the sequential client's, per run

    def ms(self, stage: str) -> float:
        """Mean over tiles of each tile's median over runs: robust to a slow run."""
        return _typical([run.stages[stage] for run in self.runs])

    def latency_ms(self) -> float:
        return _typical([run.latencies for run in self.runs])


def _typical(rows: list[list[float]]) -> float:
    return float(np.median(np.asarray(rows), axis=0).mean() * 1000)


def breakdown_row(name: str, measured: Measured) -> float:
    """Print one format's row; returns prediction's share of the end-to-end time (percent)."""
    ms = {stage: measured.ms(stage) for stage in STAGES}
    e2e = measured.latency_ms()
    rest = e2e - sum(ms.values())
    cells = [f"{ms[stage]:6.2f} {100 * ms[stage] / e2e:5.1f}%" for stage in STAGES]
    of_stages = 100 * ms["predict"] / sum(ms.values())
    print(
        f"{name:<7} {' '.join(cells)} {rest:6.2f} {100 * rest / e2e:5.1f}% {e2e:6.2f}"
        f" {of_stages:10.1f}%"
    )
    return 100 * ms["predict"] / e2e


def report(
    sizes: dict[str, float], results: dict[str, Measured], ort_ms: list[list[float]]
) -> None:
    """The end-to-end table, the breakdown table, prediction's floor and the verdict."""
    print("\nend to end, tiles/s (median over runs):")
    print(f"{'format':<7} {'body KiB':>9} {'1 client':>9} {'2 clients':>10}")
    for name, measured in results.items():
        print(
            f"{name:<7} {sizes[name]:>9.0f} {statistics.median(measured.rates[1]):>9.1f}"
            f" {statistics.median(measured.rates[2]):>10.1f}"
        )
    print(
        "\nper tile, ms (the adapter's Server-Timing; each tile's median over runs, averaged),"
        " and the\nshare of the sequential request latency (e2e); http+rest = e2e - the four"
        " stages;\nof stages = prediction's share of the four stages alone"
    )
    print(
        f"{'format':<7} {'decode':>13} {'predict':>13} {'vectorise':>13} {'json':>13}"
        f" {'http+rest':>13} {'e2e':>6} {'of stages':>11}"
    )
    shares = {name: breakdown_row(name, measured) for name, measured in results.items()}
    predict_ms = statistics.median(m.ms("predict") for m in results.values())
    floor = _typical(ort_ms)
    print(
        f"\nonnxruntime session.run alone (whole tile, one call): {floor:.2f} ms/tile;"
        f" LocalBackend.predict {predict_ms:.2f} ms/tile:\n{predict_ms - floor:.2f} ms"
        f" ({100 * (predict_ms - floor) / predict_ms:.0f}%) of prediction is bioimageio.core"
        " and local.py around it"
    )
    verdicts = ", ".join(
        f"{name} {share:.1f}% {'met' if share >= TARGET_PREDICT_SHARE else 'NOT met'}"
        for name, share in shares.items()
    )
    print(f"target prediction >= {TARGET_PREDICT_SHARE:.0f}% of the time per tile: {verdicts}")


def onnxruntime_per_tile(weights: Path, tiles: list[npt.NDArray[np.uint8]]) -> list[float]:
    """Seconds of ``session.run`` per tile (input scaled to 0..1, whole tile, one call)."""
    session = onnxruntime.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    inputs = [(tile[np.newaxis] / np.float32(255)).astype(np.float32) for tile in tiles]
    session.run(None, {name: inputs[0]})
    seconds = []
    for array in inputs:
        began = time.perf_counter()
        session.run(None, {name: array})
        seconds.append(time.perf_counter() - began)
    return seconds


def run_benchmark(args: argparse.Namespace, tmp: Path) -> None:
    """Build the package and the tiles, then measure and report."""
    formats = [name.strip().upper() for name in args.formats.split(",") if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise SystemExit(f"unknown format(s) {', '.join(unknown)}; choose from {FORMATS}")
    # As the adapter process does; here for ``--server thread`` and ``--profile``.
    keep_freed_memory()
    package = write_sample_package(tmp / "package", args.network)
    tiles = make_tiles(args.tiles)
    bodies = {name: [encode(tile, name) for tile in tiles] for name in formats}
    sizes = {name: statistics.median(len(b) / 1024 for b in bodies[name]) for name in formats}
    attributes = f"model={MODEL_ID},geometry={args.geometry}"
    print(
        f"{args.tiles} tiles of {TILE} x {TILE} uint8, {args.network} network,"
        f" {args.geometry} geometry, {args.runs} runs,"
        f" adapter as a {args.server}; TQDM_DISABLE={os.environ.get('TQDM_DISABLE', '')!r},"
        f" ORT_DISABLE_TELEMETRY={os.environ.get('ORT_DISABLE_TELEMETRY', '')!r};"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = {name: Measured() for name in formats}
    ort_ms: list[list[float]] = []
    server = (
        adapter_thread(package)
        if args.server == "thread"
        else adapter_process(package, tmp / "adapter.log")
    )
    # tqdm's bars (TQDM_DISABLE empty) go to a file here, as the adapter's go to its log.
    with server as port, (tmp / "in-process.log").open("w") as quiet:
        for name in formats:  # warm up: the model loads on first use
            post_all(port, bodies[name][:3], attributes)
        for run_number in range(args.runs):
            for name, measured in results.items():
                rate, requests = end_to_end(port, bodies[name], attributes, 1)
                measured.rates[1].append(rate)
                measured.runs.append(requests)
                measured.rates[2].append(end_to_end(port, bodies[name], attributes, 2)[0])
                stages = "".join(
                    f" {stage} {1000 * statistics.fmean(requests.stages[stage]):.2f}"
                    for stage in STAGES
                )
                print(
                    f"run {run_number + 1} {name:<5} e2e {rate:6.1f} tiles/s"
                    f" (2 clients {measured.rates[2][-1]:6.1f}); adapter{stages} ms/tile",
                    flush=True,
                )
            ort_ms.append(onnxruntime_per_tile(package.parent / "weights.onnx", tiles))
        if args.profile:
            local = LocalBackend({MODEL_ID: str(package)}, "onnx")
            profile_pass(local, bodies, attributes, quiet)
    report(sizes, results, ort_ms)
    print(f"load average at the end {os.getloadavg()[0]:.2f} (other processes skew the figures)")


def profile_pass(
    backend: Backend, bodies: dict[str, list[bytes]], attributes: str, quiet: TextIO
) -> None:
    """One more pass per format in this process under cProfile, prediction and the rest
    apart."""
    with contextlib.redirect_stderr(quiet):
        handle_all(backend, next(iter(bodies.values()))[:3], attributes)  # load the model
    for name, items in bodies.items():
        profiled = ProfiledBackend(backend)
        with contextlib.redirect_stderr(quiet):
            profiled.profiles[0].enable()
            try:
                handle_all(profiled, items, attributes)
            finally:
                profiled.profiles[0].disable()
        print_profiles(name, profiled.profiles)


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--geometry", choices=("polygon", "bbox"), default="polygon")
    parser.add_argument("--network", choices=("sigmoid", "conv"), default="sigmoid")
    parser.add_argument("--formats", default="NITF,PNG,NPY", help=f"from {', '.join(FORMATS)}")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--profile", action="store_true", help="cProfile one in-process pass")
    args = parser.parse_args()
    if args.tiles < 2 or args.runs < 1:
        parser.error("--tiles must be >= 2 and --runs >= 1")
    with tempfile.TemporaryDirectory(prefix="bioimageio-bench-") as tmp:
        run_benchmark(args, Path(tmp))


if __name__ == "__main__":
    main()
