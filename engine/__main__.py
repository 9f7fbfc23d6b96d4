"""``python -m engine``: list the models and where their weights stand.

    python -m engine [--weights-dir DIR ...] [--task style|translate|congeal] [--verify]
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", action="append", default=[], help="folder with checkpoints (repeatable)")
    parser.add_argument("--task", choices=["style", "translate", "congeal"], help="only models of this task")
    parser.add_argument("--device", help="show the device the engine would use (cpu, cuda, cuda:1, mps)")
    args = parser.parse_args(argv)
    if args.weights_dir:
        os.environ["WEIGHTS_DIR"] = os.pathsep.join(args.weights_dir)

    from . import config, registry, weights
    from .device import describe, select_device

    print(f"device: {describe(select_device(args.device))}")
    print(f"weights folders: {', '.join(str(p) for p in weights.search_dirs()) or '-'}")
    print(f"downloads: {'allowed' if config.allow_download() else 'off (ENGINE_OFFLINE)'}")
    print(f"data folder: {config.data_dir() or '- (set DATA_DIR for examples)'}\n")
    rows = [(s.name, s.task, registry.model_status(s.name)) for s in registry.list_models(args.task)]
    width = max(len(r[0]) for r in rows)
    for name, task, st in rows:
        files = registry.file_statuses(name) if st.state != "random" else []
        several = sum(f.state != "ready" for _, f in files) > 1  # st.message gives only the first file's steps
        print(f"{name:<{width}}  {task:<9}  {st.state:<12}  {f'{len(files)} files:' if several else st.message}")
        for role, f in files if several else []:
            print(f"{'':<{width}}  {'':<9}  {f.state:<12}  {role}: {f.message}")
    ready = sum(st.state in ("ready", "unverified", "random") for _, _, st in rows)
    print(f"\n{ready}/{len(rows)} models have their weights on this machine.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
