"""SAE sweeps through the real entry point, in subprocesses: Hydra multirun, DDP on CPU, submitit_local, resume."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from sae_sweep.config import sweep_name
from sae_sweep.dictionary import load_dictionary
from sae_sweep.errors import ConfigError
from sae_sweep.lineage import content_alias
from sae_sweep.store import ArtifactStore
from sae_sweep.sync import main as sync_main
from sae_sweep.wandb_records import item_key, logged_rows, records, run_files, run_record

from ..conftest import (
    REPO,
    SMOKE,
    LinkingApi,
    exit_recorded,
    fresh_root,
    kill_at_first_checkpoint,
    run_train,
    run_train_on_a_terminal,
)

pytestmark = pytest.mark.slow


def out(proc) -> str:
    return proc.stdout + proc.stderr


def assert_browsable_runs(runs: list, sweep: str, store: ArtifactStore) -> None:
    """What a researcher finds in W&B after ``wandb sync``, read back from the offline record logs: one group for the
    sweep, the job type, the run's id = its run folder (a resumed job goes on in the same run), the axes in the
    config, how training ended in the summary, the feature-density figure, and a described artifact."""
    for path in runs:
        recs = records(path)
        run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
        folder = path.parents[2].name  # runs/<run folder>/wandb/offline-run-*/run-*.wandb
        assert (run.run_id, run.display_name, run.run_group, run.job_type) == (folder, folder, sweep, "train-sae")
        assert "train-sae" in run.tags
        config = {item_key(i) for r in recs if r.WhichOneof("record_type") == "config" for i in r.config.update}
        config |= {item_key(i) for i in run.config.update}
        assert {"layer", "dict_size", "seed", "variant", "gpt", "activations", "harvest", "sae"} <= config, config
        summary = {item_key(i) for r in recs if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
        assert {"converged", "converged_at_step", "activations_seen", "final/fvu", "final/l0"} <= summary, summary
        assert not any(k.startswith("val/") for k in summary)  # final/* and heldout/* only: no look-alikes
        history = {item_key(i) for r in recs if r.WhichOneof("record_type") == "history" for i in r.history.item}
        assert "feature_density" in history, history
        (artifact,) = [r.artifact for r in recs if r.WhichOneof("record_type") == "artifact"]
        assert artifact.type == "sae-dictionary" and "held-out FVU" in artifact.description
        saved = store.get(artifact.name)
        converged = ["converged"] if saved.metadata["training"]["converged"] else []
        # ("latest" is in some records and not others: the server gives it to the newest version anyway)
        assert set(artifact.aliases) - {"latest"} == {f"store-v{saved.version}", content_alias(saved.path), *converged}
        # Lineage: offline, W&B cannot link the GPT; the run records it by its exact reference for sae_sweep.sync.
        lineage = json.loads((path.parents[2] / "lineage" / f"{folder}.json").read_text())
        gpt = store.get("gpt-embedded-s0")
        assert (lineage["inputs"], lineage["declared"]) == ([f"gpt-embedded-s0:{content_alias(gpt.path)}"], [])


def test_a_sweeps_name_is_its_experiment_and_command_line_not_a_time():
    same = sweep_name(["experiment=demo", "sae.seed=0,1", "paths.root=/a", "logger.project=x"], "demo")
    assert same == sweep_name(["sae.seed=0,1", "experiment=demo", "paths.root=/b"], "demo")  # where it ran: not it
    assert same != sweep_name(["experiment=demo", "sae.seed=0,1,2"], "demo") and same.startswith("demo-")
    assert sweep_name(["experiment=demo"], "demo") == "demo" and sweep_name([], None) == "sweep"


def test_multirun_2_sizes_x_2_seeds(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    proc = run_train(["-m", *SMOKE, "sae.dict_size=64,128", "sae.seed=0,1"], root)
    assert proc.returncode == 0, out(proc)[-4000:]
    # one job at a time into a pipe: no progress bar (a bar there is one frame written at the end; trainer.LogProgress
    # logs lines instead)
    assert "\u2501" not in out(proc), out(proc)[-4000:]
    store = ArtifactStore(root / "store")
    names = sorted(store.names("sae-dictionary"))
    assert names == ["sae-L2-J128-s0", "sae-L2-J128-s1", "sae-L2-J64-s0", "sae-L2-J64-s1"]
    for name in names:
        d = load_dictionary(store.get(name).path)
        assert d.decoder.shape == (128, d.config.dict_size) and d.config.l1_coeff == 1e-3
        torch.testing.assert_close(d.decoder.norm(dim=0), torch.ones(d.dict_size))
        assert d.firing_counts.shape == (d.dict_size,) and d.firing_counts.sum() > 0
        assert 0 < d.config.metrics["val/fvu"] < 5
        assert {"metrics.csv", "feature_density.png", "sae.safetensors"} <= {p.name for p in d.path.iterdir()}
        shot, last = d.snapshots()  # the budget axis: 16384 activations first reached at step 64, then the end
        assert (shot.steps, shot.activations_seen, last.steps, last.activations_seen) == (64, 16384, 80, 20480)
        assert not torch.equal(shot.decoder, d.decoder) and torch.equal(last.decoder, d.decoder)
        assert shot.fired.shape == (d.dict_size,) and last.metrics["l0"] == pytest.approx(
            d.config.metrics["val/l0"], rel=1e-6
        )
    seeds = {n: load_dictionary(store.get(n).path).decoder for n in names}
    assert not torch.equal(seeds["sae-L2-J64-s0"], seeds["sae-L2-J64-s1"])
    # The GPT was trained once (by the fixture) and the activations harvested once for all four jobs.
    assert store.names("model") == ["gpt-embedded-s0"] and store.get("gpt-embedded-s0").version == 0
    (cache,) = (root / "cache" / "activations").glob("L2-*")  # one cache, nothing half-written beside it
    assert not list((root / "cache" / "activations").glob(".*tmp*"))
    assert {load_dictionary(store.get(n).path).config.activations["key"] for n in names} == {cache.name}
    # Every job wrote a real offline W&B run and uploaded its dictionary there.
    runs = list(root.glob("runs/sae-*/wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 4 and all(b"sae.safetensors" in r.read_bytes() for r in runs)  # the artifact's manifest
    assert_browsable_runs(
        runs, sweep_name(["experiment=smoke", "sae.dict_size=64,128", "sae.seed=0,1"], "smoke"), store
    )

    # A control sweep beside it: suffixed names, the main dictionaries untouched.
    control = run_train(["-m", *SMOKE, "control=small_l1", "sae.dict_size=64,128", "sae.seed=0"], root)
    assert control.returncode == 0, out(control)[-4000:]
    assert sorted(store.names("sae-dictionary")) == sorted(
        [*names, "sae-L2-J128-s0-l1-0.0003", "sae-L2-J64-s0-l1-0.0003"]
    )
    assert all(store.get(n).version == 0 for n in names)

    # analyze.py on the sweep's output: every figure and table report.md links exists, and a W&B analysis run.
    analysis = subprocess.run(
        [sys.executable, str(REPO / "analyze.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "SAE_SWEEP_ROOT": str(root)},
        timeout=300,
    )
    assert analysis.returncode == 0, out(analysis)[-4000:]
    report = root / "analysis" / "report.md"
    assert f"report: {report}" in out(analysis)
    links = re.findall(r"\]\(([^)]+)\)", report.read_text())
    assert {"fig03_mcs_hist.png", "fig07_emd_alt.png", "fig11_counts.png", "emd_J64.csv", "counts.csv"} <= set(links)
    # Issue 6's sections, each with its table, on real dictionaries
    text = report.read_text()
    beyond = {"liveness.csv", "movement.csv", "matching.csv", "shared_seeds.csv", "split.csv", "emd_ci.csv"}
    beyond |= {"seed_spread.csv", "anisotropic.csv", "controls.csv", "fig13_mcs_vs_firing.png", "fig17_controls.png"}
    assert beyond <= set(links), beyond - set(links)
    for name in beyond - {"fig13_mcs_vs_firing.png", "fig17_controls.png"}:
        assert len((report.parent / name).read_text().splitlines()) >= 2, name  # a header and at least one row
    assert "## Findings" in text and "l1-0.0003" in (report.parent / "controls.csv").read_text()
    assert all((report.parent / link).is_file() for link in links)
    assert "Figure 9 |" in report.read_text() and "skipped (needs" in report.read_text()  # 2 sizes: no scatter
    (analysis_log,) = root.glob("runs/analysis/wandb/offline-run-*/run-*.wandb")
    recs = records(analysis_log)
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert (run.display_name, run.job_type, run.run_group) == ("analysis-note", "analysis", "analysis")
    history = {item_key(i) for r in recs if r.WhichOneof("record_type") == "history" for i in r.history.item}
    assert {"mcs/sae-L2-J64-s0", "mcs/sae-L2-J64-s1", "table/dictionaries", "table/features"} <= history, history
    summary = {
        item_key(i): i.value_json for r in recs if r.WhichOneof("record_type") == "summary" for i in r.summary.update
    }
    assert summary["dictionaries"] == "4"
    # The analysis's inputs: every dictionary it read, controls included, by exact reference; then, as after a
    # `wandb sync`, sae_sweep.sync links every recorded input through (a stand-in of) W&B's public API.
    (lineage,) = (root / "runs" / "analysis" / "lineage").glob("*.json")
    every = sorted(f"{n}:{content_alias(store.get(n).path)}" for n in store.names("sae-dictionary"))
    assert json.loads(lineage.read_text())["inputs"] == every and len(every) == 6
    api = LinkingApi()
    assert sync_main([str(root), "--no-upload"], api=api) == 0
    gpt = f"gpt-embedded-s0:{content_alias(store.get('gpt-embedded-s0').path)}"
    sae_runs = [p.stem for p in root.glob("runs/sae-*/lineage/*.json")]  # the control sweep's two included
    expected = [(f"me/sae-sweep/{r}", f"me/sae-sweep/{gpt}") for r in sae_runs]
    expected += [(f"me/sae-sweep/{lineage.stem}", f"me/sae-sweep/{ref}") for ref in every]
    assert sorted(api.links) == sorted(expected) and len(sae_runs) == 6


def test_ddp_two_cpu_processes_inside_a_multirun(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=2"]
    proc = run_train(["-m", *SMOKE, *ddp, "logger=none", "sae.dict_size=64"], root)
    assert proc.returncode == 0, out(proc)[-4000:]
    d = load_dictionary(ArtifactStore(root / "store").get("sae-L2-J64-s0").path)
    assert d.config.steps == 20480 // (256 * 2)  # each step consumed one batch per process
    assert [(s.steps, s.activations_seen) for s in d.snapshots()] == [(32, 16384), (40, 20480)]  # rank 0 wrote them
    torch.testing.assert_close(d.decoder.norm(dim=0), torch.ones(64))


def test_ddp_stops_every_process_at_the_step_the_rule_is_met(gpt_root, tmp_path):
    """until=converged under ddp_spawn: the rule (loose tolerances: met at the second evaluation, step 2 x 5) stops
    both processes there, long before the 4-epoch cap, and config.json says so from the buffer the workers return."""
    root = fresh_root(gpt_root, tmp_path)
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=2"]
    rule = ["sae.until=converged", "sae.epochs=4", "sae.eval_every=5", "sae.window=1"]
    loose = ["sae.loss_tol=1e9", "sae.drift_tol=1e9", "sae.eval_rows=256"]
    proc = run_train([*SMOKE, *ddp, *rule, *loose, "logger=none", "sae.dict_size=64"], root)
    assert proc.returncode == 0, out(proc)[-4000:]
    d = load_dictionary(ArtifactStore(root / "store").get("sae-L2-J64-s0").path)
    assert d.config.steps == 10 < 4 * 20480 // (256 * 2)
    training = d.config.training
    assert (training["converged"], training["converged_at_step"], training["evaluations"]) == (True, 10, 2)
    assert training["activations_seen"] == 10 * 256 * 2


def test_submitit_local_launcher(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    args = ["-m", "hydra/launcher=submitit_local", *SMOKE, "logger=none", "sae.dict_size=64,128"]
    proc = run_train(args, root)
    assert proc.returncode == 0, out(proc)[-4000:]
    assert sorted(ArtifactStore(root / "store").names("sae-dictionary")) == ["sae-L2-J128-s0", "sae-L2-J64-s0"]


def test_parallel_launcher_runs_the_jobs_side_by_side_without_progress_bars(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    proc = run_train(["-m", "hydra/launcher=parallel", *SMOKE, "logger=none", "sae.dict_size=64,128"], root)
    assert proc.returncode == 0, out(proc)[-4000:]
    store = ArtifactStore(root / "store")
    assert sorted(store.names("sae-dictionary")) == ["sae-L2-J128-s0", "sae-L2-J64-s0"]
    # two jobs at once: joblib gives each half the cores' torch threads, and config.json records them
    threads = max(1, os.cpu_count() // 2)
    assert [load_dictionary(store.get(n).path).config.training["threads"] for n in store.names("sae-dictionary")] == [
        threads
    ] * 2
    assert re.search(r"Done +2 out of +2", out(proc)) and "\u2501" not in out(
        proc
    )  # the launcher's lines, no job's bar
    # the same sweep one job at a time draws each job's bar on a terminal (and none into a pipe: the multirun above)
    seq = run_train_on_a_terminal(["-m", *SMOKE, "logger=none", "sae.dict_size=64", "force=true"], root)
    assert seq.returncode == 0 and "\u2501" in out(seq), out(seq)[-4000:]


def test_saes_on_a_tagged_gpt_are_a_variant_that_records_the_gpts_loss(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    long = run_train(["stage=pretrain", *SMOKE, "logger=none", "pretrain.tag=long", "pretrain.max_steps=40"], root)
    assert long.returncode == 0, out(long)[-3000:]
    for extra in (["gpt=gpt-embedded-s0-long"], []):  # by name; the default stays the untagged GPT
        proc = run_train([*SMOKE, "logger=none", "sae.dict_size=64", *extra], root)
        assert proc.returncode == 0, out(proc)[-3000:]
    store = ArtifactStore(root / "store")
    assert sorted(store.names("sae-dictionary")) == ["sae-L2-J64-s0", "sae-L2-J64-s0-gpt-long"]
    for variant, gpt in (("gpt-long", "gpt-embedded-s0-long"), ("", "gpt-embedded-s0")):
        config = load_dictionary(store.get("sae-L2-J64-s0" + (f"-{variant}" if variant else "")).path).config
        assert (config.gpt["artifact"], config.variant) == (f"{gpt}:v0", variant)
        assert config.gpt["val_loss"] == store.get(gpt).metadata["val_loss"]
    assert store.get("gpt-embedded-s0-long").metadata["steps"] == 40


def test_killed_job_resumes_in_the_same_wandb_run_and_rerun_of_finished_job_reuses_it(gpt_root, tmp_path):
    """A job killed after its first checkpoint and resumed: the same dictionary, and on W&B the same run id in two
    folders (wandb writes one per start, offline), which between them hold every row of the run's metrics.csv once.
    The killed part's file holds only what wandb had flushed (it writes 32 KiB blocks), so the resumed part logs the
    CSV's earlier rows first; tests/test_lineage.py checks the rows exactly."""
    root = fresh_root(gpt_root, tmp_path)
    args = [*SMOKE, "harvest.n_tokens=600000", "sae.dict_size=256", "sae.ckpt_every=100"]
    kill_at_first_checkpoint(args, root, runs="runs/sae-*", linger=1.0)
    again = run_train(args, root)
    assert again.returncode == 0, out(again)[-3000:]
    assert "resuming from" in out(again)
    d = load_dictionary(ArtifactStore(root / "store").get("sae-L2-J256-s0").path)
    assert d.config.steps == 600000 // 256
    (run_dir,) = root.glob("runs/sae-*")
    # One folder per start (the killed one may have no record file yet on a loaded machine), all of one run id.
    parts = run_files(run_dir / "wandb", run_dir.name)  # oldest first
    exit_recorded(parts[-1:])  # the resumed part finished: read it once wandb-core has written all of it
    assert 1 <= len(parts) <= 2 and run_record(parts[-1]).run_id == run_dir.name, parts
    # What each part logged, as (step, metric) pairs: together, every row of the CSV once, and nothing else.
    pairs = [(step, key) for path in parts for step, keys in logged_rows(path) for key in keys]
    pairs = [(step, key) for step, key in pairs if not key.startswith("feature_density")]  # the end's figure
    assert len(pairs) == len(set(pairs)), "a step was logged twice"
    assert set(pairs) <= csv_pairs(run_dir / "csv" / "metrics.csv")  # (the back-fill's exact rows: test_lineage.py)
    third = run_train(args, root)
    assert third.returncode == 0 and "already finished as sae-L2-J256-s0:v0" in out(third)


def csv_pairs(metrics_csv) -> set[tuple[int, str]]:
    with open(metrics_csv, newline="") as f:
        return {(int(r["step"]), k) for r in csv.DictReader(f) for k, v in r.items() if v and k != "step"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sae.dict_size=0"], "sae.dict_size must be a positive integer, got 0"),
        (["sae.dict_size=12.5"], "sae.dict_size must be an integer, got 12.5"),
        (["sae.l1_coeff=-0.001"], "sae.l1_coeff must be >= 0, got -0.001"),
    ],
)
def test_bad_values_are_named_with_what_was_given(args, needle):
    """The exact words, in process (what train.py checks first); the command line's one line, status 2 and nothing
    written are tests/faults/test_cli_fuzz.py's, one process per kind of bad input (a bad type, out of range, ...)."""
    from ..checks import check_entry, compose_config  # noqa: PLC0415

    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_entry("train", compose_config("train", [*SMOKE, "logger=none", *args]))


def test_a_layer_the_gpt_lacks_ends_before_any_work(gpt_root, tmp_path):
    """Checked against the GPT in the store, before activations are harvested (an unknown GPT, gpt=nope, is
    test_cli_fuzz.py's)."""
    root = fresh_root(gpt_root, tmp_path)
    proc = run_train([*SMOKE, "logger=none", "harvest.layer=7"], root)
    assert proc.returncode == 2 and "harvest.layer=7 is outside the model: it has layers 0..5" in out(proc)
    assert "Traceback" not in out(proc)
    assert not (root / "cache" / "activations").exists() and not list(root.glob("runs/sae-*"))


def test_no_gpt_says_to_pretrain(tmp_path):
    proc = run_train([*SMOKE, "logger=none"], tmp_path)
    assert proc.returncode == 2 and "run `python train.py stage=pretrain`" in out(proc)


def test_untrained_control_beside_the_trained_gpt(gpt_root, tmp_path):
    root = fresh_root(gpt_root, tmp_path)
    proc = run_train([*SMOKE, "logger=none", "gpt=untrained", "sae.dict_size=64"], root)
    assert proc.returncode == 0, out(proc)[-4000:]
    store = ArtifactStore(root / "store")
    d = load_dictionary(store.get("sae-L2-J64-s0-untrained").path)
    assert d.config.variant == "untrained" and d.config.gpt["artifact"] == "gpt-embedded-s0-untrained:v0"
    assert d.config.synthetic is None
    trained = store.get("gpt-embedded-s0").metadata
    assert trained["steps"] == 30 and store.get("gpt-embedded-s0-untrained").metadata["steps"] == 0
    assert len(list((root / "cache" / "activations").glob("L2-*"))) == 1  # the untrained GPT's own harvest
    # The plain sweep still trains on the trained GPT, although the untrained one is newer in the store.
    plain = run_train([*SMOKE, "logger=none", "sae.dict_size=64"], root)
    assert plain.returncode == 0, out(plain)[-4000:]
    d = load_dictionary(store.get("sae-L2-J64-s0").path)
    assert d.config.gpt["artifact"] == "gpt-embedded-s0:v0" and d.config.variant == ""
    assert len(list((root / "cache" / "activations").glob("L2-*"))) == 2
