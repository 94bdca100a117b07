"""W&B lineage and resumed runs: exact references to store artifacts, inputs recorded offline and replayed through a
stand-in of W&B's public API (no W&B server exists here), and a resumed run that logs every row once."""

import hashlib
import json

import pytest

from sae_sweep import sync
from sae_sweep.analysis.collect import SourceConfig, collect_wandb
from sae_sweep.errors import ConfigError
from sae_sweep.lineage import aliases, content_alias, declare_inputs, pending_records, record_path, reference, replay
from sae_sweep.store import ArtifactStore
from sae_sweep.tracking import LoggerConfig
from sae_sweep.train.loggers import build_loggers
from sae_sweep.wandb_records import logged_rows, run_files

from .conftest import exit_recorded


def save(store: ArtifactStore, name: str, text: str):
    return store.save(name, "model", lambda d: (d / "w.txt").write_text(text))


def test_the_content_alias_names_the_bytes_whatever_the_version(tmp_path):
    a = save(ArtifactStore(tmp_path / "a"), "gpt", "weights")
    other = ArtifactStore(tmp_path / "b")
    save(other, "gpt", "older")
    b = save(other, "gpt", "weights")  # the same bytes as v1 of another store
    files = {"w.txt": hashlib.sha256(b"weights").hexdigest()}
    expected = "sha-" + hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    assert content_alias(a.path) == content_alias(b.path) == expected
    assert content_alias(other.get("gpt:v0").path) != expected
    assert aliases(b, ("converged",)) == ["latest", "store-v1", expected, "converged"]
    assert reference(b.path) == f"gpt:{expected}" and reference(tmp_path) is None  # no artifact.json: not on W&B


class StandInRun:
    """What ``declare_inputs`` uses of a ``wandb.Run``; ``refuse``: references whose use_artifact raises."""

    def __init__(self, offline: bool, refuse=()):
        self.id, self.entity, self.project, self.offline = "run-1", "", "proj", offline
        self.refuse, self.used = set(refuse), []

    def use_artifact(self, ref):
        if ref in self.refuse:
            raise ValueError(f"artifact {ref} not found")
        self.used.append(ref)


def test_inputs_are_declared_online_and_recorded_either_way(tmp_path):
    run = StandInRun(offline=False, refuse={"b:sha-2"})
    assert declare_inputs(run, ["a:sha-1", "b:sha-2"], tmp_path) == ["a:sha-1"] and run.used == ["a:sha-1"]
    rec = json.loads(record_path(tmp_path, "run-1").read_text())
    assert rec == {"run_id": "run-1", "entity": None, "project": "proj", "inputs": ["a:sha-1", "b:sha-2"],
                   "declared": ["a:sha-1"]}  # fmt: skip
    offline = StandInRun(offline=True)
    assert declare_inputs(offline, ["a:sha-1"], tmp_path / "off") == [] and offline.used == []
    assert pending_records(tmp_path) == [record_path(tmp_path, "run-1"), record_path(tmp_path / "off", "run-1")]


class StandInApi:
    """The part of ``wandb.Api`` that replay uses, over a fixed set of artifacts on a pretend server."""

    default_entity = "me"

    def __init__(self, artifacts=(), runs=("me/proj/run-1",)):
        self.artifacts, self.runs, self.links = set(artifacts), set(runs), []

    def run(self, path):
        if path not in self.runs:
            raise ValueError(f"Could not find run {path}")
        api = self

        class Run:
            def use_artifact(self, artifact):
                api.links.append((path, artifact))

        return Run()

    def artifact(self, path):
        if path not in self.artifacts:
            raise ValueError(f"artifact {path} not found")
        return path


def recorded(folder, inputs, declared=(), run_id="run-1", entity=None):
    path = record_path(folder, run_id)
    path.parent.mkdir(parents=True)
    rec = {"run_id": run_id, "entity": entity, "project": "proj", "inputs": inputs, "declared": list(declared)}
    path.write_text(json.dumps(rec))
    return path


def test_replay_links_what_was_not_declared_and_keeps_what_failed_for_next_time(tmp_path):
    path = recorded(tmp_path / "runs" / "x", ["a:sha-1", "b:sha-2", "c:sha-3"], declared=["a:sha-1"])
    api = StandInApi(artifacts={"me/proj/b:sha-2"})
    assert replay(api, tmp_path / "runs") == (1, 1)
    assert api.links == [("me/proj/run-1", "me/proj/b:sha-2")]
    assert json.loads(path.read_text())["declared"] == ["a:sha-1", "b:sha-2"]
    api.artifacts.add("me/proj/c:sha-3")  # uploaded meanwhile
    assert replay(api, tmp_path / "runs") == (1, 0) and not pending_records(tmp_path / "runs")
    assert replay(api, tmp_path / "runs") == (0, 0)


def test_replay_takes_the_entity_and_project_given_over_the_recorded_ones(tmp_path):
    recorded(tmp_path / "runs" / "x", ["a:sha-1"], entity="rec")
    api = StandInApi(artifacts={"team/other/a:sha-1"}, runs={"team/other/run-1"})
    assert replay(api, tmp_path / "runs", entity="team", project="other") == (1, 0)
    missing = StandInApi(runs=())  # the run was never synced: every input of it fails, and stays recorded
    recorded(tmp_path / "runs" / "y", ["b:sha-2"], run_id="run-2")
    assert replay(missing, tmp_path / "runs") == (0, 1) and len(pending_records(tmp_path / "runs")) == 1


def test_sync_uploads_the_offline_folders_then_links(tmp_path, capsys):
    runs = tmp_path / "runs"
    parts = [runs / "sae-a" / "wandb" / f"offline-run-2026120{i}_000000-sae-a" for i in (1, 2)]
    for p in parts:
        p.mkdir(parents=True)
    recorded(runs / "sae-a", ["gpt:sha-1"], run_id="sae-a")
    uploaded = []
    api = StandInApi(artifacts={"me/proj/gpt:sha-1"}, runs={"me/proj/sae-a"})

    def failing(folders, entity, project):
        uploaded.append(folders)
        return 1

    assert sync.main([str(tmp_path)], api=api, uploader=failing) == 2 and not api.links  # nothing linked
    assert "`wandb sync` failed (exit status 1)" in capsys.readouterr().err
    assert uploaded == [parts]  # both parts of the resumed run, in start order
    assert sync.main([str(tmp_path)], api=api, uploader=lambda *a: 0) == 0
    assert api.links == [("me/proj/sae-a", "me/proj/gpt:sha-1")] and "linked 1 inputs" in capsys.readouterr().out
    assert sync.main([str(tmp_path), "--no-upload"], api=None) == 0  # nothing pending: no API needed
    assert "every recorded input is linked" in capsys.readouterr().out
    assert sync.main([str(tmp_path / "nowhere")]) == 2 and "does not exist" in capsys.readouterr().err


def test_no_wandb_login_ends_sync_and_a_wandb_source_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: no key anywhere
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    recorded(tmp_path / "runs" / "sae-a", ["gpt:sha-1"], run_id="sae-a")
    assert sync.main([str(tmp_path), "--no-upload"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: linking 1 recorded inputs to their W&B runs needs a W&B login") and "wandb login" in err
    )
    assert "\n" not in err.strip() and len(pending_records(tmp_path / "runs")) == 1  # still to link, next time
    source = SourceConfig(kind="wandb", entity="nobody")
    with pytest.raises(
        ConfigError, match=r"^source=wandb \(reading .* nobody/sae-sweep\) needs a W&B login.*wandb login"
    ):
        collect_wandb(source, 2, tmp_path / "cache")


def logger_part(run_dir, csv_rows=None):
    """A real offline W&B run's logger for the run folder ``run_dir`` (the same id each time: one job)."""
    if csv_rows is not None:  # what the run's CSV held at its last checkpoint
        csv_file = run_dir / "csv" / "metrics.csv"
        csv_file.parent.mkdir(parents=True, exist_ok=True)
        csv_file.write_text("epoch,step,train/loss\n" + "".join(f"0,{s},{s / 100}\n" for s in csv_rows))
    _, wandb_logger = build_loggers(LoggerConfig(mode="offline"), run_dir, name="job-1")
    return wandb_logger


def steps_of(run_dir) -> list[list[int]]:
    parts = exit_recorded(run_files(run_dir / "wandb", "job-1"))  # both parts finished: read them when written
    return [[s for s, keys in logged_rows(f) if "train/loss" in keys] for f in parts]


@pytest.mark.parametrize(
    "first_logged, expected_second",
    [
        ([0, 10, 20, 30, 40, 50], [60, 70]),  # a clean stop: what it logged after the checkpoint is not logged again
        ([0, 10], [20, 30, 40, 50, 60, 70]),  # killed before wandb flushed 20 and 30: taken from the CSV
    ],
)
def test_a_resumed_run_logs_every_row_once(tmp_path, monkeypatch, first_logged, expected_second):
    monkeypatch.setenv("WANDB_MODE", "offline")
    first = logger_part(tmp_path)
    for s in first_logged:
        first.log_metrics({"train/loss": s / 100, "epoch": 0}, step=s)
    first.experiment.finish()
    second = logger_part(tmp_path, csv_rows=[0, 10, 20, 30])  # the checkpoint was at step 30
    for s in (40, 50, 60, 70):  # the resumed job re-runs the steps after its checkpoint
        second.log_metrics({"train/loss": s / 100, "epoch": 0}, step=s)
    second.experiment.finish()
    assert steps_of(tmp_path) == [first_logged, expected_second]
