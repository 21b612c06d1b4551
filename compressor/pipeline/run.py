"""``compress``: the whole job, stage by stage, resumable, never leaving a half-written OUTDIR.

Everything is written into ``OUTDIR.partial/`` first; each stage leaves a file that marks it
done (``stages.TABLE``), so ``--resume`` skips finished stages and continues an interrupted
training stage at the step it reached. Only a complete run is renamed to ``OUTDIR``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from compressor.config import changed_settings, to_dict, write_json
from compressor.errors import CompressorError
from compressor.formats import Report
from compressor.lock import exclusive
from compressor.pipeline.config import CompressConfig
from compressor.pipeline.report import data_line
from compressor.pipeline.stages import STAGES, TABLE
from compressor.pipeline.state import Run
from compressor.utils import remove_temporaries


def partial_dir(outdir: Path) -> Path:
    return outdir.with_name(outdir.name + ".partial")


def compress(
    model_path: Path | str,
    outdir: Path,
    config: CompressConfig,
    *,
    arch: str | None = None,
    weights: str | None = None,
    reference: Path | None = None,
    trust_pickle: bool = False,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    stop_after_steps: int | None = None,
) -> Report:
    """Run the whole job and return the report (also written as ``report.json``).

    ``model_path`` is a model file, or an architecture name with ``weights`` (a state_dict
    file, ``DEFAULT`` or a torchvision weights name). A start whose classifier does not fit
    the data (or has none) gets a new head, and the epochs ``config.unset`` leaves open
    become ``NEW_HEAD_EPOCHS``. ``reference``: a dense model trained on the same data, which
    the report compares the compressed model with.

    Raises ``CompressorError`` for bad inputs, an existing OUTDIR without ``force``, or a
    resumption whose settings differ; ``TrainingInterrupted`` after an interrupt (the
    partial folder is kept for ``resume``).
    """
    from compressor import distributed
    from compressor.data import default_workers, describe
    from compressor.operations import start_lines
    from compressor.utils import resolve_device

    work = partial_dir(outdir)
    method = _check_arguments(outdir, work, config, resume=resume, force=force, reference=reference)
    main = distributed.is_main()  # under torchrun, rank 0 writes and runs the serial stages
    # everything a user can get wrong is checked before anything is written
    loaded, bundle, start, config, dense_reference = _load_inputs(
        model_path,
        config,
        arch=arch,
        weights=weights,
        reference=reference,
        trust_pickle=trust_pickle,
    )
    resolved = _settings(
        model_path, config, method, arch=arch, weights=weights, reference=reference
    )
    _check_outdir(outdir)
    # one writer per OUTDIR (rank 0 writes under torchrun); a dead run's lock is taken over
    with exclusive(outdir) if main else contextlib.nullcontext():
        _open_work(work, resolved, resume=resume, main=main)
        loaded.preprocess = bundle.preprocess
        if loaded.class_names is None:
            loaded.class_names = bundle.class_names
        run = Run(
            model_path=Path(model_path),
            outdir=outdir,
            work=work,
            config=config,
            loaded=loaded,
            bundle=bundle,
            device=resolve_device(config.regularize.device),
            workers=default_workers(bundle) if config.data.workers is None else config.data.workers,
            progress=progress,
            log=log,
            stages=_stage_times(work),
            order=STAGES,
            stop_after_steps=stop_after_steps,
            origin=start,
            reference=dense_reference,
            reference_path=None if reference is None else Path(reference),
        )
        for line in start_lines(start, len(bundle.class_names)):
            log(line)
        log(f"data: {data_line(describe(bundle))}")
        report = _run_stages(run, main)
        if main:
            _finish(run)
    return report


def _settings(
    model_path: Path | str,
    config: CompressConfig,
    method: Any,
    *,
    arch: str | None,
    weights: str | None,
    reference: Path | None,
) -> dict[str, Any]:
    """What config.json records of a run: a resumed run must have the same."""
    return {
        "model": str(model_path),
        "arch": arch,
        "weights": weights,
        "reference": None if reference is None else str(reference),
        "method": config.method,
        "hyperparameters": dataclasses.asdict(method.params),
        **{k: v for k, v in to_dict(config).items() if k not in ("method", "method_options")},
    }


def _check_arguments(
    outdir: Path,
    work: Path,
    config: CompressConfig,
    *,
    resume: bool,
    force: bool,
    reference: Path | None,
) -> Any:
    """The method (its name and options checked), once OUTDIR, the resumption and the
    reference are known to be possible."""
    from compressor.methods import get_method

    if outdir.exists() and not force:
        raise CompressorError(
            f"{outdir} exists; pass --force to replace it (force=True from Python)"
        )
    method = get_method(config.method, config.method_options)  # validates name and options
    if resume and not (work / "config.json").is_file():
        raise CompressorError(f"nothing to resume: {work} does not exist")
    if reference is not None and not Path(reference).is_file():
        raise CompressorError(f"--reference {reference}: no such file")
    return method


def _load_inputs(
    model_path: Path | str,
    config: CompressConfig,
    *,
    arch: str | None,
    weights: str | None,
    reference: Path | None,
    trust_pickle: bool,
) -> tuple[Any, Any, Any, CompressConfig, Any]:
    """The input model, the data, the start (pretrained weights or a new head, else None),
    the config for that start, and the dense reference (None without one)."""
    from compressor.operations import load_start

    loaded, bundle, start = load_start(
        model_path,
        config.data,
        arch=arch,
        trust_pickle=trust_pickle,
        weights=weights,
        seed=config.regularize.seed,
    )
    if start is not None and start.head_replaced:
        config = config.for_new_head()
    else:
        config = config.for_trained()
    dense_reference = None
    if reference is not None:
        from compressor.reference import load_reference

        dense_reference = load_reference(
            Path(reference), bundle, arch=loaded.arch, trust_pickle=trust_pickle
        )
    return loaded, bundle, start, config, dense_reference


def _stage_times(work: Path) -> dict[str, float]:
    """The seconds each finished stage took (kept across --resume)."""
    path = work / "stages.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _open_work(work: Path, resolved: dict[str, Any], *, resume: bool, main: bool) -> None:
    """A resumed run must have the settings it started with; a new one starts an empty
    ``work`` folder holding them (rank 0 writes, every rank waits for it)."""
    from compressor import distributed

    if resume:
        diff = changed_settings(json.loads((work / "config.json").read_text()), resolved)
        if diff:
            raise CompressorError(
                f"cannot resume {work} with different settings ({', '.join(diff)})"
            )
        if main:
            remove_temporaries(work)  # what the interrupted run was writing
    elif main:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        write_json(work / "config.json", resolved)
    distributed.barrier()


def _run_stages(run: Run, main: bool) -> Report:
    """Every stage not finished yet, then the report ({} on the other ranks). A failure
    after a stage finished keeps ``work`` for ``--resume`` and says so."""
    from compressor import distributed
    from compressor.training import TrainingInterrupted

    work = run.work
    *steps, report = TABLE
    # after each stage before the last parallel one, every rank waits for its files; the
    # stages after it are rank 0's alone
    last = max(i for i, stage in enumerate(TABLE) if stage.parallel)
    try:
        for i, stage in enumerate(steps):
            if not main and not stage.parallel:
                if i > last:  # the rest is rank 0's alone, and so is the report
                    return cast(Report, {})
                distributed.barrier()  # wait for rank 0's stage and its files
                continue
            if not (work / stage.done).is_file():
                stage.function(run)
            if distributed.active() and i < last:
                distributed.barrier()
        return report.function(run)
    except TrainingInterrupted:  # its message says how to resume
        raise
    except BaseException as e:
        if not main:
            raise
        if not _has_progress(work):
            shutil.rmtree(work, ignore_errors=True)  # nothing worth resuming: leave nothing
            raise
        if isinstance(e, CompressorError):
            raise CompressorError(
                f"{e} ({work} keeps the finished stages: fix the cause and rerun with --resume)"
            ) from e
        raise


def _check_outdir(outdir: Path) -> None:
    """OUTDIR can be created: its nearest existing parent is a writable folder."""
    parent = outdir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CompressorError(f"cannot create {outdir}: {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise CompressorError(f"cannot create {outdir}: {parent} is not writable")


def _has_progress(work: Path) -> bool:
    """Whether the partial folder holds training worth resuming."""
    return any(
        (work / name).exists()
        for stage in TABLE
        if stage.resume is not None
        for name in (stage.resume, stage.done)
    )


def _finish(run: Run) -> None:
    """Only a complete run becomes OUTDIR; the intermediate checkpoints go."""
    work, outdir = run.work, run.outdir
    remove_temporaries(work)  # no final folder ever holds a temporary file
    (work / "stages.json").unlink(missing_ok=True)  # Run.done's record of the stage times
    for stage in TABLE:
        for leftover in (stage.resume, *stage.scratch):
            if leftover is not None:
                (work / leftover).unlink(missing_ok=True)
    if outdir.exists():
        old = outdir.with_name(outdir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        outdir.rename(old)
        work.rename(outdir)
        shutil.rmtree(old)
    else:
        work.rename(outdir)
