"""Attribute every input of a data set and write the results as Parquet shards.

:func:`attribute_dataset` runs an attribution method over a torch ``Dataset``, a
``DataLoader`` or a Ray Dataset, one batch at a time, and writes per input its position, the
three uncertainties, the predicted class and the map to ``out/part-00000.parquet``,
``out/part-00001.parquet``, ... plus ``out/_manifest.json`` (the configuration). Captum's
``DataLoaderAttribution`` only aggregates over a loader; this keeps every input's result.

Layout and guarantees:

* shard ``k`` holds the rows ``[k * shard_size, (k + 1) * shard_size)`` ordered by ``index``;
  it is written under a hidden temporary name, fsync'd and renamed (``os.replace``), and the
  folder is fsync'd after the rename, so a reader never sees a partial shard, not even after a
  power cut (the manifest likewise);
* one run at a time: ``out/_lock`` (pid, host, start time) is taken atomically and removed when
  the call ends; a second call on the folder is refused, and the lock of a dead process of this
  host is taken over with a warning;
* with ``engine="ray"`` the workers write the shards (each unit of whole shards by the worker
  that attributed it); the driver receives small per-shard records, never the maps, and writes
  the manifest;
* a re-run of the same call skips the shards that exist, removes stale temporary files and
  ends with the files of an uninterrupted run; a folder made with another configuration or
  another posterior (the manifest's ``posterior_fingerprint``: its weights, seeds and masks), a
  finished shard whose inputs are not the current ones (each shard's schema metadata holds the
  hash of its inputs) and a non-empty folder without a manifest are refused, and a refused call
  changes no file;
* every batch is attributed under its own seed (from ``seed`` and the batch's position), so
  random methods (``NoiseTunnel``, ``Lime``, MC dropout) give the same maps on every run, on
  either engine and after a resume;
* the maps are ``arrow.fixed_shape_tensor`` columns: ``pyarrow`` and ``ray.data`` return
  arrays of the map's shape; ``pandas`` returns each map flattened (C order), to be reshaped
  with ``manifest["map_shape"]`` (see :func:`read_manifest`).

The manifest is called ``_manifest.json`` rather than ``manifest.json``: pandas and
``pyarrow.dataset`` read every file of a folder whose name does not start with ``_`` or ``.``
as Parquet and fail on a JSON file.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

from captum_uncertainty._validation import check_choice, check_int, check_positive_int
from captum_uncertainty.dataset._engines import ENGINES, Job, Target, import_ray, run_local, run_ray
from captum_uncertainty.dataset._explainers import check_attribute_kwargs, explained_forward, resolve_explainer
from captum_uncertainty.dataset._folder import acquire_lock, check_unlocked, release_lock
from captum_uncertainty.dataset._manifest import (
    MANIFEST,
    posterior_fingerprint,
    read_manifest,
    run_config,
    write_json,
)
from captum_uncertainty.dataset._shards import (
    ShardWriter,
    check_finished_inputs,
    finished_shards,
    import_pyarrow,
    known_layout,
    prepare_output,
    remove_temporaries,
    stored_input_hashes,
)
from captum_uncertainty.dataset._sources import DEFAULT_INPUTS_PER_BATCH, LoaderSource, Source, as_source

__all__ = ["DatasetResult", "ENGINES", "MANIFEST", "attribute_dataset", "read_manifest"]


class DatasetResult(NamedTuple):
    """What one :func:`~captum_uncertainty.attribute_dataset` call did.

    Args:
        out (Path): the output folder.
        num_inputs (int): rows in the whole data set (written now or before).
        shards_written (int): shards this call wrote.
        shards_skipped (int): shards that already existed (an earlier, interrupted run).
    """

    out: pathlib.Path
    num_inputs: int
    shards_written: int
    shards_skipped: int


def attribute_dataset(
    explainer: Any,
    data: Any,
    out: Union[str, pathlib.Path],
    *,
    batch_size: Optional[int] = None,
    engine: str = "local",
    shard_size: Optional[int] = None,
    concurrency: Optional[Union[int, Tuple[int, int]]] = None,
    num_gpus: Optional[float] = None,
    seed: int = 0,
    progress: bool = True,
    **attribute_kwargs: Any,
) -> DatasetResult:
    r"""Attribute the uncertainty of every input of a data set; write the results as Parquet shards.

    Per input, ``out`` gets one row with ``index`` (int64, the input's position in the data
    set), ``predicted`` (int64, the argmax of the posterior predictive; for a regressor's
    forward, :class:`~captum_uncertainty.Gaussian`, ``predicted_mean`` instead, float64, one
    ``predicted_mean_k`` per target for several), ``total``,
    ``aleatoric`` and ``epistemic`` (float64, as :meth:`UncertaintyForward.decompose
    <captum_uncertainty.UncertaintyForward.decompose>`), and the map in ``attribution`` (an
    ``arrow.fixed_shape_tensor`` column). If ``attribute`` returns a
    :class:`~captum_uncertainty.Decomposition` (``decompose=True``) the maps go to
    ``attribution_total``, ``attribution_aleatoric`` and ``attribution_epistemic``; if it
    returns ``(maps, delta)`` (``return_convergence_delta=True``) the delta goes to ``delta``.
    Every public attribution class runs: an
    :class:`~captum_uncertainty.ExplanationDistribution` writes ``attribution_mean``,
    ``attribution_std``, ``attribution_cv`` and the explained ``target`` (not the per-sample
    maps); a :class:`~captum_uncertainty.CounterfactualPathIG` with ``return_fiducial=True``
    adds ``fiducial_uncertainty`` and ``fiducial_class``. ``return_counterfactuals=True``
    (:class:`~captum_uncertainty.CLUE`, :class:`~captum_uncertainty.DeltaCLUE`) is refused before
    anything is written: counterfactual images and codes are not per-input maps.

    ``out`` becomes a Parquet data set that ``pandas.read_parquet(out)``,
    ``pyarrow.dataset.dataset(out)`` and ``ray.data.read_parquet(out)`` read directly: shards
    ``part-00000.parquet``, ``part-00001.parquet``, ... (shard ``k`` holds rows
    ``[k * shard_size, (k + 1) * shard_size)``) and ``_manifest.json``, the configuration
    (see :func:`~captum_uncertainty.dataset.read_manifest`). pyarrow and Ray return the maps with
    their shape, pandas flattened (reshape with ``manifest["map_shape"]``).

    The job is resumable: each shard is written under a hidden temporary name and renamed, so a
    shard either exists whole or not at all. After an exception or a killed process, the same
    call skips the finished shards and ends with the files of an uninterrupted run. ``out``
    written with another configuration (explainer class, measure, number of samples,
    ``attribute_kwargs``, batch or shard size, seed, number of inputs, library version) is
    refused, as is a non-empty folder without a manifest. So is ``out`` written with another
    posterior: the manifest records ``Posterior.fingerprint()`` (every parameter and buffer of the
    sample modules, seeds and masks, hashed once per call; a ``SampleCallable`` without
    ``modules`` needs ``fingerprint=`` for its run to be continued). And so is a finished shard
    whose inputs changed: each shard stores the sha256 of its input rows, and before it is
    skipped the current rows are read and hashed (a map-style ``Dataset`` by index, a
    ``DataLoader`` or Ray Dataset streamed up to the last finished shard). A refused call
    changes no file. Shards are written by a background thread while the next batches are
    attributed; memory holds one batch of inputs, the shard being filled and the shard being
    written, whatever the size of the data set. Every file is fsync'd before its rename and the
    folder after it (skipped where a directory cannot be fsync'd, e.g. on Windows).

    One run at a time writes a folder: the call holds ``out/_lock`` (its pid, host and start
    time, created with ``O_CREAT | O_EXCL``) from its checks to its last write and removes it
    at the end, after errors and Ctrl-C too. Another call on the folder meanwhile raises
    ``ValueError`` naming the holder; the lock of a process of this host that no longer runs is
    taken over with a ``RuntimeWarning``; one of another host is not (delete it by hand once
    that run is known to be gone).

    With ``engine="ray"`` the rows are cut into work units of whole shards (the least common
    multiple of batch and shard size, so that each batch is attributed once); each actor
    attributes its units' batches in order and writes their shards itself. The driver collects
    a few hundred bytes per shard (number, rows, input hash, columns), never the maps, and
    writes the manifest.

    Args:
        explainer (object or callable): an attribution object of this package or of Captum whose
            forward function is an :class:`~captum_uncertainty.UncertaintyForward`
            (``forward_func``, or ``attribution_method.forward_func`` for
            :class:`~captum.attr.NoiseTunnel`), or a zero-argument factory returning one (each
            Ray worker then builds its own).
        data (object): a torch ``Dataset`` (items are tensors or ``(x, y, ...)`` tuples whose
            first element is the input), a ``DataLoader`` (its batches, in its order), or a
            ``ray.data.Dataset`` (column ``"x"`` or its only tensor column).
        out (str or Path): output folder, created if missing.
        batch_size (int, optional): inputs per ``attribute`` call. Default: 64, or a
            ``DataLoader``'s own batch size (another value then raises ``ValueError``).
        engine (str): ``"local"`` (this process) or ``"ray"`` (Ray Data actors, which write the
            same files themselves: ``out`` must then be reachable from every worker under the
            same path). Default: ``"local"``.
        shard_size (int, optional): rows per Parquet file. Default: the batch size.
        concurrency (int or tuple, optional): Ray actors (a number, or ``(min, max)`` to
            autoscale), passed to Ray Data as an ``ActorPoolStrategy``.
            Default: autoscaling up to one per CPU (per GPU with ``num_gpus``) of the cluster.
        num_gpus (float, optional): GPUs per Ray actor.
        seed (int): base seed; batch ``b`` runs under a seed made of ``(seed, b)``, so random
            methods give identical maps on every run. Default: 0.
        progress (bool): show a tqdm progress bar. Default: ``True``.
        **attribute_kwargs: passed to ``explainer.attribute`` on every batch (e.g.
            ``path="inputgrad"``, ``decompose=True``); recorded in the manifest (tensors by
            shape, dtype and sha256).

    Returns:
        DatasetResult: ``(out, num_inputs, shards_written, shards_skipped)``.

    Examples::

        >>> uf = UncertaintyForward(models, measure="epistemic")
        >>> result = attribute_dataset(UABackprop(uf), TensorDataset(x), "out/maps", path="inputgrad")
        >>> frame = pandas.read_parquet("out/maps")      # index, predicted, total, ..., attribution
        >>> attribute_dataset(lambda: UABackprop(load_posterior()), dataset, "out/maps",
        ...                   engine="ray", concurrency=8, path="inputgrad")
    """
    check_choice(engine, "engine", ENGINES)
    if engine == "local" and (concurrency is not None or num_gpus is not None):
        raise ValueError("concurrency and num_gpus apply to engine='ray' only")
    check_int(seed, "seed")
    import_pyarrow()
    if engine == "ray":
        import_ray()
    resolved, factory = resolve_explainer(explainer)
    check_attribute_kwargs(resolved, attribute_kwargs)  # before `out` is touched
    forward = explained_forward(resolved)
    source = as_source(data, batch_size)
    effective_batch = source.batch_size
    if engine == "ray" and isinstance(source, LoaderSource):
        source = source.as_map_source()  # the workers read by index; refused here, before out is touched
    batch = effective_batch or DEFAULT_INPUTS_PER_BATCH
    shard_size = check_positive_int(batch if shard_size is None else shard_size, "shard_size")
    folder = pathlib.Path(out)
    fingerprint, unfingerprinted = posterior_fingerprint(forward)
    config = run_config(
        resolved, forward, attribute_kwargs, effective_batch, shard_size, seed, source.num_inputs, fingerprint
    )
    if folder.is_dir():
        check_unlocked(folder)  # a concurrent run is named before anything else is looked at
    prepare_output(folder, config, unfingerprinted)  # refuses a foreign folder before a lock is put into it
    # the local engine uses the explainer built here; Ray workers call the factory, or unpickle the explainer
    job = Job(resolved if engine == "local" or factory is None else None, factory, attribute_kwargs, seed, batch)
    token = acquire_lock(folder)
    try:
        return _attribute_locked(
            job, source, folder, token, config, unfingerprinted, engine, concurrency, num_gpus, progress
        )
    finally:
        release_lock(folder, token)


def _attribute_locked(
    job: Job,
    source: Source,
    folder: pathlib.Path,
    token: str,
    config: Dict[str, Any],
    unfingerprinted: Optional[str],
    engine: str,
    concurrency: Optional[Union[int, Tuple[int, int]]],
    num_gpus: Optional[float],
    progress: bool,
) -> DatasetResult:
    """The run, once this process holds ``folder``'s lock (its content: ``token``)."""
    from tqdm.auto import tqdm

    shard_size = int(config["shard_size"])
    stored = prepare_output(folder, config, unfingerprinted)  # again: the folder may have changed before the lock
    finished = finished_shards(folder)
    check_finished_inputs(source, folder, shard_size, stored_input_hashes(folder, finished))
    remove_temporaries(folder)
    layout = known_layout(folder, stored, finished)
    with tqdm(total=source.num_inputs, unit="input", desc="attribute_dataset", disable=not progress) as bar:
        if engine == "local":
            writer = ShardWriter(folder, shard_size, source.num_inputs, finished, layout, manifest=config)
            try:
                num_inputs = run_local(job, source, writer, bar)
                if num_inputs == 0:
                    raise ValueError("data is empty: there is nothing to attribute")
                if source.num_inputs is not None and num_inputs != source.num_inputs:
                    raise ValueError(f"data yielded {num_inputs} inputs but has length {source.num_inputs}")
                writer.close(num_inputs)
            finally:
                writer.stop()
            layout, written = writer.layout, writer.written
        else:
            if stored is None:  # before any worker writes a shard: a re-run then finds a manifest
                write_json(folder / MANIFEST, {**config, "complete": False})
            learnt: Dict[str, Any] = {}

            def on_layout(found: Dict[str, Any]) -> None:
                """The workers' columns, new to the folder: into the manifest as soon as the first shard is there."""
                learnt.update(found)
                write_json(folder / MANIFEST, {**config, **found, "complete": False})

            target = Target(str(folder), shard_size, int(source.num_inputs or 0), frozenset(finished), layout, token)
            num_inputs, records = run_ray(job, source, target, bar, concurrency, num_gpus, progress, on_layout)
            layout, written = layout or learnt, len(records)
    num_shards = math.ceil(num_inputs / shard_size)
    missing = sorted(set(range(num_shards)) - finished_shards(folder))
    if missing:
        raise RuntimeError(f"shards {missing[:5]} of {folder} were not written")
    final = {**config, **(layout or {}), "num_inputs": num_inputs, "num_shards": num_shards, "complete": True}
    write_json(folder / MANIFEST, final)
    return DatasetResult(folder, num_inputs, written, num_shards - written)
