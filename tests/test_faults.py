"""Fault injection, by class of failure: code run from a data file, data loss, two processes on one
run, silent wrong results, hangs, one failure stopping everything, tracebacks instead of answers, and
leftovers. Every case asserts the outcome: one line, an exit code, and nothing lost or half-written."""

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from data_fixtures import write_cifar
from ilif.conf import group_options
from ilif.data import build
from ilif import errors
from ilif.errors import DatasetError, RunBusy
from ilif.rundir import NO_RECORD, MetricsFile, RunLock, RunSummary, finished_summary, read_history
from test_train import FAST, _env, _env_with_tests, run_dirs, status


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


def test_the_report_keeps_results_built_from_more_runs(tmp_path, monkeypatch, capsys):
    from ilif.report.__main__ import main as report

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "mini" / "table2.md"
    out.parent.mkdir(parents=True)
    out.write_text("# Table 2\n\nProduced by `x` (60 of 60 planned runs finished).\n")
    assert report(["--scale", "mini", "--tables", "2"]) == 0
    assert "(60 of 60 planned runs finished)" in out.read_text()  # kept: no runs here
    assert report(["--scale", "mini", "--tables", "2", "--force"]) == 0
    assert "(0 of 120 planned runs finished)" in out.read_text()
    assert not list(out.parent.glob(".*.tmp-*"))
    mine, alone = out.with_name("table1.md"), out.with_name("table1.csv")
    mine.write_text("# My own table 1, no count of runs\n")
    alone.write_text("my,own,table\n")
    assert report(["--scale", "mini", "--tables", "1"]) == 0  # a table that does not say what made it: kept
    assert mine.read_text() == "# My own table 1, no count of runs\n"
    assert capsys.readouterr().out.splitlines()[-1] == (
        "kept results/mini/table1.md: it was built from an unrecorded number of finished runs, these runs give 0 "
        "(use --force to replace it)")
    mine.unlink()
    assert report(["--scale", "mini", "--tables", "1"]) == 0  # a CSV without its table: kept too
    assert alone.read_text() == "my,own,table\n" and not mine.exists()


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
    from ilif.errors import RunConflict
    from ilif.train.loop import train

    run_dir, summary = train_run(*FAST)
    other = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST, "seed=7"])
    before = (run_dir / "summary.json").read_text()
    with pytest.raises(RunConflict, match="holds a finished run of another config"):
        train(other, run_dir)
    (run_dir / "summary.json").unlink()
    with pytest.raises(RunConflict, match=f"belongs to a run of another config \\({summary.config_hash}, this is "):
        train(other, run_dir)  # the owner's marker
    (run_dir / ".ilif-run").unlink()  # a run directory from before the marker: its checkpoint tells
    with pytest.raises(RunConflict, match="last.pt was written by another config .*trainer.resume=false"):
        train(other, run_dir)
    assert not (run_dir / ".ilif-run").exists() or (run_dir / ".ilif-run").read_text() != summary.config_hash
    (run_dir / "summary.json").write_text(before)
    assert json.loads(before)["config_hash"] == summary.config_hash


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
    from ilif.errors import TrainingDiverged
    from ilif.train.engine import check_finite_state

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    check_finite_state(model, "now")
    model[1].running_var[0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"non-finite model state \(1.running_var\) after epoch 3"):
        check_finite_state(model, "after epoch 3")


@pytest.mark.parametrize("override, message", [
    ("+foo=1", "foo=1 is not allowed: the config takes ['dataset', 'model', 'neuron', 'surrogate', 'optim', "
               "'schedule', 'loss', 'remedy', 'trainer', 'logger', 'compare', 'seed', 'experiment_name', 'scale_name', "
               "'runs_root']"),
    ("schedule.eta_min=nan", "schedule.eta_min=nan is not allowed: a finite number >= 0"),
    ("surrogate.gamma=1e308", "surrogate.gamma=1e+308 is not allowed: a width in [0.001, 1000] (outside it the "
                              "surrogate gradient vanishes in float32)"),
    ("surrogate.gamma=1e-300", "surrogate.gamma=1e-300 is not allowed: a width in [0.001, 1000] (outside it the "
                               "surrogate gradient vanishes in float32)"),
    ("trainer.timeout_s=99999999999", "trainer.timeout_s=99999999999 is not allowed: an integer > 0 and <= 1e+07"),
    ("seed=-1", "seed=-1 is not allowed: a number in [0, 4.29497e+09)"),
    ("optim.momentum=1.5", "optim.momentum=1.5 is not allowed: a number in [0, 1)"),
    ("loss.label_smoothing=2", "loss.label_smoothing=2.0 is not allowed: a number in [0, 1)"),
    ("dataset.stand_in_samples=0", "dataset.stand_in_samples=0 is not allowed: an integer > 0"),
])
def test_bad_values_are_one_line_before_anything_runs(cli, override, message):
    from ilif.train.app import main as train_main

    proc = cli(train_main, override)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1


def test_a_summary_copied_from_another_run_counts_as_missing(train_run, tmp_path):
    run_dir, summary = train_run(*FAST)
    stranger = tmp_path / "runs" / "default" / "digits-ilif-g1-s0-deadbeef"
    stranger.mkdir()
    (stranger / "summary.json").write_text((run_dir / "summary.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert finished_summary(stranger, "deadbeef") is None
    assert "belongs to config" in str(caught[0].message)
    assert finished_summary(run_dir, summary.config_hash) is not None


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
        from ilif.rundir import RunSummary

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger.finish(RunSummary(final={"test": {"acc1": 0.5}}))
        assert [str(w.message) for w in caught if "wandb disabled" in str(w.message)] == []


# ------------------------------------------------------------------------------------ one failure stops everything

def test_a_diverging_job_does_not_end_the_sweep(tmp_path, cli):
    from ilif.train.app import main

    proc = cli(main, "-m", "schedule=step", "schedule.step_size=1", "schedule.gamma=1,1e30", "trainer.epochs=3",
               "trainer.progress=false", "trainer.limit_train_batches=4")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "error: 1 run(s) of the sweep failed:" in lines
    assert sum("non-finite" in line for line in lines) >= 1
    assert sorted(map(status, run_dirs(tmp_path))) == ["failed", "finished"]


def test_a_corrupt_checkpoint_is_one_line_with_the_way_out(train_run, tmp_path):
    from ilif.conf import compose_config
    from ilif.errors import RunConflict
    from ilif.train.loop import train

    run_dir, _ = train_run(*FAST)
    (run_dir / "summary.json").unlink()
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")
    cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST])
    with pytest.raises(RunConflict, match=r"last.pt is unreadable \(.*\): run again with trainer.resume=false"):
        train(cfg, run_dir)
    restart = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST, "trainer.resume=false"])
    assert train(restart, run_dir).status == "finished"


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
    with pytest.warns(UserWarning, match="summary.json: is not readable JSON"):
        _, summary = train_run(*FAST)  # resumes: the stale temporary goes, the run finishes
    assert summary.status == "finished" and not list(run_dir.glob(".*.tmp-*"))


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
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {folder if where == 'user folder' else '.'} holds files that no run wrote there (chapter1.tex): a run "
        "writes only into an empty folder or its own; choose another folder, experiment_name or runs_root")
    assert sorted(p.name for p in folder.iterdir()) == ["chapter1.tex"]  # refused before anything was written
    assert (folder / "chapter1.tex").read_text() == "years of work"
    (folder / "chapter1.tex").unlink()
    proc = _failing_run(cli, f"hydra.run.dir={folder if where == 'user folder' else '.'}")
    assert proc.returncode == 2 and "dataset 'cifar10'" in proc.stderr  # an empty folder of one's own: the run's
    assert sorted(p.name for p in folder.iterdir()) == [".ilif-run", ".lock", "summary.json"]  # and kept
    assert json.loads((folder / "summary.json").read_text())["status"] == "failed"


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
    assert sorted(p.name for p in (tmp_path / "runs" / "default").iterdir()) == [
        "digits-finished"]  # the failed one went


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


# ------------------------------------------------------------------------------------ the second battery

@pytest.mark.parametrize("override, message", [
    ("trainer.epochs=0", "trainer.epochs=0 is not allowed: an integer > 0"),
    ("+dataset.test_fraction=2", "dataset.test_fraction=2 is not allowed: a number in [0.01, 0.99]"),
    ("-m seed=0,1 +dataset.test_fraction=0,0.25", "dataset.test_fraction=0 is not allowed: a number in [0.01, 0.99]"),
    ("dataset=cifar10_dvs +dataset.size=3", "dataset.size=3 is not allowed: an integer >= 8 and <= 1024"),
    ("trainer.T=100000", "trainer.T=100000 is not allowed: an integer > 0 and <= 1024"),
    ("dataset.stand_in=true dataset.stand_in_size=200000", "dataset.stand_in_size=200000 is not allowed: an integer "
                                                          "> 0 and <= 256"),
    ("experiment_name=../elsewhere",
     "experiment_name='../elsewhere' is not allowed: one folder name (no '/', not '.' or '..')"),
    ("experiment_name=/tmp/abs",
     "experiment_name='/tmp/abs' is not allowed: one folder name (no '/', not '.' or '..')"),
    ("neuron=plif neuron.decay_input=yes", "neuron.decay_input='yes' is not allowed: it must be true or false"),
    ("dataset._target_=no_such_module.build", "dataset._target_='no_such_module.build' is not allowed: it must name an "
                                             "importable function (ModuleNotFoundError: No module named "
                                             "'no_such_module')"),
    ("-m dataset._target_=ilif.data.digits,no_such_module.build", "dataset._target_='no_such_module.build' is not "
     "allowed: it must name an importable function (ModuleNotFoundError: No module named 'no_such_module')"),
    ("--experimental-rerun config.pickle", "--experimental-rerun is not allowed: it unpickles the file it is given"),
])
def test_values_that_mean_nothing_are_refused_before_anything_runs(tmp_path, cli, override, message):
    from ilif.train.app import main as train_main

    proc = cli(train_main, *override.split())
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, message", [
    ("trainer.drop_last=true trainer.batch_size=5000", "trainer.batch_size=5000 is not allowed: at most the 1347 "
                                                       "training samples when incomplete batches are dropped"),
    ("model=vgg11_bn", "model='vgg11_bn' is not allowed: a backbone for the 1×8×8 input of digits"),
    ("trainer.device=cuda", "trainer.device='cuda' is not allowed: a machine where torch sees a CUDA GPU"),
])
def test_runs_that_could_not_train_or_be_measured_are_one_line(tmp_path, cli, override, message):
    from ilif.train.app import main as train_main

    proc = cli(train_main, "trainer.progress=false", *override.split())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK is not: a launcher such as torchrun sets RANK, WORLD_SIZE"),
    ({"RANK": "1"}, "RANK=1 is set but WORLD_SIZE is not"),
    ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' is not allowed: an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 WORLD_SIZE=2 LOCAL_RANK=0 is not allowed: 0 <= RANK < WORLD_SIZE"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "WORLD_SIZE=2 needs MASTER_ADDR and MASTER_PORT"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "abc"},
     "MASTER_PORT='abc' is not allowed: a TCP port number in [1, 65535]"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
     "MASTER_PORT='99999' is not allowed: a TCP port number in [1, 65535]"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "²"},
     "MASTER_PORT='²' is not allowed: a TCP port number in [1, 65535]"),
])
def test_half_set_launcher_variables_are_one_line(tmp_path, cli, monkeypatch, env, message):
    from ilif.train.app import main as train_main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proc = cli(train_main, "trainer.progress=false")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}")
    assert not (tmp_path / "runs").exists()


def test_resume_false_over_a_finished_run_moves_it_aside_and_loses_nothing(train_run, monkeypatch):
    from ilif.train import loop

    run_dir, first = train_run(*FAST)
    history = (run_dir / "metrics.jsonl").read_text()

    def interrupted(*args, **kwargs):
        raise errors.Interrupted("at epoch 0, step 0", signal.SIGTERM)

    monkeypatch.setattr(loop.Trainer, "train_epoch", interrupted)
    with pytest.raises(errors.Interrupted):
        train_run(*FAST, "trainer.resume=false")
    (aside,) = run_dir.glob("replaced-*")
    assert (aside / "metrics.jsonl").read_text() == history
    assert json.loads((aside / "summary.json").read_text())["final"] == first.final
    assert (aside / "last.pt").exists() and (aside / "best.pt").exists()
    assert not (run_dir / "summary.json").exists()  # the next start trains again, it does not skip
    monkeypatch.undo()
    _, again = train_run(*FAST)
    assert again.status == "finished" and again.final == first.final


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder``: (size, mtime, content)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_run_again_writes_nothing(tmp_path, cli):
    from ilif.train.app import main as train_main

    assert cli(train_main, f"runs_root={tmp_path / 'runs'}", *FAST).returncode == 0
    before = _snapshot(tmp_path / "runs")
    assert {Path(name).name for name in before} >= {".ilif-run", "train.log", "summary.json", "last.pt"}
    proc = cli(train_main, f"runs_root={tmp_path / 'runs'}", *FAST)
    assert proc.returncode == 0 and "already finished, skipped" in proc.stdout
    assert _snapshot(tmp_path / "runs") == before  # not its log, not its marker, nothing


@pytest.mark.parametrize("own", [("config.yaml",), ("metrics.jsonl", "train.log"), ("notes.txt",),
                                 (".lock", ".draft.tmp-2024"), ("config.yaml", "train.log", "replaced-notes.txt"),
                                 ("last.pt", "notes.txt")])
def test_a_folder_of_ones_own_is_never_written_by_a_run(tmp_path, cli, own):
    from ilif.conf import compose_config
    from ilif.errors import RunConflict
    from ilif.study import _train_one
    from ilif.train.app import main as train_main
    from ilif.train.loop import train

    folder = tmp_path / "mine"
    folder.mkdir()
    for name in own:
        (folder / name).write_text(f"my own {name}")
    before = _snapshot(folder)
    foreign = [name for name in own if name not in ("config.yaml", "metrics.jsonl", "train.log", "last.pt")]
    line = (f"{folder} holds files that no run wrote there ({', '.join(sorted(foreign or own))}): a run writes only "
            "into an empty folder or its own; choose another folder, experiment_name or runs_root")
    proc = cli(train_main, f"hydra.run.dir={folder}", f"runs_root={tmp_path / 'runs'}", *FAST)
    assert (proc.returncode, proc.stderr.strip()) == (2, f"error: {line}")
    cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST])
    assert _train_one(dict(cfg), str(folder)) == ("failed", f"{line} (exit 2)")  # a study's worker is refused alike
    with pytest.raises(RunConflict, match=re.escape(line)):  # and the trainer itself (hydra.run.dir set in a file)
        train(cfg, folder)
    assert _snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(own)


def test_a_run_directory_that_is_a_dangling_link_fails_its_run_and_the_study_goes_on(tmp_path):
    from ilif.conf import compose_config
    from ilif.grid import run_dir_of
    from ilif.study import _train_one

    cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST])
    run_dir = run_dir_of(cfg)
    run_dir.parent.mkdir(parents=True)
    run_dir.symlink_to(tmp_path / "nowhere")
    status, detail = _train_one(dict(cfg), str(run_dir))
    assert (status, detail) == ("failed", f"{run_dir} is a symlink: a run directory and its files must be plain, or a "
                                          "run would write through them; copy the files in, or choose another "
                                          "experiment_name or runs_root (exit 2)")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("marker", ["0123abcd\nline two\n\x1b[31mRED", "not a hash"])
def test_a_marker_that_is_not_a_config_hash_is_named_not_printed(tmp_path, marker):
    from ilif.rundir import ownership_problem

    (tmp_path / ".ilif-run").write_text(marker)
    assert ownership_problem(tmp_path, "0123abcd") == (f"{tmp_path / '.ilif-run'} is not a run's marker (a config "
                                                       "hash): remove it if the folder is a run's")


def test_an_oversized_history_on_resume_is_a_conflict_with_the_way_out(train_run, tmp_path):
    from ilif.conf import compose_config
    from ilif.errors import RunConflict
    from ilif.train.loop import train

    run_dir, _ = train_run(*FAST)
    (run_dir / "summary.json").unlink()
    os.truncate(run_dir / "metrics.jsonl", 65 * 2**20)  # sparse: nothing is read
    with pytest.raises(RunConflict, match=r"metrics.jsonl: is 68157440 bytes, more than the 67108864 a record may "
                                          r"have: run again with trainer.resume=false"):
        train(compose_config([f"runs_root={tmp_path / 'runs'}", *FAST]), run_dir)
    assert not (run_dir / "summary.json").exists()  # no record of a failure: the run is not this run's to judge


@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "train.log"])
def test_a_special_file_in_a_run_directory_is_refused_not_waited_on(tmp_path, cli, name):
    from ilif.conf import compose_config
    from ilif.grid import run_dir_of
    from ilif.train.app import main as train_main

    run_dir = run_dir_of(compose_config([f"runs_root={tmp_path / 'runs'}", *FAST]))
    run_dir.mkdir(parents=True)
    os.mkfifo(run_dir / name)
    proc = cli(train_main, f"runs_root={tmp_path / 'runs'}", *FAST)
    assert (proc.returncode, proc.stderr.strip()) == (2, f"error: {run_dir / name} is not a regular file: a run "
                                                         "writes only plain files and folders")


def test_a_run_started_over_records_the_change_of_code_and_is_a_new_wandb_run(train_run, tmp_path, monkeypatch):
    from ilif import wandb_mirror
    from ilif.conf import compose_config
    from ilif.train.loop import train

    run_dir, first = train_run(*FAST)
    (run_dir / "summary.json").unlink()
    state = torch.load(run_dir / "last.pt", weights_only=True)
    state["runtime"]["code"] = "0123456789ab"
    torch.save(state, run_dir / "last.pt")
    cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST])
    resumed = train(cfg, run_dir)
    (change,) = resumed.provenance["changed_on_resume"]
    assert change.startswith("code 0123456789ab -> ") and change.endswith(" at epoch 2")
    (run_dir / "wandb").mkdir()
    (run_dir / "wandb_uploaded.json").write_text('{"id": "x", "mode": "online", "project": "ilif"}')
    first_id = wandb_mirror.wandb_id("default", first.config_hash, first.run_name, wandb_mirror.generation(run_dir))
    train(compose_config([f"runs_root={tmp_path / 'runs'}", *FAST, "trainer.resume=false"]), run_dir)
    (aside,) = run_dir.glob("replaced-*")
    assert (aside / "wandb_uploaded.json").exists() and (aside / "wandb").is_dir()
    assert not (run_dir / "wandb_uploaded.json").exists()  # the new run is not "sent before"
    assert wandb_mirror.wandb_id("default", first.config_hash, first.run_name,
                                 wandb_mirror.generation(run_dir)) != first_id


@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json", "config.yaml", ".hydra", "train.log", "wandb",
                                  "wandb_uploaded.json", ".ilif-run"])
def test_a_run_directory_with_a_symlinked_file_is_refused(tmp_path, cli, name):
    from ilif.conf import compose_config
    from ilif.grid import run_dir_of
    from ilif.train.app import main as train_main

    run_dir = run_dir_of(compose_config([f"runs_root={tmp_path / 'runs'}", *FAST]))
    run_dir.mkdir(parents=True)
    target = tmp_path / "precious"
    target.write_text("keep")
    (run_dir / name).symlink_to(target)
    proc = cli(train_main, f"runs_root={tmp_path / 'runs'}", *FAST)  # refused before Hydra writes .hydra/
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line == f"error: {run_dir / name} is a symlink: a run directory and its files must be plain, or a run " \
                   "would write through them; copy the files in, or choose another experiment_name or runs_root"
    assert target.read_text() == "keep"


@pytest.mark.parametrize("state", [{"config_hash": None}, "not a dict", {"model": {}}])
def test_a_checkpoint_that_does_not_fit_is_one_line(train_run, tmp_path, state):
    from ilif.conf import compose_config
    from ilif.errors import RunConflict
    from ilif.train.loop import train

    run_dir, _ = train_run(*FAST)
    (run_dir / "summary.json").unlink()
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = {**saved, "model": {"fc.weight": torch.zeros(1)}}
    torch.save(state, run_dir / "last.pt")
    cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST])
    with pytest.raises(RunConflict, match=r"last.pt (was written by another config|does not fit this run) .*"
                                          r"run again with trainer.resume=false to start this run over"):
        train(cfg, run_dir)


METERS = {"spikes": {}, "grad_sums": {}, "grad_counts": {}}


@pytest.mark.parametrize("change, problem", [
    ({"epoch": -5}, "epoch: -5 is not an integer in [-1, 1]"),
    ({"epoch": 7}, "epoch: 7 is not an integer in [-1, 1]"),
    ({"epoch": 1, "step": 10**9, "sums": [0.0, 0.0, 0.0], "meters": METERS}, "step: 1000000000 is not an integer in"),
    ({"epoch": 1, "step": 1, "sums": [1.0, 5.0, 2.0], "meters": METERS},
     "sums: [1.0, 5.0, 2.0] is not [loss sum, hits, samples] with hits ≤ samples"),
    ({"epoch": 1, "step": 1, "sums": ["a"], "meters": METERS}, "sums.0: 'a' is not a finite number ≥ 0"),
    ({"epoch": 1, "step": 2, "sums": [0.0, 0.0, 0.0], "meters": METERS},
     "sums: [0.0, 0.0, 0.0] counts fewer samples than the 2 batches done"),
    ({"epoch": 1, "step": 1, "sums": [0.0, 0.0, 1.0], "meters": {**METERS, "spikes": {"nope": {}}}},
     "meters.spikes: 'nope' is not one of"),
    ({"best": {"epoch": 0}}, "best: has no 'metrics'"),
    ({"best": {"epoch": 0, "metrics": {"test/acc1": "x"}}}, "best.metrics.test/acc1: 'x' is not a number"),
    ({"epoch_seconds": [float("inf")]}, "epoch_seconds.0: inf is not a finite number in [0, 1e+07]"),
])
def test_resume_counters_out_of_range_are_one_line(train_run, tmp_path, change, problem):
    from ilif.conf import compose_config
    from ilif.errors import RunConflict
    from ilif.train.loop import train

    run_dir, _ = train_run(*FAST)
    (run_dir / "summary.json").unlink()
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    torch.save({**saved, **change}, run_dir / "last.pt")
    cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *FAST])
    with pytest.raises(RunConflict) as caught:
        train(cfg, run_dir)
    assert str(caught.value).startswith(f"{run_dir / 'last.pt'}: {problem}")
    assert str(caught.value).endswith("run again with trainer.resume=false to start this run over (the old files "
                                      "are moved aside, not deleted)")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_listening(port: int, limit_s: float = 120) -> None:
    import socket

    deadline = time.time() + limit_s
    while time.time() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def _rank0_alone(tmp_path, *overrides, port=None):
    env = _env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port or _free_port()))
    return subprocess.Popen([sys.executable, "-m", "ilif.train", "trainer.progress=false", *overrides], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_rendezvous_whose_peer_never_comes_ends_at_its_bound(tmp_path):
    proc = _rank0_alone(tmp_path, "trainer.timeout_s=3")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("error: trainer.timeout_s=3 is not allowed: enough for all 2 DDP "
                                                   "processes to join at 127.0.0.1:")


def test_sigterm_ends_a_rendezvous_at_once(tmp_path):
    port = _free_port()
    proc = _rank0_alone(tmp_path, port=port)  # the default bound is 30 minutes
    _wait_until_listening(port)  # rank 0 is inside the rendezvous: its store listens
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75 and time.time() - start < 10
    assert err.strip().splitlines()[-1] == ("error: interrupted by SIGTERM while waiting for the 2 DDP processes; "
                                            "nothing was trained: run the same command again")


class _FaultyInWorker(torch.utils.data.Dataset):
    """``inner``, except that a loader worker process runs ``fault`` before its first sample."""

    def __init__(self, inner, fault):
        self.inner, self.fault = inner, fault

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        if torch.utils.data.get_worker_info() is not None:
            self.fault()
        return self.inner[index]


def _with_faulty_worker(name: str, fault):
    """:func:`data_fixtures.tiny_dataset` whose training set runs ``fault`` in loader workers."""
    from data_fixtures import tiny_dataset

    train, test, info = tiny_dataset(name)
    return _FaultyInWorker(train, fault), test, info


def _hang():
    time.sleep(3600)


def _crash():
    os._exit(3)


def hanging_dataset(name: str):
    """A ``dataset._target_`` whose samples never come in a loader worker process."""
    return _with_faulty_worker(name, _hang)


def crashing_dataset(name: str):
    """A ``dataset._target_`` whose loader worker process dies at its first sample."""
    return _with_faulty_worker(name, _crash)


@pytest.mark.parametrize("how", ["timeout", "sigterm"])
def test_a_hanging_loader_worker_ends_at_its_bound_or_at_sigterm(tmp_path, how):
    env = _env_with_tests()
    overrides = ["trainer.progress=false", "trainer.num_workers=1", "dataset._target_=test_faults.hanging_dataset",
                 *(["trainer.timeout_s=4"] if how == "timeout" else [])]
    proc = subprocess.Popen([sys.executable, "-m", "ilif.train", *overrides], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if how == "sigterm":
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "runs").glob("*/*/config.yaml")):
            time.sleep(0.1)  # built: the first batch is being waited for
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    last = err.strip().splitlines()[-1]
    if how == "timeout":
        assert proc.returncode == 1 and last.startswith("error: RuntimeError: DataLoader timed out after 4 seconds")
    else:
        assert proc.returncode == 75 and last.startswith("error: interrupted by SIGTERM at epoch 0, step 0")


def test_the_report_keeps_figures_drawn_from_more_runs(tmp_path, monkeypatch, capsys):
    from ilif.grid import FIGURES, plan
    from ilif.report.__main__ import main as report

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "mini"
    out.mkdir(parents=True)
    figure, other = out / "fig1_firing_rate_vs_gamma.png", out / "fig3_layer_firing_rates.png"
    figure.write_bytes(b"committed figure")
    assert report(["--scale", "mini", "--figures"]) == 0  # no record of how many runs drew it: kept
    assert figure.read_bytes() == b"committed figure"
    assert "kept the figures of table2 in results/mini: they were drawn from an unrecorded number of" in \
        capsys.readouterr().out
    (out / "figures.json").write_text('{"finished": 60, "planned": 200}')  # an earlier version's one count
    assert report(["--scale", "mini", "--figures"]) == 0
    assert figure.read_bytes() == b"committed figure"
    assert "drawn from 60 finished runs, these runs give 0" in capsys.readouterr().out
    assert report(["--scale", "mini", "--figures", "--force"]) == 0
    assert figure.read_bytes().startswith(b"\x89PNG")
    planned = {name: len(plan([FIGURES[name]], ["scale=mini"])) for name in FIGURES}
    assert json.loads((out / "figures.json").read_text()) == {
        name: {"finished": 0, "planned": planned[name]} for name in ("gamma", "neurons")}
    figure.write_bytes(b"old")
    other.write_bytes(b"drawn from 5 runs")
    (out / "figures.json").write_text(json.dumps({"gamma": {"finished": 0, "planned": 1},
                                                  "neurons": {"finished": 5, "planned": 9}}))
    assert report(["--scale", "mini", "--figures"]) == 0  # each set by its own count, never a total of both
    assert figure.read_bytes().startswith(b"\x89PNG") and other.read_bytes() == b"drawn from 5 runs"
    assert json.loads((out / "figures.json").read_text())["neurons"] == {"finished": 5, "planned": planned["neurons"]}
    for drawn in out.glob("fig[124]_*.png"):
        drawn.unlink()
    (out / "figures.json").write_text(json.dumps({"gamma": {"finished": 10, "planned": 10},
                                                  "neurons": {"finished": 5, "planned": 9}}))
    assert report(["--scale", "mini", "--figures"]) == 0  # a set whose figures are gone is drawn again
    assert figure.read_bytes().startswith(b"\x89PNG") and other.read_bytes() == b"drawn from 5 runs"


@pytest.mark.parametrize("content, problem", [
    ('{"status": "finished", "config_hash": "x"}', "has no 'final'"),
    ('{"status": "finished", "final": [], "config_hash": "x"}', "final: [] is not a mapping"),
    ('{"status": "finished", "final": {"epoch": 0}, "best": 3}', "best: 3 is not a mapping"),
    ('{"status": "finished", "final": {"epoch": 0}, "layers": [1]}', "layers.0: 1 is not a mapping"),
    ('{"final": {"epoch": 0, "test/acc1": "high"}}', "final.test/acc1: 'high' is not a finite number, null, or a "
                                                     "mapping or list of them"),
    ('{"final": {"epoch": 0, "test/acc1": NaN}}', "is not readable JSON (NaN is not a finite number)"),
    ('{"final": {"epoch": 0}, "provenance": {"epoch_seconds": ["1 min"]}}',
     "provenance.epoch_seconds.0: '1 min' is not a finite number in [0, 1e+07]"),
    ('{"final": {"epoch": 0}, "provenance": {"epoch_seconds": [-5]}}',
     "provenance.epoch_seconds.0: -5 is not a finite number in [0, 1e+07]"),
    ('{"final": {"epoch": 0}, "world_size": 0}', "world_size: 0 is not an integer ≥ 1"),
    ('{"status": "failed", "error": 3}', "error: 3 is not a string"),
    ("[" * 100_000 + "]" * 100_000, "is not readable JSON (nested more than 32 levels deep)"),
    ("[1, 2]", "[1, 2] is not a mapping"),
    (b"\xff\xfe", "is not UTF-8 text"),
    ('{"final": {"epoch": 0}, "gamma": 1' + "0" * 400 + "}", "gamma: 1" + "0" * 59 + " is not a finite number"),
])
def test_a_malformed_summary_counts_as_not_finished(tmp_path, content, problem):
    path = tmp_path / "summary.json"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.warns(UserWarning, match=re.escape(f"{path}: {problem}; the run counts as not finished")):
        assert finished_summary(tmp_path) is None


@pytest.mark.parametrize("name", ["summary.json", "metrics.jsonl"])
def test_a_fifo_where_a_record_should_be_is_refused_at_once(tmp_path, name):
    os.mkfifo(tmp_path / name)
    with pytest.warns(UserWarning, match=re.escape(f"{tmp_path / name}: is not a regular file")):
        assert (finished_summary if name == "summary.json" else read_history)(tmp_path) in (None, [])


def test_a_history_line_that_is_not_an_epochs_record_ends_the_history(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n[1, 2]\n{"epoch": 2}\n')
    with pytest.warns(UserWarning, match="line 2: \\[1, 2\\] is not a mapping; the history stops before it"):
        assert read_history(tmp_path) == [{"epoch": 0}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": "1"}\n')
    with pytest.warns(UserWarning, match="line 2: epoch: '1' is not an integer ≥ 0"):
        assert read_history(tmp_path) == [{"epoch": 0}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1, "lr": 1' + "0" * 400 + "}\n")
    with pytest.warns(UserWarning, match="line 2: lr: 1000.* is not a finite number"):
        assert read_history(tmp_path) == [{"epoch": 0}]


@pytest.mark.parametrize("line", ["5", "[1]", '{"epoch": "x"}', '{"lr": 0.1}', '{"epoch": -3}'])
def test_a_resume_drops_history_lines_that_are_not_records(tmp_path, line):
    path = tmp_path / "metrics.jsonl"
    path.write_text(f'{{"epoch": 0}}\n{line}\n{{"epoch": 1}}\n')
    MetricsFile(path, keep_epochs_below=2)
    assert path.read_text() == '{"epoch": 0}\n'


def test_the_report_leaves_out_absurd_values_and_says_when_runs_differ(tmp_path):
    from ilif.report.runs import RunRecord, cell, provenance_note

    def record(name, acc, commit, torch_version, device, isa=None):
        summary = {"status": "finished", "final": {"test/acc1": acc},
                   "provenance": {"git_commit": commit, "versions": {"torch": torch_version}, "device": device,
                                  **({"cpu_capability": isa} if isa else {})}}
        return RunRecord({}, tmp_path / name, RunSummary.from_json(summary))

    records = [record("a", 0.9, "aaaaaaa1", "2.14.1", "cpu (x86_64, 1 threads)"),
               record("b", 1e308, "aaaaaaa1", "2.14.1", "cpu (x86_64, 1 threads)"),
               record("c", float("inf"), "aaaaaaa1", "2.14.1", "cpu (x86_64, 1 threads)")]
    with pytest.warns(UserWarning, match=r"b/summary.json: 1e\+308 is not a finite number of sensible size"):
        assert cell(records, lambda r: r.final("test/acc1"), scale=100) == "90.00 ± 0.00 (1/3)"
    assert provenance_note(records) is None
    records.append(record("d", 0.8, "bbbbbbb2", "2.13.0", "cuda:0 (NVIDIA H200)"))
    assert provenance_note(records) == (
        "These runs come from 2 commits (aaaaaaa, bbbbbbb); 2 torch versions (2.13.0, 2.14.1); 2 devices (cpu, "
        "cuda:0): numbers from different code, packages or devices may not be comparable.")
    same = [record(n, 0.9, "aaaaaaa1", "2.14.1", "cpu (x86_64, 1 threads)", isa) for n, isa in
            (("e", "AVX512"), ("f", "AVX2"), ("g", None))]
    assert provenance_note(same) == ("These runs come from 2 CPU instruction sets (AVX2, AVX512): numbers from "
                                     "different code, packages or devices may not be comparable.")


def test_imagenet_classes_that_differ_between_train_and_val_are_refused(tmp_path):
    from data_fixtures import write_imagenet

    write_imagenet(tmp_path)
    stray = tmp_path / "imagenet" / "val" / "n99999999"
    stray.mkdir()
    next((tmp_path / "imagenet" / "val" / "n01440764").iterdir()).rename(stray / "moved.JPEG")
    with pytest.raises(DatasetError, match=r"class folders that differ between train/ and val/ \(val/ has n99999999 "
                                           r"that the other lacks\)"):
        build({"name": "imagenet", "root": str(tmp_path)})


def test_a_resume_under_other_threads_is_recorded_and_warned(train_run, monkeypatch, caplog):
    from ilif.train import loop

    real, calls = loop.Trainer.train_epoch, []

    def stop_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise errors.Interrupted("at epoch 1, step 0", signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "train_epoch", stop_in_second_epoch)
    with pytest.raises(errors.Interrupted):
        train_run(*FAST)
    monkeypatch.undo()
    caplog.set_level("WARNING", logger="ilif.train")
    _, summary = train_run(*FAST, "trainer.threads=2")
    assert summary.provenance["changed_on_resume"] == ["threads 1 -> 2 at epoch 1"]
    assert "resumed with threads 1 -> 2 at epoch 1: from here the run is not bit-reproducible" in caplog.text


@pytest.mark.parametrize("override, message", [
    ("foo=1", "error: Could not override 'foo'. To append to your config use +foo=1: Key 'foo' not in 'TrainConfig': "
              "the config has ['dataset', 'model', 'neuron', 'surrogate', 'optim', 'schedule', 'loss', 'remedy', "
              "'trainer', 'logger', 'compare', 'seed', 'experiment_name', 'scale_name', 'runs_root']"),
    ("trainer.epochs=abc", "error: Error merging override trainer.epochs=abc: Value 'abc' of type 'str' could not be "
                           "converted to Integer"),
    ("neuron=nope", "error: In 'train': Could not find 'neuron/nope'; Available options in 'neuron': "
                    + ", ".join(group_options("neuron"))),
    ("trainer.epochs=0", "error: trainer.epochs=0 is not allowed: an integer > 0"),
])
def test_a_bad_study_override_is_one_line(cli, override, message):
    from ilif.study import main as study_main

    proc = cli(study_main, "demo", "--dry-run", "--override", override)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]


def test_a_config_file_with_a_key_its_backbone_does_not_take_is_one_line_naming_the_key(tmp_path, cli):
    from ilif.train.app import main as train_main

    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "mlp3.yaml").write_text("name: convnet_small\nhidden: 64\n")
    proc = cli(train_main, "--config-dir", str(tmp_path / "mine"), "model=mlp3")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: model.hidden=64 is not allowed: convnet_small takes "
                                                "['dropout', 'bn_per_step']"]
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_that_is_a_file_is_one_line(tmp_path, cli):
    from ilif.train.app import main as train_main

    (tmp_path / "afile").write_text("mine")
    proc = cli(train_main, "hydra.run.dir=afile")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: hydra.run.dir='afile' is not allowed: a folder (it is a file)"]
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_full_or_closed_stdout_ends_without_a_traceback(tmp_path):
    command = [sys.executable, "-m", "ilif.study", "--table", "all", "--scale", "full", "--dry-run"]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(command, cwd=tmp_path, env=_env(), stdout=full, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ["error: No space left on device"]
    reader = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()  # as `| head -0` does
    assert reader.wait(timeout=120) == 0
    assert reader.stderr.read() == b""


def test_a_runs_root_through_a_symlink_loop_is_one_line(tmp_path, cli):
    from ilif.train.app import main as train_main

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    proc = cli(train_main, "runs_root=loop/sub")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: runs_root='loop/sub' is not allowed: a folder that can be made ({tmp_path / 'loop'} is a symlink "
        "that leads nowhere or to itself)"]


def test_a_full_disk_during_a_run_is_one_line(tmp_path, cli, monkeypatch):
    from ilif.train import loop
    from ilif.train.app import main as train_main

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "last.pt")

    monkeypatch.setattr(loop.Trainer, "save", full)
    proc = cli(train_main, *FAST)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: No space left on device: last.pt"


def test_a_crashing_loader_worker_is_one_line_and_a_debug_switch_shows_the_traceback(tmp_path):
    env = _env_with_tests()
    overrides = ["trainer.progress=false", "trainer.num_workers=1", "dataset._target_=test_faults.crashing_dataset"]
    proc = subprocess.run([sys.executable, "-m", "ilif.train", *overrides], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: RuntimeError: DataLoader worker (pid")
    assert proc.stderr.strip().splitlines()[-1].endswith("(ILIF_DEBUG=1 shows the traceback)")
    assert "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "ilif.train", *overrides], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120, env={**env, "ILIF_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_sweep_lists_every_missing_dataset_before_any_job_starts(tmp_path, cli):
    from ilif.train.app import main as train_main

    proc = cli(train_main, "-m", "dataset=digits,cifar10,cifar100", "dataset.download=false",
               f"dataset.root={tmp_path / 'none'}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: dataset 'cifar10': missing files at ")
    assert lines[1].startswith("error: dataset 'cifar100': missing files at ")
    assert lines[2] == ("error: 2 dataset(s) of the sweep missing; get them (docs/full_scale.md), or leave them out of "
                        "the sweep")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "none").exists()


# ------------------------------------------------------------------------------------ the failure records

def test_a_sweep_counts_only_the_records_it_wrote(tmp_path, cli):
    """A job that fails before it could record anything, over an older finished run it was to train
    again (trainer.resume=false), is a failure of the sweep, not a finished job; and an older failed
    record is not given as the reason."""
    from ilif.train.app import main

    first = cli(main, "trainer.progress=false", "trainer.limit_train_batches=2", "trainer.epochs=1")
    assert first.returncode == 0, first.stderr
    (run_dir,) = run_dirs(tmp_path)
    again = cli(main, "-m", "trainer.progress=false", "trainer.limit_train_batches=2", "trainer.epochs=1",
                "trainer.resume=false", "trainer.device=cuda,cuda")  # no GPU here: it fails before set-aside
    assert again.returncode == 1, again.stderr
    assert again.stderr.strip().splitlines()[-2:] == ["error: 1 run(s) of the sweep failed:",
                                                      f"  {run_dir.relative_to(tmp_path)}: {NO_RECORD}"]
    assert status(run_dir) == "finished"  # the older run is untouched


def test_a_failure_record_is_kept_out_of_what_the_run_does_not_own(tmp_path, monkeypatch):
    """No record over a finished run of the same config (an error after its summary was written), none
    in a directory holding another config's checkpoint, and another config's failed record does not
    block a run (it protects nothing)."""
    import torch

    from ilif.conf import compose_config, config_hash
    from ilif.errors import RunConflict
    from ilif.rundir import record_failure
    from ilif.train import loop

    cfg = compose_config(["trainer.progress=false", f"runs_root={tmp_path / 'runs'}"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"config_hash": "AAAAAAAA"}, run_dir / "last.pt")
    monkeypatch.setattr(loop, "build_parts", lambda cfg, run: None)
    with pytest.raises(RunConflict):
        loop.train(cfg, run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pt"]  # the directory is another config's: no record,
    # no owner's mark, no lock left
    (run_dir / "last.pt").unlink()
    record_failure(run_dir, "BBBBBBBB", "earlier", 1)
    loop.claim(run_dir, config_hash(cfg))  # another config's failed record does not block
    finished = {"status": "finished", "config_hash": config_hash(cfg), "final": {"epoch": 0}}
    (run_dir / "summary.json").write_text(json.dumps(finished))
    loop.keep_failure(run_dir, config_hash(cfg), BrokenPipeError("stdout closed"))
    assert json.loads((run_dir / "summary.json").read_text()) == finished


@pytest.mark.parametrize("argv, line", [
    (["-m", "seed=1,2", "hydra.sweep.dir=elsewhere"], "error: hydra.sweep.dir is not allowed: a run's directory is "
     "runs_root/experiment_name/<run name>, where ilif-study and the report find it (set runs_root or "
     "experiment_name)"),
    (["-m", "hydra.sweeper.params.seed=1,2"], "error: hydra.sweeper.params.seed is not allowed: give a grid's axis on "
     "the command line as key=a,b"),
    (["-cn", "other"], "error: -cn is not allowed: ilif-train composes its train.yaml; add config folders with "
     "--config-dir and choose their options by group"),
    (["neuron.store_membrane=true"], "error: neuron.store_membrane=True is not allowed: it is not in the neuron "
     "file: add it with +neuron.store_membrane"),
    (["-m", "neuron.store_membrane=true,false"], "error: neuron.store_membrane=True is not allowed: it is not in "
     "the neuron file: add it with +neuron.store_membrane"),
])
def test_what_would_put_runs_where_no_one_finds_them_or_fail_in_hydra_is_one_line(tmp_path, cli, argv, line):
    from ilif.train.app import main

    proc = cli(main, *argv)
    assert proc.returncode == 2 and proc.stderr.strip() == line, proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()


def test_a_module_of_ones_own_that_cannot_be_imported_is_refused_before_a_run(tmp_path, cli, monkeypatch):
    from ilif.train.app import main

    (tmp_path / "broken_parts.py").write_text("import not_installed_anywhere\n\n\ndef data(name):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    proc = cli(main, "+dataset._target_=broken_parts.data")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: dataset._target_='broken_parts.data' is not allowed: it must name an importable function "
        "(ModuleNotFoundError: No module named 'not_installed_anywhere')"), proc.stderr
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------ paths are data

@pytest.mark.parametrize("path", ["/tmp/a b é", "/tmp/it's", "/tmp/a\\b", "/tmp/x\\", "/tmp/[1],${x}", "/tmp/q\\'z",
                                  "/tmp/é=1 ~b"])
def test_a_path_is_read_back_as_exactly_that_path(path):
    from ilif.conf import compose_config, quoted

    assert compose_config([f"runs_root={quoted(path)}"]).runs_root == path


def test_config_folders_and_runs_roots_with_any_characters_work_everywhere(tmp_path, cli):
    from ilif.report.__main__ import main as report_main
    from ilif.study import main as study_main
    from ilif.train.app import main as train_main

    folder = tmp_path / "my configs é,[x]=1"
    (folder / "experiment").mkdir(parents=True)
    (folder / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nexperiment_name: mine\ntrainer:\n  epochs: 1\n  limit_train_batches: 1\n"
        "  progress: false\n")
    runs = tmp_path / "r r é [1],x=2"
    proc = cli(train_main, "-m", "--config-dir", str(folder), "experiment=mine", "seed=0,1",
               f"runs_root={quoted_path(runs)}")
    assert proc.returncode == 0, proc.stderr
    assert len(list((runs / "mine").glob("*/summary.json"))) == 2
    proc = cli(study_main, "mine", "--config-dir", str(folder), "--no-progress", "--override",
               f"runs_root={quoted_path(runs)}", "--override", "seed=0")
    assert proc.returncode == 0 and "0 trained, 1 already finished" in proc.stdout, proc.stderr
    proc = cli(report_main, "--demo", "--runs-root", str(runs), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert f"{runs}/demo" in (tmp_path / "out" / "demo" / "table.md").read_text()
    proc = cli(train_main, f"runs_root={quoted_path(tmp_path / '${x}')}")
    assert (proc.returncode, proc.stderr.strip()) == (2, f"error: runs_root='{tmp_path / '${x}'}' is not allowed: "
                                                         "a folder's path without '${'")
    proc = cli(train_main, "--config-dir", str(tmp_path / "nowhere"))
    assert (proc.returncode, proc.stderr.strip()) == (
        2, f"error: --config-dir='{tmp_path / 'nowhere'}' is not allowed: an existing folder of config files")


def quoted_path(path) -> str:
    from ilif.conf import quoted

    return quoted(str(path))


@pytest.mark.parametrize("argv, line", [
    (["ndigits", "--T", "0"], "error: dataset.T=0 is not allowed: an integer > 0 and <= 1024"),
    (["ndigits", "--T", "100000"], "error: dataset.T=100000 is not allowed: an integer > 0 and <= 1024"),
])
def test_ilif_data_checks_its_dataset_s_keys_like_the_trainer(cli, argv, line):
    from ilif.data.__main__ import main as data_main

    proc = cli(data_main, *argv)
    assert (proc.returncode, proc.stderr.strip()) == (2, line)


def test_an_abandoned_build_of_the_event_digits_is_removed_by_the_next(tmp_path):
    import socket

    from ilif.data.temporal import remove_abandoned

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    dead = tmp_path / f".building-{gone.stdout.strip()}@{host}-abc"
    alive = tmp_path / f".building-{os.getpid()}@{host}-def"
    other = tmp_path / f".building-{gone.stdout.strip()}@{host}-12-ghi"  # host "<this>-12" on a shared disk
    for folder in (dead, alive, other):
        (folder / "3").mkdir(parents=True)
    remove_abandoned(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_an_empty_event_file_is_named(tmp_path):
    from ilif.data.temporal import _load_events

    (tmp_path / "0.npz").write_bytes(b"")
    with pytest.raises(DatasetError, match=re.escape(f"corrupt event file (EOFError) at {tmp_path / '0.npz'}")):
        _load_events(tmp_path / "0.npz")
    os.mkfifo(tmp_path / "1.npz")
    with pytest.raises(DatasetError, match=re.escape(f"corrupt event file (ValueError) at {tmp_path / '1.npz'}")):
        _load_events(tmp_path / "1.npz")


def test_a_compiled_kernel_is_loaded_only_when_it_is_this_users_own_and_whole(tmp_path, monkeypatch):
    from ilif.neurons import _cpu_kernel

    library = tmp_path / "neuron_kernel_x.so"
    library.write_bytes(b"\x7fELF built here")
    (tmp_path / "neuron_kernel_x.sha256").write_text(_cpu_kernel._digest_file(library) + "\n")
    tmp_path.chmod(0o755)
    assert _cpu_kernel.trusted(library)
    library.write_bytes(b"\x7fELF put here by another")  # content changed: its recorded digest no longer fits
    assert not _cpu_kernel.trusted(library)
    (tmp_path / "neuron_kernel_x.sha256").write_text(_cpu_kernel._digest_file(library) + "\n")
    library.chmod(0o666)  # anyone could have written it
    assert not _cpu_kernel.trusted(library)
    library.chmod(0o644)
    tmp_path.chmod(0o777)  # a folder anyone can write to
    assert not _cpu_kernel.trusted(library)
    tmp_path.chmod(0o755)
    monkeypatch.setattr(os, "getuid", lambda: 12345)  # another user's
    assert not _cpu_kernel.trusted(library)
    monkeypatch.undo()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("ILIF_KERNEL_CACHE", str(shared))
    monkeypatch.setattr(_cpu_kernel, "_lib", None)  # both put back after the test: later tests load the kernel
    monkeypatch.setattr(_cpu_kernel, "_failed", None)
    monkeypatch.setattr(_cpu_kernel, "_build", lambda source, target: (_ for _ in ()).throw(RuntimeError("no cc")))
    made = []
    monkeypatch.setattr(_cpu_kernel.tempfile, "mkdtemp", lambda **kw: made.append(tmp_path / "private") or
                        (tmp_path / "private").mkdir() or str(tmp_path / "private"))
    with pytest.warns(RuntimeWarning, match="is not yours alone"):
        assert _cpu_kernel.load() is None
    assert made and not made[0].exists() and list(shared.iterdir()) == []  # the private folder goes with the process


# ------------------------------------------------------------------------------------ exit codes by meaning

@pytest.mark.parametrize("override, line", [
    ("neuron._target_=builtins.dict", "error: neuron._target_='builtins.dict' is not allowed: it must name a neuron "
     "class whose parameters can be read (a Python function or class)"),
    ("dataset._target_=data_fixtures.not_a_dataset", "error: dataset._target_='data_fixtures.not_a_dataset' is not "
     "allowed: a dataset function returning (train set, test set, DatasetInfo); it returned str"),
    ("neuron._target_=data_fixtures.not_a_neuron", "error: neuron._target_ is not allowed to make a NoneType: it must "
     "name a neuron class (a torch.nn.Module taking surrogate and step_mode)"),
    ("+model._target_=data_fixtures.not_a_backbone", "error: model: the backbone 'not_a_backbone' returned a dict, "
     "not a torch.nn.Module"),
])
def test_a_component_of_ones_own_that_makes_the_wrong_thing_is_one_line(tmp_path, override, line):
    proc = subprocess.run([sys.executable, "-m", "ilif.train", "trainer.progress=false", override], cwd=tmp_path,
                          env=_env_with_tests(), capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr.strip().splitlines()[-1]) == (2, line)
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing left


def test_a_config_file_that_is_not_yaml_is_named_with_its_line(tmp_path, cli):
    from ilif.study import main as study_main
    from ilif.train.app import main as train_main

    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "broken.yaml").write_text("name: convnet_small\ndropout: [1,\n")
    line = (f"error: {tmp_path / 'mine' / 'model' / 'broken.yaml'}, line 3, column 1 is not valid YAML: expected the "
            "node content, but found '<stream end>'")
    (tmp_path / "mine" / "model" / "latin.yaml").write_bytes(b"name: convnet_small\n# caf\xe9\n")
    proc = cli(train_main, "--config-dir", str(tmp_path / "mine"), "model=latin")
    assert (proc.returncode, proc.stderr.strip()) == (
        2, "error: a config file is not UTF-8 text (invalid continuation byte at byte 25): save your config files as "
           "UTF-8")
    (tmp_path / "odd${x}").mkdir()
    proc = cli(train_main, "--config-dir", str(tmp_path / "odd${x}"))
    assert (proc.returncode, proc.stderr.strip()) == (2, f"error: --config-dir='{tmp_path / 'odd${x}'}' is not "
                                                         "allowed: a folder whose path has no '${'")
    for main, argv in ((train_main, ["--config-dir", str(tmp_path / "mine"), "model=broken"]),
                       (train_main, ["-m", "--config-dir", str(tmp_path / "mine"), "model=broken", "seed=1,2"]),
                       (study_main, ["--config-dir", str(tmp_path / "mine"), "demo", "--override", "model=broken",
                                     "--dry-run"])):
        proc = cli(main, *argv)
        assert (proc.returncode, proc.stderr.strip().splitlines()[-1]) == (2, line)


def test_keep_torch_names_a_package_installed_without_a_version(monkeypatch, capsys):
    import runpy
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: None if name == "torchvision" else "2.0.0+cpu")
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "keep_torch.py"), run_name="__main__")
    assert ended.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: torchvision is installed without a version in its metadata "
                                               "(None): reinstall it, or pin it by hand")


def test_a_traceback_asked_for_never_stops_a_sweep(tmp_path):
    env = _env_with_tests(HYDRA_FULL_ERROR="1", ILIF_TEST_KILL_FLAG=str(tmp_path / "built"))
    proc = subprocess.run([sys.executable, "-m", "ilif.train", "-m", "trainer.progress=false", "trainer.epochs=1",
                           "dataset._target_=data_fixtures.crashing_dataset", "dataset.split_seed=1,0"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "ZeroDivisionError: a bug" in proc.stderr
    (failed,) = [d for d in run_dirs(tmp_path) if status(d) == "failed"]
    assert [status(d) for d in run_dirs(tmp_path)].count("finished") == 1  # the next job trained
    assert proc.stderr.strip().splitlines()[-2:] == [
        "error: 1 run(s) of the sweep failed:",
        f"  {failed.relative_to(tmp_path)}: ZeroDivisionError: a bug in a dataset of one's own (ILIF_DEBUG=1 shows the "
        "traceback) (exit 1)"]
