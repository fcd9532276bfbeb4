"""Every shipped example runs: each config in ``configs/`` and each command of the README, in a
tiny version (synthetic data, two epochs), so that a broken example cannot land again."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from papermill import inspect_notebook

from cerp_core.cli import build_parser, main

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TINY_DATA = {"synthetic": {"num_users": 150, "num_items": 200}}
TINY_PAPER_DATA = {"synthetic": {"num_users": 50, "num_items": 80}}  # batches of 10: many steps
TINY_LR = 0.05  # two epochs on the tiny set: stage 1 learns before its first mask at this lr
TINY_BUDGETS = [0.2, 0.1]  # tighter tables of the tiny set do not learn within two epochs
TINY_PEP = {"pruning_l2": 0.1}  # PEP's decay of 0.4 empties toy tables at lr 0.05 (docs/method.md)
EXPECTED_REFUSALS = {
    # the authors' gamma_0 (70 per row) keeps stage 1 at chance until it has halved for several
    # epochs (README, "CERP's regularizer"); in two epochs CERP's run is refused, as it should be
    "paper-official": "stage 1 has learnt nothing",
}
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def tiny(values: dict[str, Any]) -> dict[str, Any]:
    """A config's tiny version: its methods, backbones, protocol and options on the tiny
    synthetic set, at d = 8 and budgets 0.2 and 0.1 (1.0 kept), one seed, two epochs at a high
    lr, on CPU, each tuning grid cut to one point, PEP with a decay toy tables survive, the MLP
    with its default tower; under the paper protocol (batches of 10) a smaller set still."""
    train = {**values.get("train", {}), "epochs": 2, "lr": TINY_LR, "batch_size": 128}
    tune = {
        method: {key: [TINY_LR] if key == "train.lr" else grid[:1] for key, grid in grids.items()}
        for method, grids in values.get("tune", {}).items()
    }
    models = {name: dict(o) for name, o in values.get("model_options", {}).items()}
    for options in models.values():
        options.pop("hidden", None)  # the paper's MLP tower takes minutes even here
    options = {method: dict(o) for method, o in values.get("embedding_options", {}).items()}
    if "pep" in values["methods"]:
        options["pep"] = {**options.get("pep", {}), **TINY_PEP}
    return {
        **values,
        "embedding_options": options,
        "model_options": models,
        "datasets": ["synthetic"],
        "dim": 8,
        "budgets": [b for b in values["budgets"] if b == 1.0] + TINY_BUDGETS,
        **({"tune_budget": TINY_BUDGETS[0]} if "tune_budget" in values else {}),
        "data_options": TINY_PAPER_DATA if values.get("protocol") == "paper" else TINY_DATA,
        "seeds": values.get("seeds", [0])[:1],
        "device": "cpu",
        "train": train,
        **({"tune": tune} if tune else {}),
    }


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_runs(path: Path, tmp_path: Path) -> None:
    """The sweep command of each config, tiny: no run fails, every method has a row."""
    values = yaml.safe_load(path.read_text())
    config = tmp_path / path.name
    config.write_text(yaml.safe_dump(tiny(values)))
    out = tmp_path / "out"
    refused = EXPECTED_REFUSALS.get(path.stem)
    assert main(["sweep", str(config), "--out", str(out)]) == (1 if refused else 0)
    failures = [p.read_text() for p in (out / "failures").glob("*")]
    assert all(refused in text for text in failures) if refused else not failures
    results = pd.read_csv(out / "results.csv")
    assert set(results["method"]) | ({"cerp"} if refused else set()) == set(values["methods"])
    assert set(results["backbone"]) == set(values["backbones"])


# ----------------------------------------------------------------------------- README commands


def readme_commands() -> list[str]:
    """Each shell command of the README's code blocks (all but ``python`` ones), continuation
    lines joined, without environment assignments, ``nohup``, output redirection, a trailing
    ``&`` and comments."""
    blocks, block, language = [], None, ""
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if block is None:
                block, language = [], line[3:].strip()
            else:
                if language in ("", "bash"):
                    blocks.append("\n".join(block))
                block = None
        elif block is not None:
            block.append(line)
    commands = []
    for text in blocks:
        for line in text.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line)  # a trailing comment
            line = re.sub(r"\s*>\s*\S+(\s+2>&1)?\s*&?\s*$", "", line)
            line = re.sub(r"^(?:[A-Z_]+=\S*\s+)+", "", line.strip())
            line = re.sub(r"^nohup\s+", "", line)
            if line:
                commands.append(" ".join(line.split()))
    return commands


COMMANDS = readme_commands()
STANDS_ELSEWHERE = {
    # the README's set-up commands are what CI runs; JupyterLab is interactive
    "python3 -m venv .venv": ".ci/run runs the install command itself",
    "python -m pytest": ".ci/run runs the test command itself",
    "jupyter lab": "interactive: opens a browser tab",
}


def test_the_readme_has_commands_of_every_kind() -> None:
    kinds = {" ".join(c.split()[:3]) for c in COMMANDS}
    assert {"python -m cerp_core", "cd notebooks &&", "jupyter lab notebooks/"} <= kinds
    assert len(COMMANDS) >= 12


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_runs(command: str, tmp_path: Path) -> None:
    """Each README command in a tiny version: cerp_core commands parse and run on the tiny set
    (a sweep's config runs in the test above, reports on a copy of committed results), the
    papermill command names parameters its notebook has, scripts answer ``--help``."""
    words = shlex.split(command)
    if any(command.startswith(prefix) for prefix in STANDS_ELSEWHERE):
        return
    if words[:3] == ["python", "-m", "cerp_core"]:
        run_cerp_core(words[3:], tmp_path)
    elif words[:3] == ["cd", "notebooks", "&&"] and words[3] == "papermill":
        notebook = REPO / "notebooks" / words[4]
        given = {words[i + 1] for i, w in enumerate(words) if w == "-p"}
        assert given <= set(inspect_notebook(str(notebook)))
    elif words[0] == "python" and words[1].startswith("benchmarks/"):
        script = [w for w in words[1:] if not w.startswith("[")]  # [--flag value]: optional
        flags = re.findall(r"\[(--[\w-]+)", command)
        help_text = subprocess.run(
            [sys.executable, REPO / script[0], "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert all(flag in help_text for flag in flags)
    else:
        pytest.fail(f"no tiny version for the README command {command!r}; add one here")


def run_cerp_core(arguments: list[str], tmp_path: Path) -> None:
    """One ``python -m cerp_core`` command of the README, tiny."""
    args = build_parser().parse_args(arguments)  # every flag of the README exists
    out = tmp_path / "out"
    if args.command == "train":
        tiny_flags = ["--dataset", "synthetic", "--epochs", "2", "--lr", str(TINY_LR)]
        assert main([*arguments, *tiny_flags, "--out", str(out), "--no-progress"]) == 0
        assert (out / "metrics.json").is_file()
    elif args.command == "sweep":  # its config runs, tiny, in test_every_shipped_config_runs
        assert (REPO / args.config).resolve() in CONFIGS
    elif args.command == "report":
        shutil.copytree(REPO / args.folder, out)
        config = ["--config", str(REPO / args.config)] if args.config else []
        assert main(["report", str(out), *config]) == 0
        assert (out / "table.md").is_file()
    else:
        pytest.fail(f"no tiny version for 'cerp_core {args.command}'; add one here")


def test_the_readme_python_example_runs() -> None:
    """The README's Python example, with two epochs per stage instead of ten."""
    (example,) = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert "epochs=10" in example
    exec(example.replace("epochs=10", "epochs=2"), {})  # noqa: S102 - the README's own code
