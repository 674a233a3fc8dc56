"""
Explaining a whole data set
===========================

:func:`~captum_uncertainty.attribute_dataset` runs an attribution method over every input of
a data set and writes each input's map, its total / aleatoric / epistemic uncertainty and the
predicted class to Parquet shards, which pandas, pyarrow and Ray read directly. The job is
resumable: run the same call again after an interruption and it only does what is missing.

This tutorial uses scikit-learn's 8x8 digits and a tiny ensemble, so it runs in seconds; see
:doc:`/dataset` for the details and for running the same job on a Ray cluster.
"""

# %%
# A tiny ensemble and the test digits
# -----------------------------------

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from torch.utils.data import TensorDataset

from captum_uncertainty import UABackprop, UncertaintyForward, attribute_dataset
from captum_uncertainty.data import load_digits, train_ensemble
from captum_uncertainty.dataset import read_manifest

data = load_digits(test_size=300, seed=0)
members = train_ensemble(n_members=3, data=data, epochs=8, seed=0, cache_dir=None, progress=False)
uf = UncertaintyForward(members, measure="epistemic")
test_set = TensorDataset(data.x_test, data.y_test)

# %%
# Attribute every test digit
# --------------------------
# Arguments after the named ones go to ``UABackprop.attribute`` on every batch. Each shard of
# 64 rows is written under a temporary name and renamed when complete.

out = Path(tempfile.mkdtemp()) / "digit_maps"
result = attribute_dataset(UABackprop(uf), test_set, out, batch_size=64, progress=False, path="inputgrad")
print(result)
print(sorted(path.name for path in out.iterdir()))

# %%
# Running the same call again finds every shard finished and does nothing; after an
# interruption it would attribute only the missing shards.

print(attribute_dataset(UABackprop(uf), test_set, out, batch_size=64, progress=False, path="inputgrad"))

# %%
# Read the results back with pandas
# ---------------------------------
# One row per digit. pandas returns each map flattened; the manifest has its shape.

frame = pd.read_parquet(out).sort_values("index")
manifest = read_manifest(out)
print(frame.drop(columns="attribution").head())
print("map shape:", manifest["map_shape"], "explainer:", manifest["explainer"], manifest["attribute_kwargs"])
labels = data.y_test.numpy()[frame["index"]]
print(
    f"accuracy {np.mean(frame['predicted'] == labels):.3f}; "
    f"mean epistemic uncertainty right {frame['epistemic'][frame['predicted'] == labels].mean():.3f}, "
    f"wrong {frame['epistemic'][frame['predicted'] != labels].mean():.3f} nats"
)

# %%
# The most uncertain digits and their maps
# ----------------------------------------
# UA-Backprop maps are non-negative and sum to the uncertainty they explain, so each map shows
# where the epistemic uncertainty of its digit sits.

top = frame.nlargest(6, "epistemic")
maps = np.stack(top["attribution"]).reshape(-1, *manifest["map_shape"])
fig, axes = plt.subplots(2, len(top), figsize=(2 * len(top), 4.2))
for column, (row, image_map) in enumerate(zip(top.itertuples(), maps)):
    axes[0, column].imshow(data.x_test[row.index, 0], cmap="gray")
    axes[0, column].set_title(f"#{row.index}: {labels[row.index]} -> {row.predicted}", fontsize=8)
    axes[1, column].imshow(image_map[0], cmap="inferno")
    axes[1, column].set_title(f"U_e = {row.epistemic:.2f}, sum = {image_map.sum():.2f}", fontsize=8)
for axis in axes.flat:
    axis.axis("off")
fig.tight_layout()
plt.show()
