"""Run the tutorial notebooks in order with papermill (the suite's main job).

With no parameter file every notebook runs on its own defaults (the embedded synthetic data
set, minutes on a laptop CPU) and the executed copies replace the stored ones. A YAML parameter
file switches to paper scale: its ``common`` mapping goes to every notebook, a mapping named
after a notebook (e.g. ``02_cerp_training``) to that notebook only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from tqdm.auto import tqdm

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered tutorial notebooks (``01_...`` to ``0N_...``) in order."""
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no numbered notebooks in {folder}")
    return paths


def load_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """Read a parameter file: ``{"common": {...}, "<notebook stem>": {...}}``."""
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise ValueError(f"{path}: expected a mapping of notebook names to parameter mappings")
    return content


def strip_machine_paths(path: Path) -> None:
    """Drop papermill's record of input/output paths, which can be absolute."""
    notebook = nbformat.read(path, as_version=4)
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        record.pop(key, None)
    nbformat.write(notebook, path)


def run_notebooks(
    parameters: dict[str, dict[str, Any]] | None = None,
    output_dir: Path | None = None,
    folder: Path = NOTEBOOK_DIR,
    only: list[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Execute every numbered notebook (or those whose name starts with one of ``only``).

    Notebooks run with ``folder`` as working directory, as in JupyterLab. Executed copies go to
    ``output_dir`` (default: in place). Returns the paths of the executed copies.
    """
    parameters = parameters or {}
    unknown = set(parameters) - {"common"} - {p.stem for p in notebook_paths(folder)}
    if unknown:
        raise ValueError(f"parameter file names unknown notebooks: {sorted(unknown)}")
    known = [p.stem for p in notebook_paths(folder)]
    unmatched = [prefix for prefix in only or [] if not any(s.startswith(prefix) for s in known)]
    if unmatched:
        raise ValueError(f"--only {' '.join(unmatched)}: no notebook's name starts so; {known}")
    output_dir = folder if output_dir is None else Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [p for p in notebook_paths(folder) if not only or p.stem.startswith(tuple(only))]
    executed = []
    for path in tqdm(paths, desc="notebooks", disable=not progress):
        target = output_dir / path.name
        papermill.execute_notebook(
            str(path),
            str(target),
            parameters={**parameters.get("common", {}), **parameters.get(path.stem, {})},
            cwd=str(folder),
            progress_bar=False,
            kernel_name="python3",
        )
        strip_machine_paths(target)
        executed.append(target)
    return executed
