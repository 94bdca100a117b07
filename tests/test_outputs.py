"""Output folders replaced whole (the report, the exports) never replace what sae-sweep did not write there.

Each case is refused before any work, in one line that names the path and what to do, and leaves everything as it
was; what an earlier run wrote (with its marker, or from a release before markers) is replaced as before.
"""

from __future__ import annotations

import pytest

from sae_sweep.analysis.collect import SourceConfig
from sae_sweep.analysis.job import check, legacy_report
from sae_sweep.analysis.settings import AnalysisConfig, AnalyzeJob
from sae_sweep.errors import ConfigError
from sae_sweep.interop.export import export_sweep, main
from sae_sweep.outputs import MARKER, check_output, mark
from sae_sweep.store import ArtifactStore, Paths
from sae_sweep.tracking import LoggerConfig
from tests.conftest import save_dict


def snapshot(folder):
    """Every file under ``folder`` with its bytes: what must be as it was after a refusal."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def job(root, out_dir=None, **source) -> AnalyzeJob:
    return AnalyzeJob(AnalysisConfig(), SourceConfig(**source), LoggerConfig(kind="none"), Paths(root), out_dir)


def test_a_report_is_not_written_over_or_into_what_the_tool_keeps(tmp_path):
    root = tmp_path / "root"
    save_dict(ArtifactStore(root / "store"), 8, 0)
    (root / "runs").mkdir()
    before = snapshot(root)
    cases = {
        root / "store": "is the store",
        root / "store" / "sae-L2-J8-s0" / "report": "sits inside the store",
        root / "runs": "is the runs",
        root: "holds the store",  # paths.root itself: the swap would replace the store, caches and runs
    }
    for out, says in cases.items():
        with pytest.raises(ConfigError, match=rf"^out_dir={out} {says} \(.*give out_dir a new folder, outside it$"):
            check(job(root, out))
    elsewhere = tmp_path / "elsewhere"
    save_dict(ArtifactStore(elsewhere), 8, 0)
    with pytest.raises(ConfigError, match=r"is the SAEs being analysed \(source.path\)"):
        check(job(root, elsewhere, path=str(elsewhere)))
    assert snapshot(root) == before
    check(job(root))  # the default, <paths.root>/analysis: allowed


def test_a_file_or_a_folder_of_someone_elses_is_refused_and_kept(tmp_path):
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    with pytest.raises(ConfigError, match=r"notes.txt is a file: the report is a folder, and writing it would delete"):
        check(job(tmp_path / "root", note))
    theirs = tmp_path / "theirs"
    (theirs / "data").mkdir(parents=True)
    (theirs / "a.txt").write_text("a")
    with pytest.raises(ConfigError, match=r"holds what sae-sweep did not write there \(a.txt, data\); the report"):
        check(job(tmp_path / "root", theirs))
    assert note.read_text() == "mine" and (theirs / "a.txt").read_text() == "a" and (theirs / "data").is_dir()


def test_a_folder_the_tool_wrote_is_replaced_unless_something_was_added(tmp_path):
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "report.md").write_text("# report")
    (ours / "core").mkdir()
    check_output(ours, "report", "out_dir", "give out_dir a new folder", {}, legacy=legacy_report)  # before markers
    mark(ours, "report")
    check_output(ours, "report", "out_dir", "give out_dir a new folder", {})  # its marker lists both entries
    (ours / "mynotes.txt").write_text("mine")
    for legacy in (legacy_report, lambda entries: True):  # the marker decides, not the files' look
        with pytest.raises(ConfigError, match=r"holds what sae-sweep did not write there \(mynotes.txt\)"):
            check_output(ours, "report", "out_dir", "give out_dir a new folder", {}, legacy=legacy)
    (ours / "mynotes.txt").unlink()
    with pytest.raises(ConfigError, match=r"did not write there \(.sae-sweep-output.json, core, report.md\)"):
        check_output(ours, "export", "OUT", "give another OUT", {})  # another kind's marker
    (ours / MARKER).unlink()
    (ours / "mynotes.txt").write_text("mine")
    assert not legacy_report(sorted(ours.iterdir()))  # an unmarked report folder with a user's file in it


def test_the_export_keeps_a_users_files_and_leaves_nothing_else_in_out(tmp_path, capsys):
    store = ArtifactStore(tmp_path / "store")
    save_dict(store, 8, 0)
    save_dict(store, 16, 0)
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    (out / "sae-L2-J8-s0").mkdir()
    (out / "sae-L2-J8-s0" / "mynotes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"the export folder .*sae-L2-J8-s0 holds what .* \(mynotes.txt\)"):
        export_sweep(store.root, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep", "sae-L2-J8-s0"]  # nothing written, nothing deleted
    (out / "sae-L2-J8-s0" / "mynotes.txt").unlink()
    export_sweep(store.root, out)
    export_sweep(store.root, out)  # over its own exports: replaced whole
    assert sorted(p.name for p in out.iterdir()) == ["keep", "sae-L2-J16-s0", "sae-L2-J8-s0"]  # no lock files
    for bad, says in [(store.root / "x", "sits inside the store exported"), (tmp_path, "holds the store exported")]:
        assert main([str(store.root), str(bad), "--no-scores"]) == 2
        assert says in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main([str(store.root), str(tmp_path / "afile"), "--no-scores"]) == 2
    assert "afile is a file" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"
