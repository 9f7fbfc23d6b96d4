"""Batch translation on Ray Data: the folder job of ``python -m engine.translate_cli --ray``.

The files of the input folder become a dataset of (index, path) rows; ``map_batches`` runs them through a pool of
actors, each with the model loaded once (one model per actor, a GPU per actor when the cluster has GPUs); every
actor reads and validates its images exactly as the local CLI does (engine.pipelines.translate.prepare_image),
translates them and returns the encoded output bytes; this process writes them under the same names and builds
the same skip/error report as engine.pipelines.translate.translate_folder. The order is preserved, so reports
and outputs do not depend on scheduling. Inputs must be readable at the same path on every node (a shared folder);
outputs are written here.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

from .errors import InputError
from .pipelines import translate as T


class TranslateActor:
    """One model per actor; ``__call__`` takes a batch {index, path} and returns {index, data, error}."""

    def __init__(self, model: str, max_side: int | None, suffix: str, precision: str, uint8: str, env: dict):
        os.environ.update(env)
        from . import registry

        self.model, self.max_side, self.suffix = model, max_side, suffix
        self.precision, self.uint8 = precision, uint8
        registry.load_model(model)   # weights resolved here, on the actor's node, by the manifest rules

    def _one(self, path: str) -> tuple[bytes | None, str]:
        from PIL import Image

        from . import registry
        from .queue import run_exclusive

        p = Path(path)
        try:
            img = T.prepare_image(p, self.max_side)
            out = run_exclusive(lambda: T.translate_pil(registry.load_model(self.model), img,
                                                        precision=self.precision, uint8=self.uint8))
            buf = io.BytesIO()
            Image.fromarray(out).save(buf, format=Image.registered_extensions()[self.suffix])
            return buf.getvalue(), ""
        except (InputError, OSError) as exc:
            return None, f"{p.name}: {exc}"

    def __call__(self, batch):
        import pandas as pd

        rows = [self._one(path) for path in batch["path"]]
        return pd.DataFrame({"index": list(batch["index"]), "data": [r[0] for r in rows],
                             "error": [r[1] for r in rows]})


def _engine_error(exc: BaseException):
    """The EngineError inside a Ray failure (e.g. missing weights raised in an actor's constructor), or None."""
    from .errors import EngineError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)   # a RayTaskError / RayActorError carries the original exception
        if isinstance(cause, BaseException):
            exc = cause
            continue
        if isinstance(exc, EngineError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _rows(ds):
    from .errors import EngineError, ModelError

    try:
        yield from ds.iter_rows()
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray's errors carry tracebacks; the user gets the engine's message
        inner = _engine_error(exc)
        if inner is not None:
            raise type(inner)(str(inner).splitlines()[0]) from exc
        raise ModelError(f"The Ray Data job failed ({type(exc).__name__}); see the Ray logs.") from exc


def translate_folder_ray(input_dir, output_dir, model: str = T.DEFAULT_MODEL, *,
                         max_side: int | None = T.DEFAULT_MAX_SIDE, suffix: str = ".png", overwrite: bool = True,
                         precision: str = T.DEFAULT_PRECISION, uint8: str = "round",
                         progress: Callable[[float, str], None] | None = None,
                         on_skip: Callable[[str], None] | None = None, actors: int = 2, batch_size: int = 4,
                         num_cpus: float = 1.0, num_gpus: float | None = None) -> T.FolderReport:
    """Like :func:`engine.pipelines.translate.translate_folder`, on the Ray instance this process is connected
    to. ``num_gpus`` per actor: default 1 when the cluster has GPUs, else 0."""
    import pandas as pd
    import ray

    from .serve import forwarded_env

    T._check_model_name(model)
    precision, uint8 = T.check_precision(precision), T.check_uint8(uint8)
    files = T.list_images(input_dir)
    if not files:
        raise InputError(f"No image files ({', '.join(T.IMAGE_SUFFIXES)}) in {input_dir}.")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = T.FolderReport()
    skipped: dict[int, str] = {}
    todo = []
    for i, path in enumerate(files):
        target = out_dir / (path.stem + suffix)
        if target.exists() and not overwrite:
            skipped[i] = f"{path.name}: {InputError(f'{target.name} exists (not overwriting)')}"
            if on_skip:
                on_skip(skipped[i])
        else:
            todo.append({"index": i, "path": str(path.resolve())})
    if num_gpus is None:
        num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    written: dict[int, Path] = {}
    if todo:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ds = ray.data.from_pandas(pd.DataFrame(todo))
        env = forwarded_env()   # the engine settings and this repository's path, for every actor
        ds = ds.map_batches(TranslateActor, batch_size=batch_size, batch_format="pandas",
                            runtime_env={"env_vars": env},
                            compute=ray.data.ActorPoolStrategy(size=max(1, min(actors, len(todo)))),
                            num_cpus=num_cpus, num_gpus=num_gpus,
                            fn_constructor_kwargs={"model": model, "max_side": max_side, "suffix": suffix,
                                                   "precision": precision, "uint8": uint8, "env": env})
        done = 0
        for row in _rows(ds):
            i, path = int(row["index"]), files[int(row["index"])]
            if row["error"]:
                skipped[i] = row["error"]
            else:
                target = out_dir / (path.stem + suffix)
                try:
                    target.write_bytes(row["data"])
                    written[i] = target
                except OSError as exc:
                    skipped[i] = f"{path.name}: {exc}"
            if i in skipped and on_skip:
                on_skip(skipped[i])
            done += 1
            if progress:
                progress((done + len(files) - len(todo)) / len(files), path.name)
    report.written = [written[i] for i in sorted(written)]
    report.skipped = [skipped[i] for i in sorted(skipped)]
    return report
