import subprocess
import sys

import nbhelpers


def test_import_stays_light():
    code = ("import sys, nbhelpers; nbhelpers.get_model; nbhelpers.plan_deployment; "
            "heavy = [m for m in ('google.cloud.aiplatform', 'openai', 'papermill', "
            "'ipywidgets') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_public_api_resolves_to_functions_not_modules():
    for name in nbhelpers.__all__:
        value = getattr(nbhelpers, name)
        assert not isinstance(value, type(nbhelpers)), name
    assert callable(nbhelpers.deploy) and callable(nbhelpers.cleanup)


def test_no_exported_name_is_a_module_name():
    import importlib.util

    clashes = [name for name in nbhelpers.__all__
               if importlib.util.find_spec(f"nbhelpers.{name}") is not None]
    assert clashes == []


def test_importing_the_modules_leaves_the_exported_functions():
    code = ("import types, nbhelpers, nbhelpers.deployments, nbhelpers.prediction, "
            "nbhelpers.openai_chat, nbhelpers.teardown, nbhelpers.planner; "
            "print(sorted(n for n in nbhelpers.__all__ "
            "if isinstance(getattr(nbhelpers, n), types.ModuleType)), "
            "type(nbhelpers.deploy).__name__, type(nbhelpers.plan_memory).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] function function"
