"""Messages that lead somewhere: where the input is something sae-sweep knows, but not what the command takes, the
refusal names what it is and the command that does take it (each was a dead end before: "train some first")."""

from __future__ import annotations

import pytest

from sae_sweep.analysis.collect import collect_local_variants
from sae_sweep.errors import DataError
from sae_sweep.interop.export import export_sweep
from sae_sweep.store import ArtifactStore, verify
from tests.test_foreign import saelens_folder


def test_a_folder_of_saelens_saes_given_as_a_store_points_to_source_foreign(tmp_path):
    saelens_folder(tmp_path / "exports" / "sae-a")
    with pytest.raises(DataError, match=r"SAEs of other libraries .* source=foreign source.path=.*exports\. Train"):
        collect_local_variants(tmp_path / "exports", 2)


def test_stable_cores_given_as_a_store_or_to_the_export_say_what_they_are(tmp_path):
    cores = ArtifactStore(tmp_path / "core")
    cores.save("sae-core-L2-J8", "sae-core", lambda f: (f / "core.json").write_text("{}"), {})
    with pytest.raises(DataError, match=r"holds stable cores \(analyze.py's analysis/core\)"):
        collect_local_variants(tmp_path / "core", 2)
    with pytest.raises(DataError, match=r"holds stable cores, not dictionaries: each core version already holds"):
        export_sweep(tmp_path / "core", tmp_path / "out")
    version = cores.get("sae-core-L2-J8").path
    (version / "core.json").unlink()
    with pytest.raises(DataError, match=r"Run analyze.py again, which writes the stable cores anew"):
        verify(version)  # a core is made by analyze.py: "train it again" would lead nowhere
