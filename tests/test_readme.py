"""The README's Python snippets run as written, from a folder outside the repository, against the package as
`pip install .` installs it (pyproject.toml), so neither the snippets nor the packaging can go stale."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2 and any("import engine" in s for s in SNIPPETS)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install --no-deps .` of a copy of the repository into a private folder (no network: no build isolation)."""
    pytest.importorskip("setuptools")
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                              "tests", "benchmarks", "docs", ".gradio", "out"))
    target = base / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(src)], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        pytest.skip("pip is not available in this interpreter")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return target


@pytest.mark.slow
def test_installed_package_finds_its_manifests(installed, tmp_path):
    code = ("import engine, engine.weights as w, engine.examples as e; "
            "assert 'site' in engine.__file__, engine.__file__; "
            "print(len(w.manifest()), len(e.manifest()))")
    env = {**os.environ, "PYTHONPATH": str(installed), "ENGINE_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    n_weights, n_examples = map(int, out.stdout.split())
    assert n_weights > 10 and n_examples > 20


@pytest.mark.slow
def test_readme_snippets_run_outside_the_repository(installed, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("horse.jpg", "photo.jpg", "style.jpg", "a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(tmp_path / name)
    check = ("\nimport numpy as _np\n"
             "assert zebra.shape == (96, 128, 3) and zebra.dtype == _np.uint8\n"
             "assert art.size[0] > 0 and match.flow.shape == (96, 128, 2)\n"
             "print('snippets ok')\n")
    script = "\n".join(SNIPPETS) + check
    env = {**os.environ, "PYTHONPATH": str(installed), "ENGINE_OFFLINE": "1", "ENGINE_RANDOM_WEIGHTS": "1",
           "ENGINE_DEVICE": "cpu", "DATA_DIR": "", "WEIGHTS_DIR": "", "ENGINE_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "snippets ok" in out.stdout, out.stderr[-3000:]
