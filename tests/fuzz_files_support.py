"""The file-surface fuzz harness: a long-lived worker process that writes one case (a few files, a FIFO or
a symlink) into a fresh folder, feeds it to the real entry point for its kind, and reports the outcome,
the CPU time and memory it took and any file written outside the case's folder; the seed files a
session mutates; and the generators that mutate them.

Kinds and their entry points: `checkpoint` (`checkpoint.load`, and `archspec eval` / `archspec inspect`
through the CLI), `run` (a `Trainer` built with `--resume` on a run folder: nothing is trained),
`transfer` (`transfer.load_state_dict`, and `archspec transfer`), `cifar` (`data.load` on a CIFAR-10
python folder) and `image` (`transforms.load`, the image loader). Every case must end in success or a
refusal (RunError/SpecError, exit 0 or 2 through the CLI) within CPU_LIMIT seconds of CPU and
MEMORY_LIMIT bytes above the worker's baseline, write nothing outside its folder, and open no file outside
the roots (its folder, the Python installation and archspec's own files, and the few system files archspec
reads by fixed name for the free memory): an audit hook records every file the case opens.

As in tests/fuzz_support.py, the worker is a separate process so that a hang, a crash or a memory bomb
costs one restart, and its resident high-water mark (`VmHWM`) measures one process the test run does
not share."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import random
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from fuzz_support import CPU_LIMIT, MEMORY_LIMIT, campaign, high_water  # noqa: F401  (the spec fuzzer's limits, measure and campaign)

ROOT = Path(__file__).resolve().parent.parent

HARD_WALL = 60.0  # a case still running after this is a hang: the worker is killed and restarted
_ADDRESS_SPACE_HEADROOM = 4 << 30  # above the warm worker's address space: a bomb cannot take the machine

SPEC = """network tiny(classes: int = 10) {
  input(1, 8, 8)
  stem { conv(4, 3, padding=1) }
  block dense concat { repeat 2 { bn relu conv(2, 3, padding=1) } }
  head { bn relu gap linear(classes) }
}
"""
KINDS = ("checkpoint", "run", "transfer", "cifar", "image")
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

# ---- the worker (runs in its own process) --------------------------------------------------------------


def _write_case(folder: Path, files: dict) -> None:
    for name, what in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "fifo" in what:
            os.mkfifo(path)
        elif "link" in what:
            path.symlink_to(what["link"])
        else:
            path.write_bytes(base64.b64decode(what["b64"]))


def _cli(args: list[str]) -> dict:
    from typer.testing import CliRunner

    from archspec.cli import app

    r = CliRunner().invoke(app, args)
    out = {"exit": r.exit_code, "traceback": "Traceback" in r.output or "internal error" in r.output}
    if r.exit_code not in (0, 2) or out["traceback"]:
        import traceback

        out["output"] = r.output[-1500:]
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            out["output"] += "".join(traceback.format_exception(r.exception))[-3000:]
    return out


def _enter(kind: str, folder: Path, cli: bool) -> list[dict]:
    """Run the entry points for `kind` on the case in `folder`: one outcome per entry point."""
    outcomes = []
    if kind == "checkpoint":
        from archspec.runtime.train import checkpoint as ckpt

        path = folder / "last.safetensors"
        outcomes.append(_api(lambda: ckpt.load(path)))
        if cli:
            outcomes.append(_cli(["eval", str(path), "--json", "--device", "cpu"]))
            outcomes.append(_cli(["inspect", str(path), "--json"]))
    elif kind == "run":
        from archspec.runtime.train import TrainConfig
        from archspec.runtime.train.loop import Trainer

        def build():
            cfg = TrainConfig(spec=str(folder / "tiny.arch"), out=folder / "run", resume=True, epochs=2,
                              batch_size=256, progress=False, device="cpu", tensorboard=False)
            Trainer(cfg, log=lambda m: None).feed.close()

        outcomes.append(_api(build))
    elif kind == "transfer":
        from archspec.compiler.transfer import load_state_dict

        source = next(p for p in folder.iterdir() if p.name.startswith("weights"))
        outcomes.append(_api(lambda: load_state_dict(source)))
        if cli:
            outcomes.append(_cli(["transfer", str(source), str(folder / "tiny.arch"), "-o",
                                  str(folder / "out.safetensors")]))
    elif kind == "cifar":
        from archspec.runtime import data as D

        outcomes.append(_api(lambda: D.load(str(folder / "cifar"))))
    elif kind == "image":
        from archspec.runtime.data import transforms as T

        file = next(p for p in folder.iterdir() if p.name.startswith("x."))
        outcomes.append(_api(lambda: T.load(file, 8, train=False, rng=random.Random(0), backend="pil")))
    else:
        raise ValueError(kind)
    return outcomes


def _api(call) -> dict:
    from archspec.errors import RunError, SpecError

    try:
        call()
        return {"outcome": "ok"}
    except (RunError, SpecError) as e:
        return {"outcome": "refused", "message": str(getattr(e, "message", e))[:300]}
    except BaseException as e:  # noqa: BLE001 - what the suite looks for
        import traceback

        return {"outcome": "crash", "type": type(e).__name__, "message": str(e)[:500],
                "traceback": "".join(traceback.format_exception(e))[-3000:]}


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmPeak in /proc/self/status")


def _tree(root: Path, skip: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip.parent:
            dirnames[:] = [d for d in dirnames if d != skip.name]
        out.update(os.path.join(dirpath, n) for n in dirnames + filenames if os.path.join(dirpath, n) != str(skip))
    return out


# Files archspec opens by a fixed name, whatever it reads: the memory available and its own process status.
SYSTEM_READS = ("/proc/meminfo", "/proc/self/", "/proc/" + str(os.getpid()), "/sys/fs/cgroup/", "/dev/null",
                "/dev/urandom")
_opened: list[str] | None = None  # the paths the running case opened; None between cases


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes)):
        _opened.append(os.fsdecode(args[0]))


def _roots(folder: Path) -> tuple[str, ...]:
    import site
    import sysconfig

    installed = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
                 *(sysconfig.get_paths().values())}
    paths = installed | {str(folder), str(ROOT)}
    return tuple({str(Path(p).resolve()) + os.sep for p in paths if p} | {os.path.abspath(p) + os.sep for p in paths if p})


def reads_outside(opened: list[str], roots: tuple[str, ...], cwd: Path) -> list[str]:
    """The opened paths (made absolute from `cwd`) that lie under no root and are none of archspec's fixed
    system reads. A path is judged as it was opened: a symbolic link the case itself holds names its
    target, as a data set of links to images does; what must never happen is a path the case did not
    hand over (one taken from a file's contents, or a default location)."""
    out = []
    for p in opened:
        full = os.path.abspath(os.path.join(cwd, p))
        if not (full + os.sep).startswith(roots) and not full.startswith(SYSTEM_READS):
            out.append(full)
    return sorted(set(out))


def serve() -> None:
    """Answer one JSON request per line on stdin ({kind, files, cli, warm}) with one JSON line on stdout."""
    global _opened
    import torch

    sys.addaudithook(_audit)

    torch.set_num_threads(1)
    base_dir = Path(tempfile.mkdtemp(prefix="archspec-fuzz-files-"))
    cwd = base_dir / "cwd"
    cwd.mkdir()
    os.chdir(cwd)
    baseline, n = None, 0
    try:
        for line in sys.stdin:
            request = json.loads(line)
            n += 1
            folder = base_dir / f"case{n}"
            folder.mkdir()
            before = _tree(base_dir, folder)
            wall, cpu = time.monotonic(), time.process_time()
            try:
                _write_case(folder, request["files"])
                _opened = []
                outcomes = _enter(request["kind"], folder, request.get("cli", False))
            except BaseException as e:  # noqa: BLE001 - a harness failure is reported, not hidden
                outcomes = [{"outcome": "crash", "type": type(e).__name__, "message": str(e)[:500]}]
            opened, _opened = _opened or [], None
            out = {"outcomes": outcomes, "cpu": time.process_time() - cpu, "wall": time.monotonic() - wall,
                   "outside": sorted(_tree(base_dir, folder) - before)[:10],
                   "read": reads_outside(opened, _roots(folder), cwd)[:10]}
            shutil.rmtree(folder, ignore_errors=True)
            if request.get("warm"):  # the warm-up cases: the baseline is taken after them
                baseline = high_water()
                limit = _address_space() + _ADDRESS_SPACE_HEADROOM
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            out["peak"] = high_water() - (baseline or high_water())
            sys.stdout.write(json.dumps(out) + "\n")
            sys.stdout.flush()
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


# ---- the client (runs in the test process) -------------------------------------------------------------


@dataclass
class Stats:
    cases: dict = field(default_factory=lambda: {k: 0 for k in KINDS})
    ok: dict = field(default_factory=lambda: {k: 0 for k in KINDS})
    refused: dict = field(default_factory=lambda: {k: 0 for k in KINDS})
    cli_calls: int = 0
    max_cpu: float = 0.0
    max_cpu_case: str = ""
    peak: int = 0
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        each = ", ".join(f"{k} {self.cases[k]} ({self.ok[k]} ok, {self.refused[k]} refused)" for k in KINDS)
        return (f"{sum(self.cases.values())} cases in {time.monotonic() - self.started:.0f} s: {each}; "
                f"{self.cli_calls} CLI calls; max {self.max_cpu:.2f} s CPU ({self.max_cpu_case}); peak "
                f"{self.peak / 2**20:.0f} MiB above the worker's baseline; {self.restarts} worker restarts")


class Worker:
    """A `serve()` process, warmed on the seed files, and the statistics of the cases sent to it."""

    def __init__(self, seeds: dict[str, dict[str, bytes]]) -> None:
        self.seeds = seeds
        self.stats = Stats()
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONHASHSEED="0")
        self.proc = subprocess.Popen([sys.executable, __file__, "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
        for i, kind in enumerate(KINDS):  # imports, caches and the digits data set warm, then the baseline
            self._ask({"kind": kind, "files": encode(self.seeds[kind]), "cli": True, "warm": i == len(KINDS) - 1},
                      HARD_WALL * 3)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _ask(self, request: dict, wait: float) -> dict | None:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def run(self, kind: str, files: dict, cli: bool = False, label: str = "") -> dict:
        """What the worker reports for the case `files` of `kind`; a hang or a death is reported, not waited out."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.stats.restarts += 1
            self._start()
        out = self._ask({"kind": kind, "files": encode(files), "cli": cli}, HARD_WALL)
        if out is None:
            died = self.proc.poll()
            self.close()
            self.stats.restarts += 1
            out = {"outcomes": [{"outcome": "crash", "type": "Hang" if died is None else "WorkerDied",
                                 "message": f"no answer (worker exit status {died})"}],
                   "cpu": HARD_WALL, "wall": HARD_WALL, "peak": 0, "outside": [], "read": []}
        s = self.stats
        s.cases[kind] += 1
        first = out["outcomes"][0].get("outcome")
        s.ok[kind] += first == "ok"
        s.refused[kind] += first == "refused"
        s.cli_calls += sum("exit" in o for o in out["outcomes"])
        if out["cpu"] > s.max_cpu:
            s.max_cpu, s.max_cpu_case = out["cpu"], label or kind
        s.peak = max(s.peak, out["peak"])
        return out


def encode(files: dict) -> dict:
    return {name: what if isinstance(what, dict) else {"b64": base64.b64encode(what).decode()}
            for name, what in files.items()}


def problem(out: dict) -> str | None:
    """Why an outcome breaks the property, or None."""
    for o in out["outcomes"]:
        if o.get("outcome") == "crash":
            return f"{o['type']}: {o['message']}\n{o.get('traceback', '')}"
        if "exit" in o and (o["exit"] not in (0, 2) or o["traceback"]):
            return f"CLI exit {o['exit']}{' with a traceback' if o['traceback'] else ''}:\n{o.get('output', '')}"
        if o.get("message", "").startswith("out of memory"):
            return "ran out of the worker's memory: " + o["message"]
    if out["cpu"] > CPU_LIMIT:
        return f"took {out['cpu']:.1f} s of CPU ({out['wall']:.1f} s wall), more than {CPU_LIMIT:g} s"
    if out["peak"] > MEMORY_LIMIT:
        return f"reached {out['peak'] / 2**20:.0f} MiB above the baseline, more than {MEMORY_LIMIT >> 20} MiB"
    if out["outside"]:
        return f"wrote outside the case folder: {out['outside']}"
    if out.get("read"):
        return f"opened files outside the roots: {out['read']}"
    return None


# ---- the seed files (made once a session, in the test process) ------------------------------------------


def _png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + bytes(3 * w) for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_seeds(folder: Path) -> dict:
    """The valid files each kind mutates, keyed by kind then by the name in the case folder; and under
    "images" one valid image per format."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import archspec
    from archspec.runtime.train import TrainConfig, train

    (folder / "tiny.arch").write_text(SPEC)
    run = folder / "run"
    train(TrainConfig(spec=str(folder / "tiny.arch"), out=run, epochs=1, batch_size=256, progress=False,
                      device="cpu", tensorboard=False), log=lambda m: None)
    spec = SPEC.encode()
    last = (run / "last.safetensors").read_bytes()
    model = archspec.build(archspec.network(archspec.parse(folder / "tiny.arch")))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    save_file(state, folder / "w.safetensors")
    good = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, protocol=2)
    images = {}
    for fmt in ("PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"):
        out = io.BytesIO()
        Image.new("RGB", (12, 10), (200, 10, 10)).save(out, format=fmt)
        images[fmt] = out.getvalue()
    images["EPS"] = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    return {
        "checkpoint": {"last.safetensors": last},
        "run": {"tiny.arch": spec, "run/last.safetensors": last,
                "run/metrics.jsonl": (run / "metrics.jsonl").read_bytes()},
        "transfer": {"tiny.arch": spec, "weights.safetensors": (folder / "w.safetensors").read_bytes()},
        "transfer_pth": buf.getvalue(),
        "cifar": {f"cifar/{n}": good for n in CIFAR_FILES},
        "image": {"x.png": images["PNG"]},
        "images": images,
        "large_png": _png(LARGE_SIDE, LARGE_SIDE),  # under the pixel limit: decoded whole
    }


# ---- the generators: each draws one case from a seeded RNG ---------------------------------------------

LARGE_SIDE = 6000  # a 6000×6000 PNG: 36 Mpx, under the loader's limit, 108 MB as RGB
HUGE = [0, -1, 1, 2**31, 2**32 + 1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30, 1e308, float("inf"), -0.5]
ODD_VALUES = [None, True, [], {}, "", "x" * 100_000, [[[[[]]]]], {"a": {"b": {"c": 1}}}, "\x1b[2J\u202e", 3.5]


def _bytes_mutation(rng: random.Random, data: bytes, start: int = 0) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["flip", "truncate", "append", "delete", "insert"])
        if not b:
            b = bytearray(b"\0")
        i = rng.randrange(min(start, len(b) - 1), len(b))
        if op == "flip":
            b[i] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del b[i:]
        elif op == "append":
            b += rng.choice([b"\0" * rng.randint(1, 4096), bytes(rng.randrange(256) for _ in range(64)), data[:256]])
        elif op == "delete":
            del b[i:i + rng.randint(1, 64)]
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(b)


def _odd(rng: random.Random):
    return rng.choice(HUGE + ODD_VALUES)


def _json_edit(rng: random.Random, obj, depth: int = 0):
    """`obj` (parsed JSON) with one key dropped, added or given an odd value, somewhere inside it."""
    if isinstance(obj, dict) and obj:
        key = rng.choice(sorted(obj, key=str))
        op = rng.random()
        obj = dict(obj)
        if op < 0.25:
            del obj[key]
        elif op < 0.4:
            obj[rng.choice(["x", "__proto__", "files", "data_source", "epoch", key + "2"])] = _odd(rng)
        elif op < 0.65 or depth > 4:
            obj[key] = _odd(rng)
        else:
            obj[key] = _json_edit(rng, obj[key], depth + 1)
        return obj
    if isinstance(obj, list) and obj:
        obj = list(obj)
        i = rng.randrange(len(obj))
        obj[i] = _json_edit(rng, obj[i], depth + 1) if rng.random() < 0.5 else _odd(rng)
        return obj
    return _odd(rng)


def _dumps(obj) -> str:
    return json.dumps(obj, allow_nan=True)


def _safetensors_edit(rng: random.Random, data: bytes, reseal: bool) -> bytes:
    """A safetensors file with its header JSON edited (tensor entries, metadata, the checkpoint's own
    JSON inside it), re-encoded with a correct or a wrong length field."""
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + n]), data[8 + n:]
    op = rng.random()
    meta = header.get("__metadata__")
    if op < 0.4 and isinstance(meta, dict) and meta:  # a metadata entry (a JSON string itself, mostly)
        key = rng.choice(sorted(meta))
        try:
            inner = json.loads(meta[key])
            meta[key] = _dumps(_json_edit(rng, inner)) if rng.random() < 0.85 else _odd(rng)
        except (ValueError, TypeError):
            meta[key] = rng.choice([_odd(rng), meta[key] + "x", ""])
        if not isinstance(meta.get(key), str) and rng.random() < 0.5:
            meta[key] = _dumps(meta[key])
        if rng.random() < 0.1:
            del meta[key]
    elif op < 0.55:  # dtype labels
        name = rng.choice([k for k in header if k != "__metadata__"])
        header[name]["dtype"] = rng.choice(["F32", "I32", "F64", "F16", "BF16", "BOOL", "U8", "I64", "F8_E4M3",
                                            "C64", "XX", "", 7])
    else:
        header = _json_edit(rng, header)
    if reseal and isinstance(header, dict) and isinstance(header.get("__metadata__"), dict):
        from archspec.runtime.train import checkpoint as ckpt

        try:
            if "header_digest" in header["__metadata__"]:
                header["__metadata__"]["header_digest"] = ckpt.header_digest(header["__metadata__"])
        except Exception:  # noqa: BLE001 - a metadata value the digest cannot cover: left unsealed
            pass
    try:  # valid JSON where it can be; a non-finite number is written as Python writes it (not JSON)
        text = json.dumps(header, allow_nan=False).encode()
    except ValueError:
        text = _dumps(header).encode()
    length = len(text)
    if rng.random() < 0.15:
        length = rng.choice([0, 1, length - 1, length + 1, length + 8, 2**31, 2**63, 2**64 - 1, len(body) + length])
    return struct.pack("<Q", length % 2**64) + text + body


def gen_checkpoint(rng: random.Random, seeds: dict) -> dict:
    data = seeds["checkpoint"]["last.safetensors"]
    r = rng.random()
    if r < 0.75:
        data = _safetensors_edit(rng, data, reseal=rng.random() < 0.7)
    elif r < 0.83:
        data = struct.pack("<Q", rng.choice(HUGE[:10]) % 2**64) + data[8:]
    else:
        data = _bytes_mutation(rng, data)
    return {"last.safetensors": data}


METRIC_LINES = ['{"epoch": 1}', "[" * 50_000 + "]" * 50_000, '{"epoch": ' + "9" * 5000 + "}", '{"epoch": 1e999}',
                "null", "3", '{"epoch": -1}', '{"epoch": "1"}', "", '{"epoch": 1, "x": ' + '{"a":' * 5000 + "1"
                + "}" * 5000 + "}", '{"epoch": NaN}', '{"epoch": 2, "train_loss": Infinity}']


def gen_run(rng: random.Random, seeds: dict) -> dict:
    files = dict(seeds["run"])
    metrics = files["run/metrics.jsonl"]
    r = rng.random()
    if r < 0.08:
        files["run/metrics.jsonl"] = {"fifo": True}
    elif r < 0.16:
        files["run/metrics.jsonl"] = {"link": rng.choice(["/dev/zero", "/dev/urandom", "/etc/passwd",
                                                          "/proc/self/status", "/nonexistent", "."])}
    elif r < 0.22:
        files["run/last.safetensors"] = rng.choice([{"fifo": True}, {"link": "/dev/zero"}, {"link": "metrics.jsonl"}])
    elif r < 0.3:
        files["run/last.safetensors"] = gen_checkpoint(rng, seeds)["last.safetensors"]
    else:
        lines = metrics.split(b"\n")
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            i = rng.randrange(len(lines))
            if op < 0.3:
                lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)]
            elif op < 0.45:
                lines[i] = lines[i][:rng.randrange(len(lines[i]) + 1)] + bytes([rng.randrange(0x80, 0x100)])
            elif op < 0.75:
                lines.insert(i, rng.choice(METRIC_LINES).encode())
            else:
                try:
                    lines[i] = _dumps(_json_edit(rng, json.loads(lines[i]))).encode()
                except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's json reads
                    lines[i] = b"{"
        files["run/metrics.jsonl"] = b"\n".join(lines)
    return files


def _zip_edit(rng: random.Random, data: bytes) -> bytes:
    """A zip (torch's format) with a member's declared sizes, compression method or bytes changed, or
    re-packed with deflate and a large member that compresses well."""
    b = bytearray(data)
    op = rng.random()
    if op < 0.25:
        src = zipfile.ZipFile(io.BytesIO(data))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                payload = src.read(info)
                if rng.random() < 0.3 and "/data/" in info.filename:
                    payload = payload + b"\0" * rng.choice([1 << 20, 16 << 20, 64 << 20])
                dst.writestr(info.filename, payload)
        return out.getvalue()
    local = [i for i in range(len(b) - 4) if b[i:i + 4] == b"PK\x03\x04"]
    central = [i for i in range(len(b) - 4) if b[i:i + 4] == b"PK\x01\x02"]
    if op < 0.7 and (local or central):
        at = rng.choice(local + central)
        is_local = b[at:at + 4] == b"PK\x03\x04"
        method_at = at + (8 if is_local else 10)
        sizes_at = at + (18 if is_local else 20)
        field_ = rng.choice(["method", "compressed", "size", "both"])
        if field_ == "method":
            b[method_at:method_at + 2] = struct.pack("<H", rng.choice([8, 12, 14, 99, 0xFFFF]))
        else:
            value = rng.choice([0, 1, 0xFFFFFFFF, 2**31, 1 << 30, 16])
            if field_ in ("compressed", "both"):
                b[sizes_at:sizes_at + 4] = struct.pack("<I", value)
            if field_ in ("size", "both"):
                b[sizes_at + 4:sizes_at + 8] = struct.pack("<I", value)
        return bytes(b)
    return _bytes_mutation(rng, data)


def gen_transfer(rng: random.Random, seeds: dict) -> dict:
    files = {"tiny.arch": seeds["transfer"]["tiny.arch"]}
    if rng.random() < 0.5:
        files["weights.pth"] = _zip_edit(rng, seeds["transfer_pth"])
    else:
        data = seeds["transfer"]["weights.safetensors"]
        files["weights.safetensors"] = (_safetensors_edit(rng, data, reseal=False) if rng.random() < 0.7
                                        else _bytes_mutation(rng, data))
    return files


def _nested(rng: random.Random):
    """A batch's `data`: lists that reuse one sub-list many levels deep (tiny as a pickle, huge once
    expanded), dicts nested in lists, a row repeated, odd values, or an array of another shape or dtype."""
    kind = rng.random()
    if kind < 0.35:
        node = [rng.randrange(256)] * rng.choice([1, 8, 3072])
        for _ in range(rng.randint(1, 30)):
            node = [node] * rng.randint(1, 4)
        return node
    if kind < 0.55:
        node = {}
        for _ in range(rng.randint(1, 40)):
            node = {b"data": node, b"x": [node]} if rng.random() < 0.5 else [node, node]
        return node
    if kind < 0.7:
        row = [0] * 3072
        return [row] * rng.choice([1, 10, 1000, 100_000])
    if kind < 0.85:
        return rng.choice([None, 3, "x", b"y" * 100, 1e308, [], {}, [[1, 2], [3]], [[0] * 3072, [0] * 10]])
    import numpy as np

    return np.zeros(rng.choice([(4, 3072), (1, 3, 32, 32), (0,), (5,), (4, 3072, 1)]),
                    rng.choice([np.uint8, np.float64, np.int64, np.bool_]))


def _declared_size(rng: random.Random, data: bytes) -> bytes:
    """A pickle whose length-prefixed opcodes (BINBYTES, BINUNICODE, SHORT_BINBYTES) declare huge sizes."""
    b = bytearray(data)
    spots = [i for i, c in enumerate(b) if c in (ord("B"), ord("X"), ord("T")) and i + 5 <= len(b)]
    if not spots:
        return data
    i = rng.choice(spots)
    b[i + 1:i + 5] = struct.pack("<I", rng.choice([0xFFFFFFFF, 2**31, 1 << 30, len(b) + 1]))
    return bytes(b)


def gen_cifar(rng: random.Random, seeds: dict) -> dict:
    files = dict(seeds["cifar"])
    name = "cifar/" + rng.choice(CIFAR_FILES)
    r = rng.random()
    if r < 0.55:
        batch = {b"data": _nested(rng), b"labels": _nested(rng) if rng.random() < 0.3 else [0, 1, 2, 3]}
        if rng.random() < 0.2:
            batch = _json_edit(rng, {"data": 1, "labels": 2}) if rng.random() < 0.5 else [batch]
        try:
            files[name] = pickle.dumps(batch, protocol=rng.choice([2, 4]))
        except (RecursionError, pickle.PicklingError, TypeError, ValueError):
            files[name] = b"\x80\x02N."
    elif r < 0.7:
        files[name] = _declared_size(rng, files[name])
    elif r < 0.8:
        files[name] = {"fifo": True} if rng.random() < 0.5 else {"link": rng.choice(["/dev/zero", "/etc/passwd"])}
    else:
        files[name] = _bytes_mutation(rng, files[name])
    return files


def _image_dims(rng: random.Random, fmt: str, data: bytes) -> bytes:
    """An image whose header claims other (often huge) dimensions."""
    b = bytearray(data)
    w, h = rng.choice([(65535, 65535), (100_000, 100_000), (2**31 - 1, 1), (0, 0), (1, 2**31 - 1), (13000, 13000),
                       (9000, 9000)])
    if fmt == "PNG":
        b[16:24] = struct.pack(">II", w, h)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))  # keep IHDR's CRC right
    elif fmt == "BMP":
        b[18:26] = struct.pack("<ii", min(w, 2**31 - 1), min(h, 2**31 - 1))
    elif fmt == "JPEG":
        at = b.find(b"\xff\xc0")
        if at > 0:
            b[at + 5:at + 9] = struct.pack(">HH", min(h, 65535), min(w, 65535))
    elif fmt == "GIF":
        b[6:10] = struct.pack("<HH", min(w, 65535), min(h, 65535))
    elif fmt == "WEBP":
        at = b.find(b"VP8")
        if at > 0 and at + 20 <= len(b):
            b[at + 14:at + 18] = struct.pack("<HH", min(w, 16383), min(h, 16383))
    return bytes(b)


def gen_image(rng: random.Random, seeds: dict) -> dict:
    if rng.random() < 0.03:  # the largest image the loader decodes, whole or cut
        data = seeds["large_png"]
        return {"x.png": data if rng.random() < 0.5 else data[:rng.randrange(len(data))]}
    images = seeds["images"]
    fmt = rng.choice(sorted(images))
    data = images[fmt]
    r = rng.random()
    if r < 0.35:
        data = _image_dims(rng, fmt, data)
    elif r < 0.45:
        w, h = rng.choice([(12000, 12000), (20000, 20000), (65535, 1), (100_000, 100_000)])
        data = bytearray(_png(1, 1))
        data[16:24] = struct.pack(">II", w, h)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        data = bytes(data)
    elif r < 0.85:
        data = _bytes_mutation(rng, data, start=rng.choice([0, 8, 32]))
    elif r < 0.92:
        return {"x.png": {"fifo": True} if rng.random() < 0.5 else {"link": rng.choice(["/dev/zero", "/etc/passwd"])}}
    if rng.random() < 0.2 and fmt != "EPS" and len(data) > 1:
        data = data[:rng.randrange(len(data))]
    return {rng.choice(["x.png", "x.jpg", "x.png", "x.webp", "x.bmp"]): data}


GENERATORS = {"checkpoint": gen_checkpoint, "run": gen_run, "transfer": gen_transfer, "cifar": gen_cifar,
              "image": gen_image}


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C in the test run stops the client, which kills this
    sys.path.insert(0, str(ROOT))
    serve()
