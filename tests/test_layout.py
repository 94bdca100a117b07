"""The package's two halves meet only through products on disk: training never loads the analysis (nor scipy or
matplotlib itself, bar the one histogram), and the analysis never loads Lightning or the training side. The import
graph (tests/import_graph.py, read from the AST, lazy imports included) has no cycle and no upward edge; the
analysis's measures never draw; every package's docstring lists what is in it."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sae_sweep.store import ArtifactStore

from .conftest import REPO, SMOKE, fresh_root, save_dict
from .import_graph import cycles, edges, modules, upward

PACKAGE = REPO / "sae_sweep"


def imports_of(path: Path) -> set[str]:
    """Every module an import statement of ``path`` names, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _under(modules: set[str], prefix: str) -> set[str]:
    return {m for m in modules if m == prefix or m.startswith(prefix + ".")}


@pytest.mark.parametrize("path", sorted((PACKAGE / "train").glob("*.py")), ids=lambda p: p.name)
def test_training_modules_import_no_analysis_and_no_scipy(path):
    names = imports_of(path)
    assert not _under(names, "sae_sweep.analysis") and not _under(names, "scipy"), names
    if path.name != "density.py":  # the feature-density histogram, drawn at the end of a job
        assert not _under(names, "matplotlib"), names


@pytest.mark.parametrize("path", sorted((PACKAGE / "analysis").glob("*.py")), ids=lambda p: p.name)
def test_analysis_modules_import_no_lightning_and_no_training(path):
    names = imports_of(path)
    assert not _under(names, "lightning") and not _under(names, "sae_sweep.train"), names


def test_the_import_graph_has_no_cycle_even_through_function_level_imports():
    assert cycles(edges()) == []


def test_a_cycle_is_found_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_shared_modules_never_import_a_side():
    """store, files, dictionary, activations, truth, tracking: both sides read them, so neither may be above them."""
    assert upward(edges()) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "analysis" / "measures").glob("*.py")), ids=lambda p: p.name)
def test_measures_neither_draw_nor_write_the_report(path):
    names = imports_of(path)
    assert not _under(names, "matplotlib") and not _under(names, "sae_sweep.analysis.report"), names


@pytest.mark.parametrize("init", sorted(PACKAGE.rglob("__init__.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_package_docstring_lists_what_is_in_it(init):
    """Every module and subpackage of a package is named in its ``__init__``'s docstring (``store``, ``store.py`` or
    ``measures/``), and every ``name.py`` its listing names exists."""
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    inside = [p for p in init.parent.iterdir() if p.suffix == ".py" and p.name != "__init__.py"]
    inside += [p for p in init.parent.iterdir() if (p / "__init__.py").is_file()]
    missing = [p.name for p in inside if not re.search(rf"\b{p.stem}\b", doc)]
    assert not missing, f"{init} does not list {missing}"
    listed = re.findall(r"(?m)^\s+(\w+\.py(?:,\s*\w+\.py)*)", doc)  # the listing's lines: "    a.py, b.py   what"
    gone = {n.strip().removesuffix(".py") for line in listed for n in line.split(",")} - {p.stem for p in inside}
    assert not gone, f"{init} names modules that are not there: {gone}"


def test_the_graph_covers_every_module():
    assert set(edges()) == set(modules()) and "sae_sweep.analysis.report.document" in modules()


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_pyplot_state_and_no_backend_switch(path):
    text = path.read_text()
    assert "matplotlib.pyplot" not in imports_of(path) and "matplotlib.use(" not in text


def _modules_after(code: str, root: Path) -> dict:
    """Run ``code`` in a fresh interpreter (cwd = the repo) and return the JSON its last line prints."""
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_an_sae_job_loads_no_analysis_module(gpt_root, tmp_path):
    """A real SAE job, in-process in a fresh interpreter: afterwards no sae_sweep.analysis module is loaded.

    (scipy and matplotlib.pyplot are loaded by torchmetrics, which Lightning imports; that our training code imports
    neither, bar the histogram module, is what the static checks above prove.)
    """
    root = fresh_root(gpt_root, tmp_path)
    code = (
        "import json, os, sys\n"
        "os.environ['SAE_SWEEP_ROOT'] = sys.argv[1]\n"
        "from tests.conftest import compose\n"
        "import train\n"
        f"art = train.run(compose({[*SMOKE, 'logger=none', 'sae.dict_size=64']!r}))\n"
        "print(json.dumps({'artifact': str(art.path), 'modules': sorted(sys.modules)}))\n"
    )
    out = _modules_after(code, root)
    assert Path(out["artifact"], "sae.safetensors").is_file()
    ours = {m for m in out["modules"] if m.startswith("sae_sweep")}
    assert "sae_sweep.train.sae_stage" in ours and "sae_sweep.train.density" in ours
    assert not _under(ours, "sae_sweep.analysis"), ours


@pytest.mark.parametrize("bad", [["stage=pretrain", "pretrain.lr=-1"], ["sae.dict_size=0"]], ids=["pretrain", "sae"])
def test_a_refused_job_never_loads_lightning(tmp_path, bad):
    """A bad value is refused before Lightning loads (the jobs are plain dataclasses, train/jobs.py): a second, not
    five, for each typo (``python -X importtime train.py ...`` shows where the time goes)."""
    code = (
        "import json, os, sys\n"
        "os.environ['SAE_SWEEP_ROOT'] = sys.argv[1]\n"
        "from hydra import compose, initialize_config_dir\n"  # not tests.conftest: it imports Lightning itself
        "from sae_sweep import ConfigError\n"
        "import train\n"
        f"with initialize_config_dir(config_dir={str(REPO / 'conf')!r}, version_base='1.3'):\n"
        f"    cfg = compose(config_name='train', overrides={[*SMOKE, 'logger=none', *bad]!r})\n"
        "try:\n"
        "    train.run(cfg)\n"
        "except ConfigError as exc:\n"
        "    print(json.dumps({'refused': str(exc), 'modules': sorted(sys.modules)}))\n"
    )
    out = _modules_after(code, tmp_path)
    assert bad[-1].split("=")[0] in out["refused"]  # the key is named
    assert not _under(set(out["modules"]), "lightning"), sorted(m for m in out["modules"] if "lightning" in m)[:5]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow  # a whole analysis (in process or a subprocess): out of the inner loop
def test_analysis_loads_neither_lightning_nor_the_training_side(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    for J in (8, 16):
        save_dict(store, J, 0)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from sae_sweep.analysis.collect import SourceConfig\n"
        "from sae_sweep.analysis.job import AnalyzeJob, run\n"
        "from sae_sweep.analysis.settings import AnalysisConfig\n"
        "from sae_sweep.store import Paths\n"
        "from sae_sweep.tracking import LoggerConfig\n"
        "root = Path(sys.argv[1])\n"
        "job = AnalyzeJob(AnalysisConfig(n_boot=20), SourceConfig(), LoggerConfig(kind='none'), Paths(root))\n"
        "report = run(job)\n"
        "print(json.dumps({'report': str(report), 'modules': sorted(sys.modules)}))\n"
    )
    out = _modules_after(code, tmp_path)
    assert Path(out["report"]).is_file()
    modules = set(out["modules"])
    assert not _under(modules, "lightning") and not _under(modules, "pytorch_lightning"), "Lightning was loaded"
    assert not _under(modules, "sae_sweep.train"), _under(modules, "sae_sweep.train")
    assert "matplotlib.pyplot" not in modules  # figures through the object API: a notebook's pyplot is untouched
