"""Training loss out of MindFormers' msrun worker logs, and the loss curve the article shows.

MindFormers prints one line per step, in two formats (legacy `MFLossMonitor`, newer trainer):

    ... - INFO - { Epoch:[  1/  2], step:[    1/   19], loss: 10.649, per_step_time: 103328ms, lr: 0.0, ...
    { step:[    1/   10], loss:  11.813965, per_step_time:  13570ms, ..., lr: 1.000000e-05, grad_norm: ... }

With pipeline parallelism only the last stage computes the loss: the newer trainer prints
`loss: N/A (non-last PP stage, …)` elsewhere, the legacy monitor prints 0. So the log to read is not
`worker_0.log` but one of the last stage (`worker_7.log` for pp 2 on 8 NPUs), which is found here by
looking for real values rather than by re-deriving the parallel layout. Lines are matched wherever
`step:[ N/ M], … loss: X` appears, whatever prefix (timestamps, `[rank]` tags) precedes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ascend_run.errors import AscendRunError

WORKER_LOG = re.compile(r"^worker_(\d+)\.log$")
ATTEMPT_DIR = re.compile(r"^attempt-(\d+)$")


class LossLogError(AscendRunError):
    """No logs, no loss in them, or a rank that does not exist."""


@dataclass(frozen=True)
class LossPoint:
    """One step line. `loss` is None on a non-last pipeline stage (`N/A`); NaN/inf are kept as read."""

    step: int  # global step: across epochs for the legacy format, whose `step:` restarts every epoch
    loss: float | None
    step_in_epoch: int | None = None
    steps_per_epoch: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    lr: float | None = None
    per_step_time_ms: float | None = None
    throughput: float | None = None  # TFLOPS per NPU as printed ("2.896T")
    global_norm: float | None = None
    grad_norm: float | None = None
    line: int = 0
    extra: dict[str, str] = field(default_factory=dict)  # other fields: load_balancing_loss, loss_scale, …

    def as_json(self) -> dict:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = str(value)  # "nan"/"inf": JSON has no literal for them
        return data


@dataclass
class LogScan:
    """Everything read from one worker log."""

    path: str
    rank: int | None
    points: list[LossPoint] = field(default_factory=list)  # the last run's lines with a real loss
    na_lines: int = 0  # `loss: N/A (non-last PP stage …)`
    zero_lines: int = 0  # legacy non-last stages print loss 0
    restarts: int = 0  # the step counter went backwards: an earlier run was appended to; it is dropped
    failure: str | None = None  # the exception (or last ERROR line) of a crashed rank
    steps_seen: int = 0  # all step lines, whatever their loss

    @property
    def has_loss(self) -> bool:
        """Real values: some loss that is neither N/A nor the 0 a legacy non-last stage prints."""
        return any(p.loss is not None and p.loss != 0 for p in self.points)

    @property
    def state(self) -> str:
        """What the log's step lines show, crash aside."""
        if self.has_loss:
            return "loss"
        if self.na_lines:
            return "N/A (non-last PP stage)"
        if self.zero_lines:
            return "loss 0 (non-last PP stage)"
        return "no step lines"

    @property
    def status(self) -> str:
        return f"{self.state}, crashed: {self.failure}" if self.failure else self.state

    def summary(self) -> dict:
        last = self.points[-1] if self.points else None
        return {"file": self.path, "rank": self.rank, "status": self.status, "steps": self.steps_seen,
                "last_step": last.step if last else None,
                "last_loss": _json_float(last.loss) if last and self.has_loss else None,
                "failure": self.failure, "restarts": self.restarts}


# --- one line ------------------------------------------------------------------------------------

_START = re.compile(r"(?:Epoch\s*:\s*\[[^\]]*\]\s*,\s*)?step\s*:\s*\[\s*\d+\s*/\s*\d+\s*\]")
_FIELD = re.compile(r"(?:^|,)\s*([A-Za-z_][\w ]*?)\s*:\s*(\[[^\]]*\]|N/A(?:\s*\([^)]*\))?|[^,]*)")
_PAIR = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf)", re.I)
_TFLOPS_SCALE = {"": 1.0, "T": 1.0, "G": 1e-3, "M": 1e-6, "P": 1e3}


def _fields(text: str) -> dict[str, str]:
    """`{ Epoch:[ 1/ 2], step:[ 1/ 19], loss: 10.6, … }` -> {'Epoch': '[ 1/ 2]', 'step': …, 'loss': '10.6'}."""
    body = text.strip().rstrip("}").strip()
    return {key.strip(): value.strip() for key, value in _FIELD.findall(body) if key.strip()}


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    match = _NUMBER.search(value)
    return float(match.group(0)) if match else None


def _json_float(value: float | None) -> float | str | None:
    return str(value) if value is not None and not math.isfinite(value) else value


def _milliseconds(value: str | None) -> float | None:
    number = _number(value)
    if number is None or value is None:
        return None
    unit = value.strip().lstrip("0123456789.eE+-").strip().lower()
    return number * 1000 if unit == "s" else number


def _tflops(value: str | None) -> float | None:
    number = _number(value)
    if number is None or value is None:
        return None
    unit = value.strip()[-1:].upper()
    return number * _TFLOPS_SCALE.get(unit, 1.0) if not unit.isdigit() else number


def parse_step_line(line: str, line_no: int = 0) -> LossPoint | None:
    """The step record on a line, or None when the line has none (MindSpore noise, tracebacks, …)."""
    start = _START.search(line)
    if not start:
        return None
    fields = _fields(line[start.start():])
    step_pair = _PAIR.search(fields.get("step", ""))
    if "loss" not in fields or not step_pair:
        return None
    raw_loss = fields["loss"]
    if raw_loss.upper().startswith("N/A"):
        loss = None
    else:
        loss = _number(raw_loss)
        if loss is None:
            return None  # `loss:` with something unreadable: a half-written line
    step, steps = int(step_pair.group(1)), int(step_pair.group(2))
    epoch_pair = _PAIR.search(fields.get("Epoch", ""))
    epoch, epochs = (int(epoch_pair.group(1)), int(epoch_pair.group(2))) if epoch_pair else (None, None)
    known = {"Epoch", "step", "loss", "lr", "per_step_time", "global_norm", "grad_norm", "throughput",
             "train_throughput_per_npu"}
    return LossPoint(
        step=(epoch - 1) * steps + step if epoch else step, loss=loss,
        step_in_epoch=step if epoch else None, steps_per_epoch=steps if epoch else None,
        epoch=epoch, epochs=epochs, lr=_number(fields.get("lr")),
        per_step_time_ms=_milliseconds(fields.get("per_step_time")),
        throughput=_tflops(fields.get("throughput") or fields.get("train_throughput_per_npu")),
        global_norm=_number(fields.get("global_norm")), grad_norm=_number(fields.get("grad_norm")),
        line=line_no, extra={k: v for k, v in fields.items() if k not in known})


# --- one log -------------------------------------------------------------------------------------

_TRACEBACK = "Traceback (most recent call last)"
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Failure)\b(?::.*)?$")
_ERROR_LINE = re.compile(r"(?:^\[ERROR\]|\s-\sERROR\s-\s)")


def scan_log(lines: Iterable[str], *, path: str = "<log>", rank: int | None = None) -> LogScan:
    """Read one worker log: its real loss points, N/A and zero counts, and how it died if it did."""
    scan = LogScan(path=path, rank=rank)
    in_traceback = False
    last_error: str | None = None
    previous = 0
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        point = parse_step_line(line, number)
        if point is not None:
            scan.steps_seen += 1
            if point.step <= previous:  # a later run (appended, or the next attempt's log): it redid the
                scan.restarts += 1       # steps from here on, so only its lines count for them
                scan.points = [p for p in scan.points if p.step < point.step]
                scan.failure, last_error = None, None
            previous = point.step
            if point.loss is None:
                scan.na_lines += 1
            elif point.loss == 0:
                scan.zero_lines += 1
            scan.points.append(point)
            continue
        if _TRACEBACK in line:
            in_traceback = True
        elif in_traceback and _EXCEPTION.match(line):
            scan.failure, in_traceback = line.strip(), False
        elif _ERROR_LINE.search(line):
            last_error = line.strip()
    if scan.failure is None and last_error is not None:
        scan.failure = last_error[-300:]
    scan.points = [p for p in scan.points if p.loss is not None]
    return scan


def scan_file(path: Path, rank: int | None = None, earlier: Sequence[Path] = ()) -> LogScan:
    """`scan_log` over a file, read as UTF-8 with bad bytes replaced (a log cut mid-character is common),
    after the rank's logs of `earlier` attempts (a resumed attempt redoes the steps after its checkpoint, so
    each step is taken from the last attempt that ran it).

    A last line without its newline is left out: it is being written.
    """
    if rank is None:
        match = WORKER_LOG.match(path.name)
        rank = int(match.group(1)) if match else None

    def lines() -> Iterator[str]:
        for part in (*earlier, path):
            with part.open(encoding="utf-8", errors="replace") as fh:
                yield from _complete_lines(fh)

    try:
        return scan_log(lines(), path=str(path), rank=rank)
    except OSError as exc:
        raise LossLogError(f"cannot read {exc.filename or path}: {exc.strerror or exc}") from None


def _complete_lines(lines: Iterable[str]) -> Iterable[str]:
    """Skip a last line without its newline: the worker is still writing it (`loss: 10.6` of 10.649)."""
    for line in lines:
        if line.endswith("\n"):
            yield line


# --- a directory of logs -------------------------------------------------------------------------

def find_worker_logs(directory: Path) -> dict[int, Path]:
    """`worker_N.log` by rank N, in `DIR/` or one level down (`DIR/<node>/`, as collected per node).

    N is the global rank (msrun names them `worker_<node_rank*local_worker_num+i>.log`), so the same N in
    two node directories means two jobs' logs were mixed: refused, naming both.
    """
    if directory.is_file():
        match = WORKER_LOG.match(directory.name)
        return {int(match.group(1)) if match else 0: directory}
    if not directory.is_dir():
        raise LossLogError(f"{directory} does not exist", fix="give --from the directory the logs were "
                           "collected to (DIR/worker_N.log or DIR/<node>/worker_N.log)")
    found: dict[int, Path] = {}
    for path in sorted([*directory.glob("worker_*.log"), *directory.glob("*/worker_*.log")]):
        match = WORKER_LOG.match(path.name)
        if not match or not path.is_file():
            continue
        rank = int(match.group(1))
        if rank in found:
            raise LossLogError(f"rank {rank} has two logs: {found[rank]} and {path}",
                               fix="collect each job's logs into its own directory")
        found[rank] = path
    if not found:
        raise LossLogError(f"no worker_N.log under {directory}",
                           fix="msrun writes them to job.log_dir (output/msrun_log); collect that directory")
    return dict(sorted(found.items()))


@dataclass
class LossReport:
    """The chosen rank's loss series, with what every other rank showed."""

    chosen: LogScan
    scans: dict[int, LogScan]

    @property
    def points(self) -> list[LossPoint]:
        return self.chosen.points

    @property
    def ranks_with_loss(self) -> list[int]:
        return [rank for rank, scan in self.scans.items() if scan.has_loss]

    @property
    def crashed(self) -> dict[int, str]:
        return {rank: scan.failure for rank, scan in self.scans.items() if scan.failure}

    def as_json(self) -> dict:
        return {"rank": self.chosen.rank, "file": self.chosen.path, "ranks_with_loss": self.ranks_with_loss,
                "crashed": self.crashed, "ranks": {str(r): s.summary() for r, s in self.scans.items()},
                "points": [p.as_json() for p in self.points]}


def choose_rank(scans: Mapping[int, LogScan], rank: int | None = None) -> LogScan:
    """The log holding the loss: `rank` if given, else the highest rank with real values.

    With data parallelism several last-stage ranks print a loss; the highest one is the article's
    choice (`worker_7.log`) and the others are listed in the report.
    """
    with_loss = [r for r, scan in scans.items() if scan.has_loss]
    if rank is not None:
        if rank not in scans:
            raise LossLogError(f"no log for rank {rank} (found ranks {rank_ranges(list(scans))})",
                               fix="pick one of the ranks found, or leave --rank out to pick automatically")
        scan = scans[rank]
        if not scan.has_loss:
            hint = f"ranks with a loss: {rank_ranges(with_loss)}" if with_loss else "no rank printed a loss yet"
            raise LossLogError(f"rank {rank} printed no loss ({scan.status}); {hint}",
                               fix="leave --rank out to pick the last pipeline stage automatically")
        return scan
    if not with_loss:
        detail = "; ".join(f"rank {r}: {s.status}" for r, s in list(scans.items())[:8])
        raise LossLogError(f"no rank printed a loss value ({detail})",
                           fix="the job may not have reached its first step; check the logs' end for errors")
    return scans[max(with_loss)]


def find_attempt_logs(directory: Path) -> dict[int, list[Path]]:
    """Each rank's logs of a supervised job's earlier attempts (`attempt-K/worker_N.log`, beside the current
    logs or one level down), in attempt order."""
    if not directory.is_dir():
        return {}
    found: dict[int, list[tuple[int, Path]]] = {}
    for path in [*directory.glob("attempt-*/worker_*.log"), *directory.glob("*/attempt-*/worker_*.log")]:
        match, attempt = WORKER_LOG.match(path.name), ATTEMPT_DIR.match(path.parent.name)
        if match and attempt and path.is_file():
            found.setdefault(int(match.group(1)), []).append((int(attempt.group(1)), path))
    return {rank: [p for _, p in sorted(paths)] for rank, paths in found.items()}


def loss_report(source: Path, rank: int | None = None) -> LossReport:
    """Scan every worker log under `source` (a directory or one log file) and choose the loss rank."""
    earlier = find_attempt_logs(source)
    scans = {r: scan_file(path, r, earlier.get(r, ())) for r, path in find_worker_logs(source).items()}
    return LossReport(chosen=choose_rank(scans, rank), scans=scans)


def rank_ranges(ranks: list[int]) -> str:
    """[0, 1, 2, 3, 7] -> '0-3, 7'."""
    runs: list[list[int]] = []
    for r in sorted(ranks):
        if runs and runs[-1][1] == r - 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


# --- the curve -----------------------------------------------------------------------------------

def plot_loss(points: Iterable[LossPoint] | LogScan | LossReport, path_png: str | Path, title: str = "") -> Path:
    """Write the step-vs-loss curve as a PNG (matplotlib's Agg canvas: no display, no global pyplot state)."""
    if isinstance(points, (LogScan, LossReport)):
        points = points.points
    series = [(p.step, p.loss) for p in points if p.loss is not None and math.isfinite(p.loss)]
    if not series:
        raise LossLogError("no finite loss values to plot")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise LossLogError("plotting needs matplotlib", fix="pip install 'ascend-run[plot]'") from None
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps, losses = zip(*series)
    axes.plot(steps, losses, color="tab:blue", linewidth=1.5, marker="." if len(series) <= 60 else None)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title or "training loss")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path_png, format="png")
    return path_png
