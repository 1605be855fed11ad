import logging
import os
import subprocess
import sys

import pytest
import torch

os.environ["WANDB_MODE"] = "disabled"  # the suite never reaches the network (a test may choose offline)
for _name in ("WANDB_API_KEY", "RANK", "WORLD_SIZE", "LOCAL_RANK"):  # nor a wandb account or a launcher's group
    os.environ.pop(_name, None)
if os.environ.get("ILIF_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton kernels on CPU tensors (before ilif is imported)


@pytest.fixture(autouse=True)
def _isolated():
    """Each test starts from seed 0, and what a run in this process sets for itself (deterministic
    algorithms, their cuBLAS setting, quiet wandb) is undone afterwards."""
    torch.manual_seed(0)
    deterministic = torch.are_deterministic_algorithms_enabled()
    saved = {name: os.environ.get(name) for name in ("CUBLAS_WORKSPACE_CONFIG", "WANDB_SILENT")}
    yield
    from ilif import conf

    conf.EXTRA_CONFIG_DIRS.clear()  # an in-process ilif-study --config-dir leaves its folders for the next command
    torch.use_deterministic_algorithms(deterministic)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def trainer_cfg():
    """The config keys a :class:`ilif.train.loop.Trainer` reads to save and resume a checkpoint (for
    tests that drive one with parts of their own, whose ``data`` has 16 training samples)."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"trainer": {"epochs": 10, "batch_size": 4, "drop_last": False, "compile": False,
                                         "limit_train_batches": 0}})


@pytest.fixture
def train_run(tmp_path):
    """``train_run(*overrides)``: compose, validate and train one run in this process under
    ``tmp_path/runs`` (for tests where a subprocess is not what is tested). Returns (run_dir, summary)."""
    from ilif.conf import compose_config
    from ilif.grid import run_dir_of
    from ilif.train.config import validate
    from ilif.train.loop import train

    def run(*overrides):
        cfg = compose_config([f"runs_root={tmp_path / 'runs'}", *overrides])
        validate(cfg)
        run_dir = run_dir_of(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, train(cfg, run_dir)

    return run


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``cli(main, *argv, cwd=tmp_path)``: a console entry point's ``main()`` run in this process as its
    command would run in ``cwd`` (for tests where a new process is not what is tested); a
    CompletedProcess with the exit code and the captured stdout and stderr. Hydra's global state and
    the logging it configures are put back after each call."""
    from hydra.core.global_hydra import GlobalHydra

    root = logging.getLogger()

    def run(main, *argv, cwd=None):
        monkeypatch.chdir(cwd or tmp_path)
        monkeypatch.setattr(sys, "argv", [main.__module__, *argv])
        handlers, levels = root.handlers[:], {name: logging.getLogger(name).level
                                              for name in ("", "ilif", "ilif.train")}
        capsys.readouterr()
        try:
            code = main()
        except SystemExit as stop:
            code = stop.code
        finally:  # Hydra configures logging for its jobs: give the test its own handlers back
            GlobalHydra.instance().clear()
            for handler in set(root.handlers) - set(handlers):
                handler.close()
            root.handlers[:] = handlers
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
        out, err = capsys.readouterr()
        if isinstance(code, str):  # sys.exit("message"): printed to stderr, exit status 1
            code, err = 1, err + code + "\n"
        return subprocess.CompletedProcess([main.__module__, *argv], code or 0, out, err)

    return run
