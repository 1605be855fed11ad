import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ilif.conf import group_options
from ilif.data import build as build_data
from ilif.train.build import build_model, neuron_factory
from ilif.errors import ConfigError
from ilif.checks import check_torch_free
from ilif.train.config import validate
from ilif.train.app import main as train_main
from ilif.train.engine import correct_counts, evaluate_loader
from ilif.train.losses import loss_function
from ilif.train.runtime import Process
from ilif.metrics import SpikeMeter
from ilif.neurons import ILIF, LIF, PLIF

FAST = ["trainer.progress=false", "trainer.limit_train_batches=4", "trainer.epochs=2"]

WIDTH = "a width in [0.001, 1000] (outside it the surrogate gradient vanishes in float32)"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update({"WANDB_MODE": "disabled", **extra})
    return env


def _env_with_tests(**extra):
    """:func:`_env` with the tests folder importable (a ``dataset._target_`` defined in a test module)."""
    tests = str(Path(__file__).resolve().parent)
    return _env(PYTHONPATH=os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]), **extra)


def run_train(cwd: Path, *overrides, env=None, multirun=False, launcher=None, timeout=300):
    cmd = launcher or [sys.executable, "-m", "ilif.train"]
    cmd = cmd + (["-m"] if multirun else []) + list(overrides)
    return subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def run_dirs(cwd: Path, experiment: str = "default"):
    return sorted(p for p in (cwd / "runs" / experiment).glob("*") if p.is_dir() and not p.name.startswith("."))


def status(run_dir: Path):
    """The status the run's summary.json records (finished or failed); None without one."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text())["status"] if path.exists() else None


@pytest.mark.parametrize(
    "override, message",
    [("surrogate.gamma=-1", "surrogate.gamma=-1.0 is not allowed: " + WIDTH),
     ("neuron=foo",
      f"neuron='foo' is not allowed: choose one of {group_options('neuron')}"),
     ("trainer.T=0", "trainer.T=0 is not allowed: an integer > 0 and <= 1024"),
     ("optim.name=adam", "optim.name='adam' is not allowed: choose one of ['adamw', 'sgd'], or give optim._target_ "
                         "(an optimiser function outside the package)"),
     ("loss.name=mse", "loss.name='mse' is not allowed: choose one of ['ce', 'tet'], or give loss._target_ (a loss "
                       "function outside the package)"),
     ("optim=adamw optim.momentum=0.5", "optim.momentum=0.5 is not allowed: adamw takes ['lr', 'weight_decay']"),
     ("neuron.tau=1", "neuron.tau=1 is not allowed: it must be a finite float > 1")],
)
def test_bad_config_is_one_line_exit_2_and_no_run_dir(tmp_path, cli, override, message):
    proc = cli(train_main, *override.split())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outputs").exists()


def test_the_command_prints_only_the_error_line_and_exits_2(tmp_path):
    proc = run_train(tmp_path, "neuron=foo")  # a new process: nothing else reaches its stderr
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: neuron='foo' is not allowed: choose one of {group_options('neuron')}"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("keep, kept", [("best", ["best.pt"]), ("none", [])])
def test_a_finished_run_keeps_the_checkpoints_asked_for(train_run, keep, kept):
    run_dir, summary = train_run(*FAST, f"trainer.keep_checkpoints={keep}")
    assert sorted(p.name for p in run_dir.glob("*.pt")) == kept
    assert summary.status == "finished"
    reference_dir, reference = train_run(*FAST)  # the same run: the choice is out of the hash
    assert reference_dir == run_dir and reference.final == summary.final


def test_a_lean_run_trains_the_numbers_of_a_standard_one(train_run, tmp_path, caplog):
    lean_dir, lean = train_run(*FAST, "trainer.memory=lean")
    standard_dir, standard = train_run(*FAST, f"runs_root={tmp_path / 'standard'}")
    assert lean_dir.name == standard_dir.name and lean.final == standard.final and lean.best == standard.best
    caplog.set_level("INFO", logger="ilif.train")
    train_run(*FAST, "neuron=plif", "trainer.memory=lean")
    said = [r.getMessage() for r in caplog.records if "trainer.memory" in r.getMessage()]
    assert said == ["trainer.memory=lean: PLIF layers keep what standard keeps (only LIF and ILIF recompute)"]


def test_a_write_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import types

    from ilif import rundir
    from ilif.rundir import atomic_write

    path = tmp_path / "last.pt"
    monkeypatch.setattr(rundir.os, "statvfs", lambda _: types.SimpleNamespace(f_bavail=3, f_frsize=4096))
    with pytest.raises(OSError) as caught, atomic_write(path, "wb") as f:
        f.write(b"x" * 2**20)
        f.flush()
        raise RuntimeError("unexpected pos 704 vs 598")  # what torch.save says when a write comes up short
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert "1.0 MB of it written, 0.0 MB free" in caught.value.strerror
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(rundir.os, "statvfs", lambda _: types.SimpleNamespace(f_bavail=2**20, f_frsize=4096))
    with pytest.raises(RuntimeError, match="unexpected pos"), atomic_write(path, "wb"):
        raise RuntimeError("unexpected pos 704 vs 598")  # with space left it is not the disk's fault


def test_run_directory_is_complete(train_run, capsys):
    run_dir, _ = train_run(*FAST)
    assert run_dir.name.startswith("digits-ilif-g1-s0-")
    out = capsys.readouterr().out
    assert "test acc" in out and "firing rate" in out and "µJ/sample" in out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for key in ("train/loss", "train/acc1", "train/firing_rate", "test/loss", "test/acc1", "test/acc5",
                "test/firing_rate", "test/occupancy", "test/layer_rates", "test/energy_uj", "test/snn_ann_ratio"):
        assert key in records[-1], key
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final"]["test/acc1"] == records[-1]["test/acc1"]
    assert summary["best"]["metrics"]["test/acc1"] == max(r["test/acc1"] for r in records)
    assert summary["surrogate"] == {"family": "rectangle", "gamma": 1.0, "normalize": "area", "height": 1.0,
                                    "alpha": 1.0}
    assert summary["dataset_info"]["split"] == "stratified-0.25-seed0" and summary["seed"] == 0
    assert len(summary["provenance"]["git_commit"]) in (40, 7) or summary["provenance"]["git_commit"] == "unknown"
    assert {"torch", "spikingjelly", "hydra"} <= set(summary["provenance"]["versions"])
    assert [row["layer"] for row in summary["layers"]] == ["neuron1", "neuron2"]
    assert [row["kind"] for row in summary["energy_layers"]] == ["MAC", "AC", "AC"]
    config = (run_dir / "config.yaml").read_text()
    assert "${" not in config and "gamma: 1.0" in config
    for name in ("last.pt", "best.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        assert "model" in state
    assert not list(run_dir.glob(".*.tmp-*"))


def _kill_during_second_epoch(cwd, overrides):
    proc = subprocess.Popen([sys.executable, "-m", "ilif.train", *overrides], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if list((cwd / "runs").glob("*/*/last.pt")):  # epoch 0 is done; epoch 1 is running
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (metrics,) = list((cwd / "runs").glob("*/*/metrics.jsonl"))
    return metrics.read_text().count("\n")


def test_resume_after_sigkill_is_bit_identical(tmp_path, train_run, cli):
    overrides = ["trainer.progress=false", "trainer.epochs=2", "trainer.batch_size=16", "trainer.deterministic=true",
                 "model.dropout=0.2"]
    killed = tmp_path / "killed"
    killed.mkdir()
    clean_dir, reference = train_run(*overrides)
    lines_at_kill = _kill_during_second_epoch(killed, overrides)
    assert lines_at_kill < 2  # killed before the end
    (run_dir,) = run_dirs(killed)
    assert not (run_dir / "summary.json").exists()
    torch.load(run_dir / "last.pt", weights_only=True)  # the checkpoint of the killed run is intact
    resumed = cli(train_main, *overrides, cwd=killed)
    assert resumed.returncode == 0, resumed.stderr
    ours = json.loads((run_dir / "summary.json").read_text())
    reference = json.loads((clean_dir / "summary.json").read_text())
    assert ours["final"] == reference["final"]
    assert ours["best"] == reference["best"]
    assert (run_dir / "metrics.jsonl").read_text() == (clean_dir / "metrics.jsonl").read_text()


def test_sweep_collision_free_and_skips_finished(tmp_path, cli):
    sweep = ["neuron=lif,ilif", "surrogate.gamma=0.5,2", "trainer.progress=false", "trainer.epochs=1",
             "trainer.limit_train_batches=2", "trainer.limit_eval_batches=1"]
    proc = cli(train_main, "-m", *sweep)
    assert proc.returncode == 0, proc.stderr
    dirs = run_dirs(tmp_path)
    assert [d.name.rsplit("-", 1)[0] for d in dirs] == ["digits-ilif-g0.5-s0", "digits-ilif-g2-s0",
                                                        "digits-lif-g0.5-s0", "digits-lif-g2-s0"]
    stamps = {d: (d / "summary.json").stat().st_mtime_ns for d in dirs}
    again = cli(train_main, "-m", *sweep)
    assert again.returncode == 0
    assert again.stderr.count("already finished, skipped") + again.stdout.count("already finished, skipped") == 4
    assert {d: (d / "summary.json").stat().st_mtime_ns for d in dirs} == stamps


def test_submitit_local_two_job_sweep(tmp_path):
    proc = run_train(tmp_path, "hydra/launcher=submitit_local", "neuron=lif,ilif", *FAST, multirun=True)
    assert proc.returncode == 0, proc.stderr
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2
    assert {json.loads((d / "summary.json").read_text())["neuron"] for d in dirs} == {"lif", "ilif"}


def test_wandb_offline_run_files(train_run, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    caplog.set_level("INFO", logger="ilif.train")
    run_dir, _ = train_run(*FAST, "logger.wandb.mode=offline")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))
    assert "wandb sync" in caplog.text


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, cli):
    proc = cli(train_main, "trainer.progress=false", "trainer.epochs=3", "schedule=step", "schedule.step_size=1",
                     "schedule.gamma=1e30", "trainer.limit_train_batches=4")
    assert proc.returncode == 3
    assert "non-finite loss" in proc.stderr and "epoch 1" in proc.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 0
    record = json.loads((run_dir / "summary.json").read_text())  # the record of the failure, not of a result
    assert record == {"status": "failed", "config_hash": run_dir.name.rsplit("-", 1)[-1], "exit_code": 3,
                      "error": proc.stderr.strip().splitlines()[-1].removeprefix("error: "), "schema": 2}
    from ilif.rundir import finished_summary

    assert finished_summary(run_dir) is None  # the next start resumes it


@pytest.mark.parametrize("memory", ["standard", "lean"])
def test_ddp_two_cpu_processes_match_one_process_bookkeeping(tmp_path, memory):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "ilif.train"]
    proc = run_train(tmp_path, *FAST, f"trainer.memory={memory}", launcher=launcher)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    from ilif.conf import compose_config
    from ilif.grid import run_dir_of
    from ilif.rundir import finished_summary

    # one run identity at any process count: the single-process run's directory, counted by the report
    assert run_dir.name == run_dir_of(compose_config(FAST)).name
    assert finished_summary(run_dir, run_dir.name.rsplit("-", 1)[-1]) is not None
    cfg = OmegaConf.load(run_dir / "config.yaml")
    _, test_set, info = build_data({"name": "digits"})
    model = build_model(cfg, info)
    model.load_state_dict(torch.load(run_dir / "last.pt", weights_only=True)["model"])
    os.environ.pop("WORLD_SIZE", None)
    run = Process(cfg)
    meter = SpikeMeter(model, enabled=False)
    loader = torch.utils.data.DataLoader(test_set, batch_size=100)
    single = evaluate_loader(model, loader, run, cfg.loss, meters=(meter,))
    assert single["samples"] == 450
    assert summary["final"]["test/acc1"] == single["acc1"]
    assert summary["final"]["test/acc5"] == single["acc5"]
    assert summary["final"]["test/loss"] == pytest.approx(single["loss"], rel=1e-6)
    assert summary["final"]["test/firing_rate"] == pytest.approx(meter.summary()["firing_rate"], rel=1e-12)


def test_loss_functions_by_hand():
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]])  # T = 2, B = 1, C = 2
    y = torch.tensor([0])
    ce = OmegaConf.create({"name": "ce", "label_smoothing": 0.0})
    mean = torch.tensor([[1.0, 0.5]])
    assert loss_function(ce)(logits, y).item() == pytest.approx(torch.nn.functional.cross_entropy(mean, y).item())
    tet = OmegaConf.create({"name": "tet", "lam": 0.05, "mse_target": "constant", "phi": 1.0, "label_smoothing": 0.0})
    per_step = [torch.nn.functional.cross_entropy(logits[t], y).item() for t in range(2)]
    mse = ((2 - 1) ** 2 + 1 + 1 + 0) / 4
    assert loss_function(tet)(logits, y).item() == pytest.approx(0.95 * sum(per_step) / 2 + 0.05 * mse)
    onehot = OmegaConf.merge(tet, {"mse_target": "onehot"})
    mse_label = ((2 - 1) ** 2 + 0 + (0 - 1) ** 2 + 1) / 4
    assert loss_function(onehot)(logits, y).item() == pytest.approx(0.95 * sum(per_step) / 2 + 0.05 * mse_label)
    assert correct_counts(logits, y) == (1, 1)  # Σ_t o_t = [2, 1] -> class 0


def _neuron_cfg(name: str, **neuron):
    cfg = OmegaConf.create({"neuron": OmegaConf.load(Path(__file__).parents[1] / "configs" / "neuron" / f"{name}.yaml"),
                            "surrogate": {"family": "sigmoid", "gamma": 0.5, "normalize": "peak"}})
    return OmegaConf.merge(cfg, {"neuron": neuron})


def test_neuron_factory_instantiates_the_configured_class():
    lif = neuron_factory(_neuron_cfg("lif"))()
    assert type(lif) is LIF and lif.step_mode == "m" and lif.params.surrogate.normalize == "peak"
    ilif = neuron_factory(_neuron_cfg("ilif", membrane_inhibition=False, kappa_current=0.1))()
    assert type(ilif) is ILIF and ilif.params.current_inhibition and not ilif.params.membrane_inhibition
    assert ilif.params.kappa_current == 0.1 and ilif.params.clamp_grad_at_zero == 1.0
    plif = neuron_factory(_neuron_cfg("plif"))()
    assert type(plif) is PLIF and plif.v_reset == 0.0 and plif.surrogate.family == "sigmoid"


@pytest.mark.parametrize("name, neuron, message", [
    ("ilif", {"tau": 1.0}, "neuron.tau=1.0 is not allowed: it must be a finite float > 1"),
    ("ilif", {"clamp_grad_at_zero": 0.5}, "neuron.clamp_grad_at_zero=0.5 is not allowed: choose 1.0"),
    ("lif", {"kappa_current": 0.1}, "neuron.kappa_current=0.1 is not allowed: LIF takes ['tau', 'v_threshold', "
                                    "'reset', 'detach_reset']"),
    ("plif", {"reset": "zero"}, "neuron.reset='zero' is not allowed: choose one of ('soft', 'hard')"),
])
def test_neuron_values_are_checked_alike_before_torch_and_by_their_class(name, neuron, message):
    """The torch-free pass (the signature read from source, the package's rules) and the whole
    validation refuse a bad neuron value with the same line, and the class itself says the same."""
    from ilif.conf import compose_config

    plus = "+" if name == "lif" else ""
    cfg = compose_config([f"neuron={name}", *(f"{plus}neuron.{k}={v}" for k, v in neuron.items())])
    for check in (check_torch_free, validate):
        with pytest.raises(ConfigError) as err:
            check(cfg)
        assert str(err.value).startswith(message), check
    if not plus:
        with pytest.raises(ValueError) as err:
            neuron_factory(_neuron_cfg(name, **neuron))()
        assert f"neuron.{err.value}".startswith(message)


def test_missing_dataset_is_one_line_exit_2_and_no_run_dir(tmp_path, cli):
    proc = cli(train_main, "dataset=cifar10", "dataset.download=false", f"dataset.root={tmp_path / 'nodata'}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: dataset 'cifar10': missing files at ") and "get it from https://" in lines[-1]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nodata").exists()  # no empty directories


def test_validation_split_selects_the_best_epoch(train_run):
    run_dir, _ = train_run(*FAST, "dataset.val_fraction=0.2", "trainer.epochs=3")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["dataset_info"]["train_size"], summary["dataset_info"]["val_size"]) == (1078, 269)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = max(range(3), key=lambda e: (records[e]["val/acc1"], -e))
    assert summary["best"]["epoch"] == best


def test_wandb_mirror_flattens_names_and_never_duplicates(train_run, monkeypatch, tmp_path):
    from ilif.wandb_mirror import UPLOADED, describe_run, flatten, upload_runs, wandb_id

    assert flatten({"a": 1, "b": {"c": 2.5, "d": [3, float("nan")]}, "e": "x", "f": True}) == {
        "a": 1, "b/c": 2.5, "b/d/0": 3}
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir, summary = train_run(*FAST, "logger.wandb.mode=offline", "trainer.grad_diagnostics=true")
    name, tags = describe_run(summary.config, summary.config_hash)
    assert name == f"digits-ilif-rectangle1-area-kI0.03-s0-{summary.config_hash}"
    assert tags == ["neuron:ilif", "dataset:digits", "gamma:1", "normalize:area", "scale:none"]
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run_id = wandb_id("default", summary.config_hash, summary.run_name)
    assert offline.name.endswith(f"-{run_id}")
    marker = json.loads((run_dir / UPLOADED).read_text())
    assert marker["id"] == run_id
    flat_keys = set(flatten(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])))
    assert {"test/layer_rates/neuron1", "test/rate_per_step/0", "grad/weight_norms/conv2",
            "grad/temporal_ratio_layers/neuron2"} <= flat_keys
    assert upload_runs([run_dir], mode="offline") == {"online": [], "offline": [],
                                                      "left out": [(run_dir, "sent before")]}  # never a second run
    (run_dir / UPLOADED).unlink()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    nameless = tmp_path / "nameless"  # a finished record without the config that names a wandb run
    nameless.mkdir()
    (nameless / "summary.json").write_text(json.dumps({"status": "finished", "final": {"epoch": 0}}))
    assert upload_runs([nameless, run_dir, tmp_path / "not-a-run", unfinished], mode="offline") == {
        "online": [], "offline": [run_dir],  # one bad directory stops none after it
        "left out": [(nameless, "its config cannot name a wandb run (has no 'dataset')"),
                     (tmp_path / "not-a-run", "it does not exist"), (unfinished, "not a finished run")]}
    assert json.loads((run_dir / UPLOADED).read_text())["id"] == run_id


def test_an_offline_upload_does_not_block_a_later_online_one(tmp_path, monkeypatch):
    from ilif.wandb_mirror import UPLOADED, _already_sent

    (tmp_path / UPLOADED).write_text(json.dumps({"id": "x", "mode": "offline", "project": "ilif"}))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert _already_sent(tmp_path, "offline") and not _already_sent(tmp_path, "online")
    (tmp_path / UPLOADED).write_text(json.dumps({"id": "x", "mode": "online", "project": "ilif"}))
    assert _already_sent(tmp_path, "offline") and _already_sent(tmp_path, "online")
    assert not _already_sent(tmp_path / "none", "online")


def test_the_global_batch_is_split_evenly_over_the_processes():
    from ilif.train.engine import per_process_batch

    assert per_process_batch(64, 1) == 64 and per_process_batch(64, 4) == 16
    with pytest.raises(ConfigError, match=r"^trainer.batch_size=63 is not allowed: a multiple of the 2 processes"):
        per_process_batch(63, 2)


def test_a_failed_submitit_job_ends_its_process_with_its_code_and_the_sweep_lists_it(tmp_path):
    proc = run_train(tmp_path, "hydra/launcher=submitit_local", "schedule=step", "schedule.step_size=1",
                     "schedule.gamma=1,1e30", "trainer.epochs=2", "trainer.progress=false",
                     "trainer.limit_train_batches=4", multirun=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-2] == "error: 1 run(s) of the sweep failed:"
    assert "non-finite loss" in lines[-1] and lines[-1].endswith("(exit 3)")
    assert "Traceback" not in proc.stderr  # submitit's, through Hydra, says the same as the list
    assert sorted(map(status, run_dirs(tmp_path))) == ["failed", "finished"]
    logs = list((tmp_path / "runs" / "default" / ".submitit").glob("*/*_0_log.err"))
    assert any("error: non-finite loss" in log.read_text() for log in logs)  # the job's own one line
    assert len(list((tmp_path / "runs" / "default" / ".submitit").glob("*/*_result.pkl"))) == 1  # no result: failed
    failed = next(d for d in run_dirs(tmp_path) if status(d) == "failed")
    record = json.loads((failed / "summary.json").read_text())
    assert lines[-1] == f"  {failed.relative_to(tmp_path)}: {record['error']} (exit 3)"  # its record, read back


def test_a_killed_submitit_job_leaves_no_record_and_is_listed_too(tmp_path):
    proc = run_train(tmp_path, "hydra/launcher=submitit_local", "dataset._target_=data_fixtures.killed_in_job_dataset",
                     "dataset.name=tiny", "dataset.split_seed=1,0", *FAST, multirun=True, env=_env_with_tests())
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-2] == "error: 1 run(s) of the sweep failed:"
    assert lines[-1].endswith(": left no record (killed, or failed before it trained anything: its error line is "
                              "above or in its job's log)") and "Traceback" not in proc.stderr
    assert sorted(map(str, map(status, run_dirs(tmp_path)))) == ["None", "finished"]  # the killed job: no record


def test_submitit_tasks_form_one_process_group_and_train_one_run(tmp_path):
    proc = run_train(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", *FAST,
                     multirun=True)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("env, mode, key, expected", [
    ({"WANDB_MODE": "offline"}, "auto", True, "offline"),  # the user's WANDB_MODE beats the key
    ({}, "auto", True, "online"), ({}, "auto", False, "offline"),
    ({"WANDB_MODE": "online"}, "offline", True, "offline"),  # an explicit logger.wandb.mode wins
    ({"WANDB_MODE": "disabled"}, "online", True, "disabled"),
])
def test_the_wandb_mode_the_user_sets_wins(monkeypatch, env, mode, key, expected):
    from ilif import wandb_mirror

    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(wandb_mirror, "_has_wandb_key", lambda: key)
    assert wandb_mirror.resolve_mode(mode) == expected


def test_the_seeds_of_one_configuration_share_a_wandb_group():
    from ilif.conf import compose_config, identity
    from ilif.wandb_mirror import config_group

    groups = {seed: config_group(identity(compose_config([f"seed={seed}"]))) for seed in (0, 1)}
    other = config_group(identity(compose_config(["seed=0", "surrogate.gamma=2"])))
    assert groups[0] == groups[1] != other and groups[0].startswith("default-")


def test_an_online_start_that_never_answers_falls_back_to_an_offline_run_that_logs(tmp_path):
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held, stop = [], threading.Event()

    def accept_and_never_answer():
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_never_answer, daemon=True)
    thread.start()
    env = _env(WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{server.getsockname()[1]}",
               WANDB_SILENT="true")
    env.pop("WANDB_MODE")
    try:
        proc = run_train(tmp_path, "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.progress=false",
                         "logger.wandb.mode=online", env=env, timeout=240)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wandb could not start online" in proc.stderr and "wandb disabled" not in proc.stderr
    (run_dir,) = run_dirs(tmp_path)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert next(offline.glob("run-*.wandb")).stat().st_size > 0
    assert json.loads((run_dir / "wandb_uploaded.json").read_text())["mode"] == "offline"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_mid_epoch_checkpoint_resumes_bit_identically(tmp_path, train_run, cli, workers):
    overrides = ["trainer.progress=false", "trainer.epochs=2", "trainer.batch_size=16", "trainer.deterministic=true",
                 "model.dropout=0.2", f"trainer.num_workers={workers}", "dataset.augment=true"]
    every_step = "trainer.checkpoint_every_min=1e-9"  # not in the run's identity: the same run directory
    killed = tmp_path / "killed"
    killed.mkdir()
    clean_dir, _ = train_run(*overrides)
    proc = subprocess.Popen([sys.executable, "-m", "ilif.train", *overrides, every_step], cwd=killed, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not list((killed / "runs").glob("*/*/metrics.jsonl")):
        time.sleep(0.01)  # epoch 0 is done; epoch 1 writes a checkpoint after every batch
    time.sleep(0.4)  # some batches into epoch 1 (about 85 in all)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = run_dirs(killed)
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] > 0  # killed inside the second epoch, after some batches
    resumed = cli(train_main, *overrides, every_step, cwd=killed)
    assert resumed.returncode == 0, resumed.stderr
    ours = json.loads((run_dir / "summary.json").read_text())
    reference = json.loads((clean_dir / "summary.json").read_text())
    assert ours["final"] == reference["final"] and ours["best"] == reference["best"]
    assert (run_dir / "metrics.jsonl").read_text() == (clean_dir / "metrics.jsonl").read_text()
