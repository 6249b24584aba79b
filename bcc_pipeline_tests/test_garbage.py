import subprocess
import sys
import textwrap

import dagster as dg

from bcc_pipeline import garbage
from bcc_pipeline.definitions import defs
from bcc_pipeline_tests.assets.conftest import resources


def test_at_exit_every_object_is_frozen_before_the_final_collection():
    code = textwrap.dedent(
        """
        import atexit, gc
        # Registered first, so it runs last: after the hook under test.
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
        from bcc_pipeline.garbage import skip_final_garbage_collection
        import bcc_pipeline.definitions
        before = atexit._ncallbacks()
        skip_final_garbage_collection()
        skip_final_garbage_collection()
        print("hooks added:", atexit._ncallbacks() - before)
        print("frozen while running:", gc.get_freeze_count())
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    lines = dict(line.split(": ") for line in completed.stdout.splitlines())
    assert lines["hooks added"] == "1", "registered once per process"
    assert lines["frozen while running"] == "0", "collection goes on as usual until the exit"
    assert int(lines["frozen at exit"]) > 10_000


def test_a_run_registers_the_quick_exit_in_its_process(sample_root, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(garbage, "skip_final_garbage_collection", lambda: calls.append(1))
    result = dg.materialize(
        [defs.get_assets_def("raw_image_manifest")],
        resources=resources(sample_root, tmp_path / "artifacts"),
    )
    assert result.success and calls, "the run's launch check registered the quick exit"


def _full_collections_while(code: str) -> dict[str, str]:
    """Run `code` in a fresh interpreter that counts the full collections it triggers; the
    last line it prints is `name: value` pairs."""
    prelude = textwrap.dedent(
        """
        import gc
        full = []
        gc.callbacks.append(
            lambda phase, info: full.append(1) if phase == "stop" and info["generation"] == 2
            else None
        )
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split(": ") for line in completed.stdout.splitlines())


def test_importing_torch_frozen_runs_no_full_collection_and_freezes_its_objects():
    plain = _full_collections_while(
        """
        import torch, torchvision
        print("full collections:", len(full))
        """
    )
    frozen = _full_collections_while(
        """
        from bcc_pipeline.garbage import import_frozen
        import_frozen("torch", "torchvision")
        print("full collections:", len(full))
        print("frozen:", gc.get_freeze_count())
        print("collecting again:", gc.isenabled())
        """
    )
    assert int(plain["full collections"]) >= 2, "the plain import is what this saves"
    assert frozen["full collections"] == "0"
    assert int(frozen["frozen"]) > 100_000
    assert frozen["collecting again"] == "True"


def test_modules_imported_already_are_not_frozen_again():
    lines = _full_collections_while(
        """
        import torch
        from bcc_pipeline.garbage import import_frozen
        import_frozen("torch")
        print("frozen:", gc.get_freeze_count())
        """
    )
    assert lines["frozen"] == "0"


def test_a_failed_import_leaves_collection_as_it_was():
    lines = _full_collections_while(
        """
        from bcc_pipeline.garbage import import_frozen
        try:
            import_frozen("bcc_pipeline_no_such_module")
        except ImportError:
            print("collecting:", gc.isenabled())
        gc.disable()
        import_frozen("fractions")  # not imported yet: the import happens
        print("still disabled:", not gc.isenabled())
        """
    )
    assert lines == {"collecting": "True", "still disabled": "True"}


def test_a_run_imports_torch_frozen_in_its_launch_check(sample_root, tmp_path, monkeypatch):
    imported = []
    monkeypatch.setattr(garbage, "import_frozen", lambda *names: imported.append(names))
    result = dg.materialize(
        [defs.get_assets_def("raw_image_manifest")],
        resources=resources(sample_root, tmp_path / "artifacts"),
    )
    assert result.success and imported == [("torch", "torchvision")]
