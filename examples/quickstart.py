"""Quickstart: train from DataFrames, then complete and classify recordings the model never saw.

The bundled BasicMotions data (a smart watch's accelerometer and gyroscope, 4
activities) as two sources: ``watch_full`` has both sensors, ``watch_acc`` only
the accelerometer. The model trains on the archive's training recordings; the
``watch_acc`` test recordings, with their activity label removed, play new
recordings: their gyroscope is completed and their activity predicted.

Run it: ``.venv/bin/python examples/quickstart.py`` (about a minute on a laptop CPU).
"""

import tgatunet
from tgatunet.data.datasets import load_basic_motions

frames = load_basic_motions()
train = {name: frame[frame["split"] == "train"] for name, frame in frames.items()}
test = frames["watch_acc"][frames["watch_acc"]["split"] == "test"]
new = test.drop(columns=["activity"])  # a recording as a user has it: no gyroscope, no label

gyroscope = ["gyr_x", "gyr_y", "gyr_z"]
run = tgatunet.train(
    {
        "common_modalities": ["acc_x", "acc_y", "acc_z"],
        "sources": [
            {"name": "watch_full", "frame": train["watch_full"], "have": gyroscope},
            {"name": "watch_acc", "frame": train["watch_acc"], "need": gyroscope},
        ],
        "block_col": "recording",
        "label_col": "activity",
        "window_size": 50,
        "step_size": 5,
        "epochs": 20,
        "seed": 7,
        "recon_loss": "l1",
    },
    run_dir="runs/quickstart",
    overwrite=True,
    progress_bar=False,
)
print(run)

completed = run.complete(new)  # the gyroscope filled, flagged in gyr_*_imputed; per-row class probabilities
print(completed[["recording", "time_s", "acc_x", "gyr_x", "gyr_x_imputed", "predicted"]].head(3).to_string())

windows = run.predict(new)  # one row per window of 50 steps
print(windows.head(3).to_string())

# Per recording: the most frequent window class against the true activity.
votes = windows.groupby("block")["predicted"].agg(lambda p: p.mode()[0])
truth = test.groupby("recording")["activity"].first()
print(f"recordings classified right: {(votes == truth[votes.index]).mean():.3f} of {len(votes)}")
