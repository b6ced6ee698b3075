"""kill -9 at random points of a training, ten times, each followed by --resume: the run ends as if never stopped."""

import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import base_config, make_frames

from tgatunet.infer.trained import load_trained
from tgatunet.infer.rundir import RunDir

EPOCHS = 100


def _train(config, run_dir, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "tgatunet", "train", "--config", str(config), "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*args, *(["--resume"] if resume else [])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _val_losses(run_dir) -> pd.Series:
    log = pd.read_csv(run_dir / "logs" / "csv" / "metrics.csv")
    rows = log.dropna(subset=["val/loss"])
    return rows.set_index("epoch")["val/loss"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_ten_kills_and_resumes_end_where_an_uninterrupted_run_ends(tmp_path):
    paths = {}
    for name, frame in make_frames(blocks=12, rows=60).items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**base_config(paths), "epochs": EPOCHS, "patience": EPOCHS, "batch_size": 4}))

    whole = tmp_path / "whole"
    done = _train(config, whole, resume=False)
    assert done.wait(timeout=600) == 0, done.stderr.read().decode()[-2000:]

    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "last.ckpt"
    rng = random.Random(0)
    under_way = 0
    for attempt in range(10):
        started = checkpoint.is_file()  # else a crashed first start: start it again
        before = checkpoint.stat().st_mtime_ns if started else None
        process = _train(config, killed, resume=started)
        if attempt % 2:  # at any moment, start-up included
            time.sleep(rng.uniform(0.5, 5.0))
        else:  # once this start has finished an epoch, part-way through the next
            deadline = time.monotonic() + 120
            while process.poll() is None and time.monotonic() < deadline:
                if checkpoint.is_file() and checkpoint.stat().st_mtime_ns != before:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            under_way += attempt % 2 == 0
        process.wait(timeout=60)
        assert process.returncode in (0, -signal.SIGKILL), process.stderr.read().decode()[-2000:]
    last = _train(config, killed, resume=checkpoint.is_file())
    assert last.wait(timeout=600) == 0, last.stderr.read().decode()[-2000:]

    assert under_way == 5  # half the kills hit a training under way, whatever the machine's speed
    load_trained(RunDir(killed))  # its checkpoints load
    losses, reference = _val_losses(killed), _val_losses(whole)
    assert sorted(losses.index) == list(range(EPOCHS))  # every epoch in the log, once
    print(f"final val loss: {losses[EPOCHS - 1]:.6f} killed and resumed, {reference[EPOCHS - 1]:.6f} uninterrupted")
    assert abs(losses[EPOCHS - 1] - reference[EPOCHS - 1]) <= 0.02 * reference[EPOCHS - 1]
