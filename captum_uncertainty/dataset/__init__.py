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
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from captum_uncertainty._validation import check_choice, check_int, check_positive_int
from captum_uncertainty.dataset._engines import ENGINES, SUPPORTED_ENGINES, Job, Target, import_ray, run_local, run_ray
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

__all__ = ["DatasetResult", "ENGINES", "MANIFEST", "SUPPORTED_ENGINES", "attribute_dataset", "read_manifest"]


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

    @classmethod
    def load(cls, out: Union[str, pathlib.Path]) -> "DatasetResult":
        """The result of a finished :func:`~captum_uncertainty.attribute_dataset` run, from its folder.

        Reads the folder's manifest (:func:`~captum_uncertainty.dataset.read_manifest`); nothing
        is attributed or written. ``shards_written`` is 0 and ``shards_skipped`` the number of
        shards, as a re-run of the finished call would report.

        Args:
            out (str or Path): a folder written by ``attribute_dataset`` (or by
                ``python -m captum_uncertainty attribute``).

        Returns:
            DatasetResult: ``(out, num_inputs, 0, num_shards)``.

        Raises:
            ValueError: ``out`` has no manifest of ``attribute_dataset``, or its run has not
                finished (re-run the same call to complete it).

        Examples::

            >>> result = DatasetResult.load("out/maps")
            >>> result.num_inputs
            10000
            >>> frame = result.to_pandas()
        """
        folder = pathlib.Path(out)
        manifest = read_manifest(folder)
        if not manifest.get("complete"):
            raise ValueError(
                f"the run in {folder} has not finished ({len(finished_shards(folder))} shards there): re-run the same "
                "attribute_dataset call (or command) to complete it"
            )
        return cls(folder, int(manifest["num_inputs"]), 0, int(manifest["num_shards"]))

    def annotate(
        self,
        ids: Optional[Sequence[Any]] = None,
        labels: Optional[Sequence[Any]] = None,
        feature_names: Optional[Sequence[str]] = None,
    ) -> None:
        """Store the inputs' ids, labels and feature names beside the shards, for :meth:`to_pandas`.

        Writes ``out/_inputs.parquet`` (columns ``index``, then ``id`` and ``label``, those given)
        and ``out/_features.json`` (``{"feature_names": [...]}``), each durably and atomically.
        Their names start with ``_`` so that ``pandas.read_parquet(out)`` and
        ``pyarrow.dataset.dataset(out)`` still read the shards alone. A file whose values are
        not given is removed, so the folder describes the last call. The attribution run itself
        is not changed: a resumed run keeps its shards whatever is annotated.

        Args:
            ids (sequence, optional): one identifier per input, in the data set's order.
            labels (sequence, optional): one label per input, in the data set's order.
            feature_names (sequence of str, optional): the names of the entries of a
                one-dimensional map (tabular features), in order.

        Raises:
            ValueError: ``ids`` or ``labels`` do not hold one value per input, or cannot be
                stored in a Parquet column (values of mixed types).

        Examples::

            >>> result = attribute_dataset(explainer, TensorDataset(x), "out/table")
            >>> result.annotate(ids=frame["patient"].tolist(), labels=frame["outcome"].tolist(),
            ...                 feature_names=["age", "bmi", "glucose"])
            >>> result.to_pandas().columns[:3].tolist()
            ['index', 'id', 'label']
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from captum_uncertainty.dataset._folder import atomic_write

        folder = pathlib.Path(self.out)
        inputs_file, features_file = folder / "_inputs.parquet", folder / "_features.json"
        columns: Dict[str, Any] = {"index": pa.array(range(self.num_inputs), type=pa.int64())}
        for name, values in (("id", ids), ("label", labels)):
            if values is None:
                continue
            values = list(values)
            if len(values) != self.num_inputs:
                raise ValueError(f"{name}s hold {len(values)} values for {self.num_inputs} inputs")
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                raise ValueError(f"{name}s cannot be stored in a Parquet column ({error})") from None
        if len(columns) > 1:
            table = pa.table(columns)
            atomic_write(inputs_file, lambda handle: pq.write_table(table, handle))
        else:
            inputs_file.unlink(missing_ok=True)
        if feature_names is not None:
            write_json(features_file, {"feature_names": [str(name) for name in feature_names]})
        else:
            features_file.unlink(missing_ok=True)

    def to_pandas(self) -> Any:
        """Every shard of ``out`` in one ``pandas.DataFrame``, one row per input, sorted by ``index``.

        One-dimensional maps (tabular features: ``map_shape`` ``[F]``) become one column per
        feature, named after the feature names stored by :meth:`annotate` (else
        ``feature_0``, ``feature_1``, ...); with several map columns (``decompose=True``,
        :class:`~captum_uncertainty.ExplanationDistribution`) or a feature name that is already a
        column, the names are prefixed with the map column (``attribution_total_age``). Maps of
        more dimensions (images) stay one column holding an array of the map's shape per row.
        The ids and labels stored by :meth:`annotate` come right after ``index``.

        Returns:
            pandas.DataFrame: ``index``, [``id``, ``label``,] the uncertainties and the
            prediction, the per-input numbers, then the maps.

        Raises:
            ImportError: pandas is not installed.

        Examples::

            >>> frame = DatasetResult.load("out/table").to_pandas()
            >>> frame[["id", "label", "epistemic", "age", "bmi"]].head()
            >>> images = DatasetResult.load("out/maps").to_pandas()
            >>> images["attribution"][0].shape
            (1, 28, 28)
        """
        try:
            import pandas as pd
        except ImportError as error:
            raise ImportError(
                "DatasetResult.to_pandas needs pandas: pip install captum-uncertainty[dataset]"
            ) from error
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = pathlib.Path(self.out)
        manifest = read_manifest(folder)
        files = sorted(folder.glob("part-*.parquet"))  # the finished shards (temporaries are hidden files)
        if not files:
            raise ValueError(f"out {folder} holds no shards")
        table = pa.concat_tables([pq.read_table(path) for path in files])
        order = np.argsort(table.column("index").to_numpy(), kind="stable")
        table = table.take(pa.array(order))
        map_names = [
            name for name in table.column_names if isinstance(table.schema.field(name).type, pa.FixedShapeTensorType)
        ]
        maps = {name: table.column(name).combine_chunks().to_numpy_ndarray() for name in map_names}
        frame = table.drop_columns(map_names).to_pandas()
        inputs_file = folder / "_inputs.parquet"
        if inputs_file.exists():
            carried = pd.read_parquet(inputs_file)
            frame = frame.merge(carried, on="index", how="left", sort=False)
            frame = frame[
                ["index", *carried.columns.drop("index"), *(c for c in frame.columns if c not in carried.columns)]
            ]
        shape = list(manifest.get("map_shape") or [])
        if maps and len(shape) == 1:
            names = self._feature_names(int(shape[0]))
            prefixed = len(maps) > 1 or bool(set(names) & set(frame.columns)) or len(set(names)) < len(names)
            for column, values in maps.items():
                for position, name in enumerate(names):
                    frame[f"{column}_{name}" if prefixed else name] = values[:, position]
        else:
            for column, values in maps.items():
                frame[column] = list(values)
        return frame.reset_index(drop=True)

    def to_polars(self) -> Any:
        """:meth:`to_pandas` as a ``polars.DataFrame`` (``polars.from_pandas``).

        Returns:
            polars.DataFrame: the frame of :meth:`to_pandas`.

        Raises:
            ImportError: polars is not installed.

        Examples::

            >>> frame = DatasetResult.load("out/table").to_polars()
            >>> frame.sort("epistemic", descending=True).head()
        """
        try:
            import polars
        except ImportError as error:
            raise ImportError("DatasetResult.to_polars needs polars: pip install polars") from error
        return polars.from_pandas(self.to_pandas())

    def _feature_names(self, count: int) -> List[str]:
        """The names :meth:`annotate` stored for ``count`` features, else ``feature_0``, ``feature_1``, ..."""
        import json

        path = pathlib.Path(self.out) / "_features.json"
        if path.exists():
            names = json.loads(path.read_text(encoding="utf-8")).get("feature_names")
            if isinstance(names, list) and len(names) == count:
                return [str(name) for name in names]
        return [f"feature_{position}" for position in range(count)]


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
    ``[k * shard_size, (k + 1) * shard_size)``) and ``_manifest.json``, the configuration and
    the ``units`` of the uncertainties and maps (``"nats"``, or ``"squared output units"`` for
    a Gaussian regressor; see :func:`~captum_uncertainty.dataset.read_manifest`). pyarrow and Ray return the maps with
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
            first element is the input), a ``DataLoader`` (its batches, in its order), a
            ``ray.data.Dataset`` (column ``"x"`` or its only tensor column), or a list of
            mappings of tensors. An item's input may be a mapping of tensors, one row of a
            tokenizer's output (``{"input_ids": (L,), "attention_mask": (L,)}``, every row padded
            to one length): a batch of them is one mapping of ``(B, L)`` tensors, given to
            ``attribute`` as ``inputs`` (e.g.
            :class:`~captum_uncertainty.LayerUncertaintyIntegratedGradients`, which attributes
            its first entry and passes the others to the members), and every tensor of it is
            hashed for the resume checks. Rows whose names, shapes or dtypes differ, and entries
            that are not tensors, are refused.
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
            ``path="inputgrad"``, ``decompose=True``, a number as ``baselines``); recorded in the
            manifest (tensors by shape, dtype and sha256).

    Returns:
        DatasetResult: ``(out, num_inputs, shards_written, shards_skipped)``.

    Examples::

        >>> uf = UncertaintyForward(models, measure="epistemic")
        >>> result = attribute_dataset(UABackprop(uf), TensorDataset(x), "out/maps", path="inputgrad")
        >>> frame = pandas.read_parquet("out/maps")      # index, predicted, total, ..., attribution
        >>> attribute_dataset(lambda: UABackprop(load_posterior()), dataset, "out/maps",
        ...                   engine="ray", concurrency=8, path="inputgrad")
    """
    check_choice(engine, "engine", SUPPORTED_ENGINES)
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
