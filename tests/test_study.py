import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from ilif.study import main
from test_train import _env_with_tests

GRID = ["demo", "--no-progress", "--override", "seed=0", "--override", "surrogate.gamma=1",
        "--override", "trainer.epochs=1", "--override", "trainer.limit_train_batches=4"]


def _study(cwd, *args):
    """ilif-study in a new process (what its exit status and its spawned workers are tested with)."""
    return subprocess.run([sys.executable, "-m", "ilif.study", *GRID, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _summaries(cwd):
    out = {}
    for path in sorted((cwd / "runs" / "demo").glob("*/summary.json")):
        summary = json.loads(path.read_text())
        summary.pop("provenance")
        out[path.parent.name] = summary
    return out


def test_parallel_study_equals_serial_study_bit_for_bit(tmp_path, cli):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    serial.mkdir()
    parallel.mkdir()
    first = cli(main, *GRID, "--jobs", "1", cwd=serial)
    assert first.returncode == 0, first.stderr
    second = _study(parallel, "--jobs", "2")
    assert second.returncode == 0, second.stderr
    assert "study done" in second.stdout and (
        "with 2 parallel runs: 2 trained, 0 already finished, 0 failed" in second.stdout)
    ours, reference = _summaries(parallel), _summaries(serial)
    assert len(ours) == 2 and ours == reference
    again = cli(main, *GRID, "--jobs", "2", cwd=parallel)
    assert "0 trained, 2 already finished, 0 failed" in again.stdout


def test_a_failed_run_does_not_stop_the_study(tmp_path, cli):
    proc = cli(main, *GRID, "--jobs", "1", "--override", "schedule=step", "--override", "schedule.step_size=1",
                  "--override", "schedule.gamma=1e30", "--override", "trainer.epochs=2")
    assert proc.returncode == 1
    assert "0 trained, 0 already finished, 2 failed" in proc.stdout
    assert proc.stderr.splitlines()[-3:][0] == "error: 2 run(s) of the study failed:"
    assert [line.split(": ", 1)[1] for line in proc.stderr.splitlines()[-2:]] == [
        json.loads((Path(line.strip().split(": ")[0]) / "summary.json").read_text())["error"] + " (exit 3)"
        for line in proc.stderr.splitlines()[-2:]]  # each run's own record of its failure
    assert all(line.startswith("  runs/demo/") and "non-finite loss" in line for line in proc.stderr.splitlines()[-2:])


def test_every_missing_dataset_is_listed_at_once_and_the_rest_can_run(tmp_path, cli):
    args = ["--table", "3", "--scale", "full", "--no-progress", "--override", f"dataset.root={tmp_path / 'none'}",
            "--override", "dataset.download=false", "--override", "seed=0"]
    proc = cli(main, *args)
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert errors[0].startswith("error: dataset 'cifar10': missing files at ")
    assert errors[1].startswith("error: dataset 'cifar10_dvs': not found at ")
    assert errors[2] == ("error: 2 dataset(s) missing; get them (docs/full_scale.md), or run the rest with "
                         "--skip-missing")
    skipped = cli(main, *args, "--skip-missing")
    assert skipped.returncode == 0 and "0 trained, 0 already finished, 0 failed" in skipped.stdout
    assert skipped.stderr.count("skipped (--skip-missing): dataset '") == 2
    assert not (tmp_path / "runs").exists()


SIX_RUNS = ["demo", "--no-progress", "--override", "surrogate.gamma=1", "--override", "trainer.epochs=1",
            "--override", "trainer.limit_train_batches=2",
            "--override", "dataset._target_=data_fixtures.killed_once_dataset",
            "--jobs", "2"]


def _env_with_fixtures(tmp_path):
    return _env_with_tests(ILIF_TEST_KILL_FLAG=str(tmp_path / "killed"))


def test_a_killed_worker_is_a_failed_run_and_the_study_goes_on(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ilif.study", *SIX_RUNS], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=_env_with_fixtures(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert "5 trained, 0 already finished, 1 failed" in proc.stdout
    killed = [d for d in (tmp_path / "runs" / "demo").iterdir() if not (d / "summary.json").exists()]
    assert len(killed) == 1 and proc.stderr.splitlines() == [
        "error: 1 run(s) of the study failed:",
        f"  {killed[0].relative_to(tmp_path)}: the worker process was killed by SIGKILL (out of memory?)"]
    assert proc.stdout.count("killed by SIGKILL") == 1  # as it happens
    assert len(list((tmp_path / "runs" / "demo").glob("*/summary.json"))) == 5


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_workers_stop_when_the_study_dies(tmp_path):
    (tmp_path / "killed").touch()  # nobody is killed by the dataset here
    study = subprocess.Popen([sys.executable, "-m", "ilif.study", *SIX_RUNS], cwd=tmp_path,
                             env=_env_with_fixtures(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((tmp_path / "runs" / "demo").glob("*/train.log"))) < 2 and time.time() < deadline:
        time.sleep(0.2)
    workers = [pid for pid in _children(study.pid) if "_worker_loop" in Path(f"/proc/{pid}/cmdline").read_text()
               or "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert workers
    study.send_signal(signal.SIGKILL)
    study.wait()
    deadline = time.time() + 60
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
              for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]


def test_a_users_own_experiment_is_studied_and_reported_with_config_dir(tmp_path, cli):
    from ilif.report.__main__ import main as report_main

    mine = tmp_path / "my_configs" / "experiment"
    mine.mkdir(parents=True)
    (mine / "my_exp.yaml").write_text("# @package _global_\nexperiment_name: my_exp\ntrainer:\n  epochs: 1\n"
                                      "  limit_train_batches: 2\nhydra:\n  sweeper:\n    params:\n"
                                      "      surrogate.gamma: 0.5,2\n")
    proc = cli(main, "my_exp", "--config-dir", str(tmp_path / "my_configs"), "--no-progress", "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    assert "2 trained, 0 already finished, 0 failed" in proc.stdout
    assert len(list((tmp_path / "runs" / "my_exp").glob("digits-ilif-g*-s0-*/summary.json"))) == 2
    without = cli(main, "my_exp", "--dry-run")
    assert without.returncode == 2 and "matches nothing" in without.stderr
    bad = cli(report_main, "--config-dir", str(tmp_path / "nope"), "--demo")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        f"error: --config-dir={str(tmp_path / 'nope')!r} is not allowed: an existing folder of config files")


def test_the_estimate_is_measured_by_finished_runs_where_there_are_any(tmp_path, cli):
    before = cli(main, *GRID, "--dry-run")
    assert "estimate: " in before.stdout and "(assumed for seqdigits (1 s per epoch on one GPU))" in before.stdout
    assert cli(main, *GRID, "--jobs", "1").returncode == 0
    summary = json.loads(next((tmp_path / "runs" / "demo").glob("*/summary.json")).read_text())
    assert len(summary["provenance"]["epoch_seconds"]) == 1 and summary["provenance"]["epoch_seconds"][0] > 0
    other = cli(main, *[a if a != "surrogate.gamma=1" else "surrogate.gamma=2" for a in GRID], "--dry-run")
    assert "(measured by finished runs on cpu)" in other.stdout


def test_a_sweep_and_a_study_write_the_same_run_directories_with_the_same_files(tmp_path, cli):
    """ilif-train -m experiment=X and ilif-study X compose, name and record their runs alike: the same
    directory names, the same files in each (no .hydra/ from one only), the same config.yaml."""
    from omegaconf import OmegaConf

    from ilif.train.app import main as train_main

    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "twin.yaml").write_text(
        "# @package _global_\nexperiment_name: twin\n"
        "trainer: {epochs: 1, limit_train_batches: 2, limit_eval_batches: 1, progress: false}\n"
        "hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    swept = cli(train_main, "-m", "--config-dir", str(tmp_path / "mine"), "experiment=twin",
                f"runs_root={tmp_path / 'a'}")
    assert swept.returncode == 0, swept.stderr
    studied = cli(main, "--config-dir", str(tmp_path / "mine"), "twin", "--no-progress", "--override",
                  f"runs_root={tmp_path / 'b'}")
    assert studied.returncode == 0, studied.stderr

    def listing(root):
        return {d.name: sorted(f.name for f in d.iterdir()) for d in (root / "twin").iterdir() if d.is_dir()}

    a, b = listing(tmp_path / "a"), listing(tmp_path / "b")
    assert len(a) == 2 and a == b and ".hydra" not in next(iter(a.values()))
    for name in a:
        configs = [OmegaConf.to_container(OmegaConf.load(tmp_path / root / "twin" / name / "config.yaml"))
                   for root in "ab"]
        assert [c.pop("runs_root") for c in configs] == [str(tmp_path / "a"), str(tmp_path / "b")]
        assert configs[0] == configs[1]


def test_a_sweep_and_a_study_report_the_same_failures_from_the_runs_own_records(tmp_path, cli):
    """Both runners learn how a job ended from its run directory (the record the trainer writes when
    it fails) and end with the same lines: here both seeds diverge at their second epoch."""
    from ilif.train.app import main as train_main

    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "twin.yaml").write_text(
        "# @package _global_\nexperiment_name: twin\n"
        "trainer: {epochs: 2, limit_train_batches: 4, limit_eval_batches: 1, progress: false}\n"
        "hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    diverge = ["schedule=step", "schedule.step_size=1", "schedule.gamma=1e30"]
    swept = cli(train_main, "-m", "--config-dir", str(tmp_path / "mine"), "experiment=twin", *diverge,
                f"runs_root={tmp_path / 'a'}")
    studied = cli(main, "--config-dir", str(tmp_path / "mine"), "twin", "--no-progress", f"--override=runs_root="
                  f"{tmp_path / 'b'}", *(f"--override={o}" for o in diverge))
    assert swept.returncode == studied.returncode == 1

    def ending(text: str, root: str, runner: str) -> list[str]:
        return sorted(line.replace(str(tmp_path / root), "R").replace(runner, "RUNNER")
                      for line in text.splitlines()[-3:])

    lines = ending(swept.stderr, "a", "sweep")
    assert lines == ending(studied.stderr, "b", "study") and lines[2] == "error: 2 run(s) of the RUNNER failed:"
    assert all(line.startswith("  R/twin/") and "non-finite loss" in line and line.endswith("(exit 3)")
               for line in lines[:2])


def test_a_studys_config_error_ends_before_torch_is_imported():
    script = ("import sys\nfrom ilif.study import main\ncode = main(sys.argv[1:])\n"
              "print('torch imported' if 'torch' in sys.modules else 'torch not imported', code)")
    for override in ("neuron.tau=0.5", "+model.widht=2", "surrogate.family=bogus"):
        proc = subprocess.run([sys.executable, "-c", script, "demo", "--dry-run", "--override", override],
                              capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip().splitlines()[-1] == "torch not imported 2", proc.stderr
        assert proc.stderr.startswith(f"error: {override.lstrip('+').split('=')[0]}"), proc.stderr


def test_sigterm_to_a_study_stops_its_runs_resumably_with_exit_75(tmp_path):
    """SIGTERM (a scheduler's stop) to the study itself: its busy workers stop their runs where they are
    (resumable), no further run starts, the counts come from the run directories, exit 75."""
    (tmp_path / "killed").touch()
    study = subprocess.Popen([sys.executable, "-m", "ilif.study", *SIX_RUNS[:-1], "1", "--override",
                              "trainer.epochs=50"], cwd=tmp_path, env=_env_with_fixtures(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "runs" / "demo").glob("*/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    study.send_signal(signal.SIGTERM)
    out, err = study.communicate(timeout=120)
    assert study.returncode == 75, err
    assert err.strip().splitlines()[-1].startswith("error: the study was interrupted; run the same command again")
    assert "0 trained, 0 already finished, 0 failed" in out
    (started,) = [d for d in (tmp_path / "runs" / "demo").iterdir() if (d / "last.pt").exists()]
    assert "interrupted by SIGTERM" in (started / "train.log").read_text()


def test_odd_epoch_times_in_any_record_never_stop_or_bend_the_estimate(tmp_path):
    odd = tmp_path / "runs" / "demo" / "seqdigits-lif-g9-s0-00000000"
    odd.mkdir(parents=True)
    for seconds in (5, ["a", "b"], [-1000], [1e308, 1e308]):
        (odd / "summary.json").write_text(json.dumps({"status": "finished", "final": {"epoch": 0},
                                                      "provenance": {"epoch_seconds": seconds}}))
        proc = _study(tmp_path, "--dry-run")
        assert proc.returncode == 0, proc.stderr
        relative = odd.relative_to(tmp_path) / "summary.json"
        assert f"{relative}: provenance.epoch_seconds" in proc.stderr  # named, and left out
        assert "estimate: 0 min (assumed for seqdigits (1 s per epoch on one GPU))" in proc.stdout


def test_a_study_stopped_by_ctrl_c_counts_the_runs_that_finished_from_their_directories(tmp_path, monkeypatch):
    """Ctrl-C can land after a run wrote its summary and before its answer was counted: the counts come
    from the run directories."""
    import ilif.study as study
    from ilif.grid import plan

    jobs = plan(["demo"], ["seed=0", "surrogate.gamma=1", f"runs_root={tmp_path / 'runs'}"])

    def finishes_then_interrupted(container, run_dir):
        Path(run_dir).mkdir(parents=True)
        (Path(run_dir) / "summary.json").write_text(json.dumps({"status": "finished", "final": {"epoch": 0}}))
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "_train_one", finishes_then_interrupted)
    outcome = study.run_jobs(jobs, progress=False, workers=1)
    assert (outcome["finished"], outcome["stopped"], len(jobs)) == (1, 130, 2)
