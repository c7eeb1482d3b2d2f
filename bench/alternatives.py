"""Speed against what users would pick instead: timm's BiT (PyTorch), Keras ResNet50V2, ONNX Runtime.

Every candidate runs in its **own worker process** (torch and TensorFlow never share one, and
no candidate's threads idle beside another's); the parent sends "run" to one worker at a time,
rotating the order every repetition, so a shared machine's load hits all candidates alike. Ratios
are the median of per-repetition ratios. Candidates, all at the same image size and batch,
random weights (nothing is downloaded):

- ``module``: the exported r50x1 hub SavedModel (``tf.saved_model.load``), block4 map averaged;
- ``native``: the native Keras backbone, folded (``medfound.models.inference.fold``), pooled;
- ``onnx``: onnxruntime on ``export_module(..., fmt="onnx")`` (default SessionOptions:
  ORT_ENABLE_ALL, threads = cores), ``embedding`` output;
- ``resnet50v2``: ``keras.applications.ResNet50V2(weights=None, include_top=False,
  pooling="avg")``;
- ``timm_contiguous`` / ``timm_channels_last``: ``timm.create_model("resnetv2_50x1_bit",
  pretrained=False, num_classes=0)``, eval, ``torch.inference_mode``; the table uses the faster of
  the two memory formats in each row.

Every worker pins its thread count (``--threads``, default the cores; TensorFlow intra-op,
ONNX Runtime ``intra_op_num_threads``, torch ``set_num_threads``) and reports the count its runtime
then holds, read back (for ONNX Runtime from the InferenceSession's own options); each row records
them and the load average before and after. A row started or ended with the 1-minute load average
above ``--max-load`` is marked ``under_load`` and taken again (``--retries`` times); the last
attempt is kept with the count of attempts.

``--profile`` adds an op breakdown of one call per candidate (TF profiler XPlane for TensorFlow,
``torch.profiler`` for timm, ORT's own profiler for ONNX), to say what bounds an unmet row. It is
a separate call after the timing (for ONNX Runtime a second session opened with profiling on:
the timed session never profiles).

    python bench/alternatives.py --configs 224:1,224:16,448:1 --repeats 5 --profile
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import base_parser, machine_info, median, report, spread, write_json  # noqa: E402

TF_KINDS = ("module", "native", "onnx", "resnet50v2")
TIMM_KINDS = ("timm_contiguous", "timm_channels_last")
TIMM_MODEL = "resnetv2_50x1_bit"
READY = "WORKER_READY"


def timm_available() -> str | None:
    """None when timm and torch import, else the one-line reason."""
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        return (f"timm/torch missing ({err}): the timm rows are not measured; "
                "pip install 'medfound[bench]'")
    return None


# ---------------------------------------------------------------- worker side

def _ort_session(spec: dict, profile_dir: Path | None = None):
    """An InferenceSession with ``spec["threads"]`` intra-op threads; profiling only when
    ``profile_dir`` is given (a separate session: the timed one never profiles)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / "ort")
    return ort.InferenceSession(spec["onnx"], options, providers=["CPUExecutionProvider"])


def _pin_threads(kind: str, spec: dict) -> None:
    """Pins this worker's runtime to ``spec["threads"]`` before anything runs."""
    if kind.startswith("timm"):
        import torch

        torch.set_num_threads(spec["threads"])
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])


def _threads(kind: str, session) -> dict:
    """The thread counts the worker's runtime holds, read back from it."""
    if kind.startswith("timm"):
        import torch

        return {"torch_threads": torch.get_num_threads()}
    import tensorflow as tf

    got = {"tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
    if session is not None:
        options = session.get_session_options()
        got.update(ort_intra_op_threads=options.intra_op_num_threads,
                   ort_timed_session_profiling=options.enable_profiling)
    return got


def _tf_candidate(kind: str, spec: dict):
    import numpy as np
    import tensorflow as tf

    shape = (spec["batch"], spec["size"], spec["size"], 3)
    images = tf.constant(np.random.RandomState(0).rand(*shape).astype(np.float32))
    if kind == "onnx":
        session = _ort_session(spec)
        array = images.numpy()
        return (lambda: session.run(["embedding"], {"images": array})[0]), session
    if kind == "module":
        module = tf.saved_model.load(spec["module"])
        body = lambda x: tf.reduce_mean(module(x), axis=[1, 2])  # noqa: E731
    elif kind == "native":
        from medfound.models.bit import build_backbone
        from medfound.models.inference import fold

        folded = fold(build_backbone(spec["arch"], units=spec.get("units"),
                                     width=spec.get("width")))
        body = lambda x: folded(x, training=False)["pre_logits"]  # noqa: E731
    else:
        import keras

        net = keras.applications.ResNet50V2(weights=None, include_top=False, pooling="avg",
                                            input_shape=shape[1:])
        body = lambda x: net(x, training=False)  # noqa: E731
    fn = tf.function(body, autograph=False, input_signature=[tf.TensorSpec(shape, tf.float32)])
    return (lambda: fn(images).numpy()), None


def _timm_candidate(kind: str, spec: dict):
    import timm
    import torch

    model = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=0).eval()
    x = torch.rand(spec["batch"], 3, spec["size"], spec["size"], generator=torch.Generator()
                   .manual_seed(0))
    if kind == "timm_channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode():
            return model(x).numpy()
    return call, None


def _profile_tf(call, folder: Path) -> dict:
    """Seconds per TF op type in one call, from the profiler's XPlane (host CPU plane)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(str(folder))
    call()
    tf.profiler.experimental.stop()
    totals: dict[str, float] = {}
    for file in folder.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(file.read_bytes())
        for plane in space.planes:
            if plane.name != "/host:CPU":
                continue
            names = {k: v.name for k, v in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" not in name:  # op events are "node name:OpType"
                        continue
                    op_type = name.rsplit(":", 1)[1]
                    if op_type in ("Process", "Run") or "__inference" in op_type:
                        continue  # wrappers around the ops, not ops
                    totals[op_type] = totals.get(op_type, 0.0) + event.duration_ps / 1e12
    return totals


def _profile_timm(call) -> dict:
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        call()
    return {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}


def _profile_ort(session) -> dict:
    path = session.end_profiling()
    totals: dict[str, float] = {}
    events = json.loads(Path(path).read_text())
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + event["dur"] / 1e6
    # ORT profiles every run since the session opened: the share of one call.
    runs = sum(1 for e in events if e.get("name") == "model_run")
    return {k: v / max(runs, 1) for k, v in totals.items()}


def run_worker(spec: dict) -> None:
    """A worker: builds its candidate, warms it up, then times one call per 'run' line."""
    kind = spec["kind"]
    _pin_threads(kind, spec)
    call, session = (_timm_candidate if kind.startswith("timm") else _tf_candidate)(kind, spec)
    for _ in range(spec["warmup"]):
        call()
    print(READY, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            start = time.perf_counter()
            call()
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        elif command == "threads":
            print(json.dumps({"threads": _threads(kind, session)}), flush=True)
        elif command.startswith("save "):
            import numpy as np

            np.save(command[5:], call())
            print(json.dumps({"saved": command[5:]}), flush=True)
        elif command.startswith("profile "):
            import numpy as np

            folder = Path(command[8:])
            folder.mkdir(parents=True, exist_ok=True)
            if kind.startswith("timm"):
                totals = _profile_timm(call)
            elif kind == "onnx":
                profiling = _ort_session(spec, folder)
                array = np.random.RandomState(0).rand(
                    spec["batch"], spec["size"], spec["size"], 3).astype(np.float32)
                profiling.run(["embedding"], {"images": array})  # warm-up, then the profiled call
                profiling.run(["embedding"], {"images": array})
                totals = _profile_ort(profiling)
            else:
                totals = _profile_tf(call, folder)
            top = dict(sorted(totals.items(), key=lambda kv: -kv[1])[:12])
            print(json.dumps({"profile": top, "total_s": sum(totals.values())}), flush=True)
        elif command == "quit":
            return


# ---------------------------------------------------------------- parent side

class Worker:
    """One candidate's process, driven line by line: ``script --worker SPEC`` (by default this
    file's ``run_worker``; other benchmarks pass their own script with the same protocol)."""

    def __init__(self, spec: dict, script: str | os.PathLike | None = None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        self.kind = spec["kind"]
        script = Path(script or __file__).resolve()
        self.log = Path(tempfile.gettempdir()) / f"{script.stem}-{self.kind}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True,
            env=env)
        self._expect(READY)

    def _expect(self, token: str | None = None) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=60)
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                raise RuntimeError(f"worker {self.kind} exited (code {self.proc.poll()}): "
                                   f"{tail[0][:300]} (log: {self.log})")
            line = line.strip()
            if token is None and line.startswith("{"):
                return line
            if token is not None and line == token:
                return line

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self._expect())

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


def prepare(arch: str, folder: Path, units=None, width=None) -> dict:
    """A random-weight checkpoint exported as a hub SavedModel and as ONNX (timed)."""
    from medfound.export.exporter import export_module
    from medfound.models.bit import build_backbone

    weights = folder / f"{arch}.weights.h5"
    build_backbone(arch, units=units, width=width).save_weights(str(weights))
    start = time.perf_counter()
    module = export_module(weights, folder / f"bench-{arch}", name=f"bench-{arch}", arch=arch,
                           modality="cxr")
    saved_s = time.perf_counter() - start
    start = time.perf_counter()
    onnx = export_module(weights, folder / "onnx", name=f"bench-{arch}", arch=arch,
                         modality="cxr", fmt="onnx")
    return {"module": str(module), "onnx": str(onnx), "export_saved_model_s": saved_s,
            "export_onnx_s": time.perf_counter() - start}


def measure_idle(size: int, batch: int, files: dict, *, max_load: float, retries: int,
                 **kwargs) -> dict:
    """``measure``, taken again (up to ``retries`` times) while the row ran under load: its
    1-minute load average above ``max_load`` when it started or ended. Marks what it keeps."""
    for attempt in range(1, retries + 2):
        row = measure(size, batch, files, **kwargs)
        row["under_load"] = max(row["loadavg_before"][0], row["loadavg_after"][0]) > max_load
        row.update(attempts=attempt, max_load=max_load)
        if not row["under_load"]:
            break
    return row


def measure(size: int, batch: int, files: dict, *, arch: str, kinds: list[str], repeats: int,
            warmup: int, scratch: Path, profile: bool, threads: int,
            overrides: dict | None = None) -> dict:
    """One row: every candidate timed in alternating repetitions, ratios and parity."""
    load_before = os.getloadavg()
    overrides = overrides or {}
    workers = {}
    try:
        for kind in kinds:
            workers[kind] = Worker({"kind": kind, "arch": arch, "size": size, "batch": batch,
                                    "warmup": warmup, "threads": threads, **files, **overrides})
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for rep in range(repeats):
            order = kinds[rep % len(kinds):] + kinds[:rep % len(kinds)]
            for kind in order:
                times[kind].append(workers[kind].ask("run")["seconds"])
        row = {"size": size, "batch": batch, "repeats": repeats,
               "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
               "threads": {kind: worker.ask("threads")["threads"]
                           for kind, worker in workers.items()}}
        for kind in kinds:
            row[f"{kind}_img_s"] = batch / median(times[kind])
            row[f"{kind}_spread"] = spread(times[kind])
        timm_kinds = [k for k in TIMM_KINDS if k in kinds]
        if timm_kinds:
            best = min(timm_kinds, key=lambda k: median(times[k]))
            row["timm_best_format"] = best.split("_", 1)[1]
            times["timm"] = times[best]
            row["timm_img_s"] = row[f"{best}_img_s"]

        def ratio(a: str, b: str) -> float:
            return median([tb / ta for ta, tb in zip(times[a], times[b])])

        pairs = [("module", "timm"), ("native", "timm"), ("onnx", "timm"),
                 ("module", "resnet50v2"), ("native", "resnet50v2"), ("onnx", "module")]
        for a, b in pairs:
            if a in times and b in times:
                row[f"{a}_vs_{b}"] = ratio(a, b)
        if "onnx" in workers and "module" in workers:
            a = workers["onnx"].ask(f"save {scratch / 'onnx_out.npy'}")["saved"]
            b = workers["module"].ask(f"save {scratch / 'module_out.npy'}")["saved"]
            import numpy as np

            got, want = np.load(a), np.load(b)
            row["onnx_vs_module_max_rel_error"] = float(np.abs(got - want).max()
                                                        / np.abs(want).max())
        if profile:
            row["profiles"] = {}
            for kind, worker in workers.items():
                row["profiles"][kind] = worker.ask(
                    f"profile {scratch / f'prof-{kind}-{size}-{batch}'}")
        row["seconds"] = times
        return row
    finally:
        for worker in workers.values():
            worker.close()


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.split("\n")[0], "bench/results/alternatives.json")
    parser.add_argument("--configs", default="224:1,224:16,448:1",
                        help="comma-separated size:batch (default %(default)s)")
    parser.add_argument("--arch", default="r50x1", help="medfound architecture (timm's model "
                                                        "is resnetv2_50x1_bit: keep r50x1)")
    parser.add_argument("--kinds", default=",".join(TF_KINDS + TIMM_KINDS),
                        help="candidates (default: all)")
    parser.add_argument("--units", help="override units per block (smoke tests)")
    parser.add_argument("--width", type=float, help="override the width (smoke tests)")
    parser.add_argument("--profile", action="store_true",
                        help="add a per-op-type breakdown of one call of every candidate")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads every worker pins (default: the cores, %(default)s)")
    parser.add_argument("--max-load", type=float, default=0.5,
                        help="1-minute load average above which a row counts as taken under "
                             "load (default %(default)s)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a row taken under load is taken again (default %(default)s)")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    missing = timm_available() if any(k.startswith("timm") for k in kinds) else None
    if missing:
        print(missing, flush=True)
        kinds = [k for k in kinds if not k.startswith("timm")]
    import onnxruntime
    import tensorflow as tf

    rows: list[dict] = []
    result = {"benchmark": "alternatives", "machine": machine_info(),
              "command": " ".join(["python bench/alternatives.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "baseline": f"timm {TIMM_MODEL} (PyTorch, eval, inference_mode, faster memory "
                          "format), keras.applications.ResNet50V2 and the SavedModel, each in "
                          "its own process, alternating",
              "timm_missing": missing, "onnxruntime": onnxruntime.__version__,
              "ort_session_options": "SessionOptions: graph_optimization_level "
                                     "ORT_ENABLE_ALL (default), intra_op_num_threads "
                                     "--threads (read back per row), CPUExecutionProvider",
              "threads": args.threads,
              "tensorflow": tf.__version__, "rows": rows}
    if not missing and any(k.startswith("timm") for k in kinds):
        import timm
        import torch

        result.update(torch=torch.__version__, timm=timm.__version__)
    units = tuple(int(u) for u in args.units.split(",")) if args.units else None
    with tempfile.TemporaryDirectory() as scratch:
        files = prepare(args.arch, Path(scratch), units=units, width=args.width)
        result.update({k: v for k, v in files.items() if k.endswith("_s")})
        for item in args.configs.split(","):
            size, batch = (int(v) for v in item.split(":"))
            rows.append(measure_idle(size, batch, files, max_load=args.max_load,
                                     retries=args.retries, arch=args.arch, kinds=kinds,
                                     repeats=args.repeats, warmup=args.warmup,
                                     scratch=Path(scratch), profile=args.profile,
                                     threads=args.threads,
                                     overrides={"units": units, "width": args.width}))
            write_json(args.json, result)
            print(f"done {size} batch {batch}", flush=True)
    columns = ["size", "batch"] + [f"{k}_img_s" for k in kinds] + [
        c for c in ("timm_best_format", "module_vs_timm", "native_vs_timm", "module_vs_resnet50v2",
                    "onnx_vs_module", "onnx_vs_module_max_rel_error") if c in rows[0]]
    report(rows, columns, args.json, result)
    return result


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        run_worker(json.loads(sys.argv[2]))
    else:
        main()
