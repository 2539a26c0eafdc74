"""Loss extraction from msrun worker logs: both MindFormers formats, PP stages, crashes, the CLI, the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from ascend_run.cli import cli, main
from ascend_run.launch.losslog import (
    LossLogError,
    choose_rank,
    find_worker_logs,
    loss_report,
    parse_step_line,
    plot_loss,
    scan_file,
    scan_log,
)

# What a legacy (MindFormers r1.x MFLossMonitor) worker log looks like around the loss lines.
NOISE = """\
[WARNING] ME(2918:281473385107472,MainProcess):2025-04-07-15:31:02.116.000 [mindspore/run_check/_check_version.py:396] Can not find the tbe operator implementation(need by mindspore-ascend). Please check whether the Environment Variable PYTHONPATH is set.
[WARNING] DISTRIBUTED(2918,ffffa1a9f020,python):2025-04-07-15:31:05.771.330 [mindspore/ccsrc/distributed/cluster/topology/compute_graph_node.cc:173] Register] Failed to connect to the meta server node url: 127.0.0.1:8118
2025-04-07 15:31:40,117 - mindformers[mindformers/trainer/base_trainer.py:1124] - INFO - .........Starting Training Model..........
2025-04-07 15:31:40,118 - mindformers[mindformers/trainer/base_trainer.py:1125] - INFO - ..........Build Net Done..........
- Total model parameters: 1,047,654,400  step: 1 of the schedule
"""

LEGACY = "2025-04-07 15:{m:02d}:27,308 - mindformers[mindformers/core/callback/callback.py:529] - INFO - " \
         "{{ Epoch:[{e:3d}/  2], step:[{s:5d}/    3], loss: {loss}, per_step_time: {t}ms, lr: {lr}, " \
         "overflow cond: False, loss_scale: 1.0, global_norm: [{norm}], train_throughput_per_npu: 2.896T\n"

TRAINER = "2025-06-11 10:02:{s:02d},011 - mindformers./output/log[mindformers/core/callback/callback.py:722] - " \
          "INFO - {{ step:[{s:5d}/   10], loss: {loss:>10}, per_step_time: {t:6d}ms, load_balancing_loss:   " \
          "1.093977, lr: 1.000000e-05, grad_norm:  13.831877, throughput:   1.36T }}\n"

NA = "2025-06-11 10:02:{s:02d},011 - mindformers./output/log[mindformers/core/callback/callback.py:722] - INFO - " \
     "{{ step:[{s:5d}/   10], loss: N/A (non-last PP stage, refer to last stage for real loss), " \
     "per_step_time: {t:6d}ms, lr: 1.000000e-05, throughput:   1.36T }}\n"

CRASH = """\
Traceback (most recent call last):
  File "/home/work/mindformers/run_mindformer.py", line 267, in <module>
    main(config_)
  File "/home/work/mindformers/mindformers/trainer/base_trainer.py", line 1131, in training_process
    model.train(config.runner_config.epochs, dataset, callbacks=callbacks)
RuntimeError: The pointer[stream] is null.

----------------------------------------------------
- Framework Error Message:
----------------------------------------------------
Out of Memory!!! Request memory size: 4294967296B, Memory Statistic:
[ERROR] DEVICE(3411,fffe8ddfb120,python):2025-04-07-15:36:01.002.511 [mindspore/ccsrc/plugin/device/ascend/hal/device/ascend_memory_adapter.cc:199] MallocDynamicDevMem] Out of Memory
"""

TIMEOUT_ONLY = """\
[ERROR] DISTRIBUTED(99,ffff,python):2025-04-07-15:40:00.000.000 [mindspore/ccsrc/distributed/cluster/cluster_context.cc:110] Finalize] Failed to finalize MindSpore cluster: timeout
"""


# Lines of a real run of examples/cpu-job/train_dp.py (MindSpore on CPU, 2 ranks on the simulated cluster).
CPU_JOB_RANK1 = """\
[WARNING] ME(11:140124825253184,MainProcess):2026-11-28-15:12:39.107.000 [mindspore/context.py:1343] For 'context.set_context', the parameter 'device_target' will be deprecated and removed in a future version. Please use the api mindspore.set_device() instead.
[WARNING] DISTRIBUTED(11,7f715a6ef540,python):2026-11-28-15:12:39.109.347 [mindspore/ccsrc/cluster/rpc/tcp/tcp_comm.cc:485] Connect] Connection 11 source: 10.233.217.11:45966, destination: 10.233.217.10:8118
[WARNING] DISTRIBUTED(11,7f715a6ef540,python):2026-11-28-15:12:39.149.733 [mindspore/ccsrc/cluster/topology/compute_graph_node.cc:193] Register] Failed to connect to the meta server node url: 10.233.217.10:8118
rank 1: world size 2, host sim-node-1
{ step:[    1/   30], loss:  12.474503, per_step_time:   1368ms, lr: 5.000000e-02, grad_norm:   0.000000, throughput: 0.00T }
{ step:[    2/   30], loss:   9.802090, per_step_time:     39ms, lr: 5.000000e-02, grad_norm:   0.000000, throughput: 0.00T }
{ step:[    3/   30], loss:  10.213888, per_step_time:     28ms, lr: 5.000000e-02, grad_norm:   0.000000, throughput: 0.00T }
rank 1: done, world size 2, weights sha256 e87608556323255a7d5a341777df60d4d567f05fa75d63ab0ad19a3111a3150b
[INFO] DISTRIBUTED(11,7f712d2b46c0,python):2026-11-28-15:12:45.799.266 [mindspore/ccsrc/cluster/rpc/core/communicator/tcp_server.cc:314] Start] Event base dispatch success!
"""


def legacy_log(losses: list[float]) -> str:
    out = NOISE
    for i, loss in enumerate(losses):
        out += LEGACY.format(m=i, e=i // 3 + 1, s=i % 3 + 1, loss=loss, t=103328 - i, lr=f"{i * 1e-5}",
                             norm=1.31049 + i)
    return out


def trainer_log(losses: list[float | str], na: bool = False) -> str:
    out = NOISE
    for i, loss in enumerate(losses, 1):
        out += NA.format(s=i, t=13570) if na else TRAINER.format(s=i, loss=loss, t=13570 + i)
    return out


def write_job(root: Path, logs: dict[int, str], per_node: int | None = None) -> Path:
    """msrun's layout: DIR/worker_N.log, or one directory per node when `per_node` workers each."""
    for rank, text in logs.items():
        folder = root / f"node{rank // per_node}" if per_node else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"worker_{rank}.log").write_text(text, encoding="utf-8")
    (root / "scheduler.log").write_text("[INFO] scheduler started\n")
    return root


# --- lines --------------------------------------------------------------------------------------

def test_legacy_line_all_fields():
    point = parse_step_line(LEGACY.format(m=0, e=2, s=2, loss=10.649, t=103328, lr="0.0", norm=1.31049), 42)
    assert (point.step, point.step_in_epoch, point.steps_per_epoch, point.epoch, point.epochs) == (5, 2, 3, 2, 2)
    assert (point.loss, point.lr, point.per_step_time_ms, point.throughput) == (10.649, 0.0, 103328.0, 2.896)
    assert (point.global_norm, point.grad_norm, point.line) == (1.31049, None, 42)
    assert point.extra == {"overflow cond": "False", "loss_scale": "1.0"}


def test_trainer_line_all_fields():
    point = parse_step_line(TRAINER.format(s=1, loss=11.813965, t=13570))
    assert (point.step, point.epoch, point.loss, point.lr) == (1, None, 11.813965, 1e-05)
    assert (point.per_step_time_ms, point.grad_norm, point.throughput) == (13570.0, 13.831877, 1.36)
    assert point.extra == {"load_balancing_loss": "1.093977"}  # not mistaken for `loss:`


def test_legacy_non_sink_line_with_separate_losses():
    """Without data sink MFLossMonitor prints `loss:[current/mean]` and, for MoE/MTP, the parts."""
    line = ("2025-04-07 15:34:27,308 - mindformers[mindformers/core/callback/callback.py:560] - INFO - "
            "{ Epoch:[  1/  1], step:[   12/  100], loss:[ 7.125/ 8.031], lm_loss: 7.000, aux_loss: 0.100, "
            "mtp_loss: 0.025, per_step_time: 2011ms, lr: 2e-05, overflow cond: False, loss_scale: 1.0, "
            "global_norm: [2.5], train_throughput_per_npu: 101.250T")
    point = parse_step_line(line)
    assert (point.step, point.loss, point.lr, point.global_norm, point.throughput) == (12, 7.125, 2e-05, 2.5, 101.25)
    assert point.extra["lm_loss"] == "7.000" and point.extra["mtp_loss"] == "0.025"


def test_newest_trainer_line_with_samples_and_mtp():
    """MindFormers' 2.x trainer adds consumed samples and per-depth MTP losses; NaN grad norm when unknown."""
    line = ("{ step:[    3/   10], consumed_samples: 48, global_batch_size: 16, loss:   9.123456, per_step_time:  "
            "13570ms, load_balancing_loss:   1.093977, mtp_1_loss:   9.500000, lr: 1.000000e-05, grad_norm: NaN, "
            "throughput:   1.36T }")
    point = parse_step_line(line)
    assert (point.step, point.loss, point.per_step_time_ms, point.throughput) == (3, 9.123456, 13570.0, 1.36)
    assert math.isnan(point.grad_norm) and point.as_json()["grad_norm"] == "nan"
    assert point.extra == {"consumed_samples": "48", "global_batch_size": "16", "load_balancing_loss": "1.093977",
                           "mtp_1_loss": "9.500000"}
    na = parse_step_line("{ step:[    3/   10], consumed_samples: 48, global_batch_size: 16, loss: N/A (non-last "
                         "PP stage, refer to last stage for real loss), per_step_time:  13570ms, grad_norm: NaN }")
    assert (na.step, na.loss, na.per_step_time_ms) == (3, None, 13570.0)


def test_na_line_is_a_step_without_loss():
    point = parse_step_line(NA.format(s=3, t=13570))
    assert (point.step, point.loss, point.lr) == (3, None, 1e-05)


@pytest.mark.parametrize("line,step,loss", [
    (("{ step:[    7/   20], loss:   0.512331, per_step_time:     41ms, lr: 1.000000e-02, grad_norm:   0.000000, "
      "throughput: 0.00T }"), 7, 0.512331),  # our CPU stand-in job, bare
    ("[node1/3] { step:[ 2/ 5], loss: 1.5 }", 2, 1.5),  # the launcher's prefix printer in front
    ("step:[3/9], loss: 2e-1", 3, 0.2),  # no braces at all
    ("{ step:[    4/   10], loss:        nan, per_step_time: 1ms }", 4, math.nan),
])
def test_tolerant_step_lines(line, step, loss):
    point = parse_step_line(line)
    assert point.step == step
    assert point.loss == loss or (math.isnan(loss) and math.isnan(point.loss))


@pytest.mark.parametrize("line", [
    "", "loss: 10.0", "step: 1, loss: 2.0", "[WARNING] ME(1:2,MainProcess): step:[1/2] compile cache miss",
    "{ step:[    3/   10], loss: ", "{ step:[    3/   10], loss: tensor(shape=[])",
])
def test_lines_without_a_step_record(line):
    assert parse_step_line(line) is None


def test_cpu_standin_job_log():
    scan = scan_log(CPU_JOB_RANK1.splitlines(), rank=1)
    assert [(p.step, p.loss) for p in scan.points] == [(1, 12.474503), (2, 9.80209), (3, 10.213888)]
    assert scan.points[0].per_step_time_ms == 1368.0 and scan.points[0].lr == 0.05 and scan.failure is None


# --- one log ------------------------------------------------------------------------------------

def test_legacy_log_across_epochs_is_one_series():
    scan = scan_log(legacy_log([10.6, 9.8, 9.1, 8.7, 8.2, 7.9]).splitlines(), rank=7)
    assert [p.step for p in scan.points] == [1, 2, 3, 4, 5, 6]
    assert [p.epoch for p in scan.points] == [1, 1, 1, 2, 2, 2]
    assert scan.has_loss and scan.status == "loss" and scan.failure is None


def test_legacy_non_last_stage_prints_zero():
    scan = scan_log(legacy_log([0.0] * 4).splitlines())
    assert not scan.has_loss and scan.zero_lines == 4 and scan.status == "loss 0 (non-last PP stage)"


def test_trainer_non_last_stage_prints_na():
    scan = scan_log(trainer_log([None] * 5, na=True).splitlines())
    assert not scan.has_loss and scan.na_lines == 5 and scan.steps_seen == 5 and scan.points == []


def test_crashed_log_keeps_steps_and_names_the_exception():
    scan = scan_log((trainer_log([11.8, 11.2, 10.9]) + CRASH).splitlines())
    assert [p.loss for p in scan.points] == [11.8, 11.2, 10.9]
    assert scan.failure == "RuntimeError: The pointer[stream] is null."
    assert "crashed: RuntimeError" in scan.status


def test_error_line_without_traceback_is_the_failure():
    scan = scan_log((trainer_log([None] * 2, na=True) + TIMEOUT_ONLY).splitlines())
    assert "Failed to finalize MindSpore cluster: timeout" in scan.failure


def test_appended_rerun_keeps_the_last_run():
    scan = scan_log((trainer_log([11.0, 10.0, 9.0]) + CRASH + trainer_log([11.5, 10.5])).splitlines())
    assert [p.loss for p in scan.points] == [11.5, 10.5] and scan.restarts == 1 and scan.failure is None


def test_scan_file_skips_the_line_being_written(tmp_path):
    path = tmp_path / "worker_3.log"
    path.write_bytes((trainer_log([11.0, 10.0]) + "{ step:[    3/   10], loss:  9.4").encode())
    scan = scan_file(path)
    assert scan.rank == 3 and [p.loss for p in scan.points] == [11.0, 10.0]


def test_scan_file_survives_broken_utf8(tmp_path):
    path = tmp_path / "worker_0.log"
    path.write_bytes(b"\xe7\x94\x9f\xe6\x8a\n" + trainer_log([3.0]).encode())
    assert [p.loss for p in scan_file(path).points] == [3.0]


# --- choosing the rank ----------------------------------------------------------------------------

def pp2_job(root: Path, per_node: int | None = None) -> Path:
    """The article's run: 8 NPUs, pipeline_stage 2, data_parallel 2: ranks 4-7 are the last stage."""
    logs = {r: trainer_log([None] * 4, na=True) for r in range(4)}
    logs |= {r: trainer_log([11.81, 10.02 + r / 100, 9.11, 8.64]) for r in range(4, 8)}
    return write_job(root, logs, per_node)


def test_auto_pick_is_the_highest_rank_with_loss(tmp_path):
    report = loss_report(pp2_job(tmp_path))
    assert report.chosen.rank == 7 and report.ranks_with_loss == [4, 5, 6, 7]
    assert [p.loss for p in report.points] == [11.81, 10.09, 9.11, 8.64]


def test_auto_pick_legacy_zero_ranks(tmp_path):
    logs = {r: legacy_log([0.0] * 3) for r in range(7)} | {7: legacy_log([10.649, 9.7, 9.1])}
    assert loss_report(write_job(tmp_path, logs)).chosen.rank == 7


def test_node_directories_and_rank_override(tmp_path):
    root = pp2_job(tmp_path, per_node=4)
    assert sorted(find_worker_logs(root)) == list(range(8))
    assert loss_report(root, rank=5).chosen.path.endswith("node1/worker_5.log")


def test_override_to_a_rank_without_loss_is_refused(tmp_path):
    with pytest.raises(LossLogError, match=r"rank 2 printed no loss \(N/A \(non-last PP stage\)\); "
                                           r"ranks with a loss: 4-7"):
        loss_report(pp2_job(tmp_path), rank=2)
    with pytest.raises(LossLogError, match=r"no log for rank 9 \(found ranks 0-7\)"):
        loss_report(tmp_path, rank=9)


def test_no_loss_anywhere_and_no_logs(tmp_path):
    write_job(tmp_path / "job", {0: NOISE + CRASH, 1: trainer_log([None], na=True)})
    with pytest.raises(LossLogError, match="no rank printed a loss value.*rank 0: no step lines, crashed"):
        loss_report(tmp_path / "job")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LossLogError, match="no worker_N.log under"):
        find_worker_logs(tmp_path / "empty")
    with pytest.raises(LossLogError, match="does not exist"):
        find_worker_logs(tmp_path / "missing")


def test_same_rank_in_two_node_directories_is_refused(tmp_path):
    write_job(tmp_path, {3: trainer_log([1.0])}, per_node=4)
    write_job(tmp_path, {3: trainer_log([1.0])}, per_node=2)
    with pytest.raises(LossLogError, match="rank 3 has two logs"):
        find_worker_logs(tmp_path)


def test_choose_rank_on_scans():
    scans = {0: scan_log(trainer_log([None], na=True).splitlines(), rank=0),
             1: scan_log(trainer_log([2.0]).splitlines(), rank=1)}
    assert choose_rank(scans).rank == 1


# --- plot and CLI ------------------------------------------------------------------------------------

def test_plot_writes_a_png(tmp_path):
    scan = scan_log(trainer_log([11.8 - i * 0.4 + (i % 3) * 0.1 for i in range(25)]).splitlines())
    path = plot_loss(scan.points, tmp_path / "out" / "loss.png", "rank 7")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_refuses_an_empty_series(tmp_path):
    with pytest.raises(LossLogError, match="no finite loss values"):
        plot_loss([], tmp_path / "x.png")


def test_cli_text_with_plot(tmp_path, capsys):
    root = pp2_job(tmp_path / "logs", per_node=4)
    (root / "node0" / "worker_1.log").write_text(trainer_log([None] * 2, na=True) + CRASH)
    with pytest.raises(SystemExit) as info:
        main(["logs", "--from", str(root), "--plot", str(tmp_path / "loss.png")])
    result = capsys.readouterr()
    assert info.value.code == 6, result  # a rank crashed: the job failed, after the table and the plot
    out = result.out
    assert "loss from rank 7" in out and "also printed by rank(s) 4, 5, 6" in out
    assert "rank(s) 0, 1, 2, 3: N/A (non-last PP stage)" in out
    assert "      4     -     8.640000   1.000e-05     13574   1.360    13.8319" in out
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    crash = "rank 1 crashed: RuntimeError: The pointer[stream] is null."
    assert (result.out + result.err).count(crash) == 1 and crash in result.err  # said once, as the error


def test_cli_json(tmp_path):
    root = write_job(tmp_path, {0: trainer_log([None] * 3, na=True), 1: trainer_log([2.5, "nan", 1.5])})
    result = CliRunner().invoke(cli, ["logs", "--loss", "--from", str(root), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rank"] == 1 and data["ranks_with_loss"] == [1] and data["plot"] is None
    assert [p["loss"] for p in data["points"]] == [2.5, "nan", 1.5]
    assert data["points"][0]["per_step_time_ms"] == 13571.0 and data["points"][0]["grad_norm"] == 13.831877
    assert data["ranks"]["0"]["status"] == "N/A (non-last PP stage)"


def test_cli_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["logs", "--loss"])
    assert result.exit_code == 2 and "--from DIR" in result.output
    result = runner.invoke(cli, ["logs", "--from", str(pp2_job(tmp_path))])
    assert result.exit_code == 2 and "--loss" in result.output
    result = runner.invoke(cli, ["logs", "--loss", "--from", str(tmp_path), "--rank", "0"])
    assert isinstance(result.exception, LossLogError) and "rank 0 printed no loss" in str(result.exception)
