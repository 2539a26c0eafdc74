"""The checks `config check` runs before a launch: what MindFormers would reject hours into a job, now.

Each rule reads settings through a `ConfigView` (so one rule covers the legacy and 2.x layouts) and adds
`Issue`s naming the key path, the values involved and a fix. Errors are what MindFormers or MindSpore
reject (or crash on); warnings are what they accept and silently ignore or get wrong (the article's own
`optimizer_weight_shard_size: 8` with `data_parallel: 2` is one).
"""

from __future__ import annotations

import math
import posixpath
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from ascend_run.mfconfig import stages
from ascend_run.mfconfig.layout import ConfigView, Layout, Setting
from ascend_run.mfconfig.memory import GIB, estimate, parse_memory
from ascend_run.mfconfig.mindformers_rules import MindFormersRules
from ascend_run.mfconfig.paths import JobContext, collect, to_host
from ascend_run.mfconfig.report import CheckReport, Issue
from ascend_run.mfconfig.yamledit import Document, KeyPath, format_key_path, parse_key_path, plain

_POSITIVE = ("dp", "mp", "cp", "pp", "ep", "micro_batch_num", "interleave", "num_layers", "num_heads",
             "hidden_size", "batch_size", "seq_length")
_NON_NEGATIVE = ("mtp_depth", "first_k_dense")
# (top-level key, the types it may have, what to say): switches MindFormers reads as one value
_SCALARS = (
    ("resume_training", (bool, str), "True, False or a checkpoint file name"),
    ("load_checkpoint", (str,), "a path (a checkpoint file or directory)"),
    ("auto_trans_ckpt", (bool,), "True or False"),
    ("only_save_strategy", (bool,), "True or False"),
    ("use_parallel", (bool,), "True or False"),
    ("run_mode", (str,), "a run mode such as train, finetune or predict"),
    ("output_dir", (str,), "a path"),
    ("src_strategy_path_or_dir", (str,), "a path"),
)


def load_document(path_or_data: Any) -> Document:
    """A Document from a path, YAML text already read by the caller, a Document, or plain/round-trip data."""
    if isinstance(path_or_data, Document):
        return path_or_data
    if isinstance(path_or_data, Path) or (isinstance(path_or_data, str) and "\n" not in path_or_data):
        return Document.from_path(path_or_data)
    if isinstance(path_or_data, str):
        return Document(path_or_data)
    if isinstance(path_or_data, dict):
        import io

        from ruamel.yaml import YAML

        if isinstance(path_or_data, CommentedMap):
            out = io.StringIO()
            YAML(typ="rt").dump(path_or_data, out)
            return Document(out.getvalue(), "<data>")
        out = io.StringIO()
        YAML(typ="safe", pure=True).dump(path_or_data, out)
        return Document(out.getvalue(), "<data>")
    raise TypeError(f"expected a path, YAML text, a Document or a mapping, got {type(path_or_data).__name__}")


def check_config(path_or_data: Any, job: JobContext = JobContext(), *, memory: bool = True) -> CheckReport:
    """Validate a MindFormers config for the job `job` describes (its NPU count, mounts, workdir, …).

    `path_or_data`: a path (a `Path`, or a str without a newline), YAML text (a str with newlines), a
    `Document`, or a mapping (plain or ruamel round-trip data).

    The job's mounts turn container paths into server paths; its path checker then says on which nodes each
    dataset/checkpoint path is missing; its NPU memory bounds `max_device_memory`. Never raises for problems
    in the config: they are in the report (`report.raise_for_errors()` turns errors into a
    `ConfigCheckFailed`)."""
    doc = load_document(path_or_data)
    view = ConfigView(doc)
    report = CheckReport(doc.source, view.layout.value, job.npus)
    checker = _Rules(view, job.npus, report)
    checker.run()
    if job.npu_memory_gb:
        checker.device_memory(job.npu_memory_gb)
    if memory and not report.errors:     # the estimate needs a valid stage split and parallel sizes
        _check_memory(view, job.npus, report)
    _check_paths(view, report, job)
    if job.mounts is not None and view.is_train:
        _check_output_dir(view, report, job)
    return report


class _Rules(MindFormersRules):
    def __init__(self, view: ConfigView, npus: int | None, report: CheckReport) -> None:
        self.view, self.npus, self.report = view, npus, report
        self.bad: set[str] = set()   # fields with an unusable value; later rules leave them alone

    # -- helpers -------------------------------------------------------------------------------------------

    def s(self, name: str) -> Setting:
        return self.view.setting(name)

    def v(self, name: str) -> Any:
        return self.view.get(name)

    def add(self, severity: str, key: Setting | str, message: str, fix: str | None = None) -> None:
        if isinstance(key, Setting):
            path, key = key.path, key.key
        else:
            path = parse_key_path(key)
        line = self.view.doc.line_of(path) if path else None
        self.report.issues.append(Issue(severity, key, message, fix, line))  # type: ignore[arg-type]

    def ok(self, *names: str) -> bool:
        return not any(n in self.bad for n in names)

    def run(self) -> None:
        self.sections()
        self.types()
        self.scalars()
        self.device_count()
        self.experts()
        self.pipeline()
        self.model_shape()
        self.mindformers_rules()
        if self.view.is_train:
            self.dataset_strategy()
            self.callbacks()
            self.dataset_seq_length()
            self.optimizer_shard()
            self.learning_rate()

    # -- rules ---------------------------------------------------------------------------------------------

    def sections(self) -> None:
        """The parallel section must be there, and every section on the way to a setting must be a
        mapping: otherwise each setting under it reads as its default, and a job meant for 64 NPUs is
        checked (and run) as data × model × pipeline = 1 × 1 × 1 without a word."""
        section = "parallelism" if self.view.layout is Layout.PARALLELISM else "parallel_config"
        parallel = ("dp", "mp", "cp", "pp", "ep", "micro_batch_num", "use_seq_parallel")
        if not self.view.doc.has((section,)):
            self.bad.update(parallel)
            self.add("error", section, "is missing: every parallel setting would be 1 (data × model × pipeline = "
                     "1 × 1 × 1), whatever the job's NPU count",
                     f"add {section}: with data_parallel, model_parallel and pipeline_stage for the job's NPUs"
                     if section == "parallel_config" else
                     "add parallelism: with tensor_parallel, pipeline_parallel and data_parallel_shard")
        reported: set[KeyPath] = set()
        for name in _SECTION_FIELDS:
            path = self.view.path(name)
            for end in range(1, len(path or ())):
                prefix = path[:end]
                value = self.view.doc.get(prefix, None)
                if value is None or isinstance(value, dict):
                    continue
                self.bad.add(name)
                if prefix not in reported:
                    reported.add(prefix)
                    self.add("error", format_key_path(prefix), f"must be a mapping of settings, got "
                             f"{type(plain(value)).__name__} {_short(plain(value))}: the settings under it "
                             "would all read as their defaults", f"write it as {format_key_path(prefix)}: "
                             "{key: value, …} (indented keys)")
                break

    def types(self) -> None:
        for name in _POSITIVE + _NON_NEGATIVE:
            setting = self.s(name)
            value = plain(setting.value)
            if name == "dp" and self.view.layout is Layout.PARALLELISM and value == -1:
                continue
            low = 0 if name in _NON_NEGATIVE else 1
            if not stages.is_number(value):
                self.bad.add(name)
                self.add("error", setting, f"must be a whole number, got {value!r} ({type(value).__name__})",
                         f"write it without quotes, e.g. {setting.path[-1] if setting.path else name}: "
                         f"{_as_int_hint(value)}")
            elif value < low:
                self.bad.add(name)
                self.add("error", setting, f"must be at least {low}, got {value}",
                         f"set {setting.key} to {low} or more")

    def scalars(self) -> None:
        """Top-level switches MindFormers reads as one value: a list or a mapping there is a mistake (or an
        attempt), and `resume_training` is True/False or a checkpoint file name."""
        doc = self.view.doc
        for key, kinds, what in _SCALARS:
            if not doc.has((key,)):
                continue
            value = plain(doc.get((key,)))
            if value is not None and not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
                self.add("error", key, f"must be {what}, got {type(value).__name__} {_short(value)}",
                         f"write {key}: followed by {what}")

    def device_count(self) -> None:
        if not self.ok("dp", "mp", "cp", "pp"):
            return
        dp, mp, cp, pp = (self.v(n) for n in ("dp", "mp", "cp", "pp"))
        others = mp * cp * pp
        names = f"{self.s('mp').key} × {self.s('pp').key}" + (f" × {self.s('cp').key}" if cp != 1 else "")
        if self.npus is None:
            self.add("note", self.s("dp"), f"device count not checked (no --npus or deployment file); the config "
                     f"needs {dp * others if dp > 0 else 'a multiple of ' + str(others)} NPUs")
            return
        if dp == -1:   # PyNative: data parallel takes the rest
            if self.npus % others:
                self.add("error", self.s("dp"), f"data_parallel_shard -1 takes the NPUs left over, but {self.npus} "
                         f"NPUs are not a multiple of {names} = {others}",
                         _divisor_fix(self.npus, mp, pp, self.s("mp").key, self.s("pp").key))
            return
        if dp * others != self.npus:
            product = " × ".join(str(x) for x in ([dp, mp] + ([cp] if cp != 1 else []) + [pp]))
            message = (f"{self.s('dp').key} × {names} = {product} = {dp * others}, but the job has "
                       f"{self.npus} NPUs")
            if self.npus % others == 0:
                fix = f"set {self.s('dp').key}: {self.npus // others} (the nearest valid data_parallel)"
            else:
                fix = _divisor_fix(self.npus, mp, pp, self.s("mp").key, self.s("pp").key)
            self.add("error", self.s("dp"), message, fix)

    def experts(self) -> None:
        if not self.ok("ep", "dp", "mp"):
            return
        expert_num, ep = self.v("expert_num"), self.v("ep")
        if not stages.is_number(expert_num) or expert_num < 1:
            self.bad.add("expert_num")
            self.add("error", self.s("expert_num"), f"must be a whole number ≥ 1, got {expert_num!r}",
                     "the number of routed experts, e.g. 256 for DeepSeek-V3")
            return
        dp, mp = self.v("dp"), self.v("mp")
        if dp == -1 and self.npus:
            dp = self.npus // max(1, mp * self.v("cp") * self.v("pp"))
        if expert_num <= 1:
            if ep > 1:
                self.add("warning", self.s("ep"), f"is {ep} but the model has no routed experts "
                         f"({self.s('expert_num').shown()}); it is ignored")
            return
        if expert_num % ep:
            self.add("error", self.s("ep"), f"{self.s('expert_num').shown()} is not divisible by "
                     f"{self.s('ep').key} = {ep}",
                     f"set {self.s('ep').key}: {_nearest_divisor(math.gcd(expert_num, dp * mp), ep)} "
                     f"(divides both expert_num {expert_num} and data×model parallel {dp * mp})")
        elif dp > 0 and (dp * mp) % ep:
            self.add("error", self.s("ep"), f"expert parallel {ep} does not fit in data_parallel × model_parallel "
                     f"= {dp} × {mp} = {dp * mp}: experts are spread over those devices",
                     f"set {self.s('ep').key}: {_nearest_divisor(math.gcd(expert_num, dp * mp), ep)}")

    def pipeline(self) -> None:
        if not self.ok("pp", "num_layers", "interleave", "mtp_depth"):
            return
        pp, interleave, num_layers = self.v("pp"), self.v("interleave"), self.v("num_layers")
        total = self.view.total_layers
        if self.view.is_train and pp > 1:
            if self.view.layout is Layout.PARALLELISM:
                self._pynative_micro_batches(pp)
            elif self.ok("micro_batch_num") and self.v("micro_batch_num") < pp:
                self.add("error", self.s("micro_batch_num"), f"{self.v('micro_batch_num')} micro batches cannot "
                         f"keep {pp} pipeline stages busy (MindFormers requires micro_batch_num ≥ pipeline_stage)",
                         f"set {self.s('micro_batch_num').key}: {max(pp, 2 * pp if pp < 8 else pp)} or more")
        if num_layers < pp:
            self.add("error", self.s("num_layers"), f"{num_layers} layers cannot fill {self.s('pp').shown()} "
                     "stages", f"use at most {num_layers} pipeline stages, or more layers")
            return
        if self.view.layout is Layout.PARALLELISM:
            self._layers_per_stage(pp, interleave, num_layers)
            return
        offset_setting = self.s("offset")
        offset = plain(offset_setting.value)
        how = (f"L = {self.s('num_layers').key} + {self.s('mtp_depth').key} = {total}"
               if self.view.layout is Layout.LEGACY else f"L = {self.s('num_layers').key} = {total}")
        try:
            chunks = stages.chunk_layers(total, pp, interleave, offset)
            remainder = total % (pp * interleave)
            given = stages.offset_sum(offset, pp, interleave)
        except stages.ShapeError as exc:
            self.bad.add("offset")
            self.add("error", offset_setting, str(exc),
                     f"set {offset_setting.key}: {stages.balanced_offset(total, pp, interleave)}")
            return
        if given != remainder:
            self.bad.add("offset")
            self.add("error", offset_setting, f"sums to {given}, but MindFormers requires sum(offset) == L % "
                     f"(pipeline_stage × pp_interleave_num) = {total} % {pp * interleave} = {remainder} ({how})",
                     f"set {offset_setting.key}: {stages.balanced_offset(total, pp, interleave)}")
            return
        negative = [(i, s_) for i in range(interleave) for s_ in range(pp) if chunks[i][s_] < 0]
        if negative:
            self.bad.add("offset")
            i, s_ = negative[0]
            self.add("error", offset_setting, f"gives stage {s_}{f' (chunk {i})' if interleave > 1 else ''} "
                     f"{chunks[i][s_]} layers ({how}, {total // (pp * interleave)} per stage before offsets)",
                     f"set {offset_setting.key}: {stages.balanced_offset(total, pp, interleave)}")
            return
        if self.view.is_train:
            self._recompute(pp, interleave, total, offset, chunks)

    def _recompute(self, pp: int, interleave: int, total: int, offset: Any, chunks: list[list[int]]) -> None:
        """A per-stage recompute list: one count per stage (per chunk with interleave). Longer than the
        stages: MindFormers indexes past the end while building the model. Shorter: accepted, and the
        stages without an entry silently get no recompute, hence only a warning."""
        setting = self.s("recompute")
        value = plain(setting.value)
        if not isinstance(value, list) or not value:
            return
        fix = (f"set {setting.key}: {stages.full_recompute(total, pp, interleave, offset)} "
               "(every layer of each stage) or one count per stage")
        if all(stages.is_number(v) for v in value):
            rows = [value] * interleave          # a flat list applies to every chunk
        elif all(isinstance(r, list) and all(stages.is_number(x) for x in r) for r in value):
            rows = value
            if len(rows) != interleave:
                self.add("error", setting, f"has {len(rows)} lists but pp_interleave_num is {interleave}", fix)
                return
        else:
            self.add("error", setting, f"must be True/False, one count per stage or lists of them, got {value!r}", fix)
            return
        longest, shortest = max(len(r) for r in rows), min(len(r) for r in rows)
        if longest > pp:
            self.add("error", setting, f"has {longest} entries for {pp} pipeline stages: MindFormers indexes it "
                     "by stage and fails while building the model", fix)
            return
        if shortest < pp:
            self.add("warning", setting, f"has {shortest} entries for {pp} pipeline stages: the stages without "
                     "an entry run with no recompute", fix)
        for i, row in enumerate(rows):
            for stage, count in enumerate(row):
                if count < 0:
                    self.add("error", setting, f"stage {stage} has a negative count {count}", fix)
                    return
                if count > chunks[i][stage]:
                    self.add("warning", setting, f"asks stage {stage} to recompute {count} layers but it holds "
                             f"{chunks[i][stage]}; all of them are recomputed", fix)
                    return

    def _pynative_micro_batches(self, pp: int) -> None:
        gbs, lbs = self.v("global_batch_size"), self.v("batch_size")
        dp = self.v("dp")
        if dp == -1 and self.npus:
            dp = self.npus // max(1, self.v("mp") * self.v("cp") * pp)
        if not (stages.is_number(gbs) and stages.is_number(lbs) and dp > 0):
            return
        micro = gbs // max(1, lbs * dp)
        if micro < pp:
            self.add("error", self.s("global_batch_size"), f"gives {gbs} / ({lbs} × data parallel {dp}) = {micro} "
                     f"micro batches for {pp} pipeline stages (need at least {pp})",
                     f"set {self.s('global_batch_size').key}: {pp * lbs * dp}")

    def _layers_per_stage(self, pp: int, interleave: int, num_layers: int) -> None:
        setting = self.s("layers_per_stage")
        value = plain(setting.value)
        if value is None:
            if num_layers % (pp * interleave):
                self.add("note", setting, f"{num_layers} layers do not split evenly over {pp * interleave} "
                         "chunks; MindFormers decides where the extra layers go")
            return
        flat = value if isinstance(value, list) and all(stages.is_number(x) for x in value) else None
        if flat is None or len(flat) not in (pp, pp * interleave):
            self.add("error", setting, f"must list the layers of each of the {pp} stages, got {value!r}",
                     f"set {setting.key}: "
                     f"{stages.full_recompute(num_layers, pp, 1, stages.balanced_offset(num_layers, pp, 1))}")
        elif sum(flat) != num_layers or min(flat) < 1:
            self.add("error", setting, f"sums to {sum(flat)} with smallest {min(flat)}, but the model has "
                     f"{num_layers} layers and every stage needs at least one",
                     f"set {setting.key}: "
                     f"{stages.full_recompute(num_layers, pp, 1, stages.balanced_offset(num_layers, pp, 1))}")

    def model_shape(self) -> None:
        if self.ok("hidden_size", "num_heads") and self.v("hidden_size") % self.v("num_heads"):
            hidden, heads = self.v("hidden_size"), self.v("num_heads")
            self.add("error", self.s("hidden_size"), f"{hidden} is not divisible by {self.s('num_heads').shown()}",
                     f"set {self.s('num_heads').key}: {_nearest_divisor(hidden, heads)} or "
                     f"{self.s('hidden_size').key}: {round(hidden / heads) * heads or heads}")
        if self.ok("num_heads", "mp") and self.v("num_heads") % self.v("mp"):
            heads, mp = self.v("num_heads"), self.v("mp")
            self.add("error", self.s("num_heads"), f"{heads} attention heads cannot be split over "
                     f"{self.s('mp').shown()} (tensor parallel shards the heads)",
                     f"set {self.s('mp').key}: {_nearest_divisor(heads, mp)}")
        if self.ok("first_k_dense", "num_layers") and self.v("first_k_dense") > self.v("num_layers"):
            self.add("error", self.s("first_k_dense"), f"{self.v('first_k_dense')} dense layers asked for, but the "
                     f"model has {self.s('num_layers').shown()}",
                     f"set {self.s('first_k_dense').key}: at most {self.v('num_layers')} (the article uses 1 of 3)")

    def device_memory(self, npu_memory_gb: int) -> None:
        """`max_device_memory` above the NPU's HBM makes MindSpore fail at start-up."""
        setting = self.s("max_device_memory")
        limit = parse_memory(plain(setting.value)) if not setting.default else None
        if limit is not None and limit > npu_memory_gb * GIB:
            self.add("error", setting, f"{plain(setting.value)} is more than the {npu_memory_gb} GB of one NPU",
                     f"set {setting.key}: \"{max(1, npu_memory_gb - 4)}GB\" (leave room for the runtime)")

    def dataset_strategy(self) -> None:
        setting = self.s("dataset_strategy")
        value = setting.value
        if setting.default or plain(self.v("full_batch")) or not self.ok("dp") or not isinstance(value, list):
            return
        dp = self.v("dp")
        for index, entry in enumerate(value):
            if isinstance(entry, list) and entry and plain(entry[0]) != dp:
                key = format_key_path(setting.path + (index, 0))
                self.add("error", key, f"splits the batch {plain(entry[0])} ways but {self.s('dp').shown()}",
                         f"write `*dp` (an alias of data_parallel's anchor) or {dp} in every entry")
                return

    def callbacks(self) -> None:
        callbacks = self.view.doc.get(("callbacks",), None)
        if not isinstance(callbacks, list) or self.view.layout is not Layout.LEGACY:
            return
        mirror = {"num_layers": "num_layers", "mtp_depth": "mtp_depth", "expert_num": "expert_num",
                  "micro_batch_num": "micro_batch_num"}
        for index, callback in enumerate(callbacks):
            if not isinstance(callback, dict) or plain(callback.get("type")) != "TopkBiasBalanceCallback":
                continue
            for key, field_name in mirror.items():
                if key in callback and plain(callback[key]) != self.v(field_name):
                    self.add("error", f"callbacks[{index}].{key}", f"is {plain(callback[key])} but "
                             f"{self.s(field_name).shown()}: the bias balancer would track the wrong "
                             "layers/experts (the anchor link was lost)",
                             f"write `{key}: *{key}` as in the original file, or {self.v(field_name)}")

    def dataset_seq_length(self) -> None:
        loader = self.view.path("data_loader")
        if loader is None or not self.ok("seq_length"):
            return
        path = loader + ("config", "seq_length")
        value = self.view.doc.get(path, None)
        if value is not None and plain(value) != self.v("seq_length"):
            self.add("error", format_key_path(path), f"is {plain(value)} but {self.s('seq_length').shown()}: "
                     "samples would not match the model's input shape",
                     f"set {format_key_path(path)}: {self.v('seq_length')} (and convert the data with "
                     f"--seq-length {self.v('seq_length')})")

    def optimizer_shard(self) -> None:
        setting = self.s("opt_shard")
        if setting.default or not self.ok("dp", "mp"):
            return
        size = plain(setting.value)
        if not stages.is_number(size) or size == 0 or size < -1:
            self.add("error", setting, f"must be -1 (the whole data-parallel group) or a positive number, got {size!r}",
                     f"set {setting.key}: -1")
            return
        if not plain(self.v("parallel_optimizer")):
            self.add("warning", setting, f"is {size} but {self.s('parallel_optimizer').shown()}: it is ignored",
                     f"set {self.s('parallel_optimizer').key}: True, or remove {setting.key}")
            return
        dp = self.v("dp")
        if size > 0 and dp > 0 and dp % size:
            fits = max(d for d in range(1, dp + 1) if dp % d == 0 and d <= size)
            self.add("warning", setting, f"{size} does not divide the data-parallel group of the weights "
                     f"({self.s('dp').shown()}); MindSpore ignores it and shards over the whole group of {dp}",
                     f"set {setting.key}: {fits} or -1 (the article's 1B config writes 8 with data_parallel 2)")

    def learning_rate(self) -> None:
        lr_path = self.view.path("lr_schedule")
        lr = self.view.doc.get(lr_path, None) if lr_path else None
        if not isinstance(lr, dict):
            return
        if lr.get("warmup_ratio") is not None and lr.get("warmup_steps") is not None:
            key = format_key_path(lr_path + ("warmup_steps",))
            self.add("warning", key, f"is {plain(lr['warmup_steps'])} but warmup_ratio "
                     f"{plain(lr['warmup_ratio'])} is also set, and MindFormers uses the ratio",
                     f"remove {format_key_path(lr_path + ('warmup_ratio',))}")


def _check_paths(view: ConfigView, report: CheckReport, job: JobContext) -> None:
    checker, mounts = job.path_checker, job.mounts
    refs = collect(view, workdir=job.workdir, mounts=mounts or ())
    if not refs:
        return
    if mounts is not None:
        for ref in refs:
            if ref.host_path is None and ref.required:
                report.issues.append(Issue("warning", ref.key, f"{ref.container_path} is under no mount of the "
                                           "deployment file, so the container sees it only if the image has it",
                                           "add a mount (server path:container path) that contains it"))
    if checker is None:
        shown = ", ".join(ref.key + (f" (server: {ref.host_path})" if ref.host_path else "")
                          for ref in refs if ref.required)
        if shown:
            report.issues.append(Issue("note", "paths", f"not checked on the nodes: {shown}",
                                       "add --ssh to check them on every node" if mounts is not None else
                                       "pass a deployment file (-f) and --ssh to check them on every node"))
        return
    to_check = [ref for ref in refs if ref.required and (mounts is None or ref.host_path is not None)]
    missing = checker(to_check)
    for ref in to_check:
        nodes = list(missing.get(ref, ()))
        if nodes:
            where = ref.host_path or ref.container_path
            what = " and ".join(Path(p).name for p in ref.probes()) if ref.kind == "megatron" else where
            shown_nodes = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
            report.issues.append(Issue("error", ref.key, f"{what} missing on {shown_nodes}"
                                       + (f" (server path {where})" if ref.kind == "megatron" else ""),
                                       "copy it to every node (or to storage they share) before launching"))


def _check_output_dir(view: ConfigView, report: CheckReport, job: JobContext) -> None:
    """Checkpoints under an output_dir that no mount holds stay inside the container: ascend-run's containers
    are removed when the job ends (--rm), and a relaunch has nothing to resume from."""
    callbacks = view.doc.get(("callbacks",), None)
    saves = isinstance(callbacks, list) and any(
        isinstance(c, dict) and plain(c.get("type")) == "CheckpointMonitor" for c in callbacks)
    if not saves:
        return
    written = plain(view.doc.get(("output_dir",), None))
    written = written if isinstance(written, str) and written.strip() else "./output"
    container = written if written.startswith("/") else posixpath.normpath(posixpath.join(job.workdir, written))
    if to_host(container, job.mounts) is None:
        report.issues.append(Issue("warning", "output_dir", f"{container} (where CheckpointMonitor writes "
                                   "checkpoint/rank_*) is under no mount: inside the container, the checkpoints go "
                                   "with it when the job ends, and a restart cannot resume",
                                   "mount shared storage there (mounts: [\"/server/path:" + container + "\"])",
                                   view.doc.line_of(("output_dir",))))


def _check_memory(view: ConfigView, npus: int | None, report: CheckReport) -> None:
    try:
        result = estimate(view, npus)
    except (stages.ShapeError, ZeroDivisionError, TypeError, ValueError) as exc:
        report.issues.append(Issue("note", "memory", f"no estimate ({exc})"))
        return
    report.memory = result
    limit_key = format_key_path(view.path("max_device_memory")) if view.path("max_device_memory") else "memory"
    if result.over_limit:
        worst = result.worst
        report.issues.append(Issue("warning", limit_key, f"the estimate for stage {worst.stage} is "
                                   f"{worst.total / (1 << 30):.1f} GiB per NPU, above max_device_memory "
                                   f"{result.limit / (1 << 30):.0f} GiB", "recompute more layers, raise "
                                   "model/pipeline parallelism or the optimizer shard, or shorten seq_length"))


_SECTION_FIELDS = ("dp", "mp", "cp", "pp", "ep", "micro_batch_num", "interleave", "num_layers", "num_heads",
                   "hidden_size", "seq_length", "expert_num", "offset", "recompute", "opt_shard", "batch_size")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "…"


def _nearest_divisor(n: int, near: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - near), -d)) if divisors else 1


def _divisor_fix(npus: int, mp: int, pp: int, mp_key: str, pp_key: str) -> str:
    """Keep model_parallel when it divides the NPUs and shrink pipeline_stage to fit; else shrink both."""
    for m in sorted({d for d in range(1, npus + 1) if npus % d == 0}, key=lambda d: (abs(d - mp), -d)):
        rest = npus // m
        p = max(d for d in range(1, rest + 1) if rest % d == 0 and d <= max(1, pp))
        return (f"{npus} NPUs need model_parallel × pipeline_stage to divide {npus}: e.g. {mp_key}: {m}, "
                f"{pp_key}: {p}, then data_parallel {npus // (m * p)}")
    return f"use a number of NPUs that {mp_key} × {pp_key} divides"


def _as_int_hint(value: Any) -> str:
    try:
        return str(int(str(value).strip().strip("'\"")))
    except ValueError:
        return "2"

