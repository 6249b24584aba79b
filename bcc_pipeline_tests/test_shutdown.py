import subprocess
import sys
import textwrap

import dagster as dg

from bcc_pipeline import shutdown
from bcc_pipeline.definitions import defs
from bcc_pipeline_tests.assets.conftest import resources


def test_at_exit_every_object_is_frozen_before_the_final_collection():
    code = textwrap.dedent(
        """
        import atexit, gc
        # Registered first, so it runs last: after the hook under test.
        atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
        from bcc_pipeline.shutdown import skip_final_garbage_collection
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
    monkeypatch.setattr(shutdown, "skip_final_garbage_collection", lambda: calls.append(1))
    result = dg.materialize(
        [defs.get_assets_def("raw_image_manifest")],
        resources=resources(sample_root, tmp_path / "artifacts"),
    )
    assert result.success and calls, "the run's launch check registered the quick exit"
