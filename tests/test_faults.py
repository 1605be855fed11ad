"""Fault injection, by class of failure: code run from a data file, data loss, two processes on one
run, silent wrong results, hangs, one failure stopping everything, tracebacks instead of answers, and
leftovers. Every case asserts the outcome: one line, an exit code, and nothing lost or half-written."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from data_fixtures import write_cifar
from ilif.data import DatasetError, build
from ilif.rundir import MetricsFile, RunBusy, RunLock, finished_summary, read_history
from test_train import FAST, _env, run_dirs


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------------------------------ code execution

def test_a_batch_file_carrying_code_is_refused_and_never_run(tmp_path):
    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    marker = tmp_path / "pwned"
    batch.write_bytes(pickle.dumps({"data": _Payload(marker), "labels": [0]}))
    with pytest.raises(DatasetError, match=r"corrupt batch file \(UnpicklingError: posix.system is not allowed in a "
                                           r"CIFAR batch\) at .*data_batch_1"):
        build({"name": "cifar10", "root": str(tmp_path), "download": False})
    assert not marker.exists()


@pytest.mark.parametrize("change, problem", [
    (lambda b: {**b, "labels": [10] + b["labels"][1:]}, "labels outside 0..9"),
    (lambda b: {**b, "labels": b["labels"][:-1]}, "59 labels for 60 images"),
    (lambda b: {**b, "data": b["data"].astype(np.float32)}, "'data' must be a uint8 array [N, 3072]; it is float32"),
    (lambda b: {"labels": b["labels"]}, "not a batch"),
])
def test_a_batch_with_wrong_content_names_the_file(tmp_path, change, problem):
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(path.read_bytes())
    batch = {**batch, "labels": batch["labels"] * 3, "data": np.concatenate([batch["data"]] * 3)}
    path.write_bytes(pickle.dumps(change(batch)))
    with pytest.raises(DatasetError) as err:
        build({"name": "cifar10", "root": str(tmp_path), "download": False})
    assert str(path) in str(err.value) and problem in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------ data loss

def test_an_incomplete_cifar_folder_is_never_deleted_by_a_download(tmp_path):
    write_cifar(tmp_path, "cifar10")
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(DatasetError, match="incomplete \\(data_batch_3 missing\\); move the folder away"):
        build({"name": "cifar10", "root": str(tmp_path), "download": True})
    assert sorted(p.name for p in folder.iterdir()) == before
    assert sorted(p.name for p in (tmp_path / "cifar10").iterdir()) == ["cifar-10-batches-py"]


def test_the_report_keeps_results_built_from_more_runs(tmp_path, monkeypatch):
    from ilif.report.__main__ import main as report

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "mini" / "table2.md"
    out.parent.mkdir(parents=True)
    out.write_text("# Table 2\n\nProduced by `x` (60 of 60 planned runs finished).\n")
    assert report(["--scale", "mini", "--tables", "2"]) == 0
    assert "(60 of 60 planned runs finished)" in out.read_text()  # kept: no runs here
    assert report(["--scale", "mini", "--tables", "2", "--force"]) == 0
    assert "(0 of 60 planned runs finished)" in out.read_text()
    assert not list(out.parent.glob(".*.tmp-*"))


def test_a_failed_metrics_rewrite_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    original = "".join(json.dumps({"epoch": e}) + "\n" for e in range(3)) + '{"epoch": 3, "cut'
    path.write_text(original)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        MetricsFile(path, keep_epochs_below=2)
    assert path.read_text() == original and not list(tmp_path.glob(".*tmp*"))
    monkeypatch.undo()
    MetricsFile(path, keep_epochs_below=2)
    assert [r["epoch"] for r in read_history(tmp_path)] == [0, 1]


def test_another_configs_run_is_never_resumed_or_overwritten(train_run, tmp_path):
    from ilif.conf import compose_config
    from ilif.train.loop import RunConflict, train

    run_dir, summary = train_run(*FAST)
    other = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST, "seed=7"])
    before = (run_dir / "summary.json").read_text()
    with pytest.raises(RunConflict, match="holds a finished run of another config"):
        train(other, run_dir)
    (run_dir / "summary.json").unlink()
    with pytest.raises(RunConflict, match="last.pt was written by another config .*trainer.resume=false"):
        train(other, run_dir)
    (run_dir / "summary.json").write_text(before)
    assert json.loads(before)["config_hash"] == summary["config_hash"]


# ------------------------------------------------------------------------------------ concurrency

def test_one_process_per_run_directory(train_run, tmp_path):
    lock = RunLock(tmp_path)
    try:
        with pytest.raises(RunBusy, match=f"is in use by process {os.getpid()} on .*already training"):
            RunLock(tmp_path)
    finally:
        lock.release()
    RunLock(tmp_path).release()  # free again once the holder is gone


# ------------------------------------------------------------------------------------ silent wrong results

def test_non_finite_model_state_is_divergence():
    from ilif.train.engine import TrainingDiverged, check_finite_state

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    check_finite_state(model, "now")
    model[1].running_var[0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"non-finite model state \(1.running_var\) after epoch 3"):
        check_finite_state(model, "after epoch 3")


@pytest.mark.parametrize("override, message", [
    ("+foo=1", "foo=1 is not allowed: it is not a config key"),
    ("schedule.eta_min=nan", "schedule.eta_min=nan is not allowed: a finite number >= 0"),
    ("seed=-1", "seed=-1 is not allowed: a number in [0, 4.29497e+09)"),
    ("optim.momentum=1.5", "optim.momentum=1.5 is not allowed: a number in [0, 1)"),
    ("loss.label_smoothing=2", "loss.label_smoothing=2.0 is not allowed: a number in [0, 1)"),
    ("dataset.stand_in_samples=0", "dataset.stand_in_samples=0 is not allowed: an integer > 0"),
])
def test_bad_values_are_one_line_before_anything_runs(capsys, override, message):
    from ilif.train.app import precheck

    with pytest.raises(SystemExit) as stop:
        precheck([override])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and "\n" not in err


def test_a_summary_copied_from_another_run_counts_as_missing(train_run, tmp_path):
    run_dir, summary = train_run(*FAST)
    stranger = tmp_path / "runs" / "default" / "digits-ilif-g1-s0-deadbeef"
    stranger.mkdir()
    (stranger / "summary.json").write_text((run_dir / "summary.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert finished_summary(stranger, "deadbeef") is None
    assert "belongs to config" in str(caught[0].message)
    assert finished_summary(run_dir, summary["config_hash"]) is not None


# ------------------------------------------------------------------------------------ hangs

def test_wandb_without_network_falls_back_to_offline_quickly(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import ilif.wandb_mirror as mirror

    monkeypatch.setattr(mirror, "INIT_TIMEOUT_S", 3)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = {"experiment_name": "e", "dataset": {"name": "digits"}, "neuron": {"name": "lif"}, "seed": 0,
              "surrogate": {"family": "rectangle", "gamma": 1.0, "normalize": "area"}}
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger = mirror.WandbLogger(SimpleNamespace(mode="auto", project="p", entity=None, tags=[]), tmp_path, config,
                                    "abcd1234", "digits-lif-g1-s0")
    elapsed = time.time() - start
    assert elapsed < 45
    assert logger.run is None or logger.run.settings.mode == "offline"
    if logger.run is not None:
        logger.finish({"final": {}})


# ------------------------------------------------------------------------------------ one failure stops everything

def test_a_diverging_job_does_not_end_the_sweep(tmp_path, cli):
    from ilif.train.app import main

    proc = cli(main, "-m", "schedule=step", "schedule.step_size=1", "schedule.gamma=1,1e30", "trainer.epochs=3",
               "trainer.progress=false", "trainer.limit_train_batches=4")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "error: 1 job(s) of the sweep failed:" in lines
    assert sum("non-finite" in line for line in lines) >= 1
    finished = [d for d in run_dirs(tmp_path) if (d / "summary.json").exists()]
    assert len(finished) == 1


def test_a_corrupt_checkpoint_is_one_line_with_the_way_out(train_run, tmp_path):
    from ilif.conf import compose_config
    from ilif.train.loop import RunConflict, train

    run_dir, _ = train_run(*FAST)
    (run_dir / "summary.json").unlink()
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST])
    with pytest.raises(RunConflict, match=r"last.pt is unreadable \(.*\): run again with trainer.resume=false"):
        train(cfg, run_dir)
    restart = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST, "trainer.resume=false"])
    assert train(restart, run_dir)["status"] == "finished"


# ------------------------------------------------------------------------------------ tracebacks, signals, leftovers

def test_sigterm_abandons_the_step_and_leaves_a_resumable_run(tmp_path):
    overrides = ["trainer.progress=false", "trainer.epochs=50", "trainer.batch_size=16"]
    proc = subprocess.Popen([sys.executable, "-m", "ilif.train", *overrides], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/*/last.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75
    assert err.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM at epoch ")
    assert "resumes it at the last finished epoch" in err
    (run_dir,) = run_dirs(tmp_path)
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] >= 0
    assert not list(run_dir.glob(".*.tmp-*"))


def test_stale_temporaries_are_cleaned_and_corrupt_files_read_without_a_traceback(train_run, tmp_path):
    run_dir, _ = train_run(*FAST)
    (run_dir / ".last.pt.tmp-99999").write_bytes(b"half")
    (run_dir / "summary.json").write_text("{ cut")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 0}\n{"epo')
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert finished_summary(run_dir) is None
        assert read_history(run_dir) == [{"epoch": 0}]
    with pytest.warns(UserWarning, match="summary.json is unreadable"):
        _, summary = train_run(*FAST)  # resumes: the stale temporary goes, the run finishes
    assert summary["status"] == "finished" and not list(run_dir.glob(".*.tmp-*"))


# ------------------------------------------- data loss: a failed run removes only what a run wrote

def _failing_run(cli, *overrides):
    """ilif-train on a dataset that is missing (exit 2 before anything is trained)."""
    from ilif.train.app import main as train_main

    return cli(train_main, "dataset=cifar10", "dataset.download=false", "dataset.root=nowhere", *overrides)


@pytest.mark.parametrize("where", ["user folder", "current directory"])
def test_a_failed_run_never_deletes_a_folder_it_did_not_create(tmp_path, cli, where):
    folder = tmp_path / "thesis" if where == "user folder" else tmp_path
    folder.mkdir(exist_ok=True)
    (folder / "chapter1.tex").write_text("years of work")
    proc = _failing_run(cli, f"hydra.run.dir={folder if where == 'user folder' else '.'}")
    assert proc.returncode == 2 and "dataset 'cifar10'" in proc.stderr
    assert (folder / "chapter1.tex").read_text() == "years of work"


def test_a_failed_run_keeps_the_target_of_a_symlinked_run_directory(tmp_path, cli):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    link = tmp_path / "runs" / "linked"
    link.parent.mkdir()
    link.symlink_to(target)
    proc = _failing_run(cli, f"hydra.run.dir={link}")
    assert proc.returncode == 2
    assert link.is_symlink() and (target / "notes.txt").read_text() == "keep"


def test_a_failed_job_of_a_sweep_keeps_its_neighbours(tmp_path, cli):
    sibling = tmp_path / "runs" / "default" / "digits-finished"
    sibling.mkdir(parents=True)
    (sibling / "summary.json").write_text("{}")
    proc = _failing_run(cli)
    assert proc.returncode == 2
    assert (sibling / "summary.json").exists()
    assert sorted(p.name for p in (tmp_path / "runs" / "default").iterdir()) == ["digits-finished"]  # the failed one went


def test_a_failed_run_leaves_no_directory_of_its_own(tmp_path, cli):
    proc = _failing_run(cli)
    assert proc.returncode == 2
    assert not (tmp_path / "runs").exists()


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (run_dir / ".lock").symlink_to(target)
    with pytest.raises(RunBusy, match=r"\.lock is a symlink .*: a run directory's lock must be a plain file"):
        RunLock(run_dir)
    assert target.read_text() == "keep"
